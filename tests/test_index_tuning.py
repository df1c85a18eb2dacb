"""Exact search's measured choices kept on disk per machine (:mod:`inquire.index.tuning`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inquire.embed.store import EmbeddingStore
from inquire.index import kernels as kernels_mod
from inquire.index import screen as scr
from inquire.index import tuning
from inquire.index.exact import SearchStats, search
from inquire.testing.search_stores import random_unit, write_store
from test_index_screen import _timed_paths

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_memory(monkeypatch):
    """Each test starts as a new process would: nothing remembered in memory."""
    monkeypatch.setattr(scr, "_choices", {})
    monkeypatch.setattr(kernels_mod, "_fastest", {})
    monkeypatch.setattr(tuning, "_loaded", {})
    monkeypatch.setattr(tuning, "_warned", set())
    monkeypatch.delenv(tuning.ENV_TUNING, raising=False)


def _new_process(monkeypatch) -> None:
    """Forget what this process remembers, as a later process starts."""
    monkeypatch.setattr(scr, "_choices", {})
    monkeypatch.setattr(kernels_mod, "_fastest", {})
    monkeypatch.setattr(tuning, "_loaded", {})


def test_kept_values_are_recalled_by_a_later_process(monkeypatch):
    key = ((250, 1024), 1000, 4096, "float16", 2, False, True)
    assert tuning.recall("screen", key) is None
    assert tuning.keep("screen", key, "bf16")
    _new_process(monkeypatch)
    assert tuning.recall("screen", key) == "bf16"
    assert tuning.recall("gemm", key) is None  # kinds do not mix
    assert tuning.recall("screen", (*key[:-1], False)) is None  # nor shapes
    path = tuning.tuning_path()
    assert path.parent == Path(os.environ["INQUIRE_HOME"]) / "tuning"
    assert len(path.stem) == 16 and set(path.stem) <= set("0123456789abcdef")
    entries = json.loads(path.read_text())["entries"]
    assert list(entries) == [tuning.entry_key("screen", key)]
    # Updated in place: one entry per key.
    assert tuning.keep("screen", key, "fp32")
    assert tuning.recall("screen", key) == "fp32"
    assert len(json.loads(path.read_text())["entries"]) == 1


def test_old_and_future_entries_are_measured_again(monkeypatch):
    tuning.keep("gemm", (1, 2, 3), "onednn")
    real = time.time()
    monkeypatch.setattr(tuning.time, "time", lambda: real + tuning.MAX_AGE_S + 1)
    assert tuning.recall("gemm", (1, 2, 3)) is None
    monkeypatch.setattr(tuning.time, "time", lambda: real - 3600)  # the clock was set back
    assert tuning.recall("gemm", (1, 2, 3)) is None
    monkeypatch.setattr(tuning.time, "time", lambda: real + 60)
    assert tuning.recall("gemm", (1, 2, 3)) == "onednn"
    # A write drops the expired entries of other keys.
    monkeypatch.setattr(tuning.time, "time", lambda: real + tuning.MAX_AGE_S + 1)
    tuning.keep("gemm", (4,), "torch")
    assert list(json.loads(tuning.tuning_path().read_text())["entries"]) == [
        tuning.entry_key("gemm", (4,))
    ]


def test_entries_are_bounded_oldest_first(monkeypatch):
    monkeypatch.setattr(tuning, "MAX_ENTRIES", 3)
    clock = [time.time()]
    monkeypatch.setattr(tuning.time, "time", lambda: clock[0])
    for i in range(5):
        clock[0] += 1
        assert tuning.keep("gemm", (i,), "numpy")
    assert [tuning.recall("gemm", (i,)) for i in range(5)] == [None, None] + ["numpy"] * 3


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json {",
        b"[1, 2, 3]",
        b'{"entries": [1]}',
        b'{"entries": {"x": 1}}',
        json.dumps({"entries": {"K": {"value": 7, "at": "yesterday"}}}).encode(),
        b"\xff\xfe\x00garbage",
    ],
)
def test_a_file_that_is_not_ours_costs_only_the_measurement(content):
    key = ("k",)
    path = tuning.tuning_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(content.replace(b"K", tuning.entry_key("gemm", key).encode()))
    assert tuning.recall("gemm", key) is None
    assert tuning.keep("gemm", key, "torch")  # replaced by a whole file of ours
    assert tuning.recall("gemm", key) == "torch"
    assert isinstance(json.loads(path.read_text())["entries"], dict)


def test_a_huge_file_is_not_read(monkeypatch):
    monkeypatch.setattr(tuning, "MAX_FILE_BYTES", 200)
    key = ("k",)
    entries = {tuning.entry_key("gemm", key): {"value": "torch", "at": time.time()}}
    entries.update({f"pad{i}": {"value": "x", "at": 0} for i in range(20)})
    path = tuning.tuning_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"entries": entries}))
    assert path.stat().st_size > 200
    assert tuning.recall("gemm", key) is None
    assert tuning.keep("gemm", key, "torch")  # the rewrite keeps what is fresh: small again
    assert tuning.recall("gemm", key) == "torch"


def test_an_unwritable_home_is_not_an_error(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("INQUIRE_HOME", str(blocker / "home"))  # a folder under a file
    with caplog.at_level("INFO", logger="inquire.index.tuning"):
        assert tuning.keep("gemm", (1,), "numpy") is False
        assert tuning.keep("gemm", (2,), "numpy") is False
    assert tuning.recall("gemm", (1,)) is None
    assert sum("not kept" in r.getMessage() for r in caplog.records) == 1  # said once


def test_turned_off_reads_and_writes_nothing(monkeypatch):
    tuning.keep("gemm", (1,), "numpy")
    for value in ("off", "0", "No", "false"):
        monkeypatch.setenv(tuning.ENV_TUNING, value)
        assert tuning.recall("gemm", (1,)) is None
        assert tuning.keep("gemm", (2,), "numpy") is False
    monkeypatch.setenv(tuning.ENV_TUNING, "on")
    assert tuning.recall("gemm", (1,)) == "numpy" and tuning.recall("gemm", (2,)) is None


def test_a_writer_holding_the_lock_delays_a_keep_at_most_the_timeout(monkeypatch):
    monkeypatch.setattr(tuning, "LOCK_TIMEOUT_S", 0.2)
    path = tuning.tuning_path()
    path.parent.mkdir(parents=True)
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file: conflicts as another process's
        assert tuning.keep("gemm", (1,), "numpy") is False
        assert not path.exists()
    finally:
        os.close(fd)
    assert tuning.keep("gemm", (1,), "numpy") is True


_WRITER = textwrap.dedent(
    """
    import sys
    from inquire.index import tuning
    tag, n = sys.argv[1], int(sys.argv[2])
    for i in range(n):
        assert tuning.keep("gemm", (tag, i), "numpy"), i
    """
)


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, tag, "40"], env=env) for tag in ("a", "b")
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    entries = json.loads(tuning.tuning_path().read_text())["entries"]
    assert len(entries) == 80
    assert all(tuning.recall("gemm", (t, i)) == "numpy" for t in "ab" for i in range(40))
    assert not list(tuning.tuning_path().parent.glob("*.tmp"))  # no half-written files left


def test_machine_id_follows_what_timings_depend_on(monkeypatch):
    first = tuning.machine_id()
    assert tuning.machine_id() == first  # once per process
    monkeypatch.setattr(tuning, "_machine", [])
    assert tuning.machine_id() == first
    monkeypatch.setattr(tuning, "_machine", [])
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert tuning.machine_id() != first


# -- through the search -----------------------------------------------------------------------


def _trial_case(
    tmp_path: Path, shards: list[int], dtype: Any = np.float16
) -> tuple[Path, EmbeddingStore, np.ndarray]:
    """A store of 32 chunks of 64 rows (an auto trial's worth) in ``shards``, and 5 queries:
    ``(folder, store, queries)``."""
    folder = write_store(tmp_path / "s", random_unit(64 * 32, 24, seed=30), shards, dtype=dtype)
    return folder, EmbeddingStore(folder), random_unit(5, 24, seed=31)


def _fake_clock(monkeypatch, bf16_cost: float) -> None:
    """bfloat16 chunks cost ``bf16_cost`` float32 chunks on a fake clock (no real timing)."""
    _timed_paths(monkeypatch, bf16_cost=bf16_cost, fp32_cost=1.0)


@pytest.mark.parametrize("bf16_cost,want", [(0.5, "bf16"), (3.0, "off")])
def test_a_later_search_takes_the_kept_choice_without_a_trial(
    tmp_path, monkeypatch, bf16_cost, want
):
    pytest.importorskip("torch")
    _fake_clock(monkeypatch, bf16_cost)
    _, store, q = _trial_case(tmp_path, [1024, 1024])
    off = search(store, q, 20, screen="off", chunk_rows=64, threads=1)
    st = SearchStats()
    search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=st)
    assert st.trial and st.screen == want
    _new_process(monkeypatch)
    st2 = SearchStats()
    got = search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=st2)
    assert not st2.trial and st2.screen == want
    assert st2.bf16_copy == (want == "bf16")  # a kept bfloat16 choice reads the copy at once
    np.testing.assert_array_equal(got[1], off[1])
    np.testing.assert_array_equal(got[0].view(np.uint32), off[0].view(np.uint32))
    # Another shape (more queries) is measured again.
    st3 = SearchStats()
    search(
        store, random_unit(9, 24, seed=32), 20, screen="auto", chunk_rows=64, threads=1, stats=st3
    )
    assert st3.trial


@pytest.mark.parametrize("bf16_cost,want", [(0.85, "bf16"), (0.95, "off")])
def test_a_near_call_is_not_kept(tmp_path, monkeypatch, bf16_cost, want):
    pytest.importorskip("torch")
    _fake_clock(monkeypatch, bf16_cost)
    _, store, q = _trial_case(tmp_path, [2048])
    st = SearchStats()
    search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=st)
    assert st.trial and st.screen == want
    key = next(iter(scr._choices))
    assert scr.recalled_choice(key) == ("bf16" if want == "bf16" else "fp32")  # this process
    assert tuning.recall("screen", key) is None  # not later ones
    _new_process(monkeypatch)
    st2 = SearchStats()
    search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=st2)
    assert st2.trial


def test_a_kept_value_that_is_not_a_choice_is_measured_again(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    _fake_clock(monkeypatch, 0.5)
    _, store, q = _trial_case(tmp_path, [2048])
    search(store, q, 20, screen="auto", chunk_rows=64, threads=1)
    path = tuning.tuning_path()
    data = json.loads(path.read_text())
    for e in data["entries"].values():
        e["value"] = "gpu"  # tampered: neither "bf16" nor "fp32", nor a GEMM that runs here
    path.write_text(json.dumps(data))
    _new_process(monkeypatch)
    st = SearchStats()
    search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=st)
    assert st.trial and st.screen == "bf16"
    assert tuning.recall("screen", next(iter(scr._choices))) == "bf16"  # written again


def test_a_failed_search_keeps_nothing(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from inquire.index.scorer import Scorer

    _fake_clock(monkeypatch, 0.5)
    _, store, q = _trial_case(tmp_path, [2048])
    score, calls = Scorer.score, [0]

    def failing(self, *a, **kw):
        calls[0] += 1
        if calls[0] == 30:  # after the trial decided
            raise RuntimeError("disk gone")
        return score(self, *a, **kw)

    monkeypatch.setattr(Scorer, "score", failing)
    with pytest.raises(RuntimeError, match="disk gone"):
        search(store, q, 20, screen="auto", chunk_rows=64, threads=1)
    assert scr._choices  # decided in this process,
    key = next(iter(scr._choices))
    assert tuning.recall("screen", key) is None  # but not kept for later ones


_SECOND = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from inquire.embed.store import EmbeddingStore
    from inquire.index import screen as scr
    from inquire.index.exact import SearchStats, search
    scr.cpu_has_bf16_units = lambda: True  # as in the first process (its clock was faked)
    store = EmbeddingStore(sys.argv[1])
    q = np.load(sys.argv[2])
    st = SearchStats()
    s, i = search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=st)
    np.save(sys.argv[3], i)
    print(json.dumps({"trial": st.trial, "screen": st.screen, "copy": st.bf16_copy}))
    """
)


