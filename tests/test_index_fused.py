"""The rescoring's compiled kernel (:mod:`inquire.index.fused`): every float16 value, the
search with and without it, its mapped windows, and running without numba."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inquire.embed.store import EmbeddingStore
from inquire.index import fused, rescore
from inquire.index.exact import SearchStats, search
from inquire.index.kernels import Kernels
from inquire.index.score import exact_score, gamma64
from inquire.testing.search_stores import random_unit, write_store


@pytest.fixture
def kern(monkeypatch):
    monkeypatch.delenv(fused.ENV_NUMBA, raising=False)
    got = fused.loaded(wait=True)
    if got is None:
        pytest.skip("numba is not installed: no compiled kernel")
    return got


def _exact_sum(q: np.ndarray, x: np.ndarray) -> float:
    return math.fsum((q.astype(np.float64) * x.astype(np.float64)).tolist())


def test_every_float16_value_converts_exactly(kern):
    # All 65,536 bit patterns, 1024 to a row: each row against one-hot queries reads back
    # each value exactly (a float16 times 1.0 is exact in float64); rows holding an infinity
    # or NaN are NaN.
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).reshape(64, 1024)
    x = bits.view(np.float16)
    special = ((bits & 0x7C00) == 0x7C00).any(axis=1)
    assert special.sum() == 2  # the rows of +-inf and NaN patterns (exponent 31)
    d = x.shape[1]
    cols = np.array([0, 1, 2, 511, 512, 1000, 1023])
    q = np.zeros((len(cols), d), np.float32)
    q[np.arange(len(cols)), cols] = 1.0
    rows = np.repeat(np.arange(64), len(cols))
    qp = np.tile(np.arange(len(cols)), 64)
    out, absout = np.empty(len(rows)), np.empty(len(rows))
    fused.pair_dots(kern, x, rows, qp, q, out, absout)
    want = x[rows, cols[qp]].astype(np.float64)
    finite = ~special[rows]
    np.testing.assert_array_equal(out[finite], want[finite])
    np.testing.assert_array_equal(absout[finite], np.abs(want[finite]))
    assert np.isnan(out[~finite]).all()
    # (A zero's sign is not the kernel's to decide: the rounding settles sums near zero the
    # slow exact way, inquire.index.score.round_once.)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_sums_are_within_the_bound_of_the_exact_sum(kern, dtype):
    rng = np.random.default_rng(1)
    d = 1000  # not a multiple of any vector width
    x = (rng.standard_normal((50, d)) * rng.choice([1e-6, 1e-2, 1.0], (50, 1))).astype(dtype)
    x[3, :7] = 0
    x[4] = np.float16(2.0**-24) if dtype == np.float16 else 2.0**-140  # subnormal rows
    q = rng.standard_normal((5, d)).astype(np.float32)
    q[1, ::2] = 0
    rows, qp = rng.integers(0, 50, 300), rng.integers(0, 5, 300)
    out, absout = np.empty(300), np.empty(300)
    fused.pair_dots(kern, x, rows, qp, q, out, absout)
    g = gamma64(d)
    for j in range(300):
        exact = _exact_sum(q[qp[j]], x[rows[j]])
        tot = math.fsum(np.abs(q[qp[j]].astype(np.float64) * x[rows[j]].astype(np.float64)))
        assert abs(out[j] - exact) <= g * tot * (1 + 4 * g) + 2.0**-1000
        assert abs(absout[j] - tot) <= g * tot * (1 + 4 * g)


def test_other_types_and_strided_rows_are_taken(kern):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((20, 33))
    q = rng.standard_normal((2, 33)).astype(np.float32)
    rows, qp = np.arange(20), np.zeros(20, np.int64)
    out = np.empty(20)
    fused.pair_dots(kern, x, rows, qp, q, out)  # float64: as float32
    want = x.astype(np.float32).astype(np.float64) @ q[0].astype(np.float64)
    np.testing.assert_allclose(out, want, rtol=1e-12)
    wide = np.zeros((20, 66), np.float16)
    wide[:, ::2] = x
    fused.pair_dots(kern, wide[:, ::2], rows, qp, q, out)  # strided: copied
    want = wide[:, ::2].astype(np.float64) @ q[0].astype(np.float64)
    np.testing.assert_allclose(out, want, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("threads", [1, 2, 5])
def test_search_with_and_without_the_kernel_is_the_same(
    tmp_path, monkeypatch, kern, dtype, threads
):
    monkeypatch.setattr(rescore, "FUSED_WAIT_ELEMENTS", 0)
    monkeypatch.setattr(rescore, "_BATCH_ELEMENTS", 48 * 37)  # batches of a few rows
    x = random_unit(6000, 48, seed=3)
    x[17] = 0
    x[18, 3] = np.inf
    store = EmbeddingStore(write_store(tmp_path / "s", x, [100, 0, 1, 2899, 3000], dtype=dtype))
    q = random_unit(7, 48, seed=4)
    calls = [0]
    dots = fused.pair_dots

    def counted(*a):
        calls[0] += 1
        dots(*a)

    monkeypatch.setattr(fused, "pair_dots", counted)
    for screen in ("off", "bf16"):
        st = SearchStats()
        got = search(store, q, 50, screen=screen, threads=threads, bf16_copy="off", stats=st)
        assert calls[0] > 0 and 0 < st.rescored_fused <= st.rescored  # (NaN chunks: exactly)
        monkeypatch.setenv(fused.ENV_NUMBA, "off")
        calls[0] = 0
        st = SearchStats()
        want = search(store, q, 50, screen=screen, threads=threads, bf16_copy="off", stats=st)
        assert calls[0] == 0 and st.rescored_fused == 0 < st.rescored
        monkeypatch.delenv(fused.ENV_NUMBA)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0].view(np.uint32), want[0].view(np.uint32))


def test_rescoring_from_arrays_in_memory(kern, monkeypatch):
    # Shards that are not files (a store of arrays): the kernel reads the arrays.
    from types import SimpleNamespace

    monkeypatch.setattr(rescore, "FUSED_WAIT_ELEMENTS", 0)
    x = random_unit(300, 16, seed=5).astype(np.float16)
    shards = [x[:120], x[120:120], x[120:]]
    store = SimpleNamespace(
        shards=shards,
        offsets=np.array([0, 120, 120, 300]),
        dim=16,
        dtype=np.dtype(np.float16),
        root=None,
    )
    q = random_unit(3, 16, seed=6)
    rng = np.random.default_rng(7)
    qr, rows = rng.integers(0, 3, 200), rng.integers(0, 300, 200)
    got = rescore.rescore(store, q, qr, rows, Kernels(), None, 2)  # type: ignore[arg-type]
    want = np.array([exact_score(q[r], x[j]) for r, j in zip(qr, rows, strict=True)])
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_without_numba_the_rescoring_runs_without_the_kernel(tmp_path, monkeypatch):
    monkeypatch.delenv(fused.ENV_NUMBA, raising=False)
    monkeypatch.setattr(fused, "_state", {})
    monkeypatch.setattr(fused, "_numba_installed", lambda: False)
    assert fused.loaded(wait=True) is None
    fused.start_loading()  # nothing to start
    assert fused._state == {"failed": "numba is not installed"}
    x = random_unit(500, 16, seed=3)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [500]))
    q = random_unit(2, 16, seed=4)
    monkeypatch.setattr(rescore, "FUSED_WAIT_ELEMENTS", 0)
    rows = np.arange(0, 500, 3)
    got = rescore.rescore(store, q, np.zeros(len(rows), np.int64), rows, Kernels(), None, 2)
    want = np.array([exact_score(q[0], np.asarray(store.shards[0][r], np.float32)) for r in rows])
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_a_kernel_that_fails_to_build_is_never_used(monkeypatch):
    monkeypatch.delenv(fused.ENV_NUMBA, raising=False)
    monkeypatch.setattr(fused, "_state", {})

    def broken():
        raise RuntimeError("LLVM is unhappy")

    monkeypatch.setattr(fused, "_build", broken)
    assert fused.loaded(wait=True) is None
    assert "LLVM is unhappy" in fused._state["failed"]
    assert fused.loaded(wait=True) is None  # not tried again


def test_loading_once_in_the_background(monkeypatch, kern):
    monkeypatch.setattr(fused, "_state", {})
    builds = [0]
    build = fused._build

    def counted():
        builds[0] += 1
        return build()

    monkeypatch.setattr(fused, "_build", counted)
    assert fused.loaded() is None  # not started, not waited for
    fused.start_loading()
    fused.start_loading()
    assert fused.loaded(wait=True) is not None
    assert fused.loaded() is not None and builds == [1]
    monkeypatch.setenv(fused.ENV_NUMBA, "off")
    assert fused.loaded(wait=True) is None


def test_float16_subnormals_in_flush_denormal_mode(kern, tmp_path, monkeypatch):
    # torch.set_flush_denormal(True) sets the CPU to read float32 subnormals as zero (DAZ;
    # threads started later inherit it): a float16 subnormal must not go through one. Before
    # the fix the kernel read 3 * 2**-24 as 0 and the rescoring returned 1.0 for a sum of
    # 1 + 3 * 2**-24 (exactly 1 + 2**-22 once rounded, halfway and to even).
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(rescore, "FUSED_WAIT_ELEMENTS", 0)
    x = np.zeros((40, 5), np.float16)
    x[:, 0] = np.float16(3 * 2.0**-24)
    x[:, 1] = 1.0
    x[1::2, 0] *= -1
    x[:, 2] = np.float16(2.0**-24) * np.arange(40)  # every small subnormal
    x[:, 3] = np.float16(2.0**-14) - np.float16(2.0**-24)  # the largest subnormal
    q = np.ones((2, 5), np.float32)
    q[1, 2] = 0.5
    path = write_store(tmp_path / "s", x.astype(np.float32), [40], dtype=np.float16)
    store = EmbeddingStore(path)
    qr, rows = np.repeat([0, 1], 40), np.tile(np.arange(40), 2)
    want = np.array([exact_score(q[r], x[j]) for r, j in zip(qr, rows, strict=True)])
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        assert np.float32(np.float16(2.0**-24)) != 0  # numpy's float16 conversion is unaffected
        out = np.empty(len(rows))
        fused.pair_dots(kern, x, rows, qr, q, out)
        np.testing.assert_array_equal(out, (x[rows].astype(np.float64) * q[qr]).sum(axis=1))
        for threads in (1, 2):
            got = rescore.rescore(store, q, qr, rows, Kernels(), None, threads)
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    finally:
        torch.set_flush_denormal(False)


_FORK_SCRIPT = """
import os, signal, sys, threading
sys.path.insert(0, sys.argv[1])
os.environ.pop("INQUIRE_NUMBA", None)
from inquire.index import fused

