"""Saving and closing in INQUIRE-Rerank evaluation (inquire.eval.rerank)."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_data_rerank_set import _tiny_rerank_shard


def _eval_result(k: int):
    import pandas as pd

    from inquire.eval.evaluate import EvalResult

    per_query = pd.DataFrame(
        {"query_id": [1], "ap": [0.5], "ndcg": [0.5], "mrr": [1.0], "precision": [0.1]}
        | {"recall": [0.5], "supercategory": ["A"], "category": ["B"], "iconic_group": ["C"]}
    )
    return EvalResult(per_query=per_query, k=k)


def test_rerank_failures_file_is_written_atomically(tmp_path: Path, monkeypatch) -> None:
    import pandas as pd

    from inquire.eval.rerank import FAILURES_FILE, RerankResult
    from inquire.run import Run

    failures = pd.DataFrame({"query_id": [1], "image_id": [7], "query_text": ["q"]})
    res = RerankResult(_eval_result(100), _eval_result(50), Run({1: ([7], [0.1])}), failures)
    out = tmp_path / "res"
    res.save(out)
    before = (out / FAILURES_FILE).read_text()
    assert "7" in before

    real_to_csv = pd.DataFrame.to_csv

    def broken_to_csv(self, path_or_buf=None, *args, **kwargs):
        if "query_text" not in self.columns:
            return real_to_csv(self, path_or_buf, *args, **kwargs)
        if hasattr(path_or_buf, "write"):
            path_or_buf.write("query_id,ima")
        else:
            Path(path_or_buf).write_text("query_id,ima")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken_to_csv)
    with pytest.raises(OSError, match="disk full"):
        res.save(out)
    assert (out / FAILURES_FILE).read_text() == before  # never half-written


def test_eval_rerank_closes_its_score_cache(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from inquire.cli import app
    from inquire.rerank import cache as cache_mod

    closed: list[bool] = []

    class Spy(cache_mod.ScoreCache):
        def close(self) -> None:
            closed.append(True)
            super().close()

    monkeypatch.setattr(cache_mod, "ScoreCache", Spy)
    path = _tiny_rerank_shard(tmp_path / "test-00000-of-00001.parquet")
    args = ["eval", "rerank", "--rerank", "cached:none", "--data", str(path)]
    res = CliRunner().invoke(app, [*args, "--allow-failures"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, args)  # every candidate fails: the error path closes it too
    assert res.exit_code == 2 and "--allow-failures" in res.output
    assert closed == [True, True]
