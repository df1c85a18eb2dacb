"""Bounded load test of the web page on loopback.

Builds a synthetic benchmark with image files and two evaluated runs, starts ``inquire``'s web
app under uvicorn in a separate process on 127.0.0.1, and sends a fixed number of requests from
N concurrent httpx clients over a mix of pages, JSON and thumbnails. Prints the error count
and latency percentiles; the last line reads ``requests=N errors=E p99_ms=X``.

    python benchmarks/web_load.py [--clients 50] [--requests 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# (kind, share of the requests)
MIX = (
    ("runs page", 0.15),
    ("run page + filter", 0.15),
    ("query page", 0.20),
    ("query JSON", 0.15),
    ("search JSON", 0.10),
    ("search page", 0.05),
    ("thumbnail", 0.20),
)
SEARCH_WORDS = ("puffin", "fox", "heron", "mongoose", "gecko", "trout", "lichen", "newt")


@dataclass
class LoadResult:
    """Outcome of one load run: latencies in milliseconds, errors by cause."""

    n: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())

    def percentile(self, q: float, kind: str | None = None) -> float:
        values = self.latencies_ms if kind is None else self.by_kind.get(kind, [])
        return float(np.percentile(values, q)) if values else float("nan")


def request_plan(
    n: int, query_ids: list[int], image_ids: list[int], groups: dict[str, list[str]], seed: int
) -> list[tuple[str, str]]:
    """``n`` (kind, url path) pairs drawn from :data:`MIX` with a fixed seed."""
    rng = random.Random(seed)
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    plan = []
    for _ in range(n):
        kind = rng.choices(kinds, weights)[0]
        run = rng.choice(["exact", "noisy"])
        other = "noisy" if run == "exact" else "exact"
        qid = rng.choice(query_ids)
        if kind == "runs page":
            url = "/"
        elif kind == "run page + filter":
            col = rng.choice(list(groups))
            url = f"/runs/{run}?{col}={rng.choice(groups[col])}"
        elif kind == "query page":
            url = f"/runs/{run}/queries/{qid}?compare={other}&k={rng.choice([20, 50])}"
        elif kind == "query JSON":
            url = f"/api/runs/{run}/queries/{qid}?compare={other}"
        elif kind in ("search JSON", "search page"):
            text = " ".join(rng.sample(SEARCH_WORDS, 2))
            url = ("/api/search" if kind == "search JSON" else "/search") + f"?q={text}&k=30"
        else:
            url = f"/images/{rng.choice(image_ids)}?size={rng.choice([128, 256])}"
        plan.append((kind, url))
    return plan


async def _drive(base_url: str, plan: list[tuple[str, str]], clients: int) -> LoadResult:
    import httpx

    result = LoadResult()
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                kind, url = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            try:
                resp = await client.get(url)
                await resp.aread()
                if resp.status_code != 200:
                    result.errors[f"HTTP {resp.status_code} {kind}"] += 1
            except httpx.HTTPError as exc:
                result.errors[f"{type(exc).__name__} {kind}"] += 1
            ms = (time.perf_counter() - t0) * 1000
            result.latencies_ms.append(ms)
            result.by_kind.setdefault(kind, []).append(ms)
            result.n += 1

    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    result.wall_s = time.perf_counter() - t0
    return result


def run_load(
    clients: int = 50, requests: int = 2000, seed: int = 0, workdir: Path | None = None
) -> LoadResult:
    """Build the fixture, start the server process, drive the load, stop the server."""
    import httpx
    import pandas as pd

    from inquire.embed.store import EmbeddingStore
    from inquire.testing.web_fixtures import build_web_fixture, serve_fixture
    from inquire.web.server import free_port

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(workdir or tmp)
        fx = build_web_fixture(work / "fixture", seed=seed)
        per_query = pd.read_csv(fx.results[0] / "per_query.csv", keep_default_na=False)
        groups = {
            c: sorted(per_query[c].astype(str).unique())
            for c in ("supercategory", "category", "iconic_group")
        }
        image_ids = EmbeddingStore(fx.bench.embeddings).ids.tolist()
        plan = request_plan(
            requests, per_query["query_id"].astype(int).tolist(), image_ids, groups, seed
        )
        port = free_port()
        proc = mp.get_context("spawn").Process(
            target=serve_fixture,
            args=(
                [str(r) for r in fx.results],
                str(fx.images),
                str(fx.bench.embeddings),
                str(fx.bench.text_embeddings),
                str(work / "thumbs"),
                port,
            ),
            daemon=True,
        )
        proc.start()
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if not proc.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the web server did not start on {base}")
                time.sleep(0.1)
            return asyncio.run(_drive(base, plan, clients))
        finally:
            proc.terminate()
            proc.join(10)


def main(argv: list[str] | None = None) -> LoadResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    res = run_load(args.clients, args.requests, args.seed)
    print(
        f"{args.clients} concurrent clients, {res.n} requests in {res.wall_s:.1f} s "
        f"({res.n / res.wall_s:.0f} req/s) on 127.0.0.1"
    )
    print(f"{'kind':<20}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for kind, _ in MIX:
        n = len(res.by_kind.get(kind, []))
        print(
            f"{kind:<20}{n:>6}{res.percentile(50, kind):>10.1f}"
            f"{res.percentile(95, kind):>10.1f}{res.percentile(99, kind):>10.1f}"
        )
    print(
        f"{'all':<20}{res.n:>6}{res.percentile(50):>10.1f}{res.percentile(95):>10.1f}"
        f"{res.percentile(99):>10.1f}"
    )
    for cause, count in res.errors.most_common():
        print(f"error: {cause} x{count}")
    print(f"requests={res.n} errors={res.n_errors} p99_ms={res.percentile(99):.1f}")
    return res


if __name__ == "__main__":
    sys.exit(1 if main().n_errors else 0)
