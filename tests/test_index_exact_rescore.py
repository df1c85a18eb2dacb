"""Rescoring distinct rows once, in batches, pieces and threads: the same exact scores as
pair by pair."""

from __future__ import annotations

import contextlib
import itertools
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from inquire.embed.store import EmbeddingStore
from inquire.index import fused, rescore
from inquire.index.kernels import Kernels
from inquire.index.score import exact_score, exact_scores
from inquire.testing.search_stores import large_store, random_unit, rss_file_bytes, write_store


@pytest.fixture(params=["numpy", "fused"])
def rescore_path(request, monkeypatch):
    """Each way of the rescoring: without the compiled kernel, or with it (loaded first,
    used at any size); yields the calls of the kernel, checked made where it runs."""
    calls = [0]
    if request.param == "numpy":
        monkeypatch.setenv(fused.ENV_NUMBA, "off")
        yield request.param
        return
    monkeypatch.delenv(fused.ENV_NUMBA, raising=False)
    if fused.loaded(wait=True) is None:
        pytest.skip("numba is not installed: no compiled kernel")
    monkeypatch.setattr(rescore, "FUSED_WAIT_ELEMENTS", 0)
    dots = fused.pair_dots

    def counted(*a: Any) -> None:
        calls[0] += 1
        dots(*a)

    monkeypatch.setattr(fused, "pair_dots", counted)
    yield request.param
    assert calls[0] > 0, "the compiled kernel never ran"


def test_exact_scores_with_shared_rows_equal_pair_by_pair():
    rng = np.random.default_rng(0)
    q = random_unit(5, 33, seed=1)
    x = random_unit(40, 33, seed=2).astype(np.float16).astype(np.float32)
    qr = np.sort(rng.integers(0, 5, 300))
    index = rng.integers(0, 40, 300)
    got = exact_scores(q, qr, x, index=index)
    want = np.array([exact_score(q[r], x[j]) for r, j in zip(qr, index, strict=True)])
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
@pytest.mark.parametrize("known_norm", [False, True])
def test_rescore_across_shards_pieces_and_threads(
    tmp_path, monkeypatch, threads, known_norm, rescore_path
):
    # Tiny batches and pieces: a batch's rows cross shard boundaries, a query's rows in a
    # batch cross pieces; rows repeat across queries; more threads than batches at the end.
    monkeypatch.setattr(rescore, "_BATCH_ELEMENTS", 37 * 16)
    monkeypatch.setattr(rescore, "_PIECE_ELEMENTS", 7 * 16)
    x = random_unit(500, 16, seed=3)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [120, 1, 379]))
    q = random_unit(6, 16, seed=4)
    rng = np.random.default_rng(5)
    qr = np.sort(rng.integers(0, 6, 900))
    rows = rng.integers(0, 500, 900)
    norms = [np.linalg.norm(np.asarray(sh, np.float32), axis=1).max() for sh in store.shards]
    norm = float(max(norms)) * 1.01
    got = rescore.rescore(store, q, qr, rows, Kernels(), norm if known_norm else None, threads)
    x16 = np.concatenate([np.asarray(s, np.float32) for s in store.shards])
    want = np.array([exact_score(q[r], x16[j]) for r, j in zip(qr, rows, strict=True)])
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert len(rescore.rescore(store, q, qr[:0], rows[:0], Kernels())) == 0


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_batches_cover_every_row_once_and_feed_every_thread(threads):
    for n_rows in (1, 2, 7, 100, 1001):
        for step in (1, 3, 64, 10_000):
            got = rescore._batches(n_rows, step, threads)
            assert got[0][0] == 0 and got[-1][1] == n_rows
            assert all(b > a and b - a <= step for a, b in got)
            assert all(b == a2 for (_, b), (a2, _) in itertools.pairwise(got))
            assert len(got) >= min(threads, n_rows)


def test_pairs_in_any_order_and_queries_without_pairs(tmp_path, rescore_path):
    x = random_unit(50, 8, seed=6)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [20, 30]))
    q = random_unit(9, 8, seed=7)
    qr = np.array([8, 0, 8, 3, 3, 0, 8])  # not sorted; queries 1, 2, 4-7 have no pairs
    rows = np.array([49, 0, 49, 19, 20, 49, 0])
    x16 = np.concatenate([np.asarray(s, np.float32) for s in store.shards])
    want = np.array([exact_score(q[r], x16[j]) for r, j in zip(qr, rows, strict=True)])
    for threads in (1, 4):
        got = rescore.rescore(store, q, qr, rows, Kernels(), None, threads)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


