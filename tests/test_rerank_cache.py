"""The SQLite score cache: hits cost nothing, interrupted runs resume, two processes may write
at once, failures and sampled outputs are never stored; importing INQUIRE's pickled caches."""

from __future__ import annotations

import multiprocessing as mp
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inquire.cache import OutputKey
from inquire.errors import InputError
from inquire.rerank.cache import (
    CachedReranker,
    ScoreCache,
    import_inquire_cache,
    reranker_key,
    score_candidates,
)


class CountingReranker:
    """Scores = image value / 100; counts how many images it was asked to score."""

    def __init__(self, fail_after: int | None = None, cacheable: bool = True) -> None:
        self.reranker_id = "test:counting"
        self.revision = "r1"
        self.prompt_version = "p1"
        self.cacheable = cacheable
        self.calls: list[int] = []
        self.fail_after = fail_after

    def score(self, query_text: str, images: Sequence[Any]) -> np.ndarray:
        if self.fail_after is not None and sum(self.calls) >= self.fail_after:
            raise KeyboardInterrupt  # an interruption mid-run
        self.calls.append(len(images))
        return np.array([float(im) / 100 for im in images])


def test_put_get_round_trip_and_key_parts(tmp_path: Path) -> None:
    with ScoreCache(tmp_path / "c.sqlite") as cache:
        key = OutputKey("m", "rev1", protocol="v1")
        assert cache.put(key, "a fox", {1: 0.5, 2: 0.25, 3: float("nan")}) == 2
        assert cache.get(key, "a fox", [1, 2, 3]) == {"1": 0.5, "2": 0.25}
        # every key part matters
        assert cache.get(OutputKey("m", "rev2", protocol="v1"), "a fox", [1]) == {}
        assert cache.get(OutputKey("m", "rev1", protocol="v2"), "a fox", [1]) == {}
        assert cache.get(OutputKey("m2", "rev1", protocol="v1"), "a fox", [1]) == {}
        assert cache.get(OutputKey("m", "rev1", "bf16", "v1"), "a fox", [1]) == {}
        assert cache.get(key, "a fox ", [1]) == {}
        assert cache.count() == 2 and cache.count(key) == 2
    # persistent, in WAL mode
    with ScoreCache(tmp_path / "c.sqlite") as again:
        assert again.get(key, "a fox", [2]) == {"2": 0.25}
        assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_location_is_under_the_cache_dir() -> None:
    from inquire import config

    with ScoreCache() as cache:
        assert cache.path.parent == config.cache_dir("rerank")


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InputError, match="not a usable SQLite"):
        ScoreCache(bad)


def test_second_run_costs_nothing(tmp_path: Path) -> None:
    ids = list(range(10))
    with ScoreCache(tmp_path / "c.sqlite") as cache:
        r = CountingReranker()
        first = score_candidates(r, "q", ids, list(range(10)), cache=cache, chunk=4)
        assert r.calls == [4, 4, 2]
        np.testing.assert_array_equal(first, np.arange(10) / 100)
        r2 = CountingReranker()

        def no_images(pos: Sequence[int]) -> list[Any]:
            raise AssertionError("a fully cached run must not read images")

        second = score_candidates(r2, "q", ids, no_images, cache=cache)
        assert r2.calls == []
        np.testing.assert_array_equal(second, first)


def test_interrupted_run_resumes(tmp_path: Path) -> None:
    ids = list(range(10))
    with ScoreCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(KeyboardInterrupt):
            score_candidates(CountingReranker(fail_after=4), "q", ids, ids, cache=cache, chunk=4)
        assert cache.count() == 4  # the finished chunk was committed
        r = CountingReranker()
        out = score_candidates(r, "q", ids, ids, cache=cache, chunk=4)
        assert sum(r.calls) == 6
        np.testing.assert_array_equal(out, np.arange(10) / 100)


def test_failures_and_non_deterministic_outputs_are_not_cached(tmp_path: Path) -> None:
    class Flaky(CountingReranker):
        def score(self, query_text: str, images: Sequence[Any]) -> np.ndarray:
            out = super().score(query_text, images)
            out[0] = np.nan
            return out

    with ScoreCache(tmp_path / "c.sqlite") as cache:
        out = score_candidates(Flaky(), "q", [1, 2, 3], [1, 2, 3], cache=cache)
        assert np.isnan(out[0]) and out[1] == 0.02
        assert cache.count() == 2
        sampled = CountingReranker(cacheable=False)
        score_candidates(sampled, "other", [1, 2], [1, 2], cache=cache)
        score_candidates(sampled, "other", [1, 2], [1, 2], cache=cache)
        assert cache.count() == 2 and sampled.calls == [2, 2]


