"""Atomic file writes: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_UMASK_LOCK = threading.Lock()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On error the temporary file is removed and ``path`` is left untouched, so a reader never
    sees a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name adds ~14 bytes: cut a long name's share so it fits NAME_MAX (255).
    stem = path.name
    while len(os.fsencode(stem)) > 200:
        stem = stem[:-1]
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates the file private (0600); give the final file the permissions a plain
    # open() would, so results written here are as readable as any other file.
    if hasattr(os, "fchmod"):  # POSIX only; Windows has no such mode bits
        os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it: set it back at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; rename it onto ``path`` when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read ``chunk`` bytes at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def check_output_folder(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Fail before any work when ``path``, an output *folder*, names an existing file.

    Returns ``path`` as a :class:`Path`. (A folder, existing or not, is fine.)
    """
    from inquire.errors import InputError

    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(
            f"{what} {str(p)!r} is an existing file, but it names a folder to write into; "
            f"choose a new folder name (or move the file away)"
        )
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(
                    f"{what} {str(p)!r} cannot be created: {str(parent)!r} is a file, not a folder"
                )
            break
    return p


def check_output_file(
    path: str | os.PathLike[str], overwrite: bool = False, what: str = "--out"
) -> Path:
    """Fail before any work when ``path``, an output *file*, already exists (unless
    ``overwrite``), is a folder, or lies under a file. Returns ``path`` as a :class:`Path`."""
    from inquire.errors import InputError

    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"{what} {str(p)!r} is a folder; name the file to write")
    if p.exists() and not overwrite:
        raise InputError(
            f"{what} {str(p)!r} already exists; choose another file name, or pass --overwrite "
            f"to replace it"
        )
    check_output_folder(p.parent, what=f"the folder of {what}")
    return p
