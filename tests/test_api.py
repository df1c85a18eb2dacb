"""The public API of ``import inquire``: lazy exports, ``evaluate`` on hand-computed toy
runs, ``Run.from_dict`` / ``Qrels.from_dict``, bring-your-own models against the registry
path, and the README's examples executed as written."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import inquire
from inquire.errors import InputError

REPO = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------- the lazy surface


def test_import_inquire_loads_nothing_and_every_export_resolves() -> None:
    code = (
        "import json, sys\n"
        "import inquire\n"
        "before = sorted(m for m in ('numpy', 'pandas', 'pyarrow', 'inquire.api', 'torch')"
        " if m in sys.modules)\n"
        "names = {n: getattr(inquire, n).__class__.__name__ for n in inquire.__all__}\n"
        "shown = dir(inquire)\n"
        "stats = inquire.stats.__name__\n"  # a submodule, without `import inquire.stats`
        "print(json.dumps([before, names, shown, stats]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(inquire.__file__).resolve().parents[1]))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    before, names, shown, stats = json.loads(proc.stdout)
    assert before == []  # `import inquire` imports none of them
    assert stats == "inquire.stats"
    # tab completion offers the public names and submodules, not the module's own imports
    assert {"evaluate", "Run", "stats", "eval", "metrics", "__version__"} <= set(shown)
    assert not {"Any", "TYPE_CHECKING", "importlib", "annotations", "_EXPORTS"} & set(shown)
    assert names["Run"] == names["Qrels"] == "ABCMeta" and names["EvalResult"] == "type"
    assert names["evaluate"] == names["evaluate_rerank"] == "function"
    assert {"evaluate_fullrank", "load_qrels", "read_queries", "__version__"} <= set(names)
    assert "evaluate" in dir(inquire)
    with pytest.raises(
        AttributeError, match=r"no attribute 'evalute'; did you mean inquire\.evaluate"
    ):
        inquire.evalute  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match=r"did you mean inquire\.Qrels") as info:
        inquire.qrels  # type: ignore[attr-defined]  # noqa: B018
    assert info.value.name == "qrels"
    with pytest.raises(AttributeError, match=r"'NoSuchThing' \(the public names: EvalResult"):
        inquire.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(inquire, "NoSuchThing")


# ------------------------------------------------------------------- evaluate by hand

QRELS = {1: {10: 1, 11: 1, 12: 0}, 2: {20: 1}}
RUN = {1: {10: 0.9, 12: 0.8, 11: 0.7}, 2: {21: 0.5, 20: 0.4}}


def test_evaluate_toy_run_by_hand() -> None:
    result = inquire.evaluate(inquire.Qrels.from_dict(QRELS), inquire.Run.from_dict(RUN), k=50)
    # query 1: 10 (rel), 12, 11 (rel); R = 2.  query 2: 21, 20 (rel); R = 1.
    ap1, ap2 = (1 / 1 + 2 / 3) / 2, (1 / 2) / 1
    ndcg1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    ndcg2 = (1 / math.log2(3)) / 1
    per_query = result.per_query.set_index("query_id")
    assert per_query.loc[1, "ap"] == pytest.approx(ap1) and per_query.loc[2, "ap"] == 0.5
    assert per_query["ndcg"].tolist() == pytest.approx([ndcg1, ndcg2])
    assert per_query["mrr"].tolist() == [1.0, 0.5]
    assert per_query["precision"].tolist() == pytest.approx([2 / 50, 1 / 50])
    assert per_query["recall"].tolist() == [1.0, 1.0]
    assert result.overall == pytest.approx(
        {
            "n_queries": 2,
            "ap": (ap1 + ap2) / 2,
            "ndcg": (ndcg1 + ndcg2) / 2,
            "mrr": 0.75,
            "precision": 0.03,
            "recall": 1.0,
        }
    )
    assert list(result.overall) == ["n_queries", "ap", "ndcg", "mrr", "precision", "recall"]
    assert isinstance(result, inquire.EvalResult)


def test_overall_is_what_summary_json_stores(tmp_path: Path) -> None:
    result = inquire.evaluate(inquire.Qrels.from_dict(QRELS), inquire.Run.from_dict(RUN), k=2)
    folder = result.save(tmp_path / "res")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["overall"] == pytest.approx(result.overall)
    assert inquire.EvalResult.load(folder).overall == pytest.approx(result.overall)
    # k = 2 cuts query 1 after image 12: AP = (1/1) / min(2, 2), recall 1/2
    assert result.per_query["ap"].tolist() == [0.5, 0.5]
    assert result.per_query["recall"].tolist() == [0.5, 1.0]


def test_evaluate_ties_missing_queries_metrics_and_groups() -> None:
    qrels = inquire.Qrels.from_dict({1: {10: 1}, 2: {20: 1}, 3: {30: 0}})
    # query 1: 10 tied with 11 at the top -> one threshold, as INQUIRE's scikit-learn AP reads
    # it: 1 relevant of the 2 items scoring >= 0.5, so AP = (1 * 1/2) / min(R = 1, 10) = 0.5
    run = inquire.Run.from_dict({1: {11: 0.5, 10: 0.5}, 9: {1: 1.0}})
    groups = pd.DataFrame({"query_id": [2, 1], "supercategory": ["Fungi", "Birds"]})
    result = inquire.evaluate(qrels, run, k=10, metrics=["ap", "mrr"], groups=groups)
    per_query = result.per_query.set_index("query_id")
    assert list(per_query.index) == [1, 2]  # query 3: no relevant image, left out
    assert result.config["excluded_queries_no_relevant"] == [3]
    assert per_query.loc[1, "ap"] == pytest.approx(0.5)
    assert per_query.loc[2, "ap"] == 0.0  # not in the run: an empty list
    assert result.metrics == ("ap", "mrr") and "ndcg" not in per_query.columns
    assert per_query["supercategory"].tolist() == ["Birds", "Fungi"]
    assert per_query["category"].tolist() == ["Unknown", "Unknown"]
    by = result.aggregate("supercategory").set_index("group")
    assert by.loc["Birds", "ap"] == pytest.approx(0.5)
    # The same ranking in the other input order gives the same numbers.
    swapped = inquire.Run.from_dict({1: {10: 0.5, 11: 0.5}})
    again = inquire.evaluate(qrels, swapped, k=10, metrics="ap")
    assert again.per_query["ap"].tolist() == pytest.approx([0.5, 0.0])


def test_evaluate_refuses_what_it_cannot_score() -> None:
    qrels, run = inquire.Qrels.from_dict(QRELS), inquire.Run.from_dict(RUN)
    with pytest.raises(InputError, match=r"inquire\.Qrels\.from_dict"):
        inquire.evaluate(QRELS, run)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"inquire\.Run\.from_dict"):
        inquire.evaluate(qrels, RUN)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="k must be a positive integer, got 0"):
        inquire.evaluate(qrels, run, k=0)
    with pytest.raises(InputError, match="no relevant image for any"):
        inquire.evaluate(inquire.Qrels.from_dict({1: {10: 0}}), run)
    with pytest.raises(InputError, match="shares no query id"):
        inquire.evaluate(qrels, inquire.Run.from_dict({7: {1: 1.0}}))
    with pytest.raises(InputError, match="group columns"):
        inquire.evaluate(qrels, run, groups=pd.DataFrame({"query_id": [1], "x": [1]}))
    with pytest.raises(Exception, match="ndgc"):
        inquire.evaluate(qrels, run, metrics=["ndgc"])
    with pytest.raises(TypeError):
        inquire.evaluate(qrels, run, 50)  # type: ignore[misc]  # k is keyword-only


# ------------------------------------------------------------------- from_dict


def test_run_from_dict_ranks_and_checks() -> None:
    run = inquire.Run.from_dict({"3": {np.int64(5): 1, 6: 2.5, "7": 2.5}, 4: {}}, name="mine")
    ids, scores = run[3]
    assert ids.tolist() == [6, 7, 5] and scores.tolist() == [2.5, 2.5, 1.0]  # ties: input order
    assert len(run[4][0]) == 0 and run.name == "mine"
    for bad, match in [
        ({1: [10, 11]}, "expected a mapping"),
        ({1: {10: float("nan")}}, "query 1, image 10: score nan is not a finite number"),
        ({1: {10: "high"}}, "score 'high' is not a number"),
        ({1.5: {10: 1.0}}, "query id 1.5 is not an integer id"),
        ({1: {"a.jpg": 1.0}}, "image id 'a.jpg' is not an integer id"),
        ({1: {True: 1.0}}, "image id True"),
        ({1: {10: 1.0}, "1": {11: 1.0}}, "query id 1 appears twice"),
        ([(1, 10, 1.0)], "expects"),
    ]:
        with pytest.raises(InputError, match=re.escape(match)):
            inquire.Run.from_dict(bad)  # type: ignore[arg-type]


def test_qrels_from_dict_reads_grades_as_trec_eval_does(caplog: pytest.LogCaptureFixture) -> None:
    qrels = inquire.Qrels.from_dict({1: {10: 1, 11: 2, 12: 0, 13: -1, 14: True, 15: 1.0}, 2: {}})
    assert qrels[1] == {10, 11, 14, 15} and qrels[2] == frozenset()
    assert "grade above 1" in caplog.text  # 2 counts as 1, and says so
    for bad, match in [
        ({1: {10: 0.5}}, "relevance 0.5 is not a whole number"),
        ({1: {10: "yes"}}, "relevance 'yes'"),
        ({1: {10: None}}, "relevance None"),
        ({1: [10, 11]}, "expected a mapping {image_id: relevance}"),
    ]:
        with pytest.raises(InputError, match=re.escape(match)):
            inquire.Qrels.from_dict(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------- the README


def _section_blocks(heading: str) -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_readme_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = _section_blocks("## From Python")
    code_lines = [ln for ln in first.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(code_lines) <= 10
    monkeypatch.chdir(tmp_path)
    ns: dict[str, Any] = {"__name__": "__readme__"}
    exec(compile(first, "README.md (first example)", "exec"), ns)
    assert ns["result"].overall == pytest.approx(
        {"n_queries": 2, "ap": 2 / 3, "ndcg": 0.7753, "mrr": 0.75, "precision": 0.03,
         "recall": 1.0},
        abs=1e-4,
    )  # fmt: skip
    assert (tmp_path / "results" / "toy" / "summary.json").is_file()
    ns = {"__name__": "__readme__"}
    exec(compile(second, "README.md (bring your own model)", "exec"), ns)
    assert ns["result"].overall["ap"] == 0.75
    assert ns["result"].per_query["ap"].tolist() == [1.0, 0.5]


# ------------------------------------------------------------------- your own model


class Forward:
    """A bring-your-own model that only forwards to a registry encoder (two methods)."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode_text(texts)

    def encode_image(self, images: list[Any]) -> np.ndarray:
        from PIL import Image

        assert all(isinstance(im, Image.Image) and im.mode == "RGB" for im in images)
        return self.encoder.encode_images(images) * 3.0  # not normalised: cosine anyway


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("open_clip")
    from inquire.testing.embed_models import make_tiny_open_clip

    return make_tiny_open_clip(tmp_path_factory.mktemp("tiny-open-clip"))


