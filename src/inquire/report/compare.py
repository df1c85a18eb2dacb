"""Paired comparison of runs over the same queries.

For every pair of runs and every metric: the mean difference, per-query wins / losses /
ties, a paired randomization (sign-flip) test and a paired t-test, with Holm's correction
across all pairs of a metric, plus the queries on which the two runs differ most.

Query sets: by default runs must cover exactly the same queries (a paired test over
different queries is meaningless) and a mismatch is an error naming the differing ids.
``on_mismatch="intersect"`` compares over the shared queries instead, with a logged warning
and a note in the result.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inquire.errors import InputError, UnknownNameError
from inquire.eval.evaluate import GROUP_COLUMNS, EvalResult
from inquire.metrics import scale
from inquire.report.build import check_same_k, common_metrics, load_results, unique_names
from inquire.stats import (
    EXACT_MAX_N,
    holm,
    paired_permutation_test,
    paired_t_test,
    wins_losses_ties,
)

log = logging.getLogger(__name__)

MISMATCH_POLICIES = ("error", "intersect")


@dataclass
class Comparison:
    """The outcome of :func:`compare`.

    ``pairs``: one row per (metric, run_a, run_b) with ``n_queries, mean_a, mean_b, diff``
    (table scale, ``diff = mean_a - mean_b``), ``wins, losses, ties`` (queries where a is
    better / worse / equal), ``perm_p`` (+ ``perm_exact``, ``perm_resamples``), ``t``,
    ``t_p`` and the Holm-adjusted ``perm_p_holm``, ``t_p_holm``.
    ``per_query``: ``query_id``, group columns, ``query_text`` when known, then one column
    per (run, metric) named ``"{run}:{metric}"`` (fractions).
    ``top``: for each ``(metric, run_a, run_b)`` the ``top_n`` queries with the largest
    ``|a - b|``.
    """

    runs: tuple[str, ...]
    metrics: tuple[str, ...]
    k: int
    pairs: pd.DataFrame
    per_query: pd.DataFrame
    top: dict[tuple[str, str, str], pd.DataFrame]
    n_resamples: int
    seed: int
    notes: list[str] = field(default_factory=list)

    @property
    def method_description(self) -> str:
        """What the p-values are."""
        return (
            "Two-sided paired tests over queries: randomization test by sign-flipping the "
            f"per-query differences (exact enumeration up to {EXACT_MAX_N} non-tied queries, else "
            f"{self.n_resamples:,} seeded Monte Carlo sign patterns, seed {self.seed}) and "
            "paired t-test; p-values Holm-adjusted across all pairs of runs per metric."
        )

    def as_dict(self) -> dict[str, Any]:
        """Pairs, top differences and settings as JSON-ready data."""
        return {
            "runs": list(self.runs),
            "metrics": list(self.metrics),
            "k": int(self.k),
            "n_resamples": int(self.n_resamples),
            "seed": int(self.seed),
            "method": self.method_description,
            "notes": list(self.notes),
            "pairs": json.loads(self.pairs.to_json(orient="records")),
            "top": [
                {"metric": m, "run_a": a, "run_b": b}
                | {"queries": json.loads(df.to_json(orient="records"))}
                for (m, a, b), df in self.top.items()
            ],
        }

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`as_dict` as indented JSON (atomically)."""
        from inquire._io import write_json

        write_json(Path(path), self.as_dict())


def query_texts(queries: pd.DataFrame | str | os.PathLike[str] | None) -> dict[int, str]:
    """``query_id -> query_text`` from a query table or an INQUIRE query CSV (or ``{}``)."""
    if queries is None:
        return {}
    if not isinstance(queries, pd.DataFrame):
        from inquire.data.queries import read_queries

        queries = read_queries(queries)
    if "query_text" not in queries.columns or "query_id" not in queries.columns:
        raise InputError("the query table needs columns query_id and query_text")
    return {int(q): str(t) for q, t in zip(queries["query_id"], queries["query_text"], strict=True)}


def _texts_from_config(results: Sequence[EvalResult]) -> dict[int, str]:
    """Query texts from a query CSV named in a result's config, when that file exists."""
    for r in results:
        path = r.config.get("queries")
        if isinstance(path, str) and Path(path).is_file():
            try:
                return query_texts(path)
            except (InputError, OSError, ValueError) as exc:
                log.debug("could not read query texts from %s: %s", path, exc)
    return {}


def _aligned(
    results: Sequence[EvalResult], names: Sequence[str], on_mismatch: str, notes: list[str]
) -> np.ndarray:
    """The query ids every run is compared on, sorted."""
    sets = [set(r.per_query["query_id"].astype(np.int64).tolist()) for r in results]
    for name, r in zip(names, results, strict=True):
        if r.per_query["query_id"].duplicated().any():
            raise InputError(f"result {name!r} lists a query more than once in per_query.csv")
    shared = set.intersection(*sets)
    if all(s == shared for s in sets):
        return np.array(sorted(shared), dtype=np.int64)
    diffs = [
        f"{n!r} has {len(s - shared)} extra, e.g. {sorted(s - shared)[:3]}"
        for n, s in zip(names, sets, strict=True)
        if s - shared
    ]
    if on_mismatch == "error":
        raise InputError(
            "the runs were evaluated on different queries (" + "; ".join(diffs) + "); a paired "
            "comparison needs the same queries. Re-evaluate on one query set, or pass "
            "--intersect to compare on the shared queries only"
        )
    if not shared:
        raise InputError("the runs share no query; there is nothing to compare")
    msg = f"comparing on the {len(shared)} queries shared by all runs (" + "; ".join(diffs) + ")"
    log.warning(msg)
    notes.append(msg)
    return np.array(sorted(shared), dtype=np.int64)