def test_wrong_number_of_scores_is_refused(tmp_path: Path) -> None:
    class Short(CountingReranker):
        def score(self, query_text: str, images: Sequence[Any]) -> np.ndarray:
            return np.zeros(len(images) - 1)

    with pytest.raises(InputError, match="one score per image"):
        score_candidates(Short(), "q", [1, 2], [1, 2])


def _writer(path: str, worker: int, n: int, start: Any) -> None:
    with ScoreCache(path, timeout_s=60) as cache:
        key = OutputKey("m", "r", protocol="p")
        start.wait(60)  # both processes write at the same time
        for i in range(n):
            # small transactions interleave with the other process's
            cache.put(key, f"query {i % 3}", {f"{worker}-{i}": i / n, "shared": float(worker)})


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    ScoreCache(path).close()
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, w, 400, start)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    with ScoreCache(path) as cache:
        # 400 distinct ids per worker, plus one "shared" id per query text
        assert cache.count() == 2 * 400 + 3
        key = OutputKey("m", "r", protocol="p")
        got = cache.get(key, "query 0", [f"0-{i}" for i in range(0, 400, 3)])
        assert len(got) == 134


# --- INQUIRE's released pickled caches ------------------------------------------------------

TEMPLATE = 'Does this image show "{query}"? Answer yes or no.'


def _write_inquire_cache(path: Path) -> None:
    data = {
        f"/data/inat24/train/00001_Animalia/aaa.jpg--{TEMPLATE.format(query='a fox')}": 0.9,
        f"/data/inat24/train/00002_Animalia/bbb.jpg--{TEMPLATE.format(query='a fox')}": 0.1,
        f"/data/inat24/train/00002_Animalia/bbb.jpg--{TEMPLATE.format(query='a red fox')}": 0.7,
        f"/elsewhere/ccc.jpg--{TEMPLATE.format(query='a fox')}": 0.5,  # not a candidate
        f"/data/inat24/train/x/aaa.jpg--{TEMPLATE.format(query='an owl')}": 0.5,  # no such query
        f"/data/inat24/train/x/aaa.jpg--{TEMPLATE.format(query='a red fox')}": "n/a",
        # an API reply, as INQUIRE stored them for GPT-4 models: 0.2 / (0.2 + 0.6)
        f"train/00002_Animalia/ddd.jpg--{TEMPLATE.format(query='a fox')}": {
            "choices": [
                {
                    "logprobs": {
                        "content": [
                            {
                                "top_logprobs": [
                                    {"token": "No", "logprob": float(np.log(0.6))},
                                    {"token": "Yes", "logprob": float(np.log(0.2))},
                                    {"token": " yes", "logprob": float(np.log(0.1))},
                                ]
                            }
                        ]
                    }
                }
            ]
        },
    }
    np.save(path, np.array(data, dtype=object), allow_pickle=True)


def test_import_refuses_pickles_unless_trusted(tmp_path: Path) -> None:
    npy = tmp_path / "llava.npy"
    _write_inquire_cache(npy)
    with ScoreCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(InputError, match="--trust-pickle"):
            import_inquire_cache(
                npy, cache, OutputKey("cached:x", "imported", protocol="imported"), [], {}
            )
        assert cache.count() == 0


@pytest.mark.parametrize("template", [TEMPLATE, None])
def test_import_maps_paths_and_prompts(tmp_path: Path, template: str | None) -> None:
    npy = tmp_path / "llava.npy"
    _write_inquire_cache(npy)
    files = {
        "train/00001_Animalia/aaa.jpg": 11,
        "train/00002_Animalia/bbb.jpg": 22,
        "train/00002_Animalia/ddd.jpg": 33,
    }
    target = CachedReranker("llava")
    with ScoreCache(tmp_path / "c.sqlite") as cache:
        report = import_inquire_cache(
            npy,
            cache,
            reranker_key(target),
            ["a fox", "a red fox"],
            files,
            trust_pickle=True,
            prompt_template=template,
        )
        assert (report.imported, report.skipped_image, report.skipped_query) == (4, 1, 1)
        assert report.skipped_value == 1

        # "a red fox" contains "a fox": the longest known query wins
        def no_images(pos: Sequence[int]) -> list[Any]:
            raise AssertionError("scores of an imported cache need no images")

        out = score_candidates(target, "a fox", [11, 22, 33], no_images, cache=cache)
        np.testing.assert_allclose(out, [0.9, 0.1, 0.25])  # exact tokens: " yes" not counted
        red = score_candidates(target, "a red fox", [22, 11], no_images, cache=cache)
        assert red[0] == pytest.approx(0.7) and np.isnan(red[1])  # a miss is a failure