def test_a_second_process_reads_the_first_ones_choice(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    _fake_clock(monkeypatch, 0.5)
    folder, store, q = _trial_case(tmp_path, [1024, 1024])
    np.save(tmp_path / "q.npy", q)
    st = SearchStats()
    _, want = search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=st)
    assert st.trial and st.screen == "bf16"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    args = [str(folder), str(tmp_path / "q.npy"), str(tmp_path / "ids.npy")]
    out = subprocess.run(
        [sys.executable, "-c", _SECOND, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"trial": False, "screen": "bf16", "copy": True}
    np.testing.assert_array_equal(np.load(tmp_path / "ids.npy"), want)
    # With keeping turned off, the second process measures again (on its real clock).
    env[tuning.ENV_TUNING] = "off"
    out = subprocess.run(
        [sys.executable, "-c", _SECOND, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["trial"] is True


def test_the_float32_gemm_choice_is_kept_for_the_same_candidates(monkeypatch):
    pytest.importorskip("torch")
    k = kernels_mod.Kernels()
    names = k.candidates()
    if len(names) < 2:
        pytest.skip("one float32 GEMM here: nothing is timed")
    with k.single_threaded():
        first = k.choose_gemm(3, 16, 64)
    other = next(n for n in names if n != first)
    disk_key = (*kernels_mod.gemm_key(3, 16, 64), *names)
    assert tuning.recall("gemm", disk_key) == first
    tuning.keep("gemm", disk_key, other)  # as if a later timing had found `other` faster
    _new_process(monkeypatch)
    scores, timed = kernels_mod.Kernels.scores, []

    def counted(self, *a):
        timed.append(1)
        return scores(self, *a)

    monkeypatch.setattr(kernels_mod.Kernels, "scores", counted)
    with k.single_threaded():
        assert kernels_mod.Kernels().choose_gemm(3, 16, 64) == other
    assert timed == []  # nothing timed
    # A kept GEMM that cannot run now is timed again, and the new choice kept.
    tuning.keep("gemm", disk_key, "no-such-gemm")
    _new_process(monkeypatch)
    with k.single_threaded():
        again = kernels_mod.Kernels().choose_gemm(3, 16, 64)
    assert again in names and timed and tuning.recall("gemm", disk_key) == again


# -- files that are not ours, through the search too ------------------------------------------


def _own_and_other(key: tuple, own: dict, other: dict) -> bytes:
    entries = {tuning.entry_key("gemm", key): own, "another key": other}
    return json.dumps({"entries": entries}).encode()


_NOW = time.time()
_TAMPERED = {
    # json.loads raises RecursionError (not a ValueError) on deep nesting.
    "nested": b"[" * 100_000 + b"]" * 100_000,
    "nested entry": b'{"entries": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    # A time too large for a float: time.time() - at raises OverflowError.
    "huge own time": _own_and_other(
        ("k",), {"value": "torch", "at": 10**400}, {"value": "x", "at": _NOW}
    ),
    "huge other time": _own_and_other(
        ("k",), {"value": "torch", "at": _NOW}, {"value": "x", "at": 10**400}
    ),
    "bool time": _own_and_other(("k",), {"value": "torch", "at": True}, {"value": "x", "at": 1}),
}


@pytest.mark.parametrize("name", list(_TAMPERED))
def test_tampered_content_costs_only_the_measurement(name):
    key = ("k",)
    path = tuning.tuning_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(_TAMPERED[name])
    got = tuning.recall("gemm", key)
    assert got is None or (name == "huge other time" and got == "torch")
    assert tuning.keep("gemm", key, "numpy")  # replaced by a whole file of ours
    assert tuning.recall("gemm", key) == "numpy"
    entries = json.loads(path.read_text())["entries"]
    assert all(isinstance(e["value"], str) and type(e["at"]) is float for e in entries.values())


def _unblock_fifo_reader(path: Path) -> None:
    """Open ``path`` (a FIFO) for writing without blocking, releasing a reader stuck in its
    open(); no-op if nobody reads it."""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("kind", ["fifo", "fifo behind a symlink", "directory"])
def test_a_special_file_in_its_place_costs_only_the_measurement(tmp_path, kind):
    key = ("k",)
    path = tuning.tuning_path()
    path.parent.mkdir(parents=True)
    if kind == "directory":
        path.mkdir()
    else:
        fifo = path if kind == "fifo" else tmp_path / "fifo"
        os.mkfifo(fifo)
        if fifo != path:
            path.symlink_to(fifo)
    got: list = []
    reader = threading.Thread(target=lambda: got.append(tuning.recall("gemm", key)), daemon=True)
    reader.start()
    reader.join(timeout=30)
    if reader.is_alive():  # stuck opening the FIFO: release it, then fail
        _unblock_fifo_reader(path)
        reader.join(timeout=60)
        pytest.fail("recall() blocked opening a FIFO in the tuning file's place")
    assert got == [None]
    # A write replaces what is there (a directory cannot be replaced: not written).
    assert tuning.keep("gemm", key, "numpy") is (kind != "directory")
    assert tuning.recall("gemm", key) == ("numpy" if kind != "directory" else None)


@pytest.mark.parametrize("name", ["nested", "huge other time", "fifo"])
def test_a_search_over_a_tampered_file_equals_screen_off(tmp_path, monkeypatch, name):
    """Through the search: auto's result equals screen="off" bit for bit, nothing raised."""
    pytest.importorskip("torch")
    _fake_clock(monkeypatch, 0.5)
    _, store, q = _trial_case(tmp_path, [1024, 1024])
    off = search(store, q, 20, screen="off", chunk_rows=64, threads=1)
    path = tuning.tuning_path()
    path.parent.mkdir(parents=True, exist_ok=True)  # the "off" search kept its GEMM there
    path.unlink(missing_ok=True)
    if name == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(_TAMPERED[name])
    got: list = []
    st = SearchStats()

    def run() -> None:
        try:
            got.append(search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=st))
        except BaseException as exc:  # reported below
            got.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():
        _unblock_fifo_reader(path)
        worker.join(timeout=120)
        pytest.fail("the search blocked on the tuning file")
    assert not isinstance(got[0], BaseException), repr(got[0])
    assert st.trial and st.screen == "bf16"
    np.testing.assert_array_equal(got[0][1], off[1])
    np.testing.assert_array_equal(got[0][0].view(np.uint32), off[0].view(np.uint32))
    assert tuning.recall("screen", next(iter(scr._choices))) == "bf16"  # kept after all


_STUCK_WRITER = textwrap.dedent(
    """
    import pathlib, sys
    from inquire.index import tuning
    def stuck(self, *a, **kw):  # the temporary file exists, the lock is held: wait to be killed
        print("writing", flush=True)
        sys.stdin.read()
    pathlib.Path.write_text = stuck
    tuning.keep("gemm", ("killed",), "numpy")
    """
)


def test_a_writer_killed_mid_write_leaves_nothing_behind_for_long(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for _ in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-c", _STUCK_WRITER],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "writing"
        finally:
            proc.kill()
            proc.wait(timeout=60)
    folder = tuning.tuning_path().parent
    # The second writer removed what the first left; its own is left.
    assert len(list(folder.glob(".*.tmp"))) == 1
    assert tuning.keep("gemm", ("next",), "numpy")  # their lock died with them
    assert tuning.recall("gemm", ("next",)) == "numpy"
    assert tuning.recall("gemm", ("killed",)) is None
    # Under the lock no other writer is at work: their temporary files went with this write.
    assert not list(folder.glob(".*.tmp"))
    # Other files in the folder are not ours to remove.
    (folder / ".other.json.x.tmp").write_text("{}")
    assert tuning.keep("gemm", ("next",), "numpy")
    assert (folder / ".other.json.x.tmp").exists()


@pytest.mark.parametrize(
    "masked,dtype,threads", [(False, np.float16, 1), (True, np.float16, 2), (True, np.float32, 1)]
)
def test_a_hand_written_choice_is_applied_only_where_it_may_run(
    tmp_path, monkeypatch, masked, dtype, threads
):
    """A kept "bf16" (written by hand: no trial, real clock) screens only the shape it names,
    never where the CPU lists no bfloat16 units; every result equals screen="off" bit for
    bit."""
    pytest.importorskip("torch")
    monkeypatch.setattr(scr, "cpu_has_bf16_units", lambda: True)
    _, store, q = _trial_case(tmp_path, [1024, 1024], dtype=dtype)
    mask = np.arange(len(store)) % 3 != 0 if masked else None
    kw = dict(chunk_rows=64, threads=threads, mask=mask)
    off = search(store, q, 20, screen="off", **kw)
    workers = kernels_mod.Kernels().workers(threads)
    key = (q.shape, 20, 64, str(np.dtype(dtype)), workers, masked, True)
    tuning.keep("screen", key, "bf16")
    for other in (
        (q.shape, 20, 64, str(np.dtype(dtype)), workers, not masked, True),
        (q.shape, 20, 64, str(np.dtype(dtype)), workers + 1, masked, True),
        ((6, 24), 20, 64, str(np.dtype(dtype)), workers, masked, True),
    ):
        tuning.keep("screen", other, "fp32")  # other shapes' choices do not apply here

    def check(**more) -> SearchStats:
        _new_process(monkeypatch)
        st = SearchStats()
        got = search(store, q, 20, screen="auto", stats=st, **kw, **more)
        np.testing.assert_array_equal(got[1], off[1])
        np.testing.assert_array_equal(got[0].view(np.uint32), off[0].view(np.uint32))
        return st

    st = check()
    assert not st.trial and st.screen == "bf16" and st.chunks_fp32 == 0
    # The copy that would be read cannot be: another shape (expect=False), measured anew.
    monkeypatch.setattr(scr, "clock", lambda: 0.0)  # a tie: float32
    st = check(bf16_copy="off")
    assert st.trial
    # No bfloat16 units listed: the kept choice is not even looked at.
    monkeypatch.setattr(scr, "cpu_has_bf16_units", lambda: False)
    st = check()
    assert not st.trial and st.screen == "off" and st.chunks_bf16 == 0


def test_a_kept_torch_gemm_is_not_used_below_highest_precision(monkeypatch):
    torch = pytest.importorskip("torch")
    k = kernels_mod.Kernels()
    names = k.candidates()
    if "torch" not in names:
        pytest.skip("torch's float32 GEMM does not run here")
    tuning.keep("gemm", (*kernels_mod.gemm_key(3, 16, 64), *names), "torch")
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")  # torch may round to bfloat16 now
    try:
        _new_process(monkeypatch)
        k = kernels_mod.Kernels()
        with k.single_threaded():
            assert k.choose_gemm(3, 16, 64) == "numpy"
    finally:
        torch.set_float32_matmul_precision(old)
    _new_process(monkeypatch)
    k = kernels_mod.Kernels()
    with k.single_threaded():
        assert k.choose_gemm(3, 16, 64) == "torch"  # back at "highest": the kept choice


@pytest.mark.parametrize("case", ["unknown user", "no home"])
def test_a_home_that_cannot_be_resolved_is_not_an_error(tmp_path, monkeypatch, caplog, case):
    """INQUIRE_HOME naming an unknown user's home (pathlib's expanduser raises RuntimeError),
    or no INQUIRE_HOME in a container's process of an arbitrary uid without HOME (no passwd
    entry: platformdirs raises RuntimeError). A search never needed the cache before its
    choices were kept there: it must not fail now."""
    if case == "unknown user":
        monkeypatch.setenv("INQUIRE_HOME", "~inquire-no-such-user-8d1c/cache")
    else:
        import pwd

        def no_entry(uid):
            raise KeyError(f"getpwuid(): uid not found: {uid}")

        for name in ("INQUIRE_HOME", "XDG_CACHE_HOME", "HOME"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with caplog.at_level("INFO", logger="inquire.index.tuning"):
        assert tuning.recall("gemm", (1,)) is None
        assert tuning.keep("gemm", (1,), "numpy") is False
    assert any("not kept" in r.getMessage() for r in caplog.records)
    pytest.importorskip("torch")
    _fake_clock(monkeypatch, 0.5)
    _, store, q = _trial_case(tmp_path, [1024, 1024])
    off = search(store, q, 20, screen="off", chunk_rows=64, threads=1)
    st = SearchStats()
    got = search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=st)
    assert st.trial and st.screen == "bf16"
    np.testing.assert_array_equal(got[1], off[1])
    np.testing.assert_array_equal(got[0].view(np.uint32), off[0].view(np.uint32))


def test_numpy_integers_key_as_plain_ints(monkeypatch):
    monkeypatch.setattr(scr, "cpu_has_bf16_units", lambda: True)
    q = random_unit(4, 32, seed=17)
    args = dict(n_rows=1_000_000, store_dtype=np.dtype(np.float16), has_torch=True)
    a = scr.plan_screen("auto", q, k=10, chunk_rows=256, threads=1, **args)
    b = scr.plan_screen(
        "auto", q, k=np.int64(10), chunk_rows=np.int32(256), threads=np.int64(1), **args
    )
    assert a.key == b.key
    assert tuning.entry_key("screen", a.key) == tuning.entry_key("screen", b.key)
