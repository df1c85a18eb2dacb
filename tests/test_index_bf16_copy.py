"""The bfloat16 copy of a store: the same search result with and without it, never stale.

Every case compares, ids and score bits: screened with the copy == screened converting each
chunk == the float32 path == ``brute_force`` (each score the real inner product rounded once
to float32, one Python sort by score desc, id asc).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import multiprocessing
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from inquire.embed.folder import write_shard
from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError
from inquire.index import bf16_copy as bc
from inquire.index import screen as scr
from inquire.index.exact import SearchStats, search
from inquire.index.topk import brute_force
from inquire.testing.search_stores import (
    large_store,
    random_unit,
    rss_file_bytes,
    small_integer_vectors,
    write_store,
)

torch = pytest.importorskip("torch")


def all_paths(store: EmbeddingStore, q: np.ndarray, k: int, **kw):
    """Screened with the copy, screened without it, float32, brute force: all equal, bit for
    bit. Returns the stats of the screened search that used the copy."""
    with_copy = SearchStats()
    s1, i1 = search(store, q, k, screen="bf16", bf16_copy="auto", stats=with_copy, **kw)
    without = SearchStats()
    s2, i2 = search(store, q, k, screen="bf16", bf16_copy="off", stats=without, **kw)
    s3, i3 = search(store, q, k, screen="off", **kw)
    x = np.concatenate([np.asarray(sh, np.float32) for sh in store.shards])
    s4, i4 = brute_force(q, x, store.ids, k)
    assert not without.bf16_copy
    for s, i in ((s2, i2), (s3, i3), (s4, i4)):
        np.testing.assert_array_equal(i1, i)
        np.testing.assert_array_equal(s1.view(np.uint32), np.asarray(s, np.float32).view(np.uint32))
    return with_copy


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "sizes,k,block_rows,chunk_rows",
    [
        ([3001], 50, 700, 256),  # rows not a multiple of the block or chunk
        ([400, 1, 999, 1601], 7, 512, 300),  # uneven shards, a 1-row shard
        ([1500, 1501], 5000, 1024, 8192),  # k larger than the rows: padding
        ([1], 3, 700, 256),  # one row
    ],
)
def test_copy_gives_the_same_result(tmp_path, sizes, k, block_rows, chunk_rows, threads):
    n, d = sum(sizes), 40
    x = random_unit(n, d, seed=1)
    ids = np.random.default_rng(2).permutation(10 * n)[:n].astype(np.int64)
    store = EmbeddingStore(write_store(tmp_path / "s", x, sizes, ids=ids))
    q = random_unit(6, d, seed=3)
    st = all_paths(store, q, k, block_rows=block_rows, chunk_rows=chunk_rows, threads=threads)
    assert st.bf16_copy and st.chunks_fp32 == 0
    assert bc.open_copy(store) is not None


@pytest.mark.parametrize("threads", [1, 2])
def test_copy_with_ties(tmp_path, threads):
    # Small integers / 8: thousands of exact ties, ordered by id; duplicated rows too.
    x = small_integer_vectors(2500, 16, seed=4)
    x[1000:1100] = x[5]
    ids = np.random.default_rng(5).permutation(2500).astype(np.int64)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1200, 1300], ids=ids))
    q = np.random.default_rng(6).integers(-2, 3, size=(5, 16)).astype(np.float32)
    st = all_paths(store, q, 300, block_rows=600, chunk_rows=256, threads=threads)
    assert st.bf16_copy


def test_float32_store(tmp_path):
    x = random_unit(2100, 24, seed=7)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1000, 1100], dtype=np.float32))
    assert store.dtype == np.float32
    st = all_paths(store, random_unit(4, 24, seed=8), 30, block_rows=512, chunk_rows=200)
    assert st.bf16_copy


def test_empty_store(tmp_path):
    x = np.zeros((0, 8), np.float32)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [0]))
    assert len(store) == 0
    q = random_unit(2, 8, seed=1)
    for mode in ("auto", "use", "off"):
        st = SearchStats()
        s, i = search(store, q, 4, screen="bf16", bf16_copy=mode, stats=st)
        assert (i == -1).all() and np.isneginf(s).all()
        assert not st.bf16_copy


def test_copy_holds_torch_rounding_and_norms(tmp_path):
    x = random_unit(700, 24, seed=2) * np.float32(3.0)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [300, 400]))
    bc.build_copy(store)
    copy = bc.open_copy(store)
    assert copy is not None
    for shard, bits in zip(store.shards, copy.shards, strict=True):
        want = torch.from_numpy(np.array(shard)).to(torch.bfloat16).view(torch.int16)
        np.testing.assert_array_equal(bits, want.numpy().view(np.uint16))
    x16 = np.concatenate([np.asarray(s, np.float32) for s in store.shards])
    xb = torch.from_numpy(x16).to(torch.bfloat16).float().numpy()
    np.testing.assert_allclose(copy.norms[:, 0], np.linalg.norm(x16, axis=1), rtol=1e-6)
    np.testing.assert_allclose(copy.norms[:, 1], np.linalg.norm(x16 - xb, axis=1), rtol=1e-6)
    top = copy.max_norms(0, 300)
    assert top[0] == pytest.approx(float(np.linalg.norm(x16[:300], axis=1).max()))
    assert top[1] == pytest.approx(float(np.linalg.norm(x16[:300] - xb[:300], axis=1).max()))


def test_row_error_bound_holds_and_is_narrower():
    """With each row's rounding error known, ``|f - s~| <= a_row r_x + a_rest ||x|| + c|s~| +
    e`` holds for every pair (f: the real inner product in float64), comes close on rows at
    bfloat16's worst rounding (halfway cases), and is much narrower on random rows."""
    d = 256
    rng = np.random.default_rng(14)
    sign = rng.choice([-1.0, 1.0], size=d)
    halfway = np.float32((1 + 2.0**-8) * 2.0**-4)  # halfway between two bfloat16 numbers
    q = np.vstack([sign * halfway, random_unit(15, d, seed=15)]).astype(np.float32)
    worst = np.vstack([sign * halfway, -sign * halfway]).astype(np.float16)
    x = np.vstack([worst, random_unit(400, d, seed=16).astype(np.float16)])
    bits, norms = bc._to_bf16_bits(x, torch)
    b = scr.bounds(q, True)
    qb = torch.from_numpy(b.q_bf16).view(torch.bfloat16)
    xb = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16)
    s_hat = (qb @ xb.T).float().numpy().astype(np.float64)
    exact = q.astype(np.float64) @ x.astype(np.float64).T
    nrm = norms[:, 0].astype(np.float64) * b.inflate
    err = norms[:, 1].astype(np.float64) * b.inflate + scr.row_error_slack(d)
    bound = b.a_row[:, None] * err + b.a_rest[:, None] * nrm + scr.C_BF16 * np.abs(s_hat)
    bound += b.slack
    gap = np.abs(exact - s_hat)
    assert (gap <= bound).all()
    assert (gap / bound).max() > 0.5  # not loose where rounding is at its worst
    old = b.a_bf16[:, None] * nrm + scr.C_BF16 * np.abs(s_hat) + b.slack
    assert (bound <= old * (1 + 1e-6)).all()
    assert np.median(norms[2:, 1] / (scr.U_BF16 * norms[2:, 0])) < 0.6  # random rows: narrower


