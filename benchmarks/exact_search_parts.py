"""Parts of the screened exact search against the way each was done before, side by side in
one process (ABAB, ``--repeats`` each: the machine's load changes):

- ``block``: read blocks of the default size (~8 MiB, ``blocks.CACHE_BLOCK_BYTES``) against
  blocks of 65,536 rows (the earlier default at d = 1024: 128 MiB);
- ``compare``: the bfloat16 GEMM's scores compared as 16-bit integers against a float32 copy
  of them compared as float32 (the earlier way, restored here by handing ``_offer`` that copy);
- ``rescore_read``: the final rescoring's rows read with ``preadv`` runs against gathered
  through the memory map, window by window, pages dropped (the earlier way, which shards that
  are not files still take), on the pairs a search rescored (both without the compiled
  kernel);
- ``kernel``: the whole search with the final rescoring's compiled kernel
  (:mod:`inquire.index.fused`, loaded first) against without it (``INQUIRE_NUMBA=off``), where
  numba is installed.

Every search screens in bfloat16 reading the store's bfloat16 copy (built once, untimed).
Writes (or reuses) the same synthetic float16 store as ``exact_search.py``.

Usage: ``python benchmarks/exact_search_parts.py [--data-dir DIR] [--n 200000 --k 1000]``.
The last line reads ``block_ratio=B compare_ratio=C rescore_read_ratio=R kernel_ratio=K
same=E`` (each: the current way's best time / the earlier way's; E = 1 when every pair of
results was equal, ids and score bits).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from exact_search import make_queries, open_store, side_by_side_args


def _ab(
    repeats: int, current: Callable[[], Any], earlier: Callable[[], Any]
) -> tuple[list[float], list[float], bool]:
    """Times of ``current`` and ``earlier`` run alternately, and whether their results agree
    (tuples of arrays, compared bit for bit)."""
    times: tuple[list[float], list[float]] = ([], [])
    got: list[Any] = [None, None]
    for _ in range(repeats):
        for i, run in enumerate((current, earlier)):
            t0 = time.perf_counter()
            got[i] = run()
            times[i].append(time.perf_counter() - t0)
    same = all(
        np.array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))
        for a, b in zip(got[0], got[1], strict=True)
    )
    return times[0], times[1], same


@contextlib.contextmanager
def _numba_off(name: str) -> Iterator[None]:
    """The compiled rescoring kernel turned off (``name``: its variable) for the block."""
    old = os.environ.get(name)
    os.environ[name] = "off"
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def main() -> None:
    args = side_by_side_args(__doc__).parse_args()

    import torch

    from inquire.index import fused
    from inquire.index import rescore as rescore_mod
    from inquire.index import scorer as scorer_mod
    from inquire.index.bf16_copy import build_copy
    from inquire.index.exact import search
    from inquire.index.kernels import Kernels

    # The compiled rescoring kernel loaded before anything is timed (every part runs with it
    # where numba is installed, except where turned off).
    has_kernel = fused.loaded(wait=True) is not None
    with tempfile.TemporaryDirectory(prefix="inquire-bench-") as tmp:
        store = open_store(args.data_dir or Path(tmp) / "store", args.n, args.d)
        build_copy(store)
        q = make_queries(args.queries, store.dim, 1)

        # The pairs the final rescoring gets (captured from one search, which also warms up).
        pairs: list[tuple[np.ndarray, np.ndarray, float | None]] = []
        rescore_fn = scorer_mod.rescore

        def capture(
            st: Any, qq: Any, qr: Any, rows: Any, kern: Any, mn: Any, th: int, *rest: Any
        ) -> Any:
            pairs.append((qr.copy(), rows.copy(), mn))
            return rescore_fn(st, qq, qr, rows, kern, mn, th, *rest)

        scorer_mod.rescore = capture  # type: ignore[assignment]
        try:
            search(store, q, args.k, screen="bf16", bf16_copy="use")
        finally:
            scorer_mod.rescore = rescore_fn

        def screened(block_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
            return search(store, q, args.k, screen="bf16", bf16_copy="use", block_rows=block_rows)

        results: dict[str, tuple[list[float], list[float], bool]] = {}
        results["block"] = _ab(args.repeats, screened, lambda: screened(65536))

        approx = scorer_mod.Scorer._approx_bf16

        def widened(self: Any, data: Any, norm: float) -> Any:
            # The earlier way: the bfloat16 scores copied to float32, compared as float32.
            s, margin, c, shift = approx(self, data, norm)
            nq, rows = s.shape
            out = self.out.reshape(-1)[: nq * rows].reshape(nq, rows)
            bf16 = torch.from_numpy(s.view(np.int16)).view(torch.bfloat16)
            torch.from_numpy(out).copy_(bf16)
            return out, margin, c, shift

        def with_copy() -> tuple[np.ndarray, np.ndarray]:
            scorer_mod.Scorer._approx_bf16 = widened  # type: ignore[method-assign]
            try:
                return screened()
            finally:
                scorer_mod.Scorer._approx_bf16 = approx  # type: ignore[method-assign]

        results["compare"] = _ab(args.repeats, screened, with_copy)

        kernels = Kernels()
        threads = torch.get_num_threads()

        def rescored() -> tuple[np.ndarray, ...]:
            return tuple(
                rescore_mod.rescore(store, q, qr, rows, kernels, mn, threads)
                for qr, rows, mn in pairs
            )

        file_source = rescore_mod._file_source

        def through_map() -> tuple[np.ndarray, ...]:
            rescore_mod._file_source = lambda shard: None  # type: ignore[assignment]
            try:
                return rescored()
            finally:
                rescore_mod._file_source = file_source

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the search runs the rescoring
        try:
            with _numba_off(fused.ENV_NUMBA):  # both reads, without the compiled kernel
                results["rescore_read"] = _ab(args.repeats, rescored, through_map)
        finally:
            torch.set_num_threads(torch_threads)

        if has_kernel:

            def without_kernel() -> tuple[np.ndarray, np.ndarray]:
                with _numba_off(fused.ENV_NUMBA):
                    return screened()

            results["kernel"] = _ab(args.repeats, screened, without_kernel)
        else:
            print("kernel: numba is not installed; not measured")

    n_pairs = sum(len(qr) for qr, _, _ in pairs)
    labels = {
        "block": ("8 MiB blocks", "65,536-row blocks"),
        "compare": ("16-bit compare", "float32 copy"),
        "rescore_read": (f"preadv ({n_pairs:,} pairs)", "memory map"),
        "kernel": ("compiled rescoring kernel", "without it"),
    }
    for name, (now, before, same) in results.items():
        print(
            f"{name}: {labels[name][0]} {min(now):.3f} s best of "
            f"{', '.join(f'{t:.3f}' for t in now)}; {labels[name][1]} {min(before):.3f} s "
            f"best of {', '.join(f'{t:.3f}' for t in before)}; same={int(same)}"
        )
    ratios = " ".join(f"{name}_ratio={min(r[0]) / min(r[1]):.3f}" for name, r in results.items())
    print(f"{ratios} same={int(all(r[2] for r in results.values()))}")


if __name__ == "__main__":
    main()