def test_import_rejects_a_file_that_is_not_a_dict(tmp_path: Path) -> None:
    npy = tmp_path / "list.npy"
    np.save(npy, np.array([1, 2, 3]))
    with ScoreCache(tmp_path / "c.sqlite") as cache, pytest.raises(InputError, match="dict"):
        import_inquire_cache(
            npy, cache, OutputKey("a", "b", protocol="c"), [], {}, trust_pickle=True
        )


def test_cache_files_are_never_pickles(tmp_path: Path) -> None:
    with ScoreCache(tmp_path / "c.sqlite") as cache:
        cache.put(OutputKey("m", "r", protocol="p"), "q", {1: 0.5})
    raw = (tmp_path / "c.sqlite").read_bytes()
    assert raw.startswith(b"SQLite format 3\x00")
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(raw)


def _reply(tokens: dict[str, float]) -> dict[str, Any]:
    top = [{"token": t, "logprob": float(np.log(p))} for t, p in tokens.items()]
    return {"choices": [{"logprobs": {"content": [{"token": "x", "top_logprobs": top}]}}]}


def test_import_gpt_cache_in_inquires_format(tmp_path: Path) -> None:
    """INQUIRE's GPT-4o cache: its file name names the model, so prompts match exactly; raw
    replies are scored from exact Yes/No tokens and a stored HTTP 400 response scores 0."""
    import requests

    refused = requests.models.Response()
    refused.status_code = 400
    prompt = (
        'Does this picture show exactly "{q}"?\n'
        'Answer the question with either "Yes" or "No" and nothing else.'
    )
    data = {
        "a.jpg--" + prompt.format(q="a fox"): _reply({"Yes": 0.6, "No": 0.2}),
        "b.jpg--" + prompt.format(q="a fox"): _reply({"Yes": 0.6}),
        "c.jpg--" + prompt.format(q="a fox"): _reply({"No": 0.5, "yes": 0.4}),
        "d.jpg--" + prompt.format(q="a fox"): refused,
        # "a red fox" contains "a fox", but the exact prompt decides
        "a.jpg--" + prompt.format(q="a red fox"): _reply({"Yes": 0.1, "No": 0.3}),
        # not INQUIRE's GPT prompt (a space instead of the newline): not imported
        "b.jpg--" + prompt.format(q="a red fox").replace("\n", " "): 0.5,
    }
    npy = tmp_path / "openai-gpt4o20240806--nosystem-cache.npy"
    np.save(npy, np.array(data, dtype=object), allow_pickle=True)
    files = {"x/a.jpg": 1, "x/b.jpg": 2, "x/c.jpg": 3, "x/d.jpg": 4}
    target = CachedReranker("gpt4o")
    assert target.protocol == "inquire-2024"
    with ScoreCache(tmp_path / "c.sqlite") as cache:
        report = import_inquire_cache(
            npy, cache, reranker_key(target), ["a fox", "a red fox"], files, trust_pickle=True
        )
        assert report.model == "openai-gpt4o20240806"
        assert (report.imported, report.skipped_query, report.refused) == (5, 1, 1)
        fox = score_candidates(target, "a fox", [1, 2, 3, 4], [None] * 4, cache=cache)
        np.testing.assert_allclose(fox, [0.75, 1.0, 0.0, 0.0])
        red = score_candidates(target, "a red fox", [1], [None], cache=cache)
        assert red[0] == pytest.approx(0.25)
        # the protocol is part of the key: another protocol finds nothing
        other = CachedReranker("gpt4o", protocol="inquire-sum")
        assert cache.count(reranker_key(other)) == 0 and cache.count(reranker_key(target)) == 5
        assert reranker_key(target).protocol == "inquire-2024/imported"


def test_protocol_is_part_of_every_cache_key(tmp_path: Path) -> None:
    a, b = CountingReranker(), CountingReranker()
    a.protocol, b.protocol = "inquire-2024", "inquire-sum"  # type: ignore[attr-defined]
    with ScoreCache(tmp_path / "c.sqlite") as cache:
        score_candidates(a, "q", [1, 2], [10, 20], cache=cache)
        score_candidates(b, "q", [1, 2], [10, 20], cache=cache)
        assert a.calls == [2] and b.calls == [2]  # b found none of a's scores
        score_candidates(a, "q", [1, 2], [10, 20], cache=cache)
        assert a.calls == [2]


