"""The report demo uses the demo's own synthetic benchmark as it is; it generates one only
when none exists."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import inquire.demo.report as report_demo
from inquire.data.synthetic import find_synthetic_benchmark, make_synthetic_benchmark


def _result(seed: int) -> Any:
    return SimpleNamespace(config={"seed": seed})


def test_existing_demo_benchmark_is_reused_untouched(tmp_path: Path, monkeypatch) -> None:
    # Non-default arguments: regenerating with defaults would give a different benchmark.
    made = make_synthetic_benchmark(
        tmp_path / "demo" / "benchmark", n_images=600, n_val=1, n_test=2, dim=16
    )
    result_dir = tmp_path / "demo" / "results" / "fullrank"
    result_dir.mkdir(parents=True)
    stamps = {p: p.stat().st_mtime_ns for p in made.root.rglob("*") if p.is_file()}

    def no_generation(*a: Any, **kw: Any) -> Any:
        raise AssertionError("the existing benchmark was regenerated")

    monkeypatch.setattr(report_demo, "make_synthetic_benchmark", no_generation)
    bench = report_demo._benchmark_for(result_dir, _result(0), tmp_path / "demo" / "report")
    assert bench == made
    assert {p: p.stat().st_mtime_ns for p in made.root.rglob("*") if p.is_file()} == stamps


def test_missing_benchmark_is_generated_once_then_reused(tmp_path: Path, monkeypatch) -> None:
    result_dir = tmp_path / "elsewhere" / "results" / "fullrank"
    result_dir.mkdir(parents=True)
    out = tmp_path / "report"
    calls: list[dict[str, Any]] = []

    def small(root: Path, seed: int) -> Any:
        calls.append({"root": root, "seed": seed})
        return make_synthetic_benchmark(root, n_images=600, n_val=1, n_test=2, dim=16, seed=seed)

    monkeypatch.setattr(report_demo, "make_synthetic_benchmark", small)
    bench = report_demo._benchmark_for(result_dir, _result(3), out)
    assert calls == [{"root": out / "benchmark", "seed": 3}] and bench.root == out / "benchmark"
    again = report_demo._benchmark_for(result_dir, _result(3), out)
    assert len(calls) == 1 and again == bench


def test_incomplete_folder_is_not_a_benchmark(tmp_path: Path) -> None:
    made = make_synthetic_benchmark(tmp_path / "b", n_images=600, n_val=1, n_test=2, dim=16)
    assert find_synthetic_benchmark(made.root) == made
    (made.root / "SYNTHETIC.txt").unlink()
    assert find_synthetic_benchmark(made.root) is None
    assert find_synthetic_benchmark(tmp_path / "nothing") is None


def test_images_folder_is_found(tmp_path: Path) -> None:
    made = make_synthetic_benchmark(
        tmp_path / "b", n_images=600, n_val=1, n_test=2, dim=16, write_images=True
    )
    assert find_synthetic_benchmark(made.root) == made
