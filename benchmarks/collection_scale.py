"""The partitioned IVF-PQ index at scale: recall, latency, size and memory, one run.

Generates (once, cached under --out) a clustered collection of N x D float16 rows written in
100k-row shards straight to disk (:mod:`inquire.testing.clustered`: a mixture of N / 1000
anisotropic Gaussian clusters (1,000 at 1M rows; iNaturalist has ~30k photos per species on
average, so this is harder, not easier) on the unit sphere, log-normal cluster sizes, 16
stretched directions per cluster with scales 0.35 * 2**(-i/2), noise 0.025, 4 taxa per
cluster, dates uniform over 10 years, coordinates around each cluster's home), with filters
selecting about 100%, 1% (a date window: rows everywhere), 0.1% (a few taxa: one region of
the space) and 0.01% (a season in one region of the map) of the rows. Then:

1. builds the partitioned index (``inquire.index.ivfpq``; timed);
2. computes the exact top 100 of every query under every filter (the index's exact route,
   itself checked against brute force in tests/test_index_ivfpq.py);
3. times single-query searches (p50 / p95) and measures recall@100 per selectivity: the
   router as configured, and the IVF route forced (``exact_below=0``) beside it, which shows
   where the exact route pays (the ``--exact-below`` threshold);
4. the INQUIRE-Search-style baseline on the same codes: faiss IVF-PQ, ``nprobe=1``, the
   filter as an ``IDSelectorBitmap``, faiss's own approximate scores (no rescoring);
5. resident memory while serving (VmRSS; anonymous and file-backed parts);
6. ``ray_equal``: the same searches served by one Ray actor per partition (in a private
   network namespace: ``unshare --net --pid --fork --mount-proc``) equal the one-process
   results bit for bit (1) or not (0); ``-1`` where the namespace cannot be made.

    python benchmarks/collection_scale.py --n 1000000 --d 512 [--queries 50]
        [--partition-rows 500000] [--nprobe 32] [--rescore 10] [--exact-below 50000]

To serve within a memory budget, run it in a cgroup with that limit (page cache counts
against it; the limit is printed): resident memory then includes only the shard pages the
kernel keeps, and latency shows what reading the rest from disk costs.

Closing line: ``recall_min=… p95_ms_unfiltered=… p95_ms_worst=… bytes_per_photo=… rss_gib=…
baseline_recall_min=… ray_equal=…``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from inquire.testing.clustered import ClusterSpec

K = 100


def _rss() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(val.split()[0]) / 2**20  # kB -> GiB
    return out


def _memory_limit_gib() -> float:
    """The memory limit of this process's cgroup (v2 ``memory.max`` or v1
    ``memory.limit_in_bytes``), page cache included; ``inf`` when there is none."""
    root = Path("/sys/fs/cgroup")
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        places = (("memory.max", root / rel), ("memory.limit_in_bytes", root / "memory" / rel))
        for name, folder in places:
            if (controllers == "" and name == "memory.max") or "memory" in controllers.split(","):
                try:
                    text = (folder / name).read_text().strip()
                except OSError:
                    continue
                if text != "max" and int(text) < 2**60:
                    return int(text) / 2**30
    return float("inf")


def generate(out: Path, n: int, d: int) -> tuple[ClusterSpec, pd.DataFrame]:
    import pandas as pd

    from inquire.testing.clustered import ClusterSpec, write_clustered

    spec = ClusterSpec(d=d, clusters=max(50, n // 1000))
    emb, meta_path = out / "emb", out / "meta.parquet"
    if not meta_path.is_file():
        if emb.exists():
            shutil.rmtree(emb)
        t = time.perf_counter()
        meta = write_clustered(emb, n, spec, shard_rows=100_000)
        meta.to_parquet(meta_path, index=False)
        print(f"generated {n:,} x {d} float16 in {time.perf_counter() - t:.0f} s", flush=True)
    return spec, pd.read_parquet(meta_path)


def _searches(idx, q, masks, k=K, **kw):
    """Single-query searches: (ids (nq, k), latencies ms) per filter."""
    out = {}
    for name, m in masks.items():
        ids = np.full((len(q), k), -1, np.int64)
        lat = []
        for i in range(len(q)):
            t = time.perf_counter()
            _, got = idx.search(q[i : i + 1], k, m, **kw)
            lat.append((time.perf_counter() - t) * 1000)
            ids[i] = got[0]
        out[name] = (ids, np.array(lat))
    return out


def baseline(idx, q, masks, k=K):
    """INQUIRE-Search style: each partition's faiss IVF-PQ, nprobe=1, selector, no rescoring;
    the partitions' faiss lists merged by faiss's own scores."""
    from inquire.index.ann import _faiss
    from inquire.index.topk import topk

    # As in inquire.index: faiss's stubs lack the keyword constructors of its
    # SearchParameters (added at run time), so faiss is used untyped.
    faiss = _faiss()

    out = {}
    for name, m in masks.items():
        ids = np.full((len(q), k), -1, np.int64)
        lat = []
        for i in range(len(q)):
            t = time.perf_counter()
            scores, rows = [], []
            for p in idx.backend.parts:
                sub = None if m is None else m[p.info.lo : p.info.hi]
                if sub is None:
                    params = faiss.SearchParametersIVF(nprobe=1)
                else:
                    bits = np.packbits(sub, bitorder="little")
                    sel = faiss.IDSelectorBitmap(len(sub), faiss.swig_ptr(bits))
                    params = faiss.SearchParametersIVF(sel=sel, nprobe=1)
                s, r = p.index.search(q[i : i + 1], k, params=params)
                ok = r[0] >= 0
                scores.append(s[0][ok])
                rows.append(r[0][ok] + p.info.lo)
            s_all, r_all = np.concatenate(scores), np.concatenate(rows)
            if len(r_all):
                _, got = topk(s_all[None, :], idx.ids[r_all], k)
                ids[i] = got[0]
            lat.append((time.perf_counter() - t) * 1000)
        out[name] = (ids, np.array(lat))
    return out


def ray_check(out: Path, args) -> None:
    """Inside the namespace: Ray actors vs one process on the same queries (prints one line)."""
    import ray

    from inquire.embed.store import EmbeddingStore
    from inquire.index import ivfpq
    from inquire.index.ray_serve import RayBackend
    from inquire.testing.clustered import queries, selectivity_masks

    spec, meta = generate(out, args.n, args.d)
    store = EmbeddingStore(out / "emb")
    man = ivfpq.read_manifest(out / "index")
    if man is None:
        raise SystemExit(f"no index in {out / 'index'}: the main run builds it first")
    q = queries(spec, min(args.queries, 20))
    masks = {k: (None if v.all() else v) for k, v in selectivity_masks(meta).items()}
    one = ivfpq.ScaleIndex.open(store, out / "index")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        served = ivfpq.ScaleIndex.open(
            store, out / "index", backend=RayBackend(store.root, out / "index", man)
        )
        equal = True
        for m in masks.values():
            a, b = served.search(q, K, m), one.search(q, K, m)
            equal &= bool(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]))
        served.close()
    finally:
        ray.shutdown()
    print(f"RAY_EQUAL={int(equal)}", flush=True)


def run_ray_check(args) -> int:
    if shutil.which("unshare") is None:
        return -1
    cmd = [sys.executable, __file__, "--ray-check", "--out", str(args.out), "--n", str(args.n),
           "--d", str(args.d), "--queries", str(args.queries)]  # fmt: skip
    script = "ip link set lo up && exec " + " ".join(cmd)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(
        ["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c", script],
        capture_output=True,
        text=True,
        env=env,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RAY_EQUAL="):
            return int(line.split("=")[1])
    print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
    return -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--out", type=Path, default=Path("/tmp/inquire_collection_scale"))
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--pq-m", type=int, default=64)
    ap.add_argument("--nlist", type=int, default=0)
    ap.add_argument("--partition-rows", type=int, default=0, help="0: n / 2 (two partitions)")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--rescore", type=int, default=10)
    ap.add_argument("--exact-below", type=int, default=50_000)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--reuse-index", action="store_true", help="resume, do not rebuild")
    ap.add_argument("--ray-check", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = args.out / f"n{args.n}_d{args.d}"
    out.mkdir(parents=True, exist_ok=True)
    if args.ray_check:
        ray_check(out, args)
        return

    from inquire.embed.store import EmbeddingStore
    from inquire.index import ivfpq
    from inquire.index.ann import recall_at_k
    from inquire.testing.clustered import queries, selectivity_masks

    spec, meta = generate(out, args.n, args.d)
    store = EmbeddingStore(out / "emb")
    settings = ivfpq.ScaleSettings(
        nlist=args.nlist, pq_m=args.pq_m, partition_rows=args.partition_rows or args.n // 2,
        nprobe=args.nprobe, rescore=args.rescore, exact_below=args.exact_below,
    )  # fmt: skip
    t = time.perf_counter()
    # --reuse-index: an index built earlier with these settings is resumed (a no-op when it is
    # complete) instead of rebuilt; the build time printed is then that no-op's.
    man = ivfpq.build(store, out / "index", settings, rebuild=not args.reuse_index)
    build_s = time.perf_counter() - t
    idx = ivfpq.ScaleIndex.open(store, out / "index")
    size = idx.index_bytes()
    print(
        f"{'reused' if args.reuse_index else 'built'} {man.factory}: {len(man.partitions)} "
        f"partitions in {build_s:.0f} s ({args.n / max(build_s, 1e-9):,.0f} rows/s); "
        f"{size / args.n:.1f} bytes/photo beside {2 * args.d} bytes/photo of float16 shards",
        flush=True,
    )
    q = queries(spec, args.queries)
    masks = {k: (None if v.all() else v) for k, v in selectivity_masks(meta).items()}
    t = time.perf_counter()
    truth = {name: idx.search(q, K, m, exact=True)[1] for name, m in masks.items()}
    print(f"exact top-{K} of {len(q)} queries x {len(masks)} filters in "
          f"{time.perf_counter() - t:.0f} s", flush=True)  # fmt: skip
    _searches(idx, q[:3], masks)  # warm the page cache and faiss
    routed = _searches(idx, q, masks)
    forced = ivfpq.ScaleIndex.open(store, out / "index")
    forced.manifest.settings = ivfpq.ScaleSettings(**{**settings.__dict__, "exact_below": 0})
    ivf_only = _searches(forced, q, masks)
    base = baseline(idx, q, masks)
    rss = _rss()
    rows = []
    print(f"\n{'filter':>7} {'rows':>10} {'route':>6} {'recall':>7} {'p50 ms':>8} {'p95 ms':>8}"
          f" | {'IVF-only rec':>12} {'p95':>7} | {'baseline rec':>12} {'p95':>7}")  # fmt: skip
    for name, m in masks.items():
        n_sel = args.n if m is None else int(m.sum())
        route = "exact" if idx.route(K, m).exact else f"ivf{idx.route(K, m).nprobe}"
        r = recall_at_k(routed[name][0], truth[name], K)
        fr = recall_at_k(ivf_only[name][0], truth[name], K)
        br = recall_at_k(base[name][0], truth[name], K)
        lat, flat, blat = routed[name][1], ivf_only[name][1], base[name][1]
        rows.append((name, r, np.percentile(lat, 95), br))
        print(
            f"{name:>7} {n_sel:>10,} {route:>6} {r:7.4f} {np.percentile(lat, 50):8.1f} "
            f"{np.percentile(lat, 95):8.1f} | {fr:12.4f} {np.percentile(flat, 95):7.1f} | "
            f"{br:12.4f} {np.percentile(blat, 95):7.1f}"
        )
    print(
        f"\nserving memory: VmRSS {rss['VmRSS']:.2f} GiB (anonymous {rss['RssAnon']:.2f}, "
        f"file-backed pages of the memory maps {rss['RssFile']:.2f}); peak {rss['VmHWM']:.2f}; "
        f"cgroup memory limit (page cache included): {_memory_limit_gib():.2f} GiB"
    )
    print(f"build {build_s:.0f} s; index {size / 2**20:.1f} MiB on disk; baseline build: the "
          "same codes (its own build would be the same k-means and encoding)")  # fmt: skip
    ray_equal = -1 if args.no_ray else run_ray_check(args)
    summary = {
        "n": args.n, "d": args.d, "factory": man.factory, "partitions": len(man.partitions),
        "build_s": round(build_s, 1), "bytes_per_photo": round(size / args.n, 1),
        "rss": rss, "rows": [(a, float(b), float(c), float(d)) for a, b, c, d in rows],
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(
        f"recall_min={min(r[1] for r in rows):.4f} p95_ms_unfiltered={rows[0][2]:.1f} "
        f"p95_ms_worst={max(r[2] for r in rows):.1f} bytes_per_photo={size / args.n:.1f} "
        f"rss_gib={rss['VmRSS']:.2f} baseline_recall_min={min(r[3] for r in rows):.4f} "
        f"ray_equal={ray_equal} rss_anon_gib={rss['RssAnon']:.2f} "
        f"mem_limit_gib={_memory_limit_gib():.2f}"
    )


if __name__ == "__main__":
    main()