F32_MAX = float(np.finfo(np.float32).max)


def _overflow_rows() -> tuple[np.ndarray, np.ndarray]:
    """Rows whose exact score for the query ``(1, 1, 1, 0)`` lies at the float32 overflow
    threshold ``2**128 - 2**103`` (halfway between the largest float32 and ``2**128``) or
    within a float64 rounding of it, and the scores they round to."""
    h = 2.0**103
    x = np.array(
        [
            [F32_MAX, h, -(2.0**-60), 0],  # just below: the largest float32
            [F32_MAX, h, 2.0**-60, 0],  # just above: inf
            [F32_MAX, h, 0, 0],  # exactly halfway: to even, inf
            [-F32_MAX, -h, 2.0**-60, 0],  # the same below zero
            [-F32_MAX, -h, -(2.0**-60), 0],
        ],
        np.float32,
    )
    want = np.array([F32_MAX, np.inf, np.inf, -F32_MAX, -np.inf], np.float32)
    return x, want


def test_exact_score_at_the_float32_overflow_threshold():
    # The float64 sum of the first row is the threshold itself, the exact sum a hair below:
    # the float32 it rounds to is the largest finite one, not inf.
    x, want = _overflow_rows()
    q = np.array([1, 1, 1, 0], np.float32)
    got = np.array([exact_score(q, row) for row in x])
    np.testing.assert_array_equal(got, want)
    qr = np.zeros(len(x), np.int64)
    for max_norm in (None, 1e39):
        np.testing.assert_array_equal(exact_scores(q[None], qr, x, max_norm), want)


def test_rescore_and_search_at_the_float32_overflow_threshold(tmp_path):
    from inquire.index.exact import search

    x, want = _overflow_rows()
    store = EmbeddingStore(write_store(tmp_path / "s", x, [2, 3], dtype=np.float32))
    q = np.array([[1, 1, 1, 0]], np.float32)
    qr = np.zeros(len(x), np.int64)
    rows = np.arange(len(x))
    for max_norm in (None, 1e39):
        got = rescore.rescore(store, q, qr, rows, Kernels(), max_norm)
        np.testing.assert_array_equal(got, want)
    s, i = search(store, q, 5, threads=1, screen="off")
    order = np.lexsort((np.arange(5), -want))
    np.testing.assert_array_equal(i[0], order)
    np.testing.assert_array_equal(s[0], want[order])


def test_rescore_of_zero_and_tiny_scores_is_exact_score_bit_for_bit(tmp_path):
    # A zero row for a query with negative entries: the float64 sum is 0 exactly, its
    # interval [-2**-1000, 2**-1000] rounds to -0.0 at one end and 0.0 at the other, which
    # compare equal; exact_score gives 0.0. Tiny negative sums round to -0.0 in both.
    x = np.zeros((4, 8), np.float32)
    x[1, 0] = 2.0**-140  # times -2**-100: -2**-240, rounds to -0.0
    x[2, :2] = [2.0**-149, -(2.0**-149)]  # products cancel: exactly 0
    x[3, :] = 1e-45
    q = np.full((2, 8), -1.0, np.float32)
    q[:, 0] = -(2.0**-100)
    q[1] = np.abs(q[1])
    store = EmbeddingStore(write_store(tmp_path / "s", x, [4], dtype=np.float32))
    qr = np.repeat(np.arange(2), 4)
    rows = np.tile(np.arange(4), 2)
    want = np.array([exact_score(q[r], x[j]) for r, j in zip(qr, rows, strict=True)])
    for max_norm in (None, 1.0):
        got = rescore.rescore(store, q, qr, rows, Kernels(), max_norm)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        got = exact_scores(q, qr, x[rows], max_norm)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("with_torch", [True, False])
