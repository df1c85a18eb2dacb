"""Shared fixtures. Tests never touch the network or the user's cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# The real INQUIRE query files, shipped beside the repository for tests.
SHARED_DATA = REPO.parent / "shared" / "inquire-data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own empty cache folders (inquire's and the Hugging Face hub's, where
    INQUIRE-Rerank goes) and no mirror override."""
    from huggingface_hub import constants as hf_constants

    monkeypatch.setenv("INQUIRE_HOME", str(tmp_path_factory.mktemp("inquire_home")))
    monkeypatch.delenv("INQUIRE_BASE_URL", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf_hub")))


@pytest.fixture
def real_queries_dir() -> Path:
    if not (SHARED_DATA / "inquire_queries_test.csv").is_file():
        pytest.skip(f"real INQUIRE query files not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def inquire_mirror(
    real_queries_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, bytes]]:
    """The real query CSVs and a generated annotations CSV, served in the upstream layout
    (``INQUIRE_BASE_URL`` points at it); yields ``(server, annotations bytes)``."""
    import pandas as pd

    from inquire.data import read_queries
    from inquire.testing.data_mirror import annotations_csv, write_mirror
    from inquire.testing.http_server import FixtureServer

    val = (real_queries_dir / "inquire_queries_val.csv").read_bytes()
    test = (real_queries_dir / "inquire_queries_test.csv").read_bytes()
    both = pd.concat(
        [read_queries(real_queries_dir / f"inquire_queries_{s}.csv") for s in ("val", "test")]
    )
    ann = annotations_csv(both, seed=3)
    root = write_mirror(
        tmp_path / "mirror", {"queries-val": val, "queries-test": test, "annotations": ann}
    )
    with FixtureServer(root) as server:
        monkeypatch.setenv("INQUIRE_BASE_URL", server.url)
        yield server, ann