def _shard_files(root: Path) -> list[str]:
    return sorted(p.name for p in bc.copy_dir(root).glob("*.npy"))


def test_a_replaced_shard_is_never_read_stale(tmp_path):
    d = 32
    root = write_store(tmp_path / "s", random_unit(2000, d, seed=1), [1000, 1000])
    q = random_unit(4, d, seed=3)
    store = EmbeddingStore(root)
    search(store, q, 20, screen="bf16", bf16_copy="auto")
    before = _shard_files(root)
    assert len(before) == 4
    # Replace shard 1 with other rows of the same shape, and set its times back.
    shard1 = store.shard_paths[1]
    st = shard1.stat()
    np.save(shard1, random_unit(1000, d, seed=9).astype(np.float16))
    os.utime(shard1, ns=(st.st_atime_ns, st.st_mtime_ns))
    store2 = EmbeddingStore(root)
    assert bc.open_copy(store2) is None  # shard 1's copy is stale: the copy is not used
    stats = SearchStats()
    search(store2, q, 20, screen="bf16", bf16_copy="use", stats=stats)
    assert not stats.bf16_copy
    all_paths(store2, q, 20, block_rows=512, chunk_rows=256)  # rebuilds shard 1 only
    after = _shard_files(root)
    assert len(after) == 4
    assert [n for n in after if n.startswith("img_emb_0.")] == [
        n for n in before if n.startswith("img_emb_0.")
    ]
    assert set(n for n in after if n.startswith("img_emb_1.")).isdisjoint(before)