@pytest.mark.parametrize("known_norm", [False, True])
@pytest.mark.parametrize("threads", [1, 3])
def test_rescore_of_awkward_rows_and_pairs(
    tmp_path, monkeypatch, dtype, with_torch, known_norm, threads, rescore_path
):
    # Exact float32 midpoints that float64 rounding lands on (1 + 2**-24 + 2**-80 is above
    # the midpoint between 1 and 1 + 2**-23, its float64 sum is the midpoint), huge rows
    # (scores over the largest float32), NaN and inf rows, zero and subnormal rows, 1-row
    # shards; pairs: queries without pairs, rows repeated within a query, one query only.
    monkeypatch.setattr(rescore, "_PIECE_ELEMENTS", 3 * 8)
    monkeypatch.setattr(rescore, "_BATCH_ELEMENTS", 4 * 8)
    monkeypatch.setattr(rescore, "_SLOW_ROWS", 2)
    x = random_unit(20, 8, seed=6)
    x[0, :3] = [1, 2.0**-24, 2.0**-80]
    x[1, :3] = [1, 2.0**-24, -(2.0**-80)]
    x[2, :3] = [1, 2.0**-24, 0]
    x[3] = 1e30 if dtype == np.float32 else 6e4
    x[4, 5] = np.nan
    x[5, 1] = np.inf
    x[6] = 0
    x[7] = 2.0**-140 if dtype == np.float32 else 2.0**-20
    x[8, :2] = 3e38 if dtype == np.float32 else 6e4
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1, 1, 5, 1, 12], dtype=dtype))
    xs = np.concatenate([np.asarray(s, np.float32) for s in store.shards])
    q = random_unit(5, 8, seed=7)
    q[0, :3] = 1
    q[0, 3:] = 0
    q[3] = -q[3]
    kernels = Kernels()
    if not with_torch:
        kernels.torch = None
    finite = np.isfinite(xs).all(axis=1)
    norm = float(np.linalg.norm(xs[finite].astype(np.float64), axis=1).max()) * 1.01
    rng = np.random.default_rng(8)
    for qr, rows in [
        (np.sort(rng.choice([0, 3, 4], 70)), rng.integers(0, 20, 70)),
        (np.zeros(1, np.int64), np.zeros(1, np.int64)),
        (np.full(40, 3), np.tile(np.arange(20), 2)),
    ]:
        pairs = list(zip(qr, rows, strict=True))
        if known_norm:  # the bound covers finite rows only
            keep = finite[rows]
            qr, rows = qr[keep], rows[keep]
            pairs = list(zip(qr, rows, strict=True))
        got = rescore.rescore(store, q, qr, rows, kernels, norm if known_norm else None, threads)
        want = np.array([exact_score(q[r], xs[j]) for r, j in pairs], np.float32)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    if dtype == np.float32:  # the midpoint cases are what they claim
        assert exact_score(q[0], xs[0]) == np.float32(1 + 2.0**-23)
        assert exact_score(q[0], xs[1]) == exact_score(q[0], xs[2]) == np.float32(1)