def test_own_model_reranks_like_the_registry_clip_reranker(tiny_model: str, tmp_path: Path) -> None:
    import torch

    from inquire.data.rerank_set import read_rerank_set, write_synthetic_rerank_set
    from inquire.embed import load_encoder
    from inquire.eval.rerank import run_rerank

    torch.set_num_threads(1)
    paths = write_synthetic_rerank_set(tmp_path / "set", n_val=1, n_test=2, image_size=32)
    queries = tmp_path / "set" / "benchmark" / "inquire_queries_test.csv"
    rs = read_rerank_set(paths["test"], queries=pd.read_csv(queries))
    # The existing path: `inquire eval rerank --reranker clip:<model>`.
    want = run_rerank(rs, f"clip:{tiny_model}", cache=False, progress=False)
    by_id = inquire.evaluate_rerank(tiny_model, data=paths["test"], queries=queries, cache=False)
    own = inquire.evaluate_rerank(
        Forward(load_encoder(tiny_model)), data=paths["test"], queries=queries
    )
    metrics = ["ap", "ndcg", "mrr", "precision", "recall"]
    expected = want.result.per_query[["query_id", *metrics]]
    pd.testing.assert_frame_equal(by_id.per_query[["query_id", *metrics]], expected)
    pd.testing.assert_frame_equal(
        own.per_query[["query_id", *metrics]], expected, check_exact=False, rtol=1e-12
    )
    assert own.k == 100 and len(own.per_query) == 2 and own.config["task"] == "rerank"
    at50 = inquire.evaluate_rerank(tiny_model, data=paths["test"], queries=queries, k=50)
    assert at50.per_query["ap"].tolist() == want.result_at_50.per_query["ap"].tolist()
    with pytest.raises(InputError, match="k must be 100"):
        inquire.evaluate_rerank(tiny_model, data=paths["test"], k=10)
    with pytest.raises(InputError, match="lacks encode_text and encode_image"):
        inquire.evaluate_rerank(object(), data=paths["test"])

    class TextOnly:
        def encode_text(self, texts: list[str]) -> np.ndarray:
            return np.ones((len(texts), 2))

    with pytest.raises(InputError, match="'TextOnly' lacks encode_image: a model is"):
        inquire.evaluate_rerank(TextOnly(), data=paths["test"])