def test_an_added_shard_is_built_alone(tmp_path):
    d = 16
    x = random_unit(1500, d, seed=1)
    root = write_store(tmp_path / "s", x[:1000], [1000])
    store = EmbeddingStore(root)
    bc.build_copy(store)
    first = bc.copy_dir(root) / _shard_files(root)[0]
    ino = first.stat().st_ino
    paths = [f"train/img_{i}" for i in range(1000, 1500)]
    write_shard(root, 1, x[1000:], paths, np.arange(1000, 1500), np.float16)
    store2 = EmbeddingStore(root)
    assert len(store2) == 1500
    assert bc.open_copy(store2) is None
    all_paths(store2, random_unit(3, d, seed=2), 10, block_rows=512, chunk_rows=128)
    assert bc.open_copy(store2) is not None
    assert first.stat().st_ino == ino  # shard 0's copy was kept as it was


def test_resumes_with_the_missing_shard_only(tmp_path, caplog):
    root = write_store(tmp_path / "s", random_unit(900, 8, seed=1), [300, 300, 300])
    store = EmbeddingStore(root)
    bc.build_copy(store)
    kept = {n: (bc.copy_dir(root) / n).stat().st_ino for n in _shard_files(root)}
    for p in bc.copy_dir(root).glob("img_emb_1.*"):
        p.unlink()
    with caplog.at_level(logging.INFO, logger="inquire.index.bf16_copy"):
        bc.build_copy(store)
    assert [r.getMessage() for r in caplog.records if "writing" in r.getMessage()] == [
        "writing the bfloat16 copy of img_emb_1.npy (300 rows)"
    ]
    for name, ino in kept.items():
        if not name.startswith("img_emb_1."):
            assert (bc.copy_dir(root) / name).stat().st_ino == ino
    assert bc.open_copy(store) is not None


def test_a_killed_build_leaves_nothing_behind_after_the_next(tmp_path):
    root = write_store(tmp_path / "s", random_unit(300, 8, seed=1), [300])
    bc.copy_dir(root).mkdir()
    stale = bc.copy_dir(root) / ".img_emb_0.abc.bf16.npy.999.1.tmp"
    stale.write_bytes(b"half")
    assert bc.open_copy(EmbeddingStore(root)) is None
    bc.build_copy(EmbeddingStore(root))
    assert not stale.exists() and bc.open_copy(EmbeddingStore(root)) is not None


def test_a_truncated_copy_is_ignored_and_rebuilt(tmp_path):
    root = write_store(tmp_path / "s", random_unit(600, 8, seed=1), [600])
    store = EmbeddingStore(root)
    bc.build_copy(store)
    data = next(bc.copy_dir(root).glob("*.bf16.npy"))
    data.write_bytes(data.read_bytes()[:-10])
    assert bc.open_copy(store) is None
    bc.build_copy(store)
    assert bc.open_copy(store) is not None


def test_unwritable_folder_falls_back_and_says_so_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(bc, "_warned", set())
    x = random_unit(1200, 16, seed=1)
    root = write_store(tmp_path / "s", x, [1200])
    (root / bc.FOLDER).write_text("not a folder")  # mkdir fails, even as root
    store = EmbeddingStore(root)
    q = random_unit(3, 16, seed=2)
    with caplog.at_level(logging.WARNING, logger="inquire.index.bf16_copy"):
        st = all_paths(store, q, 10, block_rows=512, chunk_rows=128)
        st2 = all_paths(store, q, 10, block_rows=512, chunk_rows=128)
    assert not st.bf16_copy and not st2.bf16_copy and st.chunks_bf16 > 0
    warnings = [r for r in caplog.records if "no bfloat16 copy" in r.getMessage()]
    assert len(warnings) == 1
    with pytest.raises(OSError):
        bc.build_copy(store)  # built on purpose: the error is the caller's to see


def test_full_disk_falls_back_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    monkeypatch.setattr(bc, "_warned", set())
    root = write_store(tmp_path / "s", random_unit(1000, 16, seed=1), [500, 500])

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bc.os, "fsync", full)
    writes = []
    write_shard_ = bc._write_shard
    monkeypatch.setattr(bc, "_write_shard", lambda *a: writes.append(1) or write_shard_(*a))
    store = EmbeddingStore(root)
    st = all_paths(store, random_unit(3, 16, seed=2), 10, block_rows=256, chunk_rows=128)
    assert not st.bf16_copy and len(writes) == 1
    search(store, random_unit(3, 16, seed=2), 10, screen="bf16", block_rows=256, chunk_rows=128)
    assert len(writes) == 1  # the next search did not try to write again
    assert list(bc.copy_dir(root).glob("*.npy")) == []
    assert list(bc.copy_dir(root).glob(".*.tmp")) == []