@pytest.mark.parametrize("threads", [1, 2])
def test_rescore_of_sparse_rows_never_maps_the_whole_store(
    tmp_path, monkeypatch, threads, rescore_path
):
    # 20k random rows of a 100 MiB store: each batch's rows spread over the whole store, and
    # the OS maps a large page per touch. Reading a batch's rows at once (then dropping its
    # pages) mapped every page of the store first: resident memory grew with the store.
    if rss_file_bytes() is None:
        pytest.skip("no RssFile in /proc/self/status")
    n, d = 200_000, 256
    store = EmbeddingStore(large_store(tmp_path / "s", n, d, [n], seed=9))
    rng = np.random.default_rng(9 + 1)
    q = random_unit(4, d, seed=10)
    rows = rng.choice(n, 20_000, replace=False)
    qr = np.sort(rng.integers(0, 4, len(rows)))
    kernels = Kernels()
    rescore.rescore(store, q, qr, rows, kernels, None, threads)  # imports, code paths
    peak, calls = [0], [0]
    read = rescore._read

    def measured(*args: object) -> np.ndarray:
        out = read(*args)  # type: ignore[arg-type]
        peak[0] = max(peak[0], rss_file_bytes() or 0)
        calls[0] += 1
        return out

    monkeypatch.setattr(rescore, "_read", measured)
    before = rss_file_bytes() or 0
    got = rescore.rescore(store, q, qr, rows, kernels, None, threads)
    after = rss_file_bytes() or 0
    store_bytes = n * d * 2
    allowed = threads * (12 << 20) + (4 << 20)  # per thread a window and two large pages
    assert allowed < store_bytes // 2
    assert calls[0] > 0
    assert peak[0] - before <= allowed, (peak[0] - before) / 2**20
    assert after - before <= 4 << 20
    sample = np.argsort(rows)[:500]
    xs = np.asarray(store.shards[0][rows[sample]], np.float32)
    want = np.array([exact_score(q[qr[j]], xs[i]) for i, j in enumerate(sample)], np.float32)
    np.testing.assert_array_equal(got[sample].view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("offset", [0, 128, 4096 + 80, 3 * 65536 + 16, (2 << 20) - 64])
@pytest.mark.parametrize("d", [3, 256])
@pytest.mark.parametrize("first", [0, 7])
def test_row_span_covers_the_rows_in_whole_large_pages(tmp_path, dtype, offset, d, first):
    # A shard at any offset in its file (and a view of one from row ``first``: it keeps its
    # parent's offset): the span dropped holds every byte of the rows (found from the array's
    # own address in the mapping), is page-aligned, inside the mapping, and made of whole
    # large pages of the file (what one touch maps), clipped to the mapping.
    import mmap

    n = 3000
    path = tmp_path / "shard.bin"
    with open(path, "wb") as f:
        f.write(b"\0" * offset)
        f.write(np.ones((n + first, d), dtype).tobytes())
    shard = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(n + first, d))[first:]
    store = SimpleNamespace(shards=[shard], dim=d, dtype=np.dtype(dtype))
    m = rescore.shard_mapping(shard)
    assert m is not None
    at = shard.ctypes.data - np.frombuffer(m, np.uint8).ctypes.data
    base = offset - offset % mmap.ALLOCATIONGRANULARITY  # the mapping's first byte in the file
    assert base + at == offset + first * d * np.dtype(dtype).itemsize
    row_bytes = d * np.dtype(dtype).itemsize
    page = rescore._LARGE_PAGE
    for lo, hi in [(0, 1), (0, n), (n - 1, n), (17, 18), (1000, 2500), (5, 6)]:
        span = rescore._row_span(store, 0, m, lo, hi)  # type: ignore[arg-type]
        assert span is not None
        start, length = span
        assert start % mmap.PAGESIZE == 0 and start >= 0 and start + length <= len(m)
        assert start <= at + lo * row_bytes and at + hi * row_bytes <= start + length
        assert start == 0 or (base + start) % page == 0
        assert start + length == len(m) or (base + start + length) % page == 0


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_rescore_windows_across_empty_and_one_row_shards(
    tmp_path, monkeypatch, dtype, rescore_path
):
    # Windows of 7 rows and batches of 5 rows: windows and batches end inside shards, at
    # empty shards and 1-row shards; every page dropped belongs to a shard that has rows.
    monkeypatch.setattr(rescore, "_BATCH_ELEMENTS", 16 * 5)
    monkeypatch.setattr(rescore, "_WINDOW_BYTES", 16 * 7 * np.dtype(dtype).itemsize)
    x = random_unit(300, 16, seed=3)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1, 0, 150, 0, 1, 148], dtype=dtype))
    xs = store.rows(np.arange(300)).astype(np.float32)
    rng = np.random.default_rng(1)
    q = random_unit(3, 16, seed=4)
    qr, rows = rng.integers(0, 3, 500), rng.integers(0, 300, 500)
    want = np.array([exact_score(q[r], xs[j]) for r, j in zip(qr, rows, strict=True)])
    for threads in (1, 3):
        got = rescore.rescore(store, q, qr, rows, Kernels(), None, threads)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


class _FailsAt:
    """A stand-in for ``fn`` that raises ``exc`` on its ``at``-th call and calls through
    otherwise; ``calls`` counts the calls, across threads."""

    def __init__(self, fn: Any, at: int, exc: BaseException) -> None:
        self.fn, self.at, self.exc, self.calls = fn, at, exc, 0
        self._lock = threading.Lock()

    def __call__(self, *a: object) -> Any:
        with self._lock:
            self.calls += 1
            fail = self.calls == self.at
        if fail:
            raise self.exc
        return self.fn(*a)


def test_an_error_in_a_rescoring_thread_comes_back_and_stops_every_thread(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(rescore, "_BATCH_ELEMENTS", 16 * 5)
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(300, 16, seed=3), [100, 200]))
    q = random_unit(3, 16, seed=4)
    rng = np.random.default_rng(1)
    qr, rows = rng.integers(0, 3, 500), rng.integers(0, 300, 500)
    failing = _FailsAt(rescore._batch_dots, 2, RuntimeError("bad row"))
    monkeypatch.setattr(rescore, "_batch_dots", failing)
    with pytest.raises(RuntimeError, match="bad row"):
        rescore.rescore(store, q, qr, rows, Kernels(), None, 3)
    assert not [t for t in threading.enumerate() if t.name.startswith("inquire-rescore")]


