"""Embedding stores for search tests, written in the clip-retrieval layout.

``write_store`` lays out any ``(N, d)`` matrix as ``img_emb/img_emb_{i}.npy`` +
``metadata/metadata_{i}.parquet`` (through :func:`inquire.embed.folder.write_shard`, the one
writer of the layout) with chosen shard sizes, ids and paths, including the layout of
INQUIRE's published embeddings (``image_path`` without ``.jpg``, no ``image_id``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inquire.embed.folder import write_shard


def write_store(
    root: str | os.PathLike[str],
    vectors: np.ndarray,
    shard_sizes: Sequence[int] | None = None,
    ids: np.ndarray | None = None,
    paths: Sequence[str] | None = None,
    with_image_id: bool = True,
    dtype: type = np.float16,
) -> Path:
    """Write ``vectors (N, d)`` as an embedding folder at ``root``; return ``root``.

    ``shard_sizes`` (default one shard) must sum to N. ``ids`` default ``0..N-1``; ``paths``
    default ``train/img_{id}`` (no ``.jpg``, as INQUIRE's). ``with_image_id=False`` leaves the
    ``image_id`` column out, as in INQUIRE's published embeddings.
    """
    root = Path(root)
    n = len(vectors)
    sizes = list(shard_sizes) if shard_sizes is not None else [n]
    if sum(sizes) != n:
        raise ValueError(f"shard sizes {sizes} do not sum to {n} rows")
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    path_list = list(paths) if paths is not None else [f"train/img_{i}" for i in ids]
    lo = 0
    for s, size in enumerate(sizes):
        hi = lo + size
        shard_ids = ids[lo:hi] if with_image_id else None
        write_shard(root, s, np.asarray(vectors[lo:hi]), path_list[lo:hi], shard_ids, dtype)
        lo = hi
    return root


def random_unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    """``(n, d) float32`` random rows of unit L2 norm."""
    x = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def small_integer_vectors(n: int, d: int, seed: int = 0, levels: int = 3) -> np.ndarray:
    """``(n, d) float32`` with entries in ``{-levels..levels} / 8``: exact in float16, and
    their inner products with small-integer queries are exact in float32 whatever the
    summation order, so many exact ties occur and results are reproducible bit for bit."""
    rng = np.random.default_rng(seed)
    return rng.integers(-levels, levels + 1, size=(n, d)).astype(np.float32) / 8.0


def rss_file_bytes() -> int | None:
    """This process's resident file pages (bytes: ``RssFile`` of /proc/self/status, pages
    of memory-mapped files such as a store's shards), or None where /proc does not say."""
    import re
    from pathlib import Path

    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(r"^RssFile:\s+(\d+) kB", text, re.MULTILINE)
    return None if found is None else int(found.group(1)) * 1024


def large_store(path: Path, n: int, d: int, sizes: list[int], seed: int = 0) -> Path:
    """A float16 store of ``n`` random rows of width ``d`` (norms ~``sqrt(d) / 16``) in shards
    of ``sizes`` rows, written 20,000 rows at a time (no float32 copy of it all at once)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), np.float16)
    for a in range(0, n, 20_000):
        b = min(a + 20_000, n)
        x[a:b] = rng.standard_normal((b - a, d), dtype=np.float32) / 16
    return write_store(path, x, sizes)
