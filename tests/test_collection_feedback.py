"""Relevance feedback: the models on hand-made embeddings, the saved rounds of a collection
search, the CLI, and the simulated verifier."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from inquire.cli import app as cli_app
from inquire.collection import SearchRequest, create_collection
from inquire.collection.feedback import FEEDBACK_MODELS, feedback_vector, logistic, rocchio
from inquire.collection.filters import Filters
from inquire.collection.verify import Verification
from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError, UnknownNameError
from inquire.eval.feedback import simulate_feedback, simulate_synthetic
from inquire.testing.collection_encoder import make_photo_folder


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# -- the models ----------------------------------------------------------------------------------


def test_no_marks_gives_the_query_back() -> None:
    q = np.array([3.0, 4.0, 0.0])
    for name in FEEDBACK_MODELS:
        np.testing.assert_allclose(feedback_vector(q, model=name), [0.6, 0.8, 0.0], atol=1e-7)


def test_rocchio_by_hand() -> None:
    q = np.array([1.0, 0.0, 0.0])
    pos = np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])  # normalised: e2, e3
    neg = np.array([[1.0, 1.0, 0.0]])  # normalised: (1, 1, 0) / sqrt 2
    got = feedback_vector(q, pos, neg, "rocchio")
    want = np.array([1.0, 0.0, 0.0]) + 4 * np.array([0.0, 0.5, 0.5])
    want -= 0.5 * np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    np.testing.assert_allclose(got, want / np.linalg.norm(want), atol=1e-6)
    # The raw update, unnormalised, is the formula itself.
    np.testing.assert_allclose(
        rocchio(q, _unit(pos), _unit(neg)),
        q + 4 * _unit(pos).mean(0) - 0.5 * _unit(neg).mean(0),
    )


def test_logistic_solves_its_objective() -> None:
    rng = np.random.default_rng(0)
    q = _unit(rng.standard_normal(8))
    pos = _unit(rng.standard_normal((5, 8)) + 2 * q)
    neg = _unit(rng.standard_normal((7, 8)))
    w = logistic(q, pos, neg, lam=1.0, scale=10.0)
    # Recover the bias from the optimality condition of b, then check the gradient in w is
    # zero: sum_i -y_i s x_i sigmoid(-m_i) + lam (w - q) = 0.
    x = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(5), -np.ones(7)])
    from scipy.optimize import brentq

    def grad_b(b: float) -> float:
        m = y * (10 * x @ w + b)
        return float(-(y / (1 + np.exp(m))).sum())

    b = brentq(grad_b, -100, 100)
    m = y * (10 * x @ w + b)
    grad_w = -(10 * x.T @ (y / (1 + np.exp(m)))) + (w - q)
    assert np.abs(grad_w).max() < 1e-4
    # It orders the marks at least as well as the query did (pairwise, relevant first).

    def auc(v: np.ndarray) -> float:
        return float(((pos @ v)[:, None] > (neg @ v)[None, :]).mean())

    assert auc(w) == 1.0 and auc(w) >= auc(q)


def test_feedback_finds_the_hidden_mode() -> None:
    """Relevant images lean off the query direction, near misses sit on it: the text query
    ranks near misses first; three relevant and three near-miss marks fix the order."""
    rng = np.random.default_rng(1)
    d = 16
    e = np.eye(d)
    q = e[0]
    relevant = _unit(0.6 * e[0] + 0.8 * e[1] + 0.005 * rng.standard_normal((20, d)))
    near = _unit(e[0] + 0.005 * rng.standard_normal((20, d)))
    emb = np.concatenate([relevant, near])
    static = np.argsort(-(emb @ q))
    assert set(static[:20].tolist()) == set(range(20, 40))  # the text alone: near misses first
    for name in FEEDBACK_MODELS:
        w = feedback_vector(q, relevant[:3], near[:3], name)
        top = np.argsort(-(emb @ w))[:20]
        assert set(top.tolist()) == set(range(20)), name


def test_feedback_errors() -> None:
    with pytest.raises(UnknownNameError, match="rochio"):
        feedback_vector(np.ones(3), model="rochio")
    with pytest.raises(InputError, match=r"\(n, 3\)"):
        feedback_vector(np.ones(3), np.ones((2, 4)))
    with pytest.raises(InputError, match="non-zero"):
        feedback_vector(np.zeros(3))
    with pytest.raises(InputError, match="NaN"):
        feedback_vector(np.ones(3), np.array([[np.nan, 1.0, 0.0]]))


# -- a collection's ranking rounds ---------------------------------------------------------------


@pytest.fixture
def coll(tmp_path: Path):
    photos = make_photo_folder(tmp_path / "photos", n=60, seed=11)
    c, _ = create_collection("birds", tmp_path / "photos", "toy:colour")
    yield c, {str(p.path.resolve()): p for p in photos}
    c.close()


def _mark_from_truth(v: Verification, c, photos, sid: str, upto: int, colour: str) -> set[int]:
    marked = set()
    for r in v.results(sid, 0, upto).itertuples():
        photo = photos[str((c.images_root / r.path).resolve())]
        mark = "relevant" if photo.colour == colour else "not_relevant"
        v.mark(sid, int(r.image_id), "ana", mark)
        marked.add(int(r.image_id))
    return marked


def test_learn_records_a_round_and_never_reshows_marked_images(coll) -> None:
    c, photos = coll
    index = c.index()
    v = Verification(c)
    try:
        sid = v.save_search(SearchRequest("red"))
        v.extend(sid, 30, index)
        marked = _mark_from_truth(v, c, photos, sid, 10, "red")
        before = v.results(sid, 0, 10)
        fb = v.feedback(sid, index, 20, shown=12, save=True, who="ana")
        info = fb.round
        assert info is not None
        assert info["round"] == 1 and info["after_rank"] == 12
        assert info["n_relevant"] + info["n_not_relevant"] == 10
        after = v.results(sid, 0, 1000)
        # What was shown stays as it was shown.
        cols = ["rank", "image_id"]
        pd.testing.assert_frame_equal(after.head(10)[cols], before[cols])
        assert after["rank"].tolist() == list(range(1, len(after) + 1))
        tail = after[after["rank"] > 12]
        assert len(tail) == 20 and set(tail["round"]) == {1}
        assert not (set(tail["image_id"]) & marked)
        assert after["image_id"].is_unique
        # The tail is the feedback ranking of the images not yet ranked, exactly.
        w = np.frombuffer(
            v.conn.execute("SELECT vector FROM rounds WHERE search_id = ?", (sid,)).fetchone()[0],
            np.float32,
        )
        ranked_before = set(after[after["rank"] <= 12]["image_id"])
        ids = index.image_id[index.valid]
        vecs = index.vectors(np.flatnonzero(index.valid))
        scores = vecs @ w
        order = np.lexsort((ids, -scores))
        want = [int(i) for i in ids[order] if int(i) not in ranked_before][:20]
        assert tail["image_id"].tolist() == want
        # Going further down continues the same round's ranking.
        v.extend(sid, 40, index)
        more = v.results(sid, 32, 100)
        assert set(more["round"]) == {1}
        assert (
            more["image_id"].tolist()
            == [int(i) for i in ids[order] if int(i) not in ranked_before][20:28]
        )
        rounds = v.rounds(sid)
        assert rounds["round"].tolist() == [1] and rounds["created_by"].tolist() == ["ana"]
        # The feedback list (nothing saved) never holds a marked image either.
        fb = v.feedback(sid, index, k=15).results
        assert not (set(fb["image_id"]) & marked) and fb["rank"].tolist() == list(range(1, 16))
    finally:
        v.close()


def test_learn_keeps_filters_and_needs_marks(coll) -> None:
    c, photos = coll
    index = c.index()
    v = Verification(c)
    try:
        req = SearchRequest("red", filters=Filters(date_from=date(2019, 1, 1)))
        sid = v.save_search(req)
        v.extend(sid, 20, index)
        with pytest.raises(InputError, match="no relevant"):
            v.feedback(sid, index, save=True)
        _mark_from_truth(v, c, photos, sid, 8, "red")
        v.feedback(sid, index, 30, save=True)
        res = v.results(sid, 0, 1000)
        assert (res["date"].dropna() >= "2019-01-01").all()
        allowed = set(index.image_id[req.filters.mask(index)].tolist())
        assert set(res["image_id"]) <= allowed
        with pytest.raises(UnknownNameError):
            v.feedback(sid, index, model="nope", save=True)
    finally:
        v.close()


def test_cli_search_feedback(coll, tmp_path: Path) -> None:
    c, photos = coll
    index = c.index()
    v = Verification(c)
    try:
        sid = v.save_search(SearchRequest("red"))
        v.extend(sid, 20, index)
        marked = _mark_from_truth(v, c, photos, sid, 10, "red")
    finally:
        v.close()
    runner = CliRunner()
    res = runner.invoke(cli_app, ["search", "birds", "--feedback", sid, "-k", "7", "--csv"])
    assert res.exit_code == 0, res.output
    from io import StringIO

    df = pd.read_csv(StringIO(res.stdout))
    assert len(df) == 7 and not (set(df["image_id"]) & marked)
    res = runner.invoke(cli_app, ["search", "birds", "--feedback", sid, "--save", "-k", "5"])
    assert res.exit_code == 0, res.output
    assert "ranking round 1" in res.output
    res = runner.invoke(cli_app, ["search", "birds", "red", "--feedback", sid])
    assert res.exit_code == 2 and "saved search" in res.output


# -- the simulated verifier ----------------------------------------------------------------------


def test_simulation_by_brute_force(tmp_path: Path) -> None:
    from inquire.data.qrels import read_qrels
    from inquire.data.queries import read_queries
    from inquire.data.synthetic import make_synthetic_benchmark

    bench = make_synthetic_benchmark(tmp_path / "b", n_images=1000, n_val=1, n_test=4, dim=32)
    store = EmbeddingStore(bench.embeddings)
    queries = read_queries(bench.queries_test)
    qrels = read_qrels(bench.annotations)
    rng = np.random.default_rng(3)
    qv = _unit(rng.standard_normal((4, 32))).astype(np.float32)
    sim = simulate_feedback(store, qv, queries, qrels, budget=30, batch=7)
    all_vecs = store.rows(np.arange(len(store)))
    ids = store.ids
    for i, qid in enumerate(queries["query_id"]):
        rel = qrels[int(qid)]
        # Static: the brute-force order.
        s = all_vecs @ qv[i]
        order = ids[np.lexsort((ids, -s))][:30]
        assert sim.static_ids[i].tolist() == order.tolist()
        # Feedback: every image shown once, labels read from the annotations, and each batch
        # is the brute-force top of the not-yet-shown images under the vector of the marks.
        shown = sim.feedback_ids[i].tolist()
        assert len(set(shown)) == 30
        np.testing.assert_array_equal(sim.feedback[i], np.cumsum([x in rel for x in shown]))
        for start in range(7, 30, 7):
            seen = shown[:start]
            vecs = store.rows(store.row_of(np.asarray(seen)))
            lab = np.array([x in rel for x in seen])
            w = feedback_vector(qv[i], vecs[lab], vecs[~lab])
            s = all_vecs @ w
            rest = [int(x) for x in ids[np.lexsort((ids, -s))] if int(x) not in set(seen)]
            assert shown[start : start + 7] == rest[: len(shown[start : start + 7])]
    summary = sim.summary(None, checkpoints=(10, 30))
    assert summary["inspected"].tolist() == [10, 30]
    np.testing.assert_allclose(summary["static"], sim.static[:, [9, 29]].mean(0))


def test_simulation_is_reproducible_and_saves(tmp_path: Path) -> None:
    kw = {"budget": 20, "batch": 10}
    a = simulate_synthetic(tmp_path / "b", text_noise=0.06, seed=5, **kw)
    b = simulate_synthetic(tmp_path / "b", text_noise=0.06, seed=5, **kw)
    np.testing.assert_array_equal(a.feedback_ids, b.feedback_ids)
    np.testing.assert_array_equal(a.static, b.static)
    out = a.save(tmp_path / "sim")
    assert {p.name for p in out.iterdir()} == {
        "curves.parquet",
        "summary.csv",
        "config.json",
        "curve.png",
    }
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["group"]) >= {"all", "Appearance", "Behavior"}
    res = CliRunner().invoke(
        cli_app,
        ["simulate", "feedback", "--synthetic", str(tmp_path / "b"), "--budget", "20"],
    )
    assert res.exit_code == 0, res.output
    assert "feedback" in res.output


# -- the verify page's API -----------------------------------------------------------------------


def test_page_api_learns_from_marks(coll) -> None:
    from fastapi.testclient import TestClient

    from inquire.testing.web_client import page_client
    from inquire.web.verify import make_app

    c, photos = coll
    client = page_client(make_app())
    r = client.post("/verify/api/c/birds/searches", json={"text": "red", "who": "ana"})
    assert r.status_code == 200, r.text
    sid = r.json()["search_id"]
    base = f"/verify/api/c/birds/searches/{sid}"
    page = client.post(f"{base}/results", json={"offset": 0, "limit": 20}).json()
    assert page["round"] == 0 and {it["round"] for it in page["results"]} == {0}
    marked = set()
    for it in page["results"][:8]:
        photo = photos[str((c.images_root / it["path"]).resolve())]
        mark = "relevant" if photo.colour == "red" else "not_relevant"
        body = {"image_id": it["image_id"], "who": "ana", "mark": mark}
        assert client.put(f"{base}/marks", json=body).status_code == 200
        marked.add(it["image_id"])
    r = client.post(f"{base}/learn", json={"shown": 10, "model": "logistic", "depth": 12})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["round"] == 1 and got["after_rank"] == 10 and got["model"] == "logistic"
    assert [it["rank"] for it in got["results"]] == list(range(11, 23))
    assert {it["round"] for it in got["results"]} == {1}
    assert not ({it["image_id"] for it in got["results"]} & marked)
    # The page shows which ranking it is, and loading more goes on with it.
    again = client.get(f"{base}/results?offset=0&limit=50").json()
    assert again["round"] == 1 and again["round_model"] == "logistic"
    more = client.post(f"{base}/results", json={"offset": 22, "limit": 5}).json()
    assert {it["round"] for it in more["results"]} == {1}
    # A foreign page cannot start a round; bad bodies are 422, not 500.
    plain = TestClient(make_app(), base_url="http://127.0.0.1")
    assert plain.post(f"{base}/learn", json={}).status_code == 403
    for body in ({"model": "svm"}, {"shown": 10**30}, {"shown": 1.5}, {"depth": 0}):
        assert client.post(f"{base}/learn", json=body).status_code == 422, body


def test_simulate_cli_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli_app, ["simulate", "feedback"])
    assert res.exit_code == 2 and "either --synthetic DIR or --embeddings DIR" in res.output
    res = runner.invoke(cli_app, ["simulate", "feedback", "--embeddings", str(tmp_path)])
    assert res.exit_code == 2 and "--embeddings needs --model" in res.output
    (tmp_path / "file").write_text("x")
    args = ["simulate", "feedback", "--synthetic", str(tmp_path / "b"), "--out"]
    res = runner.invoke(cli_app, [*args, str(tmp_path / "file")])
    assert res.exit_code == 2 and "is a file" in res.output
    assert not (tmp_path / "b").exists()  # refused before any work
    res = runner.invoke(
        cli_app, ["simulate", "feedback", "--synthetic", str(tmp_path / "b"), "--budget", "0"]
    )
    assert res.exit_code == 2 and "budget and batch must be >= 1" in res.output
    assert not (tmp_path / "b").exists()


def test_run_simulation_is_the_command_in_one_call(tmp_path: Path) -> None:
    from inquire.eval.feedback import run_simulation

    with pytest.raises(InputError, match="either --synthetic"):
        run_simulation(tmp_path / "b", tmp_path / "emb")
    with pytest.raises(InputError, match="needs --model"):
        run_simulation(embeddings=tmp_path / "emb")
    with pytest.raises(InputError, match="budget and batch"):
        run_simulation(tmp_path / "b", batch=0)
    with pytest.raises(UnknownNameError, match="feedback model"):
        run_simulation(tmp_path / "b", model="rochio")
    assert not (tmp_path / "b").exists()  # refused before any work
    sim, summary = run_simulation(tmp_path / "b", budget=20, model="logistic", out=tmp_path / "o")
    want = simulate_synthetic(tmp_path / "b", budget=20, batch=10, model="logistic")
    np.testing.assert_array_equal(sim.feedback_ids, want.feedback_ids)
    pd.testing.assert_frame_equal(summary, want.summary("supercategory"))
    assert (tmp_path / "o" / "curves.parquet").is_file() and sim.config["model"] == "logistic"