def test_after_an_error_the_other_rescoring_threads_stop_at_their_next_batch(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(rescore, "_BATCH_ELEMENTS", 16 * 4)  # 4 rows a batch: many batches
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(400, 16, seed=5), [400]))
    q = random_unit(2, 16, seed=6)
    rows = np.arange(400)
    qr = np.zeros(400, np.int64)
    dots = rescore._batch_dots
    failed = threading.Event()
    calls: list[str] = []
    lock = threading.Lock()

    def failing(*a: object) -> None:
        name = threading.current_thread().name
        with lock:
            calls.append(name)
            first = len(calls) == 1
        if first:
            failed.set()
            raise RuntimeError("bad row")
        failed.wait(timeout=60)  # the others start their first batch only after the error
        dots(*a)  # type: ignore[arg-type]

    monkeypatch.setattr(rescore, "_batch_dots", failing)
    with pytest.raises(RuntimeError, match="bad row"):
        rescore.rescore(store, q, qr, rows, Kernels(), None, 3)
    # 100 batches over 3 threads: the failing one, and at most one more batch per other thread
    # (the one it was in when the error came).
    assert len(calls) <= 3


@pytest.mark.parametrize("threads", [2, 4])
def test_a_read_error_stops_the_pipeline_and_is_raised(tmp_path, monkeypatch, threads):
    """With several threads, one reads the batches and the others compute: an error while
    reading (a shard cut, say) reaches the caller, and every thread stops."""
    import threading

    monkeypatch.setattr(rescore, "_BATCH_ELEMENTS", 16 * 4)  # 4 rows a batch: many batches
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(400, 16, seed=7), [400]))
    q = random_unit(2, 16, seed=8)
    rows = np.arange(400)
    qr = np.zeros(400, np.int64)
    read = rescore._read
    failing = _FailsAt(read, 5, OSError("read failed"))
    monkeypatch.setattr(rescore, "_read", failing)
    with pytest.raises(OSError, match="read failed"):
        rescore.rescore(store, q, qr, rows, Kernels(), None, threads)
    # Nothing read after the error, but for a read another reading thread had begun (with 4
    # threads, 2 read: one may pass its check of the error just before the failing read).
    readers = max(1, threads // 2)
    assert 5 <= failing.calls <= 5 + readers - 1
    assert not [t for t in threading.enumerate() if t.name.startswith("inquire-rescore")]
    monkeypatch.setattr(rescore, "_read", read)  # (not undo(): conftest's settings too)
    got = rescore.rescore(store, q, qr, rows, Kernels(), None, threads)  # and it works again
    xs = np.asarray(store.shards[0][:], np.float32)
    want = np.array([exact_score(q[0], xs[r]) for r in rows], np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("threads", [2, 3])
def test_a_compute_thread_that_cannot_start_stops_the_pipeline(tmp_path, monkeypatch, threads):
    """A compute thread whose buffers cannot be allocated (out of memory) raises at once:
    the reader, waiting for buffers only compute threads hand back, must not be left
    waiting (it was: every buffer ended in the queue of a thread that had gone)."""
    import threading

    monkeypatch.setattr(rescore, "_BATCH_ELEMENTS", 16 * 4)  # 4 rows a batch: many batches
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(400, 16, seed=9), [400]))
    q = random_unit(2, 16, seed=10)
    rows, qr = np.arange(400), np.zeros(400, np.int64)
    failing = _FailsAt(rescore._Worker, 1, MemoryError("no room for the buffers"))
    monkeypatch.setattr(rescore, "_Worker", failing)
    got: list[BaseException] = []

    def call() -> None:
        try:
            rescore.rescore(store, q, qr, rows, Kernels(), None, threads)
        except BaseException as exc:
            got.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(timeout=60)
    assert not caller.is_alive(), "the rescoring pipeline hangs"
    assert len(got) == 1 and isinstance(got[0], MemoryError)
    assert not [t for t in threading.enumerate() if t.name.startswith("inquire-rescore")]


