"""Score-cache keys (inquire.rerank.cache)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_reranker_scores_are_cached_per_precision(tmp_path: Path) -> None:
    """A bf16 run must not read scores cached by the fp32 run of the same model (or back)."""
    from inquire.rerank.cache import ScoreCache, reranker_key, score_candidates

    class Scorer:
        reranker_id, revision, prompt_version = "test:m", "rev1", "p1"
        needs_images = False

        def __init__(self, precision: str, value: float) -> None:
            self.precision, self.value, self.calls = precision, value, 0

        def score(self, query_text: str, images: list[object]) -> np.ndarray:
            self.calls += 1
            return np.full(len(images), self.value)

    full, half = Scorer("fp32", 0.25), Scorer("bf16", 0.75)
    assert reranker_key(full).values == ("test:m", "rev1", "fp32", "p1")
    assert reranker_key(half).values == ("test:m", "rev1", "bf16", "p1")
    with ScoreCache(tmp_path / "s.sqlite") as cache:
        assert score_candidates(full, "q", [1, 2], [None, None], cache=cache).tolist() == [
            0.25, 0.25,
        ]  # fmt: skip
        assert score_candidates(half, "q", [1, 2], [None, None], cache=cache).tolist() == [
            0.75, 0.75,
        ]  # fmt: skip
        again = score_candidates(Scorer("fp32", 9.0), "q", [1, 2], [None, None], cache=cache)
    assert again.tolist() == [0.25, 0.25] and full.calls == half.calls == 1