def test_own_model_fullrank_over_an_image_folder_equals_the_registry_path(
    tiny_model: str, tmp_path: Path
) -> None:
    import torch

    from inquire.data.synthetic import make_synthetic_benchmark
    from inquire.embed import load_encoder
    from inquire.embed.pipeline import embed_images

    torch.set_num_threads(1)
    bench = make_synthetic_benchmark(
        tmp_path / "bench", n_images=400, dim=32, n_val=1, n_test=1, n_shards=1,
        write_images=True, image_size=32,
    )  # fmt: skip
    assert bench.images is not None
    common: dict[str, Any] = {
        "queries": bench.queries_test,
        "qrels": bench.annotations,
        "k": 20,
        "workers": 0,
    }
    # The registry path, step by step: `inquire embed` then `inquire eval fullrank`.
    embed_images(tiny_model, bench.images, tmp_path / "emb", workers=0, progress=False)
    want = inquire.evaluate_fullrank(tiny_model, embeddings=tmp_path / "emb", **common)
    by_id = inquire.evaluate_fullrank(tiny_model, images=bench.images, **common)
    own = inquire.evaluate_fullrank(
        Forward(load_encoder(tiny_model)), images=bench.images, **common
    )
    cols = ["query_id", "ap", "ndcg", "mrr", "precision", "recall"]
    pd.testing.assert_frame_equal(by_id.per_query[cols], want.per_query[cols])
    pd.testing.assert_frame_equal(
        own.per_query[cols], want.per_query[cols], check_exact=False, rtol=1e-12
    )
    assert want.config["image_ids"] == own.config["image_ids"] == "joined on image_path"
    assert own.config["model_id"] == "Forward"
    with pytest.raises(InputError, match="embeddings=FOLDER"):
        inquire.evaluate_fullrank(tiny_model, queries=bench.queries_test)
    with pytest.raises(InputError, match=r"returned ndarray of shape \(2, 32\) for 1 inputs"):

        class Broken(Forward):
            def encode_text(self, texts: list[str]) -> np.ndarray:
                return np.zeros((len(texts) + 1, 32))

        inquire.evaluate_fullrank(Broken(None), embeddings=tmp_path / "emb", **common)