# A module the loader imports (as it imports numba), which blocks until the fork begins:
# this test's own fork hook, registered after inquire's and so run before it, lets it go.
started, go = threading.Event(), threading.Event()
with open(os.path.join(sys.argv[2], "slow_import_mod.py"), "w") as f:
    f.write("import __main__\\n__main__.started.set()\\n__main__.go.wait()\\n")
sys.path.insert(0, sys.argv[2])

def build():
    import slow_import_mod  # noqa: F401
    return ("k16", "k32")

fused._build = build
fused._numba_installed = lambda: True
impatient = sys.argv[3] == "impatient"
if impatient:
    fused.FORK_WAIT_S = 0.0  # the fork does not wait: the loading is still under way
else:
    os.register_at_fork(before=go.set)
fused.start_loading()
started.wait()
pid = os.fork()
if pid == 0:
    signal.alarm(20)  # a child stuck on the import lock is killed, and the test fails
    if impatient:
        assert fused.loaded(wait=True) is None  # no loading of its own (it would hang)
    else:
        import slow_import_mod  # noqa: F401
    os._exit(0)
go.set()
_, status = os.waitpid(pid, 0)
print("child", "ok" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else status)
print("kernels", fused.loaded(wait=True))
"""


@pytest.mark.parametrize("wait", ["patient", "impatient"])
def test_a_fork_while_the_kernel_loads_waits_for_it(tmp_path, wait):
    # A process forking (multiprocessing, a DataLoader's workers) while the loading thread
    # imports numba: the child inherited the module locks of the imports under way, held by
    # a thread that does not exist there, and hung forever importing any of those modules
    # (numba itself: by umap, librosa, ...). The fork now waits for the loading to end;
    # past FORK_WAIT_S ("impatient"), the child runs without the kernel rather than load
    # it again (its own import would hang on those locks).
    import subprocess
    import sys

    script = tmp_path / "fork.py"
    script.write_text(_FORK_SCRIPT)
    src = str(Path(fused.__file__).resolve().parents[2])
    proc = subprocess.run(
        [sys.executable, str(script), src, str(tmp_path), wait],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": src},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["child ok", "kernels ('k16', 'k32')"], proc.stdout


def test_waiting_for_the_kernel_while_another_thread_starts_loading_it(monkeypatch):
    # Two searches at once (a web server's requests): one starts the loading thread while
    # the other waits for the kernel. The thread was published before it was started, and
    # the waiting one could join it unstarted: RuntimeError("cannot join thread before it
    # is started") out of the search.
    import linecache
    import sys
    import threading
    import time
    from types import SimpleNamespace

    monkeypatch.delenv(fused.ENV_NUMBA, raising=False)
    monkeypatch.setattr(fused, "_state", {})
    monkeypatch.setattr(fused, "_numba_installed", lambda: True)
    monkeypatch.setattr(fused, "_build", lambda: ("k16", "k32"))
    got: list[object] = []

    def wait_for_kernel() -> None:
        try:
            got.append(fused.loaded(wait=True))
        except BaseException as exc:
            got.append(exc)

    waiter = threading.Thread(target=wait_for_kernel)

    class SlowStart(threading.Thread):
        def start(self) -> None:
            # Another thread waits for the kernel before this one is started; this one
            # starts once that one has failed or is blocked in loaded() on the lock.
            waiter.start()
            while waiter.is_alive():
                frame = sys._current_frames().get(waiter.ident or 0)
                code = None if frame is None else frame.f_code
                if code is fused.loaded.__code__ and frame is not None:
                    line = linecache.getline(code.co_filename, frame.f_lineno)
                    if "_lock" in line:  # blocked on it
                        break
                time.sleep(0.001)
            super().start()

    monkeypatch.setattr(
        fused,
        "threading",
        SimpleNamespace(
            Thread=SlowStart, Lock=threading.Lock, current_thread=threading.current_thread
        ),
    )
    fused.start_loading()
    waiter.join()
    assert got == [("k16", "k32")]


def test_the_kernel_compiles_where_numba_cannot_cache_it(kern, monkeypatch):
    # A read-only install without a writable cache folder (a container's read-only root,
    # HOME not writable, NUMBA_CACHE_DIR read-only): numba's cache=True raised "cannot
    # cache function '_dots16': no locator available" and the kernel was never used, only
    # logged at debug level. Compiled without the cache instead (each process).
    caching = pytest.importorskip("numba.core.caching")
    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])
    monkeypatch.setattr(fused, "_state", {})
    got = fused.loaded(wait=True)
    assert got is not None, fused._state.get("failed")
    x = np.arange(12, dtype=np.float16).reshape(3, 4)
    q = np.ones((1, 4), np.float32)
    out = np.empty(3)
    fused.pair_dots(got, x, np.arange(3), np.zeros(3, np.int64), q, out)
    assert out.tolist() == [6.0, 22.0, 38.0]


def _array_store(x: np.ndarray, sizes: list[int]) -> Any:
    from types import SimpleNamespace

    cuts = np.cumsum([0, *sizes])
    return SimpleNamespace(
        shards=[x[a:b] for a, b in itertools.pairwise(cuts)],
        offsets=cuts,
        dim=x.shape[1],
        dtype=x.dtype,
        root=None,
    )


@st.composite
def _rescorings(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of any float16 bit pattern or float32 value (subnormals, +-0, the largest,
    inf/NaN), queries of any finite float32 (subnormal to huge), and pairs of them."""
    d = draw(st.integers(1, 40))
    n = draw(st.integers(1, 12))
    if draw(st.booleans()):
        pattern = st.one_of(
            st.integers(0, 0xFFFF),
            st.integers(0, 0x03FF) | st.integers(0x8000, 0x83FF),  # subnormals, zeros
            st.sampled_from([0x7BFF, 0xFBFF, 0x0400, 0x8400, 0x7C00, 0x7E00]),
        )
        bits = draw(st.lists(pattern, min_size=n * d, max_size=n * d))
        x = np.array(bits, np.uint16).view(np.float16).reshape(n, d)
    else:
        value = st.floats(width=32, allow_nan=True, allow_infinity=True) | st.sampled_from(
            [0.0, -0.0, 2.0**-149, -(2.0**-149), float(np.finfo(np.float32).max)]
        )
        x = np.array(draw(st.lists(value, min_size=n * d, max_size=n * d)), np.float32)
        x = x.reshape(n, d)
    nq = draw(st.integers(1, 3))
    qv = st.floats(width=32, allow_nan=False, allow_infinity=False) | st.sampled_from(
        [1.0, -1.0, 0.5, 2.0**-149, 2.0**-126, 3.0 * 2**-24]
    )
    q = np.array(draw(st.lists(qv, min_size=nq * d, max_size=nq * d)), np.float32)
    m = draw(st.integers(1, 30))
    qr = np.sort(np.array(draw(st.lists(st.integers(0, nq - 1), min_size=m, max_size=m))))
    rows = np.array(draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)))
    return x, q.reshape(nq, d), qr.astype(np.int64), rows.astype(np.int64)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=_rescorings(), threads=st.sampled_from([1, 2]))