def compare(
    results: Sequence[str | os.PathLike[str] | EvalResult],
    metrics: Sequence[str] | None = ("ap",),
    n_resamples: int = 10000,
    seed: int = 0,
    on_mismatch: str = "error",
    queries: pd.DataFrame | str | os.PathLike[str] | None = None,
    top_n: int = 5,
) -> Comparison:
    """Compare every pair of ``results`` (at least two) query by query.

    ``metrics``: which per-query metrics to test (default AP; ``None``: every metric all
    the runs have). ``n_resamples`` and ``seed``:
    Monte Carlo settings of the randomization test (used when more than 20 queries differ).
    ``on_mismatch``: ``error`` (default) or ``intersect`` when query sets differ.
    ``queries``: a query table or CSV giving query texts for the top-difference lists
    (default: the query CSV named in a result's config, when it exists).
    """
    res = load_results(results)
    if len(res) < 2:
        raise InputError(f"compare needs at least two runs, got {len(res)}")
    if on_mismatch not in MISMATCH_POLICIES:
        raise UnknownNameError("query-set policy", on_mismatch, MISMATCH_POLICIES)
    names = unique_names(res)
    k = check_same_k(res, names)
    notes: list[str] = []
    available = common_metrics(res, notes)
    if metrics is None:
        metrics = available
    for m in metrics:
        if m not in available:
            raise UnknownNameError("metric in these results", m, available)
    qids = _aligned(res, names, on_mismatch, notes)
    texts = query_texts(queries) if queries is not None else _texts_from_config(res)

    first = res[0].per_query.set_index("query_id").loc[qids]
    per_query = pd.DataFrame({"query_id": qids})
    for col in GROUP_COLUMNS:
        if col in first.columns:
            per_query[col] = first[col].to_numpy()
    if texts:
        per_query["query_text"] = [texts.get(int(q), "") for q in qids]
    for name, r in zip(names, res, strict=True):
        pq = r.per_query.set_index("query_id").loc[qids]
        for m in metrics:
            per_query[f"{name}:{m}"] = pq[m].to_numpy(np.float64)

    rows = []
    top: dict[tuple[str, str, str], pd.DataFrame] = {}
    for m in metrics:
        s = scale(m)
        for a, b in itertools.combinations(names, 2):
            va = per_query[f"{a}:{m}"].to_numpy()
            vb = per_query[f"{b}:{m}"].to_numpy()
            perm = paired_permutation_test(va, vb, n_resamples=n_resamples, seed=seed)
            tt = (
                paired_t_test(va, vb)
                if len(va) >= 2
                else None  # one query: no variance, the t-test is undefined
            )
            w, lo, ti = wins_losses_ties(va, vb)
            rows.append(
                {
                    "metric": m,
                    "run_a": a,
                    "run_b": b,
                    "n_queries": len(va),
                    "mean_a": va.mean() * s,
                    "mean_b": vb.mean() * s,
                    "diff": (va.mean() - vb.mean()) * s,
                    "wins": w,
                    "losses": lo,
                    "ties": ti,
                    "perm_p": perm.p_value,
                    "perm_exact": perm.exact,
                    "perm_resamples": perm.n_resamples,
                    "t": tt.statistic if tt else np.nan,
                    "t_p": tt.p_value if tt else np.nan,
                }
            )
            d = va - vb
            order = np.argsort(-np.abs(d), kind="stable")[:top_n]
            cols = ["query_id", *[c for c in ("query_text", *GROUP_COLUMNS) if c in per_query]]
            t = per_query.iloc[order][cols].reset_index(drop=True)
            t[a] = va[order] * s
            t[b] = vb[order] * s
            t["diff"] = d[order] * s
            top[(m, a, b)] = t
    pairs = pd.DataFrame(rows)
    pairs["perm_p_holm"] = np.nan
    pairs["t_p_holm"] = np.nan
    for m in metrics:
        sel = pairs["metric"] == m
        pairs.loc[sel, "perm_p_holm"] = holm(pairs.loc[sel, "perm_p"].to_numpy())
        tp = pairs.loc[sel, "t_p"].to_numpy()
        if not np.isnan(tp).any():
            pairs.loc[sel, "t_p_holm"] = holm(tp)
    return Comparison(
        runs=tuple(names),
        metrics=tuple(metrics),
        k=k,
        pairs=pairs,
        per_query=per_query,
        top=top,
        n_resamples=n_resamples,
        seed=seed,
        notes=notes,
    )