# ------------------------------------------------------------------- against an oracle


def _oracle(relevant: set[int], items: list[tuple[int, float]], k: int) -> dict[str, float]:
    """One query's metrics from independent implementations: pytrec_eval (nDCG@k, P@k,
    recall@k, reciprocal rank) and scikit-learn's average precision (INQUIRE's AP@k:
    truncate at k, one threshold per score, times hits / min(R, k)), each averaged over every
    order of the tied items, which is what inquire's tie rule promises."""
    import itertools
    import warnings

    pytrec_eval = pytest.importorskip("pytrec_eval")
    from sklearn.metrics import average_precision_score

    ranked = sorted(items, key=lambda t: -t[1])
    groups = [list(g) for _, g in itertools.groupby(ranked, key=lambda t: t[1])]
    measures = {f"ndcg_cut.{k}", f"P.{k}", f"recall.{k}", "recip_rank"}
    evaluator = pytrec_eval.RelevanceEvaluator({"q": {f"d{d}": 1 for d in relevant}}, measures)
    totals = dict.fromkeys(["ap", "ndcg", "precision", "recall", "mrr"], 0.0)
    orders = list(itertools.product(*(itertools.permutations(g) for g in groups)))
    for order in orders:
        top = [item for group in order for item in group][:k]
        if top:  # distinct scores in this order, so trec_eval keeps it
            run = {"q": {f"d{d}": float(len(top) - i) for i, (d, _) in enumerate(top)}}
            res = evaluator.evaluate(run)["q"]
            totals["ndcg"] += res[f"ndcg_cut_{k}"]
            totals["precision"] += res[f"P_{k}"]
            totals["recall"] += res[f"recall_{k}"]
            totals["mrr"] += res["recip_rank"]
        labels = [int(d in relevant) for d, _ in top]
        if 0 < sum(labels) < len(labels):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ap = average_precision_score(labels, [s for _, s in top])
        else:
            ap = float(sum(labels) > 0)
        totals["ap"] += ap * sum(labels) / min(len(relevant), k)
    return {m: v / len(orders) for m, v in totals.items()}


