"""The float32 GEMM's choice (oneDNN, torch or numpy's BLAS, timed once per process), one
BLAS thread per scoring thread, and the floor the scoring threads share: the result never
changes."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

from inquire.embed.store import EmbeddingStore
from inquire.index import kernels as kernels_mod
from inquire.index.exact import SearchStats, search
from inquire.index.pool import CandidatePool
from inquire.index.scorer import SharedFloor
from inquire.index.topk import brute_force as _brute_force
from inquire.testing.search_stores import random_unit, write_store

torch = pytest.importorskip("torch")
threadpoolctl = pytest.importorskip("threadpoolctl")


def brute_force(store: EmbeddingStore, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.concatenate([np.asarray(s, np.float32) for s in store.shards])
    return _brute_force(q, rows, store.ids, k)


def _blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]


@pytest.mark.parametrize("gemm", kernels_mod.GEMMS)
def test_every_gemm_gives_the_brute_force_result(tmp_path, monkeypatch, gemm):
    # 16 chunks or more: the search times the GEMMs; here the timing is replaced by the
    # answer, so each runs, and each must equal brute force bit for bit.
    if gemm not in kernels_mod.Kernels().candidates():
        pytest.skip(f"{gemm} cannot run the float32 GEMM here")
    x = random_unit(3300, 24, seed=1)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1000, 2300]))
    q = random_unit(9, 24, seed=2)
    chunk = 200
    monkeypatch.setattr(kernels_mod, "_fastest", {kernels_mod.gemm_key(9, 24, chunk): gemm})
    st = SearchStats()
    s, i = search(store, q, 40, threads=2, chunk_rows=chunk, screen="off", stats=st)
    assert st.fp32_gemm == gemm and st.fp32_fallbacks == 0
    ws, wi = brute_force(store, q, 40)
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal(s.view(np.uint32), ws.view(np.uint32))


def test_onednn_runs_here():
    # torch's CPU wheels ship oneDNN: where it is missing or refused, say so loudly (the
    # float32 path would lose its fastest GEMM on AVX-512 CPUs without a failing test).
    assert kernels_mod.onednn_gemm_ok(torch), "oneDNN's float32 GEMM was refused here"


@pytest.mark.parametrize(("nq", "rows", "d"), [(1, 1, 1), (3, 1, 5), (1, 7, 3), (17, 300, 77)])
def test_each_gemm_is_a_float32_product_of_any_shape(nq, rows, d):
    # The fast GEMMs against the slow obvious float64 product, within float32's own bound.
    rng = np.random.default_rng(nq * rows * d)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    x = rng.standard_normal((rows, d)).astype(np.float32)
    exact = q.astype(np.float64) @ x.astype(np.float64).T
    g = d * 2.0**-24 / (1 - d * 2.0**-24)
    limit = g * np.outer(np.linalg.norm(q, axis=1), np.linalg.norm(x, axis=1)) * 1.001 + 1e-30
    k = kernels_mod.Kernels()
    for gemm in k.candidates():
        k.gemm = gemm
        out = np.full((nq, rows), np.nan, np.float32)
        got = k.scores(q, x, out)
        assert got.shape == (nq, rows) and got.dtype == np.float32, gemm
        assert (np.abs(got - exact) <= limit).all(), gemm


def _fake_onednn(kind):
    real = kernels_mod._onednn_gemm

    def fake(t, q, x):
        if kind == "bf16":  # rounds its inputs, like a bfloat16 or TF32 precision setting
            return real(t, q.to(t.bfloat16).float(), x.to(t.bfloat16).float())
        if kind == "transposed":
            return real(t, q, x).T.contiguous()
        raise RuntimeError("mkldnn: unsupported input")

    return fake


@pytest.mark.parametrize("kind", ["bf16", "transposed", "raises"])
def test_a_onednn_gemm_failing_its_self_check_is_never_used(monkeypatch, kind):
    monkeypatch.setattr(kernels_mod, "_onednn_checked", {})
    monkeypatch.setattr(kernels_mod, "_gemm_shapes", {})
    monkeypatch.setattr(kernels_mod, "_fastest", {})
    monkeypatch.setattr(kernels_mod, "_onednn_gemm", _fake_onednn(kind))
    assert kernels_mod.onednn_gemm_ok(torch) is False
    k = kernels_mod.Kernels()
    assert "onednn" not in k.candidates()
    with k.single_threaded():
        assert k.choose_gemm(3, 16, 64) in ("numpy", "torch")


@pytest.mark.parametrize("setting", ["bf16", "tf32"])
def test_a_reduced_onednn_precision_setting_keeps_torch_off_the_gemm(
    tmp_path, monkeypatch, setting
):
    # torch's new per-backend setting: its float32 matmuls (MKL's and oneDNN's) may then
    # round inputs, and torch's old getter raises; the search stays exact with numpy's BLAS.
    mk = getattr(torch.backends.mkldnn, "matmul", None)
    if mk is None or not hasattr(mk, "fp32_precision"):
        pytest.skip("this torch has no oneDNN precision setting")
    monkeypatch.setattr(kernels_mod, "_onednn_checked", {})
    monkeypatch.setattr(kernels_mod, "_fastest", {})
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(3300, 24, seed=6), [3300]))
    q = random_unit(9, 24, seed=7)
    old = mk.fp32_precision
    mk.fp32_precision = setting
    try:
        assert kernels_mod.onednn_gemm_ok(torch) is False
        assert kernels_mod.Kernels().candidates() == ("numpy",)
        st = SearchStats()
        s, i = search(store, q, 40, threads=2, chunk_rows=200, screen="off", stats=st)
    finally:
        mk.fp32_precision = old
    assert st.fp32_gemm == "numpy"
    ws, wi = brute_force(store, q, 40)
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal(s.view(np.uint32), ws.view(np.uint32))
    assert kernels_mod.onednn_gemm_ok(torch) is True


def test_choice_is_timed_once_per_shape_and_kept(monkeypatch):
    monkeypatch.setattr(kernels_mod, "_fastest", {})
    k = kernels_mod.Kernels()
    names = k.candidates()
    with k.single_threaded():
        first = k.choose_gemm(3, 16, 64)
        assert first in names and k.fp32_gemm == first
        assert kernels_mod._fastest == {kernels_mod.gemm_key(3, 16, 64): first}
        other = next(n for n in names if n != first)
        kernels_mod._fastest[kernels_mod.gemm_key(3, 16, 64)] = other  # kept
        assert kernels_mod.Kernels().choose_gemm(3, 16, 64) == other
        # 2 and 3 queries share a key (a power of two); 4 does not, nor another chunk.
        assert kernels_mod.gemm_key(2, 16, 64) == kernels_mod.gemm_key(3, 16, 64)
        assert kernels_mod.gemm_key(4, 16, 64) != kernels_mod.gemm_key(3, 16, 64)
        assert kernels_mod.gemm_key(3, 16, 65) != kernels_mod.gemm_key(3, 16, 64)


def test_a_remembered_choice_that_cannot_run_now_is_timed_again(monkeypatch):
    monkeypatch.setattr(kernels_mod, "_fastest", {kernels_mod.gemm_key(3, 16, 64): "onednn"})
    monkeypatch.setattr(kernels_mod, "onednn_gemm_ok", lambda t: False)
    k = kernels_mod.Kernels()
    with k.single_threaded():
        assert k.choose_gemm(3, 16, 64) in ("numpy", "torch")


def test_choice_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(kernels_mod, "_fastest", {})
    monkeypatch.setattr(kernels_mod, "_FASTEST_KEYS_MAX", 3)
    k = kernels_mod.Kernels()
    with k.single_threaded():
        for rows in range(8, 8 + 7):
            k.choose_gemm(2, 8, rows)
            assert len(kernels_mod._fastest) <= 3


def test_precision_below_highest_never_uses_torch_gemm(monkeypatch):
    monkeypatch.setattr(kernels_mod, "_fastest", {})
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        k = kernels_mod.Kernels()
        assert k.candidates() == ("numpy",) and not kernels_mod.onednn_gemm_ok(torch)
        assert k.workers(2) == 1 and k.choose_gemm(3, 16, 64) == "numpy"
        assert kernels_mod._fastest == {}  # nothing timed: numpy is the only float32 GEMM
    finally:
        torch.set_float32_matmul_precision(old)


def test_single_threaded_limits_blas_and_torch_and_restores():
    before_blas, before_torch = _blas_threads(), torch.get_num_threads()
    k = kernels_mod.Kernels()
    with k.single_threaded():
        assert torch.get_num_threads() == 1
        assert all(n == 1 for n in _blas_threads())
    assert _blas_threads() == before_blas and torch.get_num_threads() == before_torch
    with pytest.raises(RuntimeError), k.single_threaded():
        raise RuntimeError("restored on errors too")
    assert _blas_threads() == before_blas and torch.get_num_threads() == before_torch


def test_shared_floor_only_rises_both_ways():
    shared = SharedFloor(3)
    a, b = CandidatePool(3, 2), CandidatePool(3, 2)
    a.raise_floor(np.array([0.5, -np.inf, 0.1], np.float32))
    b.raise_floor(np.array([0.2, 0.3, np.nan], np.float32))  # NaN never lowers a floor
    shared.exchange(a)
    shared.exchange(b)
    shared.exchange(a)
    np.testing.assert_array_equal(b.floor[:2], np.float32([0.5, 0.3]))
    np.testing.assert_array_equal(a.floor[:2], np.float32([0.5, 0.3]))
    assert a.floor[2] == np.float32(0.1)


def test_many_threads_sharing_a_floor_equal_brute_force(tmp_path):
    # Sorted rows: every chunk beats the last, so floors move all the time while 4 threads
    # exchange them; ties at the k-th score (duplicated rows) must still be exact.
    base = random_unit(600, 16, seed=3)
    x = np.concatenate([base, base[:200]])
    order = np.argsort(x @ random_unit(1, 16, seed=4)[0])
    store = EmbeddingStore(write_store(tmp_path / "s", x[order], [300, 500]))
    q = np.concatenate([random_unit(1, 16, seed=4), random_unit(5, 16, seed=5)])
    ws, wi = brute_force(store, q, 25)
    for screen in ("off", "bf16"):
        s, i = search(store, q, 25, threads=4, chunk_rows=64, block_rows=256, screen=screen)
        np.testing.assert_array_equal(i, wi)
        np.testing.assert_array_equal(s.view(np.uint32), ws.view(np.uint32))


def test_concurrent_searches_from_threads_agree(tmp_path):
    # Two searches at once in one process: torch's and BLAS's thread settings are process-wide;
    # each search must still return the brute-force result.
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(2500, 16, seed=6), [2500]))
    q = random_unit(6, 16, seed=7)
    ws, wi = brute_force(store, q, 30)
    results: list[tuple[np.ndarray, np.ndarray]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(3):
                results.append(search(store, q, 30, threads=2, chunk_rows=128))
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=run) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and len(results) == 9
    for s, i in results:
        np.testing.assert_array_equal(i, wi)
        np.testing.assert_array_equal(s.view(np.uint32), ws.view(np.uint32))


def test_interleaved_single_threaded_sections_restore_blas_and_torch():
    # Two searches at once, the first to start ends first: A in, B in, A out, B out. Each
    # section saved the thread counts it found on entry, so B (which found A's 1) restored 1:
    # numpy's BLAS stayed single-threaded for the rest of the process, and so did torch in
    # every thread started afterwards.
    def torch_threads_in_a_new_thread() -> int:
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        t.start()
        t.join()
        return seen[0]

    before_blas = _blas_threads()
    before_torch, before_new = torch.get_num_threads(), torch_threads_in_a_new_thread()
    torch.set_num_threads(max(2, before_torch))  # a count a leaked 1 can be told from
    blas = threadpoolctl.threadpool_limits(max(2, *before_blas), user_api="blas")
    try:
        wanted_blas, wanted_torch = _blas_threads(), torch.get_num_threads()
        k = kernels_mod.Kernels()
        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
        inside: list[tuple[list[int], int]] = []

        def a() -> None:
            with k.single_threaded():
                a_in.set()
                assert b_in.wait(30)
            a_out.set()

        def b() -> None:
            assert a_in.wait(30)
            with k.single_threaded():
                b_in.set()
                assert a_out.wait(30)
                inside.append((_blas_threads(), torch.get_num_threads()))

        ta, tb = threading.Thread(target=a), threading.Thread(target=b)
        ta.start()
        tb.start()
        ta.join()
        tb.join()
        # B's section still runs single-threaded after A's ended ...
        assert inside == [([1] * len(wanted_blas), 1)]
        # ... and once both ended, the counts are the ones before either began.
        assert _blas_threads() == wanted_blas
        assert torch.get_num_threads() == wanted_torch
        assert torch_threads_in_a_new_thread() == wanted_torch
    finally:
        blas.restore_original_limits()
        kernels_mod._blas_control()  # main took control of BLAS above: give it up
        torch.set_num_threads(before_torch)
    assert _blas_threads() == before_blas and torch_threads_in_a_new_thread() == before_new


def test_stats_name_numpy_when_precision_keeps_torch_off_the_gemm(tmp_path):
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(300, 16, seed=8), [300]))
    q = random_unit(3, 16, seed=9)
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        st = SearchStats()
        s, i = search(store, q, 5, threads=2, chunk_rows=64, screen="off", stats=st)
    finally:
        torch.set_float32_matmul_precision(old)
    ws, wi = brute_force(store, q, 5)
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal(s.view(np.uint32), ws.view(np.uint32))
    assert st.fp32_gemm == "numpy"


def test_one_scoring_thread_times_the_gemms_on_their_own_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels_mod, "_fastest", {})
    x = random_unit(3300, 24, seed=1)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1000, 2300]))
    q = random_unit(9, 24, seed=2)
    st = SearchStats()
    s, i = search(store, q, 40, threads=1, chunk_rows=200, screen="off", stats=st)
    key = kernels_mod.gemm_key(9, 24, 200, torch.get_num_threads())
    assert list(kernels_mod._fastest) == [key]
    assert st.threads == 1 and st.fp32_gemm == kernels_mod._fastest[key]
    ws, wi = brute_force(store, q, 40)
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal(s.view(np.uint32), ws.view(np.uint32))
    assert kernels_mod.gemm_key(9, 24, 200, 3) != kernels_mod.gemm_key(9, 24, 200)


def test_timing_a_huge_batch_multiplies_only_a_slice_of_it(monkeypatch):
    monkeypatch.setattr(kernels_mod, "_fastest", {})
    monkeypatch.setattr(kernels_mod, "_TIMED_QUERIES", 4)
    shapes = []
    real = kernels_mod.Kernels.scores

    def spy(self, q, data, out):
        shapes.append(q.shape)
        return real(self, q, data, out)

    monkeypatch.setattr(kernels_mod.Kernels, "scores", spy)
    k = kernels_mod.Kernels()
    with k.single_threaded():
        k.choose_gemm(100, 16, 64)
    assert shapes and set(shapes) == {(4, 16)}
    assert list(kernels_mod._fastest) == [kernels_mod.gemm_key(100, 16, 64)]


@pytest.mark.parametrize("screen", ["off", "bf16"])
def test_read_only_queries_are_searched_without_warnings(tmp_path, screen):
    import warnings

    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(3300, 24, seed=1), [3300]))
    q = random_unit(9, 24, seed=2)
    q.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "non-writable array" warning would raise
        s, i = search(store, q, 40, threads=2, chunk_rows=200, screen=screen)
    ws, wi = brute_force(store, q, 40)
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal(s.view(np.uint32), ws.view(np.uint32))
    assert not q.flags.writeable  # the caller's array is left as it was


def _bf16_trap(n: int, d: int, first_a: int) -> tuple[np.ndarray, np.ndarray]:
    """A store where inputs rounded to bfloat16 reverse the ranking, and queries of 1/8.

    Every row from ``first_a`` on that is a multiple of 97 holds ``a = 1 + 2**-8 - 2**-10``
    (bfloat16 rounds it down to 1), every other row ``b = 1 + 2**-8 + 2**-10`` (rounded up to
    1 + 2**-7) in its first half and 1 in the rest: exactly, ``a`` rows score ``8 a`` and the
    others less, rounded the others score ``2**-5`` more, thousands of times the float32
    bound (all values exact in float16 and float32)."""
    a, b = 1 + 2.0**-8 - 2.0**-10, 1 + 2.0**-8 + 2.0**-10
    x = np.ones((n, d), np.float32)
    x[:, : d // 2] = b
    rows = np.arange(first_a, n)
    x[rows[rows % 97 == 0]] = a
    return x, np.full((2, d), 0.125, np.float32)


def _rounds_like_onednn(t, q, x):
    """oneDNN's float32 GEMM on a CPU where torch's oneDNN setting ``"bf16"`` (passed on as
    oneDNN's fpmath mode) makes it round its inputs to bfloat16 (AMX CPUs)."""
    if torch.backends.mkldnn.matmul.fp32_precision == "bf16":
        q, x = q.to(t.bfloat16).float(), x.to(t.bfloat16).float()
    return t.ops.mkldnn._linear_pointwise(q, x, None, "none", [], "")


@pytest.mark.parametrize("gemm", ["onednn", "torch"])
def test_precision_set_to_bf16_during_a_search_leaves_it_exact(tmp_path, monkeypatch, gemm):
    # Another thread sets torch's oneDNN precision to bf16 while a search runs (a model
    # loaded beside the index, say): torch's GEMMs then round their inputs on CPUs with
    # AMX. The search read the setting when it began; it must not keep using them.
    mk = getattr(torch.backends.mkldnn, "matmul", None)
    if mk is None or not hasattr(mk, "fp32_precision"):
        pytest.skip("this torch has no oneDNN precision setting")
    if gemm not in kernels_mod.Kernels().candidates():
        pytest.skip(f"{gemm} cannot run the float32 GEMM here")
    x, q = _bf16_trap(2048, 64, 1024)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1000, 1048]))
    ws, wi = brute_force(store, q, 3)
    chunk = 64
    monkeypatch.setattr(kernels_mod, "_fastest", {kernels_mod.gemm_key(2, 64, chunk): gemm})
    monkeypatch.setattr(kernels_mod, "_onednn_checked", {kernels_mod._precision(torch): True})
    old = mk.fp32_precision

    def set_bf16_once_searching(a, b):
        if a.data_ptr() == q.ctypes.data:  # the search's queries: it has begun
            mk.fp32_precision = "bf16"

    real_matmul = torch.matmul

    def fake_onednn(t, a, b):
        set_bf16_once_searching(a, b)
        return _rounds_like_onednn(t, a, b)

    def fake_matmul(a, b, out=None):
        set_bf16_once_searching(a, b)
        if mk.fp32_precision == "bf16" and a.dtype == torch.float32:
            a, b = a.to(torch.bfloat16).float(), b.to(torch.bfloat16).float()
        return real_matmul(a, b, out=out)

    monkeypatch.setattr(kernels_mod, "_onednn_gemm", fake_onednn)
    monkeypatch.setattr(torch, "matmul", fake_matmul)
    try:
        st = SearchStats()
        s, i = search(store, q, 3, threads=2, chunk_rows=chunk, screen="off", stats=st)
    finally:
        mk.fp32_precision = old
    assert mk.fp32_precision == old
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal(s.view(np.uint32), ws.view(np.uint32))
    assert st.fp32_gemm == gemm and st.fp32_fallbacks > 0  # the stats say numpy stepped in