def _build_in_child(root: str, barrier) -> None:  # type: ignore[no-untyped-def]
    barrier.wait(timeout=120)
    bc.build_copy(EmbeddingStore(root))


def test_two_processes_build_at_once(tmp_path):
    root = write_store(tmp_path / "s", random_unit(20000, 64, seed=1), [10000, 10000])
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_build_in_child, args=(str(root), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    store = EmbeddingStore(root)
    copy = bc.open_copy(store)
    assert copy is not None
    assert len(_shard_files(root)) == 4
    assert list(bc.copy_dir(root).glob(".*.tmp")) == []
    want = torch.from_numpy(np.array(store.shards[1])).to(torch.bfloat16).view(torch.int16)
    np.testing.assert_array_equal(copy.shards[1], want.numpy().view(np.uint16))


def test_nonfinite_rows_with_the_copy(tmp_path):
    x = random_unit(1000, 16, seed=1)
    x[10, 3] = np.inf
    x[700, 0] = np.nan
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1000]))
    q = random_unit(3, 16, seed=2)
    s1, i1 = search(store, q, 20, screen="bf16", bf16_copy="auto", block_rows=512, chunk_rows=128)
    s2, i2 = search(store, q, 20, screen="off", block_rows=512, chunk_rows=128)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1.view(np.uint32), s2.view(np.uint32))
    x16 = np.asarray(store.shards[0], np.float32)
    s3, i3 = brute_force(q, x16, store.ids, 20)
    np.testing.assert_array_equal(i1, i3)
    np.testing.assert_array_equal(s1.view(np.uint32), s3.view(np.uint32))
    assert 700 not in i1  # NaN scores never match


def test_use_reads_only_an_existing_copy_and_remove(tmp_path):
    root = write_store(tmp_path / "s", random_unit(500, 8, seed=1), [500])
    store = EmbeddingStore(root)
    q = random_unit(2, 8, seed=2)
    st = SearchStats()
    search(store, q, 5, screen="bf16", bf16_copy="use", stats=st)
    assert not st.bf16_copy and not bc.copy_dir(root).exists()
    search(store, q, 5, screen="off", bf16_copy="auto")  # not screened: nothing built
    assert not bc.copy_dir(root).exists()
    bc.build_copy(store)
    search(store, q, 5, screen="bf16", bf16_copy="use", stats=st)
    assert st.bf16_copy
    assert bc.remove_copy(root) is True
    assert not bc.copy_dir(root).exists()
    assert bc.remove_copy(root) is False


def test_bad_mode(tmp_path):
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(10, 4, seed=1)))
    with pytest.raises(InputError, match="bf16_copy must be one of auto, use, off; got 'yes'"):
        search(store, random_unit(1, 4), 2, bf16_copy="yes")  # type: ignore[arg-type]


def _top_rows(store: EmbeddingStore, q: np.ndarray, k: int) -> np.ndarray:
    x = np.concatenate([np.asarray(sh, np.float32) for sh in store.shards])
    return brute_force(q, x, store.ids, k)[1]


def _store_with_copy(
    tmp_path: Path, seed: int
) -> tuple[EmbeddingStore, np.ndarray, np.ndarray, Path]:
    """A 2000 x 16 store with its bfloat16 copy built: ``(store, one query, its true top 3
    rows, the copy's rows file)``."""
    root = write_store(tmp_path / "s", random_unit(2000, 16, seed=seed), [2000])
    store = EmbeddingStore(root)
    q = random_unit(1, 16, seed=seed + 1)
    want = _top_rows(store, q, 3)
    bc.build_copy(store)
    return store, q, want, next(bc.copy_dir(root).glob("*.bf16.npy"))


def _zero_copy_row(data: Path, row: int) -> None:
    """Zero one row's bfloat16 bits in the copy file ``data``, in place (same size)."""
    bits = np.load(data, mmap_mode="r+")
    bits[row] = 0
    bits.flush()
    del bits


