"""Bootstrap means for a 250-query, 5-metric result: counts @ values vs a per-resample loop.

Run: ``python benchmarks/report_bootstrap.py``. Prints both timings (median of 3) and their
ratio, measured side by side in one run, and checks that both give the same resampled means.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from inquire.stats import bootstrap_means

N_QUERIES, N_METRICS, N_RESAMPLES, SEED = 250, 5, 10000, 0


def loop_means(x: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    idx = rng.integers(0, len(x), size=(N_RESAMPLES, len(x)))
    return np.array([x[idx[b]].mean(axis=0) for b in range(N_RESAMPLES)])


def timed(fn, *args):  # type: ignore[no-untyped-def]
    times = []
    out = None
    for _ in range(3):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    x = np.random.default_rng(1).random((N_QUERIES, N_METRICS))
    t_fast, fast = timed(bootstrap_means, x, N_RESAMPLES, SEED)
    t_loop, slow = timed(loop_means, x)
    np.testing.assert_allclose(fast, slow, atol=1e-12)
    print(f"{N_QUERIES} queries x {N_METRICS} metrics, {N_RESAMPLES:,} resamples")
    print(f"counts @ x : {t_fast * 1000:8.1f} ms")
    print(f"loop       : {t_loop * 1000:8.1f} ms")
    print(f"speed-up   : {t_loop / t_fast:8.1f}x (same resampled means)")


if __name__ == "__main__":
    main()