def test_rescoring_with_the_kernel_is_the_exact_score(kern, monkeypatch, case, threads):
    monkeypatch.setattr(rescore, "FUSED_WAIT_ELEMENTS", 0)
    x, q, qr, rows = case
    store = _array_store(x, [len(x) // 2, len(x) - len(x) // 2])
    with np.errstate(all="ignore"):
        want = np.array([exact_score(q[r], x[j]) for r, j in zip(qr, rows, strict=True)])
        x64 = x.astype(np.float64)
        norm = float(np.sqrt((x64 * x64).sum(axis=1)).max()) * (1 + 2.0**-40)
        for max_norm in (None, norm if math.isfinite(norm) else None):
            used: list[str] = []
            got = rescore.rescore(store, q, qr, rows, Kernels(), max_norm, threads, used)
            assert used == ["fused"]
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_shards_that_are_views_into_a_memory_map(tmp_path, monkeypatch, dtype):
    # A shard that is a view starting past its file's first row (``np.load(p, mmap_mode="r")
    # [100:300]``) keeps its parent's ``offset``: read by preadv from that offset, its rows
    # were the file's first rows (both ways, with and without the kernel, the scan's reads
    # too: blocks._file_source).
    from inquire.index.blocks import read_slices

    monkeypatch.setattr(rescore, "FUSED_WAIT_ELEMENTS", 0)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((500, 9)).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    shards = [mm[100:300], mm[450:], mm[:0], mm[7:8]]
    rows_of = np.concatenate([np.arange(100, 300), np.arange(450, 500), [7]])
    store = _array_store(x, [200, 50, 0, 1])
    store.shards = shards
    q = rng.standard_normal((2, 9)).astype(np.float32)
    qr, rows = np.repeat([0, 1], 251), np.tile(np.arange(251), 2)
    want = np.array([exact_score(q[r], x[rows_of[j]]) for r, j in zip(qr, rows, strict=True)])
    for numba in ("on", "off"):
        monkeypatch.setenv(fused.ENV_NUMBA, numba)
        got = rescore.rescore(store, q, qr, rows, Kernels(), None, 2)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    out = np.empty((251, 9), dtype)
    read_slices(store, [(0, 0, 200), (1, 0, 50), (3, 0, 1)], out)
    np.testing.assert_array_equal(out, x[rows_of])


def test_the_kernel_compiles_where_numba_cannot_read_its_cache(kern, monkeypatch):
    # A cache file numba cannot read (garbled: UnicodeDecodeError, truncated:
    # UnpicklingError, both seen) failed the loading in every process on
    # that machine, the kernel never used until someone cleared numba's cache folder.
    # Compiled without the cache instead.
    import pickle

    caching = pytest.importorskip("numba.core.caching")

    def unreadable(self, sig, target_context):
        raise pickle.UnpicklingError("pickle data was truncated")

    monkeypatch.setattr(caching.Cache, "load_overload", unreadable)
    monkeypatch.setattr(fused, "_state", {})
    got = fused.loaded(wait=True)
    assert got is not None, fused._state.get("failed")
    out = np.empty(1)
    x = np.full((1, 3), -2, np.float32)
    fused.pair_dots(got, x, np.zeros(1, np.int64), np.zeros(1, np.int64), -x, out)
    assert out.tolist() == [-12.0]