@pytest.mark.parametrize("gemm", ["onednn", "torch"])
def test_a_gemm_rounding_only_large_shapes_is_never_used(tmp_path, monkeypatch, gemm):
    # Libraries pick their kernels by shape: oneDNN with a reduced fpmath mode (set by
    # ONEDNN_DEFAULT_FPMATH_MODE, say), or torch's matmul where it calls oneDNN for large
    # shapes only (AArch64), may round inputs for the search's chunk and not for the small
    # self-check. Such a GEMM must still never decide a result.
    if gemm not in kernels_mod.Kernels().candidates():
        pytest.skip(f"{gemm} cannot run the float32 GEMM here")
    real_onednn, real_matmul = kernels_mod._onednn_gemm, torch.matmul

    def large_rounds(t, a, b):
        if b.shape[0] >= 200:
            a, b = a.to(t.bfloat16).float(), b.to(t.bfloat16).float()
        return real_onednn(t, a, b)

    def large_rounds_matmul(a, b, out=None):
        if b.shape[1] >= 200 and a.dtype == torch.float32:
            a, b = a.to(torch.bfloat16).float(), b.to(torch.bfloat16).float()
        return real_matmul(a, b, out=out)

    monkeypatch.setattr(kernels_mod, "_onednn_checked", {})
    monkeypatch.setattr(kernels_mod, "_gemm_shapes", {})
    if gemm == "onednn":
        monkeypatch.setattr(kernels_mod, "_onednn_gemm", large_rounds)
    else:
        monkeypatch.setattr(torch, "matmul", large_rounds_matmul)
    assert kernels_mod.onednn_gemm_ok(torch)  # the small self-check cannot see it
    x, q = _bf16_trap(4096, 64, 2000)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [4096]))
    ws, wi = brute_force(store, q, 3)
    chunk = 256
    for threads in (2, 1):
        n = 1 if threads == 2 else torch.get_num_threads()
        key = kernels_mod.gemm_key(2, 64, chunk, n)
        monkeypatch.setattr(kernels_mod, "_fastest", {key: gemm})
        s, i = search(store, q, 3, threads=threads, chunk_rows=chunk, screen="off")
        np.testing.assert_array_equal(i, wi)
        np.testing.assert_array_equal(s.view(np.uint32), ws.view(np.uint32))
        # Timed afresh, it is not chosen either.
        monkeypatch.setattr(kernels_mod, "_fastest", {})
        st = SearchStats()
        s, i = search(store, q, 3, threads=threads, chunk_rows=chunk, screen="off", stats=st)
        assert st.fp32_gemm != gemm
        np.testing.assert_array_equal(i, wi)
        np.testing.assert_array_equal(s.view(np.uint32), ws.view(np.uint32))