def test_an_interrupt_while_waiting_stops_the_rescoring_threads(tmp_path, monkeypatch):
    """A KeyboardInterrupt in the calling thread while it waits for the pipeline: the threads
    stop at their next batch (the pool's exit waits for them) instead of rescoring every
    remaining batch first."""
    import threading
    from types import SimpleNamespace

    monkeypatch.setattr(rescore, "_BATCH_ELEMENTS", 16 * 4)  # 4 rows a batch: 100 batches
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(400, 16, seed=11), [400]))
    q = random_unit(2, 16, seed=12)
    rows, qr = np.arange(400), np.zeros(400, np.int64)
    events: list[threading.Event] = []

    class Recorded(threading.Event):
        def __init__(self) -> None:
            super().__init__()
            events.append(self)

    monkeypatch.setattr(
        rescore,
        "threading",
        SimpleNamespace(Event=Recorded, Thread=threading.Thread, Lock=threading.Lock),
    )
    calls = [0]
    lock = threading.Lock()
    dots = rescore._batch_dots

    timed_out = [False]

    def slow(*a: object) -> None:
        with lock:
            calls[0] += 1
        # A batch waits for the pipeline's stop flag (set once the caller is interrupted);
        # where nothing sets it, the first wait times out and every batch is computed.
        if not timed_out[0] and not events[-1].wait(timeout=5):
            timed_out[0] = True
        dots(*a)  # type: ignore[arg-type]

    monkeypatch.setattr(rescore, "_batch_dots", slow)
    waits = [0]

    real_pool = rescore.ThreadPoolExecutor

    class Pool(real_pool):  # type: ignore[misc, valid-type]
        def submit(self, fn, *a, **k):  # type: ignore[no-untyped-def]
            # A future whose result() is interrupted (Ctrl-C while the caller waits).
            f = super().submit(fn, *a, **k)
            real_result = f.result

            def result(timeout: float | None = None) -> object:
                waits[0] += 1
                if waits[0] == 1:
                    raise KeyboardInterrupt
                return real_result(timeout)

            f.result = result  # type: ignore[method-assign]
            return f

    monkeypatch.setattr(rescore, "ThreadPoolExecutor", Pool)
    with pytest.raises(KeyboardInterrupt):
        rescore.rescore(store, q, qr, rows, Kernels(), None, 3)
    assert not [t for t in threading.enumerate() if t.name.startswith("inquire-rescore")]
    assert calls[0] <= 10  # of 100 batches: those in flight when the interrupt came


def _reader_case(tmp_path, dtype, span: int, monkeypatch) -> tuple[EmbeddingStore, np.ndarray]:
    """A store of 4 shards (one empty, one of 1 row) read through windows of ``span`` rows."""
    d = 8
    monkeypatch.setattr(rescore, "_WINDOW_BYTES", span * d * np.dtype(dtype).itemsize)
    x = random_unit(1 + 200 + 97, d, seed=21)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1, 0, 200, 97], dtype=dtype))
    return store, np.asarray(store.rows(np.arange(len(x))))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_reader_runs_end_at_gaps_windows_and_shards_and_read_what_was_asked(
    tmp_path, monkeypatch, dtype
):
    # Gaps of exactly _GAP_ROWS and one more, runs exactly a window long and one row past,
    # repeated rows, each shard's first and last rows; every read checked against the array,
    # and every preadv checked to stay within one window and one shard.
    from inquire.index import blocks

    span = 40
    store, want = _reader_case(tmp_path, dtype, span, monkeypatch)
    g = rescore._GAP_ROWS
    cases = [
        np.array([0, 1, 200, 201, 297]),  # shard edges (shard 1 is empty)
        np.array([1, 1 + g, 1 + 2 * g + 1]),  # gaps of g and g + 1
        np.arange(1, 1 + span),  # one window, consecutive
        np.arange(1, 2 + span),  # a row past it
        np.array([5, 5, 5, 9, 9, 150]),  # repeats
        np.arange(0, 298),  # every row
        np.arange(0, 298, 3),
        np.array([297]),
        np.array([], np.int64),
    ]
    spans: list[int] = []
    pread = blocks._pread_rows

    def counted(fd: int, src: tuple[str, int], lo: int, buf: np.ndarray) -> np.ndarray:
        spans.append(len(buf))
        return pread(fd, src, lo, buf)

    monkeypatch.setattr(rescore, "_pread_rows", counted)
    reader = rescore._Reader(store)
    assert reader.span == span and not reader.mapped
    stage = reader.stage()
    for rows in cases:
        out = np.full((len(rows) + 3, store.dim), np.nan, store.dtype)
        got = rescore._read(reader, rows, out, stage)
        assert got.shape == (len(rows), store.dim)
        np.testing.assert_array_equal(got, want[rows])
        assert np.isnan(out[len(rows) :]).all()  # nothing written past the rows
    assert spans and max(spans) <= span
    # Sparse rows are read a row at a time, not a window at a time.
    spans.clear()
    rows = np.array([1, 1 + g + 1, 1 + 2 * (g + 1)])
    rescore._read(reader, rows, np.empty((3, store.dim), store.dtype), reader.stage())
    assert spans == [1, 1, 1]