def test_a_corrupted_copy_of_the_same_size_never_drops_a_true_row(tmp_path, caplog):
    # Zeroed bfloat16 bits of the true best row (same file size, shard untouched): trusted,
    # the screen would drop that row; the copy must be refused instead.
    store, q, want, data = _store_with_copy(tmp_path, seed=1)
    _zero_copy_row(data, int(want[0, 0]))
    with caplog.at_level(logging.WARNING, logger="inquire.index.bf16_copy"):
        assert bc.open_copy(store) is None
    assert any("does not match its digest" in r.getMessage() for r in caplog.records)
    st = SearchStats()
    _, got = search(store, q, 3, screen="bf16", bf16_copy="use", stats=st)
    assert not st.bf16_copy
    np.testing.assert_array_equal(got, want)
    all_paths(store, q, 3)  # auto builds a good copy again and uses it
    assert bc.open_copy(store) is not None


def test_a_corrupted_error_norm_is_refused(tmp_path):
    root = write_store(tmp_path / "s", random_unit(500, 8, seed=1), [500])
    store = EmbeddingStore(root)
    bc.build_copy(store)
    norms = next(bc.copy_dir(root).glob("*.norms.npy"))
    arr = np.load(norms, mmap_mode="r+")
    arr[:, 1] = 0  # a narrower bound than the rows' real rounding error
    arr.flush()
    del arr
    assert bc.open_copy(store) is None


