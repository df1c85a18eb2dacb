"""API failures name the candidate by its place in the whole list and its image id."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("openai")

from PIL import Image

from inquire.rerank.api import APIReranker, APISetupError, Failure
from inquire.rerank.cache import ScoreCache, reranker_key, score_candidates
from inquire.testing.rerank_fake_openai import FakeOpenAI

KEY_ENV = "INQUIRE_TEST_API_KEY"


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


class _FailsOn:
    """A scorer that fails on given images (by content), recording failures per call."""

    reranker_id, revision, prompt_version = "test:fails", "1", "1"

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.failures: list[Failure] = []

    def score(self, text: str, images: list[int]) -> np.ndarray:
        out = np.zeros(len(images))
        for i, im in enumerate(images):
            if im in self.bad:
                out[i] = np.nan
                self.failures.append(Failure(text, i, "broken"))
        return out


def test_chunked_failures_carry_list_position_and_image_id() -> None:
    ids = [100 + 7 * p for p in range(10)]
    images = list(range(10))  # the image of candidate p is p
    scorer = _FailsOn({1, 6, 9})
    with ScoreCache() as cache:
        cache.put(reranker_key(scorer), "q", {ids[0]: 0.5})  # candidate 0 is never scored
        out = score_candidates(scorer, "q", ids, images, cache=cache, chunk=3)
    assert np.flatnonzero(np.isnan(out)).tolist() == [1, 6, 9]
    assert [(f.index, f.image_id) for f in scorer.failures] == [(1, 107), (6, 142), (9, 163)]


def test_api_failures_through_score_candidates(monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    with FakeOpenAI() as server:
        reranker = APIReranker(
            "fake-model",
            base_url=server.base_url,
            api_key_env=KEY_ENV,
            concurrency=1,
            max_retries=0,
        )
        # concurrency 1 scores chunks of 4: the sixth candidate is the second of chunk two
        server.script(["ok"] * 5 + ["401"])
        ids = [501, 502, 503, 504, 505, 506]
        out = score_candidates(reranker, "q", ids, [_jpeg(i) for i in range(6)])
    assert np.flatnonzero(np.isnan(out)).tolist() == [5]
    assert len(reranker.failures) == 1
    f = reranker.failures[0]
    assert (f.index, f.image_id) == (5, 506) and "HTTP 401" in f.reason


def test_cached_scores_are_kept_apart_by_server_and_model_and_reused_after_a_stop(
    monkeypatch, tmp_path
) -> None:
    """Same server and model: read from the cache. Another server (the same model name may
    be other weights) or another model: asked again. A run stopped by a failing batch keeps
    what it scored; the rerun asks only for the rest."""
    monkeypatch.setenv(KEY_ENV, "sk-test")
    ids = list(range(40))  # two batches of 32 and 8
    images = [_jpeg(i) for i in ids]
    with FakeOpenAI() as one, FakeOpenAI() as two, ScoreCache(tmp_path / "s.sqlite") as cache:

        def run(server: FakeOpenAI, model: str = "fake-model") -> np.ndarray:
            reranker = APIReranker(model, base_url=server.base_url, api_key_env=KEY_ENV)
            return score_candidates(reranker, "q", ids, images, cache=cache)

        one.script(["ok"] * 32 + ["401"] * 8)  # a key revoked half-way
        with pytest.raises(APISetupError):
            run(one)
        first = len(one.requests)
        assert first == 40
        scores = run(one)  # the rerun asks only for the batch that failed
        assert len(one.requests) == first + 8 and not np.isnan(scores).any()
        assert len(run(one)) == 40 and len(one.requests) == first + 8  # all cached now
        np.testing.assert_array_equal(run(two), scores)  # same fake model, asked again
        assert len(two.requests) == 40
        run(one, model="other-model")
        assert len(one.requests) == first + 8 + 40
