"""Shared fixtures. Tests never touch the network or the user's cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The real INQUIRE query files, shipped beside the repository for tests.
SHARED_DATA = REPO.parent / "shared" / "inquire-data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own empty cache folder and no mirror override."""
    monkeypatch.setenv("INQUIRE_HOME", str(tmp_path_factory.mktemp("inquire_home")))
    monkeypatch.delenv("INQUIRE_BASE_URL", raising=False)


@pytest.fixture
def real_queries_dir() -> Path:
    if not (SHARED_DATA / "inquire_queries_test.csv").is_file():
        pytest.skip(f"real INQUIRE query files not found at {SHARED_DATA}")
    return SHARED_DATA