def test_a_linked_copy_folder_is_neither_read_nor_written(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    x = random_unit(1500, 16, seed=1)
    root = write_store(tmp_path / "s", x, [1500])
    store = EmbeddingStore(root)
    (root / bc.FOLDER).symlink_to(elsewhere, target_is_directory=True)
    q = random_unit(2, 16, seed=2)
    st = all_paths(store, q, 5, block_rows=512, chunk_rows=128)
    assert not st.bf16_copy and list(elsewhere.iterdir()) == []
    with pytest.raises(OSError, match="not a folder of its own"):
        bc.build_copy(store)
    assert list(elsewhere.iterdir()) == []
    assert bc.remove_copy(root) is False and elsewhere.is_dir()


def test_a_linked_copy_folder_with_a_planted_copy_is_not_read(tmp_path):
    # A good copy built elsewhere, then linked in: not read (it is not the store's folder).
    root = write_store(tmp_path / "s", random_unit(400, 8, seed=1), [400])
    store = EmbeddingStore(root)
    bc.build_copy(store)
    bc.copy_dir(root).rename(tmp_path / "moved")
    (root / bc.FOLDER).symlink_to(tmp_path / "moved", target_is_directory=True)
    assert bc.open_copy(store) is None


def test_planted_links_in_the_copy_folder_write_nothing_outside(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    root = write_store(tmp_path / "s", random_unit(400, 8, seed=1), [400])
    store = EmbeddingStore(root)
    folder = bc.copy_dir(root)
    folder.mkdir()
    key = bc.shard_key(store.shard_paths[0], store.shards[0])
    data_name, norms_name = bc._names(store.shard_paths[0], key)
    for name in (data_name, norms_name, bc._sum_name(store.shard_paths[0], key), ".img_emb_0.lock"):
        (folder / name).symlink_to(victim)
    assert bc.open_copy(store) is None  # links are not copy files
    bc.build_copy(store)
    assert victim.read_text() == "keep me"
    assert bc.open_copy(store) is not None
    for name in (data_name, norms_name):
        assert not (folder / name).is_symlink()


def test_chunks_with_nonfinite_rows_read_from_the_store_leave_it_unmapped(tmp_path, monkeypatch):
    # With the copy, a chunk holding a NaN row is scored exactly from the store's own rows,
    # read from its memory map: the pages read stayed mapped, so a store with a NaN row in
    # every chunk ended the scan with the whole store resident in this process.
    if rss_file_bytes() is None:
        pytest.skip("no RssFile in /proc/self/status")
    from inquire.index.scorer import Scorer

    n, d, chunk = 100_000, 256, 4096
    rng = np.random.default_rng(3)
    x = np.empty((n, d), np.float16)
    for a in range(0, n, 20_000):
        x[a : a + 20_000] = rng.standard_normal((20_000, d), dtype=np.float32) / 16
    x[::chunk, 0] = np.nan  # one NaN row per chunk
    store = EmbeddingStore(write_store(tmp_path / "s", x, [n]))
    del x
    q = random_unit(1, d, seed=4)
    kw = {"screen": "bf16", "bf16_copy": "auto", "chunk_rows": chunk, "threads": 1}
    few = random_unit(300, d, seed=5)
    few[::100, 0] = np.nan
    small = EmbeddingStore(write_store(tmp_path / "small", few))
    search(small, q, 3, **{**kw, "chunk_rows": 100})  # imports, the same code paths
    bc.build_copy(store)
    peak = [0]
    exactly = Scorer._score_exactly

    def measured(self: Scorer, data: np.ndarray, first: int) -> None:
        peak[0] = max(peak[0], rss_file_bytes() or 0)
        exactly(self, data, first)

    monkeypatch.setattr(Scorer, "_score_exactly", measured)
    before = rss_file_bytes() or 0
    stats = SearchStats()
    s, i = search(store, q, 3, stats=stats, **kw)
    after = rss_file_bytes() or 0
    assert stats.bf16_copy and stats.chunks_bf16 == 0  # every chunk scored exactly
    store_bytes = n * d * 2
    allowed = 16 << 20  # a chunk (2 MiB) and its large pages, with room
    assert allowed < store_bytes // 2
    assert peak[0] - before <= allowed, (peak[0] - before) / 2**20
    assert after - before <= allowed, (after - before) / 2**20
    s2, i2 = search(store, q, 3, screen="off", chunk_rows=chunk, threads=1)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(s.view(np.uint32), s2.view(np.uint32))


def test_building_the_copy_leaves_the_store_unmapped(tmp_path, monkeypatch):
    # The build reads every row of the store through its memory map: the pages of each block
    # are unmapped after it, so this process never holds more than a block or so of them.
    if rss_file_bytes() is None:
        pytest.skip("no RssFile in /proc/self/status")
    n, d = 200_000, 256
    store = EmbeddingStore(large_store(tmp_path / "s", n, d, [n // 2, n // 2], seed=5))
    small = EmbeddingStore(write_store(tmp_path / "small", random_unit(100, d, seed=6)))
    bc.build_copy(small)  # imports
    peak = [0]
    to_bits = bc._to_bf16_bits

    def measured(x: np.ndarray, t: object) -> tuple[np.ndarray, np.ndarray]:
        out = to_bits(x, t)
        peak[0] = max(peak[0], rss_file_bytes() or 0)
        return out

    monkeypatch.setattr(bc, "_to_bf16_bits", measured)
    before = rss_file_bytes() or 0
    bc.build_copy(store)
    after = rss_file_bytes() or 0
    block = bc._ROWS_PER_WRITE * d * 2
    allowed = 2 * block + (8 << 20)  # a block, the next one read ahead, large pages
    assert allowed < n * d * 2 // 2
    assert peak[0] - before <= allowed, (peak[0] - before) / 2**20
    assert after - before <= 8 << 20, (after - before) / 2**20
    assert bc.open_copy(store) is not None


def _digests(monkeypatch) -> list[int]:
    """Count the full reads that check copy files against their digest."""
    calls = [0]
    digest = bc._digest

    def counted(paths):
        calls[0] += 1
        return digest(paths)

    monkeypatch.setattr(bc, "_digest", counted)
    return calls


def test_a_checked_copy_is_not_read_again_by_the_next_process(tmp_path, monkeypatch):
    root = write_store(tmp_path / "s", random_unit(600, 8, seed=1), [300, 300])
    store = EmbeddingStore(root)
    bc.build_copy(store)
    calls = _digests(monkeypatch)
    monkeypatch.setattr(bc, "_verified", set())  # a new process
    assert bc.open_copy(store) is not None
    assert calls[0] == 2  # one check per shard, recorded
    markers = sorted(p.name for p in bc.copy_dir(root).glob(".*.verified"))
    assert len(markers) == 2
    monkeypatch.setattr(bc, "_verified", set())  # the next process
    assert bc.open_copy(store) is not None
    assert calls[0] == 2
    q = random_unit(2, 8, seed=2)
    st = all_paths(store, q, 5, block_rows=128, chunk_rows=64)
    assert st.bf16_copy and calls[0] == 2


def test_a_copy_changed_after_its_check_is_checked_again_and_refused(tmp_path, monkeypatch):
    import time

    store, q, want, data = _store_with_copy(tmp_path, seed=3)
    assert bc.open_copy(store) is not None  # checked and recorded
    before = os.stat(data)
    # Changed in place (same file, same size): its change time moves on. Wait until the
    # clock the file system stamps with has moved past the check's stamp.
    deadline = time.monotonic() + 10
    while True:
        _zero_copy_row(data, int(want[0, 0]))
        if os.stat(data).st_ctime_ns != before.st_ctime_ns or time.monotonic() > deadline:
            break
        os.utime(data)  # touch again: the next write lands on a later tick
    assert os.stat(data).st_ctime_ns != before.st_ctime_ns
    calls = _digests(monkeypatch)
    monkeypatch.setattr(bc, "_verified", set())
    assert bc.open_copy(store) is None and calls[0] == 1
    _, got = search(store, q, 3, screen="bf16", bf16_copy="use")
    np.testing.assert_array_equal(got, want)


def test_a_replaced_copy_file_is_checked_again(tmp_path, monkeypatch):
    root = write_store(tmp_path / "s", random_unit(500, 8, seed=5), [500])
    store = EmbeddingStore(root)
    bc.build_copy(store)
    assert bc.open_copy(store) is not None
    norms = next(bc.copy_dir(root).glob("*.norms.npy"))
    arr = np.load(norms)
    arr[:, 1] = 0  # a narrower bound than the rows' real rounding error
    np.save(tmp_path / "planted.npy", arr)
    os.replace(tmp_path / "planted.npy", norms)  # another file (inode) in its place
    calls = _digests(monkeypatch)
    monkeypatch.setattr(bc, "_verified", set())
    assert bc.open_copy(store) is None and calls[0] == 1


def test_a_bad_or_linked_marker_is_ignored(tmp_path, monkeypatch):
    root = write_store(tmp_path / "s", random_unit(400, 8, seed=6), [400])
    store = EmbeddingStore(root)
    bc.build_copy(store)
    assert bc.open_copy(store) is not None
    marker = next(bc.copy_dir(root).glob(".*.verified"))
    good = marker.read_text()
    calls = _digests(monkeypatch)
    for bad in ("not numbers", "", "1 2 3", "\xff"):
        marker.write_bytes(bad.encode("latin-1"))
        monkeypatch.setattr(bc, "_verified", set())
        assert bc.open_copy(store) is not None  # checked again, recorded again
        assert marker.read_text() == good
    n = calls[0]
    assert n == 4
    # A link in the marker's place (even to a file with the right text) is not read.
    (tmp_path / "elsewhere").write_text(good)
    marker.unlink()
    marker.symlink_to(tmp_path / "elsewhere")
    monkeypatch.setattr(bc, "_verified", set())
    assert bc.open_copy(store) is not None and calls[0] == n + 1
    assert (tmp_path / "elsewhere").read_text() == good  # the link was replaced, not followed
    assert not marker.is_symlink()


def test_an_unrecordable_check_still_opens_the_copy(tmp_path, monkeypatch):
    root = write_store(tmp_path / "s", random_unit(400, 8, seed=7), [400])
    store = EmbeddingStore(root)
    bc.build_copy(store)
    create = bc._create

    def full(path):
        if path.name.endswith(".tmp") and ".verified." in path.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return create(path)

    monkeypatch.setattr(bc, "_create", full)
    calls = _digests(monkeypatch)
    for _ in range(2):
        monkeypatch.setattr(bc, "_verified", set())
        assert bc.open_copy(store) is not None
    assert calls[0] == 2  # nothing recorded: each process checks
    assert not list(bc.copy_dir(root).glob(".*verified*"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_in_the_markers_place_does_not_block(tmp_path, monkeypatch):
    import threading

    root = write_store(tmp_path / "s", random_unit(300, 8, seed=8), [300])
    store = EmbeddingStore(root)
    bc.build_copy(store)
    assert bc.open_copy(store) is not None
    marker = next(bc.copy_dir(root).glob(".*.verified"))
    marker.unlink()
    os.mkfifo(marker)  # opening it for reading would wait for a writer
    monkeypatch.setattr(bc, "_verified", set())  # a new process
    calls = _digests(monkeypatch)
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(bc.open_copy(store)), daemon=True)
    reader.start()
    reader.join(timeout=60)
    if reader.is_alive():  # blocked: a writer opening the FIFO releases it
        os.close(os.open(marker, os.O_WRONLY | os.O_NONBLOCK))
        reader.join()
        pytest.fail("reading the marker blocked on a FIFO")
    assert got[0] is not None and calls[0] == 1  # not trusted: checked by its digest
    assert stat.S_ISREG(os.lstat(marker).st_mode)  # recorded in a plain file in its place


def test_auto_checks_the_copy_only_where_it_may_screen(tmp_path, monkeypatch):
    """A search that "auto" runs in float32 for reasons the copy does not change (here: too
    few rows per result) never reads the copy, so it does not check its digest either."""
    root = write_store(tmp_path / "s", random_unit(400, 8, seed=9), [400])
    store = EmbeddingStore(root)
    bc.build_copy(store)
    for marker in bc.copy_dir(root).glob(".*.verified"):
        marker.unlink()
    monkeypatch.setattr(bc, "_verified", set())  # a new process: a check is a full read
    calls = _digests(monkeypatch)
    q = random_unit(2, 8, seed=10)
    want = brute_force(q, np.asarray(store.shards[0], np.float32), store.ids, 100)
    for copy in ("use", "auto"):
        st = SearchStats()
        got = search(store, q, 100, screen="auto", bf16_copy=copy, chunk_rows=64, stats=st)
        np.testing.assert_array_equal(got[1], want[1])
        assert st.screen == "off" and not st.trial and not st.bf16_copy
    assert calls[0] == 0


def test_a_shard_replaced_under_an_open_store_never_leaves_a_wrong_copy(tmp_path):
    # The shard file is replaced (a new file renamed over it: another inode) while a store
    # still maps the old one. A copy built from that store's map holds the old rows; keyed by
    # the new file, later stores would read it as current and screen the new rows with the
    # old rows' bits and norms.
    d = 16
    root = write_store(tmp_path / "s", random_unit(2000, d, seed=1), [1000, 1000])
    q = random_unit(4, d, seed=3)
    store = EmbeddingStore(root)
    other = write_store(tmp_path / "o", random_unit(1000, d, seed=9), [1000])
    os.replace(EmbeddingStore(other).shard_paths[0], store.shard_paths[1])
    with contextlib.suppress(InputError):
        search(store, q, 20, screen="bf16", bf16_copy="auto")
    all_paths(EmbeddingStore(root), q, 20, block_rows=512, chunk_rows=256)


def test_a_store_whose_shard_was_replaced_never_reads_the_new_files_copy(tmp_path):
    # A long-lived store (the web page's) still maps the old file of shard 1 when a new
    # file is renamed over it and a fresh store builds the copy of the new file. The copy's
    # key is computed from the file now at the path: the old store must not screen its rows
    # with the new file's bits and norms. Here the old shard 1 holds the rows nearest the
    # queries and the new one the farthest: screened with the new bits, shard 1 would be
    # dropped whole, its rows never read (so never found replaced), the top rows lost.
    d = 16
    q = random_unit(1, d, seed=3)
    near = random_unit(1000, d, seed=2) * 0.2 + q
    x = np.vstack([random_unit(1000, d, seed=1), near / np.linalg.norm(near, axis=1)[:, None]])
    root = write_store(tmp_path / "s", x, [1000, 1000])
    old = EmbeddingStore(root)
    want = brute_force(q, old.rows(np.arange(len(old))), old.ids, 20)
    assert (want[1] >= 1000).all()  # the top rows are the old shard 1's
    far = x[1000:] * -1
    write_shard(root, 1, far, [f"n{i}" for i in range(1000)], np.arange(1000, 2000))
    new = EmbeddingStore(root)
    bc.build_copy(new)
    assert bc.open_copy(new) is not None
    assert bc.open_copy(old) is None  # shard 1's copy is the new file's, not the old map's
    for screen in ("bf16", "auto", "off"):
        try:
            got = search(old, q, 20, screen=screen, bf16_copy="use")
        except InputError as exc:
            assert "open the store again" in str(exc)
        else:  # the old files' rows, under their ids
            np.testing.assert_array_equal(got[1], want[1])


def test_the_chunk_norms_of_a_store_whose_shard_was_replaced_are_not_shared(tmp_path):
    # The per-process chunk norms are keyed by the files at the shards' paths: a store
    # still mapping the file a new one was renamed over must not find the new file's.
    from inquire.index.scorer import _store_key

    root = write_store(tmp_path / "s", random_unit(20, 8, seed=1), [10, 10])
    old = EmbeddingStore(root)
    assert _store_key(old) is not None
    write_shard(root, 1, random_unit(10, 8, seed=2), [f"n{i}" for i in range(10)], None)
    assert _store_key(old) is None
    assert _store_key(EmbeddingStore(root)) is not None
