"""Filtered search on a synthetic 1M-image collection: median latency per filter type.

Builds (once, cached under --out) a collection of N random L2-normalised float16 vectors of
dimension D in the clip-retrieval layout, with a database of dates (2015-2024), taxa (2,000
species in 40 classes) and coordinates, then times ``CollectionSearcher.search`` (mask built
from the filters inside the timing) on the resident index, side by side with the obvious method
(convert the whole matrix to float32, score, mask, full argsort) on the same queries; the
two must return the same ids. Then builds the collection's faiss index (``--factory``, through
``inquire.collection.ann.ensure_index``, cached) and times the faiss path (filters as an
``IDSelectorBitmap`` inside the search) at several ``--nprobe`` values on the same queries,
with its recall@k against the exact results.

    python benchmarks/collection_search.py [--n 1000000] [--dim 512] [--repeats 7]
        [--factory IVF1024,Flat] [--nprobe 16,64,256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np


def build(root: Path, n: int, dim: int, seed: int = 0) -> None:
    from inquire.collection.store import Collection, transaction
    from inquire.embed.folder import write_shard

    folder = root / "synthetic1m"
    if (folder / "manifest.json").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    coll = Collection(folder)
    rng = np.random.default_rng(seed)
    n_species, n_classes = 2000, 40
    species_class = rng.integers(n_classes, size=n_species)
    per_shard = 100_000
    t0 = time.perf_counter()
    with transaction(coll.conn) as conn:
        coll.set_meta(
            conn,
            model_id="synthetic",
            revision="0",
            dim=dim,
            images_root=str(folder),
            metadata="",
            generation=1,
        )
    for shard, lo in enumerate(range(0, n, per_shard)):
        m = min(per_shard, n - lo)
        vec = rng.standard_normal((m, dim), dtype=np.float32)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        ids = np.arange(lo, lo + m)
        paths = [f"synthetic/{i:07d}.jpg" for i in ids]
        write_shard(coll.emb_dir, shard, vec, paths, ids)
        sp = rng.zipf(1.3, size=m) % n_species
        day0 = np.datetime64("2015-01-01")
        days = rng.integers(0, 3650, size=m)
        dates = np.datetime_as_string(day0 + days.astype("timedelta64[D]"))
        lat = rng.uniform(-60, 75, size=m)
        lon = rng.uniform(-180, 180, size=m)
        rows = [
            (
                int(i),
                p,
                0,
                0,
                "",
                "ok",
                shard,
                r,
                str(d),
                "exif",
                float(a),
                float(b),
                int(s),
                f"Species {s}",
                "Animalia",
                f"Class{species_class[s]}",
            )
            for r, (i, p, d, a, b, s) in enumerate(
                zip(ids, paths, dates, lat, lon, sp, strict=True)
            )
        ]
        with transaction(coll.conn) as conn:
            conn.executemany(
                "INSERT INTO images (image_id, path, size, mtime_ns, sha1, status, shard, row, "
                "date, date_source, lat, lon, taxon_id, taxon, kingdom, class) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        print(f"  shard {shard}: {lo + m:,} rows ({time.perf_counter() - t0:.0f} s)", flush=True)
    coll.write_rows_snapshot()


def naive(index, q: np.ndarray, k: int, mask: np.ndarray) -> np.ndarray:
    """The obvious method: everything to float32, score, mask, sort all N scores."""
    full = np.concatenate([np.asarray(s, np.float32) for s in index.store.shards])
    s = full @ q
    s[~mask] = -np.inf
    order = np.lexsort((index.image_id, -s))[:k]
    return index.image_id[order[np.isfinite(s[order])]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=7, help="queries timed (at least 1)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/inquire-bench-collections"))
    ap.add_argument("--factory", default="IVF1024,Flat", help="faiss index ('' to skip)")
    ap.add_argument("--nprobe", default="16,64,256", help="comma-separated probe counts")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")

    from inquire.collection import open_collection, parse_filters
    from inquire.collection.search import CollectionSearcher

    root = args.out / f"n{args.n}-d{args.dim}"
    print(f"building {args.n:,} x {args.dim} float16 collection under {root} (cached) ...")
    build(root, args.n, args.dim)
    t0 = time.perf_counter()
    index = open_collection("synthetic1m", root).index()
    t_open = time.perf_counter() - t0
    size_gb = sum(os.path.getsize(p) for p in index.store.shard_paths) / 1e9
    print(
        f"collection: {len(index):,} images, {index.store.dim}-d float16, {size_gb:.2f} GB of "
        f"embeddings; opening the index took {t_open:.2f} s"
    )
    cases = {
        "no filter": parse_filters(),
        "taxon (1 class, ~2.5%)": parse_filters(["Class7"]),
        "taxon (1 species, rare)": parse_filters(["Species 300"]),
        "date range (3 months)": parse_filters([], "2020-03-01", "2020-05-31"),
        "date range (5 years)": parse_filters([], "2015-01-01", "2019-12-31"),
        "bbox (Europe)": parse_filters([], bbox="-10,35,30,60"),
        "taxon + date + bbox": parse_filters(
            ["Class3"], "2018-01-01", "2022-12-31", "-180,0,180,90"
        ),
    }
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((args.repeats, index.store.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    t0 = time.perf_counter()
    CollectionSearcher(index).search(queries[:1], args.k)
    print(f"first (cold) query, no filter: {time.perf_counter() - t0:.2f} s (page faults)")
    # A served collection stays resident: warm the page cache until a full pass is steady.
    warm = []
    for _ in range(12):
        t0 = time.perf_counter()
        CollectionSearcher(index).search(queries[:1], args.k)
        warm.append(time.perf_counter() - t0)
        if len(warm) >= 3 and max(warm[-2:]) < 1.3 * min(warm):
            break
    print(f"warm-up: {len(warm)} full passes, last {warm[-1]:.3f} s")
    results: dict[str, tuple[int, float, list[list[int]]]] = {}
    for label, f in cases.items():
        times, found = [], []
        for q in queries:
            t0 = time.perf_counter()
            _, ids = CollectionSearcher(index).search(q[None], args.k, f.mask(index))
            times.append(time.perf_counter() - t0)
            found.append(ids[0][ids[0] >= 0].tolist())
        results[label] = (int(f.mask(index).sum()), statistics.median(times), found)
    print(f"\nmedian latency over {args.repeats} queries, top-{args.k}, 1 query at a time")
    print(f"{'filter':28s} {'rows kept':>10s} {'exact (s)':>10s} {'naive (s)':>10s} {'ratio':>7s}")
    for label, f in cases.items():
        kept, t, found = results[label]
        naive_times = []
        for i in range(min(2, len(queries))):  # the slow reference, checked against ours
            t0 = time.perf_counter()
            ref = naive(index, queries[i], args.k, f.mask(index))
            naive_times.append(time.perf_counter() - t0)
            if found[i] != ref.tolist():
                raise SystemExit(f"MISMATCH for {label!r}: exact search != naive reference")
        tn = statistics.median(naive_times)
        print(f"{label:28s} {kept:10,d} {t:10.3f} {tn:10.3f} {tn / t:6.1f}x")
    dense_settings(index, queries)
    if args.factory:
        faiss_path(root, args, queries, cases, results)


def faiss_path(root: Path, args, queries: np.ndarray, cases: dict, results: dict) -> None:
    """The faiss index with the filters as an ID selector: latency and recall@k vs exact."""
    from inquire.collection import open_collection
    from inquire.collection.ann import ensure_index
    from inquire.collection.search import CollectionSearcher
    from inquire.collection.store import transaction
    from inquire.index.ann import recall_at_k

    coll = open_collection("synthetic1m", root)
    with transaction(coll.conn) as conn:
        coll.set_meta(conn, index=args.factory)
    t0 = time.perf_counter()
    what = ensure_index(coll)
    print(f"\nfaiss index {args.factory}: {what} in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    index = coll.index()
    print(f"opening the index with faiss (memory-mapped) took {time.perf_counter() - t0:.2f} s")
    if index.ann is None:
        raise SystemExit("the faiss index was not loaded")
    probes = [int(x) for x in args.nprobe.split(",")]
    for nprobe in probes:  # warm the memory-mapped inverted lists
        CollectionSearcher(index, nprobe=nprobe).search(queries[:2], args.k)
    k = args.k
    header = f"{'filter':28s} {'exact (s)':>10s}"
    for nprobe in probes:
        col = f"nprobe={nprobe} (s)"
        header += f" {col:>16s} {'recall@' + str(k):>10s} {'exact':>5s}"
    print(f"\nfaiss path vs exact, median over {args.repeats} queries, top-{k}")
    print("('exact': queries whose probed lists held fewer than k selected rows, answered exactly)")
    print(header)
    summary = []
    for label, f in cases.items():
        _kept, t_exact, found = results[label]
        line = f"{label:28s} {t_exact:10.3f}"
        for nprobe in probes:
            times, approx = [], []
            for q in queries:
                t0 = time.perf_counter()
                _, ids = CollectionSearcher(index, nprobe=nprobe).search(q[None], k, f.mask(index))
                times.append(time.perf_counter() - t0)
                approx.append(ids[0][ids[0] >= 0])
            a = np.full((len(queries), k), -1, np.int64)
            e = np.full((len(queries), k), -1, np.int64)
            for r, (ai, ei) in enumerate(zip(approx, found, strict=True)):
                a[r, : len(ai)], e[r, : len(ei)] = ai, ei
            rec = recall_at_k(a, e, k)
            t = statistics.median(times)
            # Queries faiss answered with fewer than k selected rows (then searched exactly).
            _, short = index.ann.search(
                queries, k, f.mask(index) & index.valid, params={"nprobe": nprobe}
            )
            n_short = int(((short >= 0).sum(1) < min(k, _kept)).sum())
            line += f" {t:16.3f} {rec:10.3f} {n_short:>3d}/{len(queries)}"
            summary.append((label, nprobe, t_exact / t, rec))
        print(line)
    label, nprobe, speedup, rec = summary[len(probes) // 2]  # no filter, middle nprobe
    print(f"faiss_nprobe={nprobe} speedup_vs_exact={speedup:.1f} recall_at_{k}={rec:.3f}")


def dense_settings(index, queries: np.ndarray) -> None:
    """The unfiltered dense pass with other block sizes and torch thread counts, side by side."""
    import importlib

    # The module (``inquire.collection.search`` the attribute is the search function); its
    # settings are set through its namespace (a ModuleType has no typed attributes to assign).
    sm = importlib.import_module("inquire.collection.search")
    chosen = (sm.DENSE_BLOCK_ROWS, sm.DENSE_THREADS)
    print("\nunfiltered dense pass, median of 5 (block rows x torch threads)")
    base = None
    try:
        for rows, threads in [chosen, (65536, 1), (4096, 2), (65536, 2)]:
            vars(sm).update(DENSE_BLOCK_ROWS=rows, DENSE_THREADS=threads)
            times = []
            for q in queries[:5]:
                t0 = time.perf_counter()
                sm.CollectionSearcher(index).search(q[None], 100)
                times.append(time.perf_counter() - t0)
            t = statistics.median(times)
            base = base or t
            print(f"  {rows:6d} x {threads}: {t:.3f} s ({t / base:.1f}x the chosen setting)")
    finally:
        vars(sm).update(DENSE_BLOCK_ROWS=chosen[0], DENSE_THREADS=chosen[1])


if __name__ == "__main__":
    main()