def test_evaluate_matches_pytrec_eval_and_sklearn_on_random_runs_with_ties() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
    @hypothesis.given(
        k=st.sampled_from([1, 2, 3, 5, 10**12]),
        ids=st.lists(st.integers(0, 15), max_size=7, unique=True),
        levels=st.lists(st.sampled_from([0.1, 0.2, 0.5, 0.7]), min_size=7, max_size=7),
        relevant=st.sets(st.integers(0, 15), min_size=1, max_size=6),
        as_text=st.booleans(),
    )
    def check(k: int, ids: list[int], levels: list[float], relevant: set[int], as_text: bool):
        items = list(zip(ids, levels, strict=False))
        cast = str if as_text else np.int64  # ids as text or numpy ints read the same
        run = inquire.Run.from_dict({cast(7): {cast(d): s for d, s in items}})
        qrels = inquire.Qrels.from_dict({cast(7): {cast(d): 1 for d in relevant}})
        got = inquire.evaluate(qrels, run, k=k).per_query.iloc[0]
        # 10**12 is "everything": the oracle at the longest list, P@k over 10**12
        want = _oracle(relevant, items, k if k < 100 else 16)
        if k >= 100:
            want["precision"] *= 16 / k
        for metric, value in want.items():
            assert got[metric] == pytest.approx(value, abs=1e-12), (metric, items, relevant)

    check()


def test_huge_k_costs_memory_of_the_input_not_of_k() -> None:
    # A (nq, k) matrix at k = 10**12 would be terabytes; every list here is 3 long.
    qrels = inquire.Qrels.from_dict({1: {10: 1, 11: 1}, 2: {20: 1}})
    run = inquire.Run.from_dict({1: {10: 0.9, 12: 0.9, 11: 0.1}, 2: {21: 0.5, 20: 0.4}})
    small = inquire.evaluate(qrels, run, k=3).per_query
    for k in (10**12, 2**64):
        huge = inquire.evaluate(qrels, run, k=k).per_query
        for metric in ("ap", "ndcg", "mrr", "recall"):
            assert huge[metric].tolist() == pytest.approx(small[metric].tolist(), abs=1e-15)
        assert huge["precision"].tolist() == pytest.approx([1.5 / k, 1 / k], rel=1e-12)
    trec = inquire.evaluate(qrels, run, k=10**12, metrics=["trec_ap"]).per_query
    # trec_ap reads ties in list order (10, 12, 11), as trec_eval does
    assert trec["trec_ap"].tolist() == pytest.approx([(1 / 1 + 2 / 3) / 2, 1 / 2])


