"""A small bounded version of benchmarks/web_load.py: every request must succeed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "web_load.py"


@pytest.fixture(scope="module")
def mod() -> ModuleType:
    """The benchmark script imported as a module (registered first: its dataclasses need it)."""
    spec = importlib.util.spec_from_file_location("web_load", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["web_load"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bounded_load_has_no_errors(mod: ModuleType, tmp_path: Path) -> None:
    res = mod.run_load(clients=10, requests=100, seed=1, workdir=tmp_path)
    assert res.n == 100
    assert res.n_errors == 0, dict(res.errors)
    assert set(res.by_kind) == {kind for kind, _ in mod.MIX}  # every kind of request was sent


def test_request_plan_is_seeded_and_covers_the_mix(mod: ModuleType) -> None:
    groups = {"supercategory": ["A"], "category": ["B"], "iconic_group": ["C"]}
    a = mod.request_plan(300, [1, 2], [10, 11], groups, seed=3)
    assert a == mod.request_plan(300, [1, 2], [10, 11], groups, seed=3)
    assert len(a) == 300 and {k for k, _ in a} == {k for k, _ in mod.MIX}