def test_reader_mixes_file_shards_with_shards_in_memory(tmp_path, monkeypatch):
    # A shard that is not a file (an array in memory) is read through the array; the files
    # read (shards 0 and 3) are opened and closed again.
    import os

    store, want = _reader_case(tmp_path, np.float16, 16, monkeypatch)
    store.shards[2] = np.array(store.shards[2])  # in memory
    reader = rescore._Reader(store)
    assert reader.mapped == [2]
    rows = np.arange(0, 298, 2)
    opened: list[int] = []
    real_open = os.open

    def counted_open(path: str, flags: int) -> int:
        opened.append(fd := real_open(path, flags))
        return fd

    with monkeypatch.context() as mp:
        mp.setattr(rescore.os, "open", counted_open)
        got = rescore._read(reader, rows, np.empty((len(rows), 8), np.float16), reader.stage())
    np.testing.assert_array_equal(got, want[rows])
    assert len(opened) == 2  # shards 0 and 3
    for fd in opened:
        with pytest.raises(OSError):
            os.fstat(fd)
    q = random_unit(2, 8, seed=5)
    qr = np.repeat([0, 1], len(rows))
    both = np.concatenate([rows, rows])
    got = rescore.rescore(store, q, qr, both, Kernels(), None, 2)
    xs = want.astype(np.float32)
    expected = np.array([exact_score(q[r], xs[j]) for r, j in zip(qr, both, strict=True)])
    np.testing.assert_array_equal(got.view(np.uint32), expected.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("threads", [1, 2])
def test_rescoring_a_shard_cut_short_after_opening_is_a_clear_error(
    tmp_path, threads, rescore_path
):
    # The file shrinks under an open store (a copy still being written over it): reading the
    # rows past its end is an InputError naming the file, not a crash of the process.
    from inquire.errors import InputError

    x = random_unit(400, 16, seed=3)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [100, 300]))
    _ = store.shards
    path = store.shard_paths[1]
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 50 * 16 * 2)
    q = random_unit(2, 16, seed=4)
    rows = np.arange(0, 400, 3)
    qr = np.zeros(len(rows), np.int64)
    with pytest.raises(InputError, match="truncated"):
        rescore.rescore(store, q, qr, rows, Kernels(), None, threads)
    ok = rows < 300  # rows before the cut still read
    got = rescore.rescore(store, q, qr[ok], rows[ok], Kernels(), None, threads)
    xs = np.asarray(store.rows(rows[ok]), np.float32)
    expected = np.array([exact_score(q[0], v) for v in xs], np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_rescoring_holds_one_shard_file_open_per_reading_thread(
    tmp_path, monkeypatch, threads, rescore_path
):
    # A store of many shards already holds a descriptor per shard (its memory maps) and, while
    # the scan runs, its reader another per shard: a rescoring mid-scan (a pool flushed) that
    # kept every shard file it read open ran out of descriptors (under `ulimit -n 230`, 100
    # shards of identical rows, k = 1: EMFILE, where reading through the maps did not).
    import os
    from pathlib import Path

    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc/self/fd")
    n_shards, per, d = 60, 40, 8
    x = random_unit(n_shards * per, d, seed=31)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [per] * n_shards))
    q = random_unit(2, d, seed=32)
    rows = np.arange(0, n_shards * per, 7)
    qr = np.sort(np.random.default_rng(33).integers(0, 2, len(rows)))
    rescore.rescore(store, q, qr, rows, Kernels(), None, threads)  # imports, code paths
    shard_files = {str(p.resolve()) for p in store.shard_paths}

    def open_shard_files() -> int:
        # Descriptors open on a shard file (the store's maps hold one each, Python's mmap
        # keeps a duplicate: counted before and after alike); other descriptors of the
        # process may come and go meanwhile, and are not counted.
        n = 0
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                n += os.readlink(fd_dir / fd) in shard_files
        return n

    peak = [0]
    pread = rescore._pread_rows

    def counted(fd: int, src: tuple[str, int], lo: int, buf: np.ndarray) -> np.ndarray:
        peak[0] = max(peak[0], open_shard_files())
        return pread(fd, src, lo, buf)

    monkeypatch.setattr(rescore, "_pread_rows", counted)
    before = open_shard_files()
    got = rescore.rescore(store, q, qr, rows, Kernels(), None, threads)
    # Without the compiled kernel half the threads read; with it, every thread.
    readers = threads if rescore_path == "fused" else max(1, threads // 2)
    assert 1 <= peak[0] - before <= readers, peak[0] - before
    assert open_shard_files() == before
    xs = np.asarray(store.rows(rows), np.float32)
    expected = np.array([exact_score(q[r], v) for r, v in zip(qr, xs, strict=True)], np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("screen", ["off", "bf16"])
def test_a_shard_file_deleted_under_an_open_store_is_a_clear_error(tmp_path, screen, rescore_path):
    # The store mapped the file; the search reads it by name (the scan's and the rescoring's
    # preadv): a file gone since is an InputError naming it, not a bare FileNotFoundError.
    import os

    from inquire.errors import InputError
    from inquire.index.exact import search

    x = random_unit(600, 16, seed=3)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [200, 400]))
    os.unlink(store.shard_paths[1])
    q = random_unit(2, 16, seed=4)
    with pytest.raises(InputError, match="img_emb_1"):
        search(store, q, 5, screen=screen, bf16_copy="off")
    rows = np.arange(0, 600, 5)
    with pytest.raises(InputError, match="img_emb_1"):
        rescore.rescore(store, q, np.zeros(len(rows), np.int64), rows, Kernels(), None, 2)
    ok = rows[rows < 200]  # the shard left alone still rescores
    got = rescore.rescore(store, q, np.zeros(len(ok), np.int64), ok, Kernels(), None, 2)
    want = np.array([exact_score(q[0], np.asarray(x[r], np.float16)) for r in ok], np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("screen", ["off", "bf16"])
def test_a_shard_file_replaced_under_an_open_store_is_a_clear_error(tmp_path, screen, rescore_path):
    # Another file renamed over a shard the store mapped (the folder embedded again while a
    # server keeps the store open): read by name, its rows would be searched under the old
    # file's ids and offsets, silently. An InputError asks to open the store again.
    import os

    from inquire.errors import InputError
    from inquire.index.exact import search

    x = random_unit(600, 16, seed=3)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [200, 400]))
    other = EmbeddingStore(write_store(tmp_path / "o", random_unit(400, 16, seed=9), [400]))
    os.replace(other.shard_paths[0], store.shard_paths[1])
    q = random_unit(2, 16, seed=4)
    with pytest.raises(InputError, match=r"img_emb_1.*open the store again"):
        search(store, q, 5, screen=screen, bf16_copy="off")
    rows = np.arange(0, 600, 5)
    with pytest.raises(InputError, match=r"img_emb_1.*open the store again"):
        rescore.rescore(store, q, np.zeros(len(rows), np.int64), rows, Kernels(), None, 2)
    fresh = EmbeddingStore(store.root)  # opened again: searched as it now is
    got = search(fresh, q, 5, screen=screen, bf16_copy="off")
    want = search(fresh, q, 5, screen="off", bf16_copy="off")
    np.testing.assert_array_equal(got[1], want[1])


def test_the_guess_sample_refuses_a_shard_file_replaced_under_an_open_store(tmp_path):
    # The guessed floor's sample reads slices of the shard files by name too.
    import os

    from inquire.errors import InputError
    from inquire.index.blocks import read_slices

    x = random_unit(600, 16, seed=3)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [200, 400]))
    out = np.empty((10, 16), np.float16)
    read_slices(store, [(0, 0, 5), (1, 395, 400)], out)
    np.testing.assert_array_equal(out, np.concatenate([store.shards[0][:5], store.shards[1][395:]]))
    other = EmbeddingStore(write_store(tmp_path / "o", random_unit(400, 16, seed=9), [400]))
    os.replace(other.shard_paths[0], store.shard_paths[1])
    read_slices(store, [(0, 0, 5)], out)  # the shard left alone still reads
    with pytest.raises(InputError, match=r"img_emb_1.*open the store again"):
        read_slices(store, [(0, 0, 5), (1, 0, 5)], out)