def test_onednn_disabled_in_torch_is_never_used(monkeypatch):
    monkeypatch.setattr(kernels_mod, "_onednn_checked", {})
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert not kernels_mod.onednn_gemm_ok(torch)
    assert "onednn" not in kernels_mod.Kernels().candidates()


@pytest.mark.parametrize(("nq", "d", "rows"), [(1, 1, 1), (3, 3, 5), (2, 1025, 77), (17, 200, 300)])
def test_shape_probes_pass_float32_gemms_and_catch_any_rounding(monkeypatch, nq, d, rows):
    monkeypatch.setattr(kernels_mod, "_gemm_shapes", {})
    pairs, want = kernels_mod._probes(nq, d, rows)
    for q, x in pairs:  # numpy's float32 GEMM, and float64, give them exactly
        np.testing.assert_array_equal(np.matmul(q, x.T), want)
        np.testing.assert_array_equal((q.astype(np.float64) @ x.T.astype(np.float64)), want)
    for gemm in ("onednn", "torch"):
        if gemm in kernels_mod.Kernels().candidates():
            assert kernels_mod.gemm_shape_ok(torch, gemm, nq, d, rows), gemm
    real = kernels_mod._onednn_gemm
    fakes = {
        "query": lambda t, a, b: real(t, a.to(t.bfloat16).float(), b),
        "row": lambda t, a, b: real(t, a, b.half().float()),
        "sum": lambda t, a, b: real(t, a, b).to(t.bfloat16).float(),
    }
    for name, fake in fakes.items():
        monkeypatch.setattr(kernels_mod, "_gemm_shapes", {})
        monkeypatch.setattr(kernels_mod, "_onednn_gemm", fake)
        assert not kernels_mod.gemm_shape_ok(torch, "onednn", nq, d, rows), name


