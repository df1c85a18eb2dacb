"""The first exact search of a process (a command-line search), with and without the
measured choices kept on disk (:mod:`inquire.index.tuning`), side by side.

Writes (or reuses) the same synthetic float16 store as ``exact_search.py``, then runs one
search per fresh Python process, alternating four ways (``--repeats`` rounds; the machine's
load changes):

- ``off``: ``screen="off"``, nothing kept (``INQUIRE_TUNING=off``): the float32 GEMM timed
  in each process;
- ``auto``: ``screen="auto"``, nothing kept: each process runs the timed trial and converts
  its chunks (what every command-line search did before choices were kept);
- ``off_kept`` and ``auto_kept``: the same, with the choices one earlier untimed process kept
  in a scratch ``INQUIRE_HOME`` (the bfloat16 copy is read from the first chunk where
  ``auto`` kept bfloat16; a second untimed process builds it where it is missing);
- ``auto_kept_nokernel``: ``auto_kept`` without the rescoring's compiled kernel
  (``INQUIRE_NUMBA=off``): a search of this size loads it in the background while it scans.

Each process times its search alone (torch imported, the store opened and its ids read
first, as a CLI does before it searches) and saves its ids and score bits; all must be
equal.

Usage: ``python benchmarks/first_search.py [--data-dir DIR] [--n 200000 --repeats 3]``.
The last line reads ``auto_kept_over_off_kept=A auto_kept_over_auto=B auto_over_off=C
kernel_ratio=K same=E`` (medians of wall time; K: ``auto_kept`` over ``auto_kept_nokernel``;
E = 1 when every process returned the same ids and scores).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from exact_search import make_queries, open_store, side_by_side_args

SRC = Path(__file__).resolve().parent.parent / "src"

WAYS = ("off", "auto", "off_kept", "auto_kept", "auto_kept_nokernel")

_ONE = """
import json, sys, time
import numpy as np
import torch  # its import (1-2 s) is the same for every way: not timed
from inquire.embed.store import EmbeddingStore
from inquire.index.exact import SearchStats, search
store = EmbeddingStore(sys.argv[1]); _ = store.ids
q = np.load(sys.argv[2])
st = SearchStats()
t0 = time.perf_counter()
s, i = search(store, q, int(sys.argv[3]), screen=sys.argv[4], stats=st)
seconds = time.perf_counter() - t0
np.save(sys.argv[5], np.concatenate([i.view(np.uint64), s.view(np.uint32).astype(np.uint64)]))
print(json.dumps({"s": seconds, "screen": st.screen, "trial": st.trial, "copy": st.bf16_copy}))
"""


def run_one(folder: Path, qfile: Path, k: int, way: str, home: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(SRC), "INQUIRE_HOME": str(home)}
    if way.endswith("_nokernel"):
        env["INQUIRE_NUMBA"] = "off"
        way = way.removesuffix("_nokernel")
    if not way.endswith("_kept"):
        env["INQUIRE_TUNING"] = "off"
    screen = way.removesuffix("_kept")
    got = subprocess.run(
        [sys.executable, "-c", _ONE, str(folder), str(qfile), str(k), screen, str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(got.stdout.strip().splitlines()[-1])


def main() -> None:
    p = side_by_side_args(__doc__)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="inquire-bench-") as tmp:
        t = Path(tmp)
        folder = args.data_dir or t / "store"
        open_store(folder, args.n, args.d)
        qfile = t / "q.npy"
        np.save(qfile, make_queries(args.queries, args.d, 0))
        home = t / "home"
        # Untimed processes keep their choices (the second auto one builds the bfloat16 copy
        # where auto chose it), as earlier commands on this machine would have.
        for way in ("off_kept", "auto_kept", "auto_kept"):
            run_one(folder, qfile, args.k, way, home, t / "warm.npy")
        times: dict[str, list[float]] = {w: [] for w in WAYS}
        first: np.ndarray | None = None
        same = True
        for r in range(args.repeats):
            for way in WAYS if r % 2 == 0 else WAYS[::-1]:
                got = run_one(folder, qfile, args.k, way, home, t / "ids.npy")
                ids = np.load(t / "ids.npy")
                if first is None:
                    first = ids
                same &= bool(np.array_equal(ids, first))
                times[way].append(got["s"])
                print(
                    f"{way}: {got['s']:.3f} s screen={got['screen']} trial={int(got['trial'])} "
                    f"copy={int(got['copy'])}",
                    flush=True,
                )
        med = {w: statistics.median(v) for w, v in times.items()}
        for w in WAYS:
            print(f"{w}: median {med[w]:.3f} s of " + ", ".join(f"{x:.3f}" for x in times[w]))
        print(
            f"auto_kept_over_off_kept={med['auto_kept'] / med['off_kept']:.3f} "
            f"auto_kept_over_auto={med['auto_kept'] / med['auto']:.3f} "
            f"auto_over_off={med['auto'] / med['off']:.3f} "
            f"kernel_ratio={med['auto_kept'] / med['auto_kept_nokernel']:.3f} same={int(same)}"
        )


if __name__ == "__main__":
    main()