def test_metric_names_from_other_tools_are_refused_with_the_name_used_here() -> None:
    from inquire.errors import UnknownNameError

    qrels, run = inquire.Qrels.from_dict(QRELS), inquire.Run.from_dict(RUN)
    for name, match in [
        ("ndgc", "Did you mean 'ndcg'"),
        ("AP", "'AP': inquire names it 'ap'"),
        ("map", r"'map': inquire names it 'trec_ap' \(trec_eval's MAP, over R"),
        ("ndcg@10", "names it 'ndcg'; the cut-off is not part of the name: pass k=10 "
         r"\(this call has k=50\)"),
        ("P_5", "names it 'precision'.*pass k=5"),
        ("recip_rank", "names it 'mrr'"),
    ]:  # fmt: skip
        with pytest.raises(UnknownNameError, match=match):
            inquire.evaluate(qrels, run, metrics=[name])
    with pytest.raises(InputError, match="metrics is empty"):
        inquire.evaluate(qrels, run, metrics=[])
    with pytest.raises(InputError, match="metric names are strings; got 3"):
        inquire.evaluate(qrels, run, metrics=[3])  # type: ignore[list-item]
    twice = inquire.evaluate(qrels, run, metrics=["mrr", "ap", "mrr"])
    assert twice.metrics == ("mrr", "ap") and list(twice.overall) == ["n_queries", "mrr", "ap"]
    assert list(twice.aggregate().columns) == ["group", "n_queries", "mrr", "ap"]


def test_ids_beyond_int64_and_one_image_judged_twice_are_refused() -> None:
    with pytest.raises(InputError, match="image id 9223372036854775808 does not fit a 64-bit"):
        inquire.Run.from_dict({1: {2**63: 0.5}})
    with pytest.raises(InputError, match="query id '-9223372036854775809' does not fit"):
        inquire.Qrels.from_dict({str(-(2**63) - 1): {1: 1}})
    big = inquire.Run.from_dict({np.uint64(2**63 - 1): {-(2**63): 1.0}})
    assert list(big) == [2**63 - 1] and big[2**63 - 1][0].tolist() == [-(2**63)]
    with pytest.raises(InputError, match=r"query 1: image id 10 is judged twice \(as '10'\)"):
        inquire.Qrels.from_dict({1: {10: 1, "10": 0}})


# ------------------------------------------------------------------- what a model returns


class Returns:
    """A model whose two methods return ``make(n)`` for n inputs."""

    def __init__(self, make: Any) -> None:
        self.make = make

    def encode_text(self, texts: list[str]) -> Any:
        return self.make(len(texts))

    def encode_image(self, images: list[Any]) -> Any:
        return self.make(len(images))