def test_upstream_cache_file_names() -> None:
    """INQUIRE names its caches after the model (``/`` -> ``--``, ``:`` -> ``__``); the one
    file in its repository is ``cache/llava-hf--llava-1.5-13b-hf--cache.npy``."""
    from inquire.rerank.protocol import UPSTREAM_MODELS, upstream_model

    assert upstream_model("llava-hf/llava-1.5-13b-hf").cache_file == (
        "llava-hf--llava-1.5-13b-hf--cache.npy"
    )
    gpt = upstream_model("gpt-4o-2024-08-06")
    assert gpt.cache_file == "openai-gpt4o20240806--nosystem-cache.npy"
    assert upstream_model(gpt.cache_file) is gpt
    assert len(UPSTREAM_MODELS) == 10
    with pytest.raises(KeyError, match=r"llava-hf/llava-1\.5-13b-hf"):
        upstream_model("llava-hf/llava-1.5-13b")


def test_version_1_files_are_converted_with_their_precision(tmp_path: Path) -> None:
    """Version 1 folded the precision into the revision (``REV@bf16``; fp32 plain). Opened
    now, each row keeps its meaning: the bf16 run's scores serve only bf16 runs."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as con:
        con.executescript(
            """
            CREATE TABLE scores (
                model TEXT NOT NULL, revision TEXT NOT NULL, prompt_version TEXT NOT NULL,
                query TEXT NOT NULL, image_id TEXT NOT NULL, score REAL NOT NULL,
                created REAL NOT NULL,
                PRIMARY KEY (model, revision, prompt_version, query, image_id)
            ) WITHOUT ROWID;
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            INSERT INTO scores VALUES ('m', 'rev1', 'inquire-2024/p1', 'q', '1', 0.25, 0);
            INSERT INTO scores VALUES ('m', 'rev1@bf16', 'inquire-2024/p1', 'q', '1', 0.75, 0);
            """
        )
    con.close()

    class Scorer:
        reranker_id, revision, prompt_version, protocol = "m", "rev1", "p1", "inquire-2024"

        def __init__(self, precision: str | None) -> None:
            if precision is not None:
                self.precision = precision

    with ScoreCache(path) as cache:
        assert cache.get(reranker_key(Scorer(None)), "q", [1]) == {"1": 0.25}
        assert cache.get(reranker_key(Scorer("fp32")), "q", [1]) == {"1": 0.25}
        assert cache.get(reranker_key(Scorer("bf16")), "q", [1]) == {"1": 0.75}
        assert cache.get(reranker_key(Scorer("fp16")), "q", [1]) == {}
        assert cache.count() == 2
        version = cache._db.execute("SELECT value FROM meta WHERE key='schema_version'")
        assert version.fetchone()[0] == "2"
    with ScoreCache(path) as again:  # opening again changes nothing
        assert again.count() == 2
        assert again._db.execute("PRAGMA user_version").fetchone()[0] == 1
        again._db.execute("PRAGMA user_version = 9")  # written by a newer inquire
    with pytest.raises(InputError, match="schema version 9, newer"):
        ScoreCache(path)
    with sqlite3.connect(path) as con:  # an unversioned file whose meta names a newer layout
        con.execute("PRAGMA user_version = 0")
        con.execute("UPDATE meta SET value = '9' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(InputError, match="schema version 9, newer"):
        ScoreCache(path)


def test_import_as_cached_reranker_loads_the_set_only_when_it_may_import(tmp_path: Path) -> None:
    import pandas as pd

    from inquire.rerank.cache import import_as_cached_reranker

    npy = tmp_path / "llava.npy"
    _write_inquire_cache(npy)
    files = {"train/00001_Animalia/aaa.jpg": 11, "train/00002_Animalia/bbb.jpg": 22}

    class _Set:  # the two things of a RerankSet the import reads
        queries = pd.DataFrame({"query_text": ["a fox", "a red fox"]})

        def file_names(self) -> dict[str, int]:
            return files

    loads: list[int] = []

    def load() -> Any:
        loads.append(1)
        return _Set()

    db = tmp_path / "c.sqlite"
    with pytest.raises(InputError, match="--trust-pickle"):
        import_as_cached_reranker(npy, "llava", load, cache_path=db)
    with pytest.raises(InputError, match="does not exist"):
        import_as_cached_reranker(tmp_path / "no.npy", "llava", load, trust_pickle=True)
    assert loads == []
    report, target = import_as_cached_reranker(
        npy,
        "llava",
        load,
        "inquire-sum",
        trust_pickle=True,
        prompt_template=TEMPLATE,
        cache_path=db,
    )
    assert loads == [1] and target.reranker_id == "cached:llava"
    assert target.protocol == "inquire-sum" and (report.imported, report.skipped_image) == (3, 2)
    with ScoreCache(db) as cache:
        got = score_candidates(target, "a fox", [11, 22], lambda pos: [], cache=cache)
    np.testing.assert_allclose(got, [0.9, 0.1])
