"""Tar sources read members with pread (thread-safe) and close their descriptor."""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from inquire.embed.sources import open_source


def _make_tar(path: Path, n: int) -> dict[str, bytes]:
    payloads = {f"img_{i:03d}.jpg": os.urandom(100 + 37 * i) for i in range(n)}
    with tarfile.open(path, "w") as tf:
        for name, data in payloads.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return payloads


def _open_fds(target: Path) -> int:
    """Descriptors of this process open on ``target`` (others may come and go meanwhile,
    opened by threads of earlier tests)."""
    n, want = 0, str(target.resolve())
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/self/fd/{fd}") == want
    return n


def test_tar_reads_from_many_threads_match_serial_reads(tmp_path: Path) -> None:
    payloads = _make_tar(tmp_path / "a.tar", 40)
    with open_source(tmp_path / "a.tar") as source:
        expected = [payloads[p] for p in source.paths]
        order = [i for _ in range(20) for i in range(len(source))]
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(source.read, order))
    assert got == [expected[i] for i in order]


def test_tar_source_closes_its_descriptor(tmp_path: Path) -> None:
    tar = tmp_path / "a.tar"
    _make_tar(tar, 3)
    assert _open_fds(tar) == 0
    source = open_source(tar)
    source.read(0)
    assert _open_fds(tar) == 1
    source.close()
    assert _open_fds(tar) == 0
    # a closed source reopens on demand, and the context manager closes it again
    with source:
        assert source.read(1)
    assert _open_fds(tar) == 0