def test_model_outputs_are_read_or_refused_by_name() -> None:
    import torch
    from PIL import Image

    from inquire.model import ModelEncoder

    images = [Image.new("RGB", (4, 4))] * 2
    readable = {
        "list": lambda n: [[3.0, 4.0]] * n,
        "int": lambda n: np.tile(np.array([3, 4]), (n, 1)),
        "torch with grad": lambda n: torch.tensor([[3.0, 4.0]] * n, requires_grad=True) * 1,
        "torch bfloat16": lambda n: torch.tensor([[3.0, 4.0]] * n, dtype=torch.bfloat16),
        "huge": lambda n: np.full((n, 2), 1e300) * np.array([3, 4]),
        "tiny": lambda n: np.full((n, 2), 1e-300) * np.array([3, 4]),
    }
    for name, make in readable.items():
        enc = ModelEncoder(Returns(make))
        for out in (enc.encode_text(["a", "b"]), enc.encode_images(images)):
            assert out.dtype == np.float32 and out.shape == (2, 2), name
            np.testing.assert_allclose(out, [[0.6, 0.8]] * 2, rtol=1e-6, err_msg=name)
    refused = {
        "complex": (
            lambda n: np.ones((n, 2)) * (1 + 1j),
            "returned ndarray, not an .* real",
        ),
        "zero row": (lambda n: np.zeros((n, 2)), r"returned an all-zero row \(row 0 of 2\)"),
        "NaN": (lambda n: np.full((n, 2), np.nan), r"returned NaN or infinite values \(row 0"),
        "None": (lambda n: None, r"returned NoneType of shape \(\) for 2 inputs"),
        "one row short": (lambda n: np.ones((n - 1, 2)), r"shape \(1, 2\) for 2 inputs"),
        "ragged": (lambda n: [[1.0]] + [[1.0, 2.0]] * (n - 1), "returned list, not an"),
    }
    for make, match in refused.values():
        enc = ModelEncoder(Returns(make))
        with pytest.raises(InputError, match=f"Returns.encode_text .*{match}"):
            enc.encode_text(["a", "b"])
        with pytest.raises(InputError, match=f"Returns.encode_image .*{match}"):
            enc.encode_images(images)

    class Declared(Returns):
        dim = "2"

    with pytest.raises(InputError, match=r"Declared.dim is '2'; it must be the embedding size"):
        ModelEncoder(Declared(readable["list"]))
    with pytest.raises(InputError, match=r"the class 'Returns', not an instance of it; pass"):
        ModelEncoder(Returns)


def test_a_model_with_encode_image_is_wrapped_even_with_an_encode_images_method() -> None:
    from inquire.model import ModelEncoder, as_encoder

    class Both(Returns):
        model_id = "both"

        def encode_images(self, paths: list[str]) -> Any:  # its own, for file paths
            raise AssertionError("inquire must call encode_image")

    model_id, enc = as_encoder(Both(lambda n: np.ones((n, 2))))
    assert model_id == "both" and isinstance(enc, ModelEncoder)


# ------------------------------------------------------------------- arguments of the tasks


def _toy_embeddings(folder: Path) -> Path:
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    np.save(folder / "img_emb/img_emb_0.npy", np.array([[1, 0], [0.6, 0.8], [0, 1]], np.float32))
    meta = pd.DataFrame({"image_path": ["a.jpg", "b.jpg", "c.jpg"], "image_id": [10, 11, 12]})
    meta.to_parquet(folder / "metadata/metadata_0.parquet")
    return folder


def test_fullrank_arguments_are_checked_before_any_work(tmp_path: Path) -> None:
    emb = _toy_embeddings(tmp_path / "emb")
    model = Returns(lambda n: np.tile([1.0, 0.0], (n, 1)))
    qrels = inquire.Qrels.from_dict({1: {10: 1}})
    # k far beyond the collection: the search asks for 3 images, not 10**12
    huge = inquire.evaluate_fullrank(model, embeddings=emb, queries={1: "x"}, qrels=qrels, k=10**12)
    assert huge.overall["ap"] == 1.0 and huge.overall["precision"] == pytest.approx(1e-12)
    for kwargs, match in [
        ({"queries": "tset"}, "queries 'tset' is neither a split .* Did you mean 'test'"),
        ({"queries": "Val"}, "Did you mean 'val'"),
        ({"queries": ["a red flower"]}, "queries must be 'val', 'test', .* got list"),
        ({"queries": {}}, "no queries given"),
        ({"queries": {1: None}}, "query 1: the query text is None"),
        ({"queries": {1: "  "}}, "query 1: the query text is '  '"),
        ({"queries": pd.DataFrame({"query_id": [1, 1], "query_text": ["a", "b"]})},
         "query id 1 appears more than once"),
        ({"queries": pd.DataFrame({"query_id": [1]})}, r"lacks column\(s\) \['query_text'\]"),
        ({"queries": {1: "x"}, "qrels": {1: {10: 1}}},
         r"qrels must be an inquire.Qrels.*got dict; build one with inquire.Qrels.from_dict"),
        ({"queries": {1: "x"}, "images": tmp_path}, "pass only one of them"),
    ]:  # fmt: skip
        with pytest.raises(InputError, match=match):
            inquire.evaluate_fullrank(model, **{"embeddings": emb, "qrels": qrels, **kwargs})