def test_read_only_queries_never_reach_torch(tmp_path, monkeypatch):
    # torch warns (once per process) that writing to a tensor made from a read-only array is
    # undefined: the search hands torch only arrays it may write.
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(3300, 24, seed=1), [3300]))
    q = random_unit(9, 24, seed=2)
    q.setflags(write=False)
    seen: list[bool] = []
    real = torch.from_numpy

    def spy(a):
        seen.append(a.flags.writeable)
        return real(a)

    monkeypatch.setattr(torch, "from_numpy", spy)
    ws, wi = brute_force(store, q, 40)
    for gemm in kernels_mod.Kernels().candidates():
        monkeypatch.setattr(kernels_mod, "_fastest", {kernels_mod.gemm_key(9, 24, 200): gemm})
        s, i = search(store, q, 40, threads=2, chunk_rows=200, screen="off")
        np.testing.assert_array_equal(i, wi)
        np.testing.assert_array_equal(s.view(np.uint32), ws.view(np.uint32))
    assert seen and all(seen)


def test_tf32_for_cuda_alone_keeps_torch_on_the_cpu_gemm(tmp_path, monkeypatch):
    # TF32 for CUDA's matmuls by torch's new setting (a text encoder on the GPU beside the
    # index): torch's old getter then raises, but CPU matmuls stay float32, and so do torch's
    # float32 GEMMs here (each shape is still checked by its exact products).
    cuda = getattr(getattr(torch.backends, "cuda", None), "matmul", None)
    mk = getattr(torch.backends.mkldnn, "matmul", None)
    if not hasattr(cuda, "fp32_precision") or not hasattr(mk, "fp32_precision"):
        pytest.skip("this torch has no per-backend precision settings")
    monkeypatch.setattr(kernels_mod, "_fastest", {})
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(3300, 24, seed=6), [3300]))
    q = random_unit(9, 24, seed=7)
    old, old_mk = cuda.fp32_precision, mk.fp32_precision
    cuda.fp32_precision = "tf32"
    try:
        assert "torch" in kernels_mod.Kernels().candidates()
        s, i = search(store, q, 40, threads=2, chunk_rows=200, screen="off")
        mk.fp32_precision = "bf16"  # and oneDNN's own setting still counts
        assert kernels_mod.Kernels().candidates() == ("numpy",)
    finally:
        mk.fp32_precision = old_mk
        cuda.fp32_precision = old
    ws, wi = brute_force(store, q, 40)
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal(s.view(np.uint32), ws.view(np.uint32))


@pytest.mark.parametrize("gemm", kernels_mod.GEMMS)
def test_a_gemm_overflowing_float32_warns_nothing(tmp_path, monkeypatch, gemm):
    # Scores past the largest float32 overflow the GEMM: the search sees it and scores those
    # rows exactly, so numpy's "overflow encountered in matmul" would only mislead.
    if gemm not in kernels_mod.Kernels().candidates():
        pytest.skip(f"{gemm} cannot run the float32 GEMM here")
    x = random_unit(3300, 8, seed=3) * 60000
    store = EmbeddingStore(write_store(tmp_path / "s", x, [3300]))
    q = random_unit(3, 8, seed=4) * np.float32(1e34)
    monkeypatch.setattr(kernels_mod, "_fastest", {kernels_mod.gemm_key(3, 8, 200): gemm})
    ws, wi = brute_force(store, q, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s, i = search(store, q, 10, threads=2, chunk_rows=200, screen="off")
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal(s.view(np.uint32), ws.view(np.uint32))
