"""A generated collection with realistic structure, for the scale tests and benchmark.

Embeddings are a mixture of ``clusters`` anisotropic Gaussian clusters on the unit sphere
(as photos of one species cluster in CLIP space, stretched along a few directions: pose,
background, light):

- cluster ``j`` has a random unit centre ``c_j``, a size drawn from a log-normal
  (``sigma=1``: a few large, many small, as iNaturalist's taxa), and ``rank`` random
  directions ``U_j`` with scales ``spread * 2**(-i/2)`` (``i = 0..rank-1``);
- a row is ``c_j + U_j z + noise * e`` (``z``, ``e`` standard normal), L2-normalised;
- each cluster is ``taxa_per_cluster`` taxa, so a taxon filter selects rows of one region of
  the space, while a date window (uniform over ``years`` years) selects rows everywhere;
- coordinates: each cluster has a home point; rows scatter 5 degrees around it.

Queries are cluster centres plus their own anisotropic noise, normalised: near the data, not
in it (text queries sit beside the photos they describe).

Rows are written in chunks straight to an embedding folder (float16 shards), never all in
memory; every chunk is generated from its own seed, so any chunk can be recreated alone.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from inquire.embed.folder import write_shard

DAYS0 = 16071  # 2014-01-01 in days since 1970-01-01


@dataclass(frozen=True)
class ClusterSpec:
    """The mixture (see the module docstring for what each number does)."""

    d: int = 512
    clusters: int = 2000
    rank: int = 16
    spread: float = 0.35
    noise: float = 0.025
    taxa_per_cluster: int = 4
    years: int = 10
    seed: int = 0

    def model(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(centres (C, d), directions (C, rank, d) float32, weights (C,), homes (C, 2))``."""
        return _model(self)


def _mix(c: np.ndarray, u: np.ndarray, cl: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``c[cl] + z @ u[cl]`` cluster by cluster (never a ``(n, rank, d)`` temporary)."""
    x = c[cl].copy()
    order = np.argsort(cl, kind="stable")
    bounds = np.flatnonzero(np.diff(cl[order])) + 1
    for group in np.split(order, bounds):
        if len(group):
            x[group] += z[group] @ u[cl[group[0]]]
    return x


@functools.lru_cache(maxsize=4)
def _model(spec: ClusterSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(spec.seed)
    c = rng.standard_normal((spec.clusters, spec.d)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    u = rng.standard_normal((spec.clusters, spec.rank, spec.d)).astype(np.float32)
    u /= np.linalg.norm(u, axis=2, keepdims=True)
    scales = spec.spread * 2.0 ** (-np.arange(spec.rank) / 2.0)
    u *= scales[None, :, None].astype(np.float32)
    w = rng.lognormal(0.0, 1.0, spec.clusters)
    w /= w.sum()
    homes = np.column_stack(
        [rng.uniform(-60, 70, spec.clusters), rng.uniform(-180, 180, spec.clusters)]
    )
    return c, u, w, homes


def generate_chunk(spec: ClusterSpec, chunk: int, n: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Chunk ``chunk`` of ``n`` rows: ``(vectors (n, d) float32 unit rows, metadata)``.

    Metadata columns: ``cluster``, ``taxon`` (int), ``days`` (days since 1970), ``lat``,
    ``lon``."""
    c, u, w, homes = spec.model()
    rng = np.random.default_rng([spec.seed, chunk])
    cl = rng.choice(spec.clusters, size=n, p=w)
    z = rng.standard_normal((n, spec.rank)).astype(np.float32)
    x = _mix(c, u, cl, z)
    x += spec.noise * rng.standard_normal((n, spec.d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    meta = pd.DataFrame(
        {
            "cluster": cl.astype(np.int32),
            "taxon": (cl * spec.taxa_per_cluster + rng.integers(0, spec.taxa_per_cluster, n)),
            "days": (DAYS0 + rng.integers(0, 365 * spec.years, n)).astype(np.int32),
            "lat": (homes[cl, 0] + rng.normal(0, 5, n)).astype(np.float32),
            "lon": (homes[cl, 1] + rng.normal(0, 5, n)).astype(np.float32),
        }
    )
    return x.astype(np.float32), meta


def write_clustered(
    root: str | os.PathLike[str],
    n: int,
    spec: ClusterSpec | None = None,
    shard_rows: int = 100_000,
    first_shard: int = 0,
    first_id: int = 0,
) -> pd.DataFrame:
    """Write ``n`` rows as float16 shards of ``shard_rows`` rows into the embedding folder
    ``root`` (shards ``first_shard..``, image ids ``first_id..``); returns the metadata of all
    rows (``image_id`` + :func:`generate_chunk`'s columns), row-aligned with the store."""
    spec = spec or ClusterSpec()
    frames = []
    for s, lo in enumerate(range(0, n, shard_rows)):
        m = min(shard_rows, n - lo)
        x, meta = generate_chunk(spec, first_shard + s, m)
        ids = np.arange(first_id + lo, first_id + lo + m, dtype=np.int64)
        write_shard(Path(root), first_shard + s, x, [f"gen/{i}" for i in ids], ids)
        meta.insert(0, "image_id", ids)
        frames.append(meta)
    return pd.concat(frames, ignore_index=True)


def queries(spec: ClusterSpec, nq: int, seed: int = 1, offset: float = 1.0) -> np.ndarray:
    """``(nq, d) float32`` unit queries: a centre (drawn by cluster weight) plus ``offset``
    times that cluster's own spread and noise, normalised."""
    c, u, w, _ = spec.model()
    rng = np.random.default_rng([spec.seed, 10_000 + seed])
    cl = rng.choice(spec.clusters, size=nq, p=w)
    z = offset * rng.standard_normal((nq, spec.rank)).astype(np.float32)
    q = _mix(c, u, cl, z)
    q += offset * spec.noise * rng.standard_normal((nq, spec.d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.astype(np.float32)


def selectivity_masks(meta: pd.DataFrame, seed: int = 0) -> dict[str, np.ndarray]:
    """Filters of about 100%, 1%, 0.1% and 0.01% of the rows, as ``(N,) bool`` masks.

    ``100%``: every row; ``1%``: a date window (rows everywhere in the space); ``0.1%``: the
    taxa of a few clusters (a region of the space); ``0.01%``: a date window within a region
    of the map (a box around one cluster's home), rows of one place in one season."""
    n = len(meta)
    days = meta["days"].to_numpy()
    span = int(days.max() - days.min() + 1) if n else 1
    start = int(days.min()) if n else 0
    out = {"100%": np.ones(n, bool)}
    width = max(1, round(span * 0.01))
    out["1%"] = (days >= start + span // 3) & (days < start + span // 3 + width)
    rng = np.random.default_rng(seed)
    counts = meta["taxon"].value_counts()
    order = rng.permutation(counts.index.to_numpy())
    chosen, total = [], 0
    for t in order:
        if total >= 0.001 * n:
            break
        if total + counts[t] <= 0.0015 * n:
            chosen.append(t)
            total += int(counts[t])
    out["0.1%"] = meta["taxon"].isin(chosen).to_numpy()
    lat, lon = meta["lat"].to_numpy(), meta["lon"].to_numpy()
    box = (np.abs(lat - float(np.median(lat[:1000]))) < 40) & (np.abs(lon) < 90)
    inside = np.flatnonzero(box)
    want = max(1, round(0.0001 * n))
    if len(inside):
        d_in = np.sort(days[inside])
        hi = d_in[min(len(d_in) - 1, want - 1)]
        out["0.01%"] = box & (days <= hi)
    else:
        out["0.01%"] = np.zeros(n, bool)
    return out