def test_rerank_data_is_a_split_a_file_a_folder_or_files(tmp_path: Path) -> None:
    from inquire.data.rerank_set import write_synthetic_rerank_set

    paths = write_synthetic_rerank_set(tmp_path / "set", n_val=1, n_test=2, image_size=16)
    queries = pd.read_csv(tmp_path / "set" / "benchmark" / "inquire_queries_test.csv")
    by_file = inquire.evaluate_rerank("clip_score", data=paths["test"][0], queries=queries)
    folder = paths["test"][0].parent / "only-test"
    folder.mkdir()
    paths["test"][0].rename(folder / paths["test"][0].name)
    by_folder = inquire.evaluate_rerank("clip_score", data=folder, queries=queries)
    pd.testing.assert_frame_equal(by_folder.per_query, by_file.per_query)
    as_dict = dict(zip(queries["query_id"], queries["query_text"], strict=True))
    by_dict = inquire.evaluate_rerank("clip_score", data=folder, queries=as_dict)
    assert by_dict.per_query["ap"].tolist() == by_file.per_query["ap"].tolist()
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not parquet")
    for data, match in [
        ("tset", "data 'tset' is neither a split .* Did you mean 'test'"),
        (tmp_path / "empty", "holds no \\*.parquet file"),
        (tmp_path / "notes.txt", "is not a readable parquet file"),
        (tmp_path / "missing.parquet", "does not exist"),
        (3, "data must be 'val', 'test', a parquet file, a folder of them or a list"),
    ]:
        with pytest.raises(InputError, match=match):
            inquire.evaluate_rerank("clip_score", data=data, queries=queries)  # type: ignore[arg-type]
    for bad in (5, []):
        with pytest.raises(InputError, match=r"queries must be a query CSV .* got (int|list)"):
            inquire.evaluate_rerank("clip_score", data=folder, queries=bad)  # type: ignore[arg-type]


def test_images_without_judged_paths_is_refused_before_embedding(tmp_path: Path) -> None:
    calls: list[int] = []

    def make(n: int) -> np.ndarray:
        calls.append(n)
        return np.ones((n, 2))

    qrels = inquire.Qrels.from_dict({1: {10: 1}})  # no image paths to join the files on
    with pytest.raises(InputError, match="these judgments have none: pass Qrels"):
        inquire.evaluate_fullrank(Returns(make), images=tmp_path, queries={1: "x"}, qrels=qrels)
    assert calls == []  # nothing was embedded


def test_load_qrels_refuses_a_misspelt_split_before_downloading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import inquire.data.download as download
    from inquire.errors import UnknownNameError

    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing is downloaded for a split that does not exist")

    monkeypatch.setattr(download, "fetch", no_download)
    with pytest.raises(UnknownNameError, match=r"unknown split 'tset'\. Did you mean 'test'"):
        inquire.load_qrels("tset")


def test_whole_tie_groups_inside_the_top_k_count_exactly() -> None:
    # 3 relevant among 10 tied items, all inside the top 10: every order finds all 3, so
    # recall is exactly 1 and P@10 exactly 0.3 (summing 3/10 ten times gives 0.9999...).
    qrels = inquire.Qrels.from_dict({1: dict.fromkeys(range(3), 1)})
    run = inquire.Run.from_dict({1: dict.fromkeys(range(10), 0.5)})
    per_query = inquire.evaluate(qrels, run, k=10).per_query
    assert per_query["recall"].tolist() == [1.0] and per_query["precision"].tolist() == [0.3]
    # Straddling the cut-off, the group is averaged: 5 of its 10 places inside -> 1.5 hits
    at5 = inquire.evaluate(qrels, run, k=5).per_query
    assert at5["recall"].tolist() == [0.5] and at5["precision"].tolist() == [0.3]
