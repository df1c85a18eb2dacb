"""Simulated verification: how many positives a person finds per image inspected, with and
without relevance feedback.

A simulated verifier works through a ranked list in batches (default 10 images): it marks each
image of the batch from the benchmark's labels (relevant if the annotations say so, otherwise
not relevant), then, with feedback, the system re-ranks everything not yet inspected with a
query vector learnt from all marks so far (:func:`inquire.collection.feedback.feedback_vector`)
and shows the next batch. The static ranking is the first search's order, never changed.

For query ``q`` the curve ``found_q(n)`` is the number of relevant images among the first
``n`` inspected. The summary reports, per group of queries (e.g. supercategory), the mean of
``found_q(n)`` at ``n`` in (25, 50, 100, 200) for both strategies, with percentile bootstrap
intervals over queries (:func:`inquire.stats.bootstrap_ci`), and the ratio of the two
means.

Every round is one exact top-k search for all queries together over the embedding store
(:func:`inquire.index.exact.search`), asking for ``inspected + batch`` results and keeping the
first ``batch`` not yet inspected: the top of the not-inspected rows, exactly.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inquire.collection.feedback import DEFAULT_MODEL, FEEDBACK_MODELS, feedback_vector
from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError, UnknownNameError

log = logging.getLogger(__name__)

CHECKPOINTS = (25, 50, 100, 200)


@dataclass
class FeedbackSimulation:
    """Curves of one simulation.

    ``static`` / ``feedback``: ``(nq, budget) int64``, positives found after inspecting
    ``1..budget`` images; ``static_ids`` / ``feedback_ids``: ``(nq, budget) int64`` the
    image ids in the order they were inspected; ``n_rel``: ``(nq,) int64`` relevant images
    per query in the whole collection; ``queries``: the query table (``query_id`` first, in
    the curves' row order).
    """

    queries: pd.DataFrame
    static: np.ndarray
    feedback: np.ndarray
    n_rel: np.ndarray
    static_ids: np.ndarray
    feedback_ids: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def budget(self) -> int:
        return int(self.static.shape[1])

    def summary(
        self,
        by: str | None = "supercategory",
        checkpoints: Sequence[int] | None = None,
        n_resamples: int = 2000,
        seed: int = 0,
    ) -> pd.DataFrame:
        """One row per (group, inspected): mean positives found statically and with
        feedback, their 95% bootstrap intervals, and ``ratio`` = feedback / static means.

        ``by``: a column of ``queries`` (``None``: all queries as one group ``all``).
        ``checkpoints``: numbers of images inspected (default :data:`CHECKPOINTS` up to the
        budget, and the budget); those beyond the budget are left out.
        """
        from inquire.stats import bootstrap_ci

        if by is not None and by not in self.queries.columns:
            raise InputError(
                f"cannot group by {by!r}: the query table has columns {list(self.queries)}"
            )
        groups = [("all", np.arange(len(self.queries)))]
        if by is not None:
            keys = self.queries[by].astype(str).to_numpy()
            groups += [(g, np.flatnonzero(keys == g)) for g in sorted(set(keys))]
        if checkpoints is None:
            checkpoints = sorted({c for c in CHECKPOINTS if c <= self.budget} | {self.budget})
        rows = []
        for name, idx in groups:
            for n in checkpoints:
                if n > self.budget or len(idx) == 0:
                    continue
                both = np.stack([self.static[idx, n - 1], self.feedback[idx, n - 1]], axis=1)
                mean, lo, hi = bootstrap_ci(both.astype(np.float64), n_resamples, seed)
                rows.append(
                    {
                        "group": name,
                        "queries": len(idx),
                        "inspected": n,
                        "static": mean[0],
                        "static_lo": lo[0],
                        "static_hi": hi[0],
                        "feedback": mean[1],
                        "feedback_lo": lo[1],
                        "feedback_hi": hi[1],
                        "ratio": mean[1] / mean[0] if mean[0] > 0 else float("nan"),
                    }
                )
        return pd.DataFrame(rows)

    def plot(self, path: str | os.PathLike[str] | None = None) -> Any:
        """Mean positives found vs images inspected, both strategies, with 95% bootstrap
        bands; saved to ``path`` (PNG/SVG/PDF by suffix) when given. Returns the figure."""
        # A Figure of its own (no pyplot, no backend switch): the caller's matplotlib state
        # is left as it was.
        from matplotlib.figure import Figure

        from inquire.stats import bootstrap_means

        x = np.arange(1, self.budget + 1)
        fig = Figure(figsize=(6.4, 4.2))
        ax = fig.subplots()
        for label, curves, colour in (
            ("static ranking", self.static, "#7f7f7f"),
            (f"feedback ({self.config.get('model', DEFAULT_MODEL)})", self.feedback, "#1f77b4"),
        ):
            means = bootstrap_means(curves.astype(np.float64), 1000, 0)
            lo, hi = np.quantile(means, [0.025, 0.975], axis=0)
            ax.fill_between(x, lo, hi, color=colour, alpha=0.2, linewidth=0)
            ax.plot(x, curves.mean(axis=0), color=colour, label=label)
        ceiling = np.minimum(x[None, :], self.n_rel[:, None]).mean(axis=0)
        ax.plot(x, ceiling, color="#2ca02c", linestyle=":", label="every image relevant (ceiling)")
        ax.set_xlabel("images inspected")
        ax.set_ylabel("relevant images found (mean over queries)")
        ax.set_xlim(1, self.budget)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", frameon=False)
        title = self.config.get("title")
        if title:
            ax.set_title(str(title))
        fig.tight_layout()
        if path is not None:
            from inquire._io import atomic_path

            out = Path(path)
            with atomic_path(out) as tmp:
                fig.savefig(tmp, format=out.suffix.lstrip(".").lower() or "png", dpi=120)
        return fig

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write ``curves.parquet`` (per query and n), ``summary.csv``, ``config.json`` and
        ``curve.png`` to ``out_dir``; return it."""
        from inquire._io import atomic_open, atomic_path

        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {str(out)!r} is a file; give a folder name")
        out.mkdir(parents=True, exist_ok=True)
        nq, b = self.static.shape
        curves = pd.DataFrame(
            {
                "query_id": np.repeat(self.queries["query_id"].to_numpy(np.int64), b),
                "inspected": np.tile(np.arange(1, b + 1), nq),
                "static": self.static.ravel(),
                "feedback": self.feedback.ravel(),
            }
        )
        with atomic_path(out / "curves.parquet") as tmp:
            curves.to_parquet(tmp, index=False)
        by = "supercategory" if "supercategory" in self.queries.columns else None
        with atomic_open(out / "summary.csv", "w", encoding="utf-8", newline="") as fh:
            self.summary(by).to_csv(fh, index=False)
        with atomic_open(out / "config.json", "w", encoding="utf-8") as fh:
            json.dump(self.config, fh, indent=2, sort_keys=True, default=str)
        self.plot(out / "curve.png")
        return out


def _check_settings(budget: int, batch: int, model: str) -> None:
    """The simulation settings every entry point checks before any work."""
    if model not in FEEDBACK_MODELS:
        raise UnknownNameError("feedback model", model, FEEDBACK_MODELS)
    if budget < 1 or batch < 1:
        raise InputError(f"budget and batch must be >= 1, got {budget} and {batch}")


def simulate_feedback(
    store: EmbeddingStore,
    query_vectors: np.ndarray,
    queries: pd.DataFrame,
    qrels: Mapping[int, frozenset[int]],
    budget: int = 200,
    batch: int = 10,
    model: str = DEFAULT_MODEL,
    config: dict[str, Any] | None = None,
    progress: bool = True,
) -> FeedbackSimulation:
    """Simulate a verifier on every query of ``queries`` (see the module docstring).

    ``store``: the collection's embeddings (image ids in ``store.ids``);
    ``query_vectors``: ``(nq, d) float32`` first-search query vectors, one per row of
    ``queries`` (which needs a ``query_id`` column); ``qrels``: relevant ids per query, in the
    id space of ``store.ids``.
    ``budget``: images inspected per query; ``batch``: images marked between re-rankings.
    Deterministic: no randomness is involved. ``progress``: a bar over the re-ranking
    rounds (each one exact search over the whole store).
    """
    _check_settings(budget, batch, model)
    if budget > len(store):
        raise InputError(
            f"budget {budget} is larger than the collection ({len(store)} images); lower --budget"
        )
    from inquire.index.exact import ExactIndex

    q = np.asarray(query_vectors, np.float32)
    qids = queries["query_id"].to_numpy(np.int64)
    if q.shape[0] != len(qids):
        raise InputError(f"{q.shape[0]} query vectors for {len(qids)} queries")
    missing = [int(x) for x in qids if int(x) not in qrels]
    if missing:
        raise InputError(
            f"queries {missing[:5]} have no relevance labels; use the annotations of this query set"
        )
    relevant = [np.fromiter(qrels[int(x)], np.int64) for x in qids]
    n_rel = np.array([len(r) for r in relevant], np.int64)

    exact = ExactIndex(store)
    _, static_ids = exact.search(q, budget)
    static = np.stack([np.cumsum(np.isin(static_ids[i], relevant[i])) for i in range(len(qids))])

    nq = len(qids)
    # The first batch is the static ranking's (the top of a search is a prefix of a deeper one).
    first = min(batch, budget)
    shown = [[int(x) for x in static_ids[i, :first]] for i in range(nq)]
    labels = [[bool(x) for x in np.isin(shown[i], relevant[i])] for i in range(nq)]
    w = q.copy()
    from inquire._progress import rich_progress

    rounds = -(-(budget - first) // batch)  # ceil
    with rich_progress(f"feedback rounds ({nq} queries)", disable=not progress) as bar:
        task = bar.add_task("rounds", total=rounds, rate="")
        while len(shown[0]) < budget:
            for i in range(nq):
                lab = np.asarray(labels[i], bool)
                vecs = store.rows(store.row_of(np.asarray(shown[i], np.int64)))
                w[i] = feedback_vector(q[i], vecs[lab], vecs[~lab], model)
            take = min(batch, budget - len(shown[0]))
            _, ids = exact.search(w, len(shown[0]) + take)
            for i in range(nq):
                seen = set(shown[i])
                new = [int(x) for x in ids[i] if x >= 0 and int(x) not in seen][:take]
                shown[i].extend(new)
                labels[i].extend(bool(x) for x in np.isin(new, relevant[i]))
            bar.advance(task)
    feedback = np.stack([np.cumsum(np.asarray(labels[i], np.int64)) for i in range(nq)])
    cfg = {"budget": budget, "batch": batch, "model": model, **(config or {})}
    return FeedbackSimulation(
        queries.reset_index(drop=True),
        static,
        feedback,
        n_rel,
        np.asarray(static_ids, np.int64),
        np.asarray(shown, np.int64),
        cfg,
    )


def _noisy(vectors: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """``vectors`` plus Gaussian noise of standard deviation ``noise`` per component,
    re-normalised (the demo's "noisy text model")."""
    v = np.asarray(vectors, np.float64)
    if noise > 0:
        v = v + np.random.default_rng(seed + 1).normal(0.0, noise, size=v.shape)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def simulate_synthetic(
    root: str | os.PathLike[str],
    split: str = "test",
    text_noise: float = 0.06,
    seed: int = 0,
    **kwargs: Any,
) -> FeedbackSimulation:
    """:func:`simulate_feedback` on the synthetic benchmark in ``root`` (generated there with
    ``seed`` when missing), with its text embeddings made noisier by ``text_noise`` (the
    demo's noisy text model; 0 keeps them). ``kwargs`` go to :func:`simulate_feedback`."""
    import pyarrow.parquet as pq

    from inquire.data.qrels import read_qrels
    from inquire.data.queries import read_queries
    from inquire.data.synthetic import find_synthetic_benchmark, make_synthetic_benchmark

    if split not in ("val", "test"):
        raise InputError(f"split must be val or test, got {split!r}")
    bench = find_synthetic_benchmark(root) or make_synthetic_benchmark(root, seed=seed)
    queries = read_queries(bench.queries_val if split == "val" else bench.queries_test)
    table = pq.read_table(bench.text_embeddings).to_pandas().set_index("query_text")
    vectors = np.stack(table.loc[queries["query_text"], "embedding"].to_numpy())
    config = {
        "data": "synthetic",
        "root": str(root),
        "split": split,
        "text_noise": text_noise,
        "seed": seed,
        "title": "SYNTHETIC benchmark: positives found per image inspected",
        **kwargs.pop("config", {}),
    }
    return simulate_feedback(
        EmbeddingStore(bench.embeddings),
        _noisy(vectors, text_noise, seed),
        queries,
        read_qrels(bench.annotations),
        config=config,
        **kwargs,
    )


def simulate_benchmark(
    embeddings: str | os.PathLike[str],
    model_id: str,
    split: str = "test",
    **kwargs: Any,
) -> FeedbackSimulation:
    """:func:`simulate_feedback` on INQUIRE-Fullrank: the queries of ``split``, INQUIRE's
    annotations (downloaded and cached on first use), the embedding folder ``embeddings``
    and the text encoder ``model_id`` that made it. Annotated images that the folder does not
    hold are matched by path like :func:`inquire.eval.fullrank.evaluate_fullrank` does."""
    from inquire.data import load_qrels, load_queries
    from inquire.embed.models import load_encoder
    from inquire.eval.fullrank import check_dims, store_image_ids

    store = EmbeddingStore(embeddings)
    queries = load_queries(split)
    qrels: Mapping[int, frozenset[int]] = load_qrels()
    encoder = load_encoder(model_id)
    check_dims(encoder, store)
    # A store without image ids (INQUIRE's published embeddings carry paths): translate the
    # labels into the store's row ids through the same path join as the full-rank evaluation.
    image_ids = store_image_ids(store, qrels.paths)  # type: ignore[attr-defined]
    if image_ids is not None:
        store_ids = store.ids
        qrels = {
            int(q): frozenset(store_ids[np.isin(image_ids, np.fromiter(r, np.int64))].tolist())
            for q, r in qrels.items()
        }
    vectors = encoder.encode_text(queries["query_text"].tolist())
    config = {
        "data": "inquire-fullrank",
        "embeddings": str(embeddings),
        "model": model_id,
        "split": split,
        "title": f"INQUIRE-Fullrank {split}, {model_id}: positives found per image inspected",
        **kwargs.pop("config", {}),
    }
    return simulate_feedback(store, vectors, queries, qrels, config=config, **kwargs)


def run_simulation(
    synthetic: str | os.PathLike[str] | None = None,
    embeddings: str | os.PathLike[str] | None = None,
    model_id: str | None = None,
    split: str = "test",
    budget: int = 200,
    batch: int = 10,
    model: str = "",
    text_noise: float = 0.06,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
) -> tuple[FeedbackSimulation, pd.DataFrame]:
    """``inquire simulate feedback``: the simulation on the synthetic benchmark in
    ``synthetic`` (:func:`simulate_synthetic`, with ``text_noise`` and ``seed``) or on
    INQUIRE-Fullrank with the embedding folder ``embeddings`` made by ``model_id``
    (:func:`simulate_benchmark`), one of the two; ``model``: the feedback model (default
    rocchio). Every argument is checked before a benchmark is generated or an encoder
    loaded. Writes the folder ``out`` when given (:meth:`FeedbackSimulation.save`).
    Returns the simulation and its summary (per supercategory when the queries have one).
    """
    if (synthetic is None) == (embeddings is None):
        raise InputError("give either --synthetic DIR or --embeddings DIR --model ID")
    model = model or DEFAULT_MODEL
    _check_settings(budget, batch, model)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise InputError(f"--out {str(out)!r} is a file; give a folder name")
    kwargs: dict[str, Any] = {"budget": budget, "batch": batch, "model": model}
    if synthetic is not None:
        sim = simulate_synthetic(synthetic, split, text_noise, seed, **kwargs)
    else:
        if not model_id:
            raise InputError("--embeddings needs --model, the embedding model that made it")
        sim = simulate_benchmark(embeddings, model_id, split, **kwargs)  # type: ignore[arg-type]
    summary = sim.summary("supercategory" if "supercategory" in sim.queries else None)
    if out is not None:
        sim.save(out)
    return sim, summary
