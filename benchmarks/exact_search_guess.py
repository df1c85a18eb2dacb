"""Exact search with and without its guessed floor (:mod:`inquire.index.speculate`),
side by side in one process.

Writes (or reuses) the same synthetic float16 store as ``exact_search.py``, then alternates
searches with the guess and without it (``--repeats`` each, ABAB: the machine's load
changes), all with the same ``--screen`` and ``bf16_copy``. The guess is turned off by
raising ``speculate.MIN_HITS`` past any sample (the search then makes no guess, as for a
small k). Both must return the same ids and score bits.

Usage: ``python benchmarks/exact_search_guess.py [--data-dir DIR] [--n 200000 --k 1000]``.
The last line reads ``pooled_ratio=P seconds_ratio=S same=E`` (P, S: with the guess / without,
candidates pooled per query and best wall time; E = 1 when the results were equal).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from exact_search import make_queries, open_store, side_by_side_args


def main() -> None:
    p = side_by_side_args(__doc__)
    p.add_argument("--screen", default="auto", choices=["auto", "bf16", "off"])
    p.add_argument("--bf16-copy", default="auto", choices=["auto", "use", "off"])
    args = p.parse_args()

    from inquire.index import speculate
    from inquire.index.exact import SearchStats, search

    with tempfile.TemporaryDirectory(prefix="inquire-bench-") as tmp:
        store = open_store(args.data_dir or Path(tmp) / "store", args.n, args.d)
        q = make_queries(args.queries, store.dim, 1)
        kw = dict(screen=args.screen, bf16_copy=args.bf16_copy)
        search(store, q, args.k, **kw)  # untimed: auto's trial, the copy, the norms
        guess_hits = speculate.MIN_HITS
        runs: dict[bool, list[tuple[float, SearchStats]]] = {True: [], False: []}
        results = {}
        for _ in range(args.repeats):
            for guess in (True, False):
                # Without: more hits than any sample can hold (an int, as MIN_HITS is).
                speculate.MIN_HITS = guess_hits if guess else sys.maxsize
                st = SearchStats()
                t0 = time.perf_counter()
                results[guess] = search(store, q, args.k, stats=st, **kw)
                runs[guess].append((time.perf_counter() - t0, st))
        speculate.MIN_HITS = guess_hits
    same = int(
        np.array_equal(results[True][1], results[False][1])
        and np.array_equal(results[True][0].view(np.uint32), results[False][0].view(np.uint32))
    )
    best = {g: min(r, key=lambda t: t[0]) for g, r in runs.items()}
    for guess in (True, False):
        secs, st = best[guess]
        print(
            f"guess {'on ' if guess else 'off'}: {secs:.3f} s best of "
            f"{', '.join(f'{t:.3f}' for t, _ in runs[guess])} s; screen={st.screen}; "
            f"{st.pooled / st.queries:.0f} candidates pooled per query; "
            f"{st.rescored_per_query:.0f} rescored per query; guessed {st.guessed}, "
            f"searched again {st.searched_again}"
        )
    pooled = best[True][1].pooled / max(best[False][1].pooled, 1)
    seconds = best[True][0] / best[False][0]
    print(f"pooled_ratio={pooled:.3f} seconds_ratio={seconds:.3f} same={same}")


if __name__ == "__main__":
    main()
