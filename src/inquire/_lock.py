"""One writer at a time per output folder (an embedding folder, a collection).

A writer holds an advisory lock (``filelock``: ``flock`` on POSIX) on ``FOLDER/.writer.lock``
for as long as it writes. A second writer *waits* for it, after logging who holds the folder
(``FOLDER/.writer.owner``: process id, host, command, since when); ``timeout`` seconds
(None: no limit) bound the wait, after which :class:`~inquire.errors.BusyError` is raised.
The operating system drops the lock when its process ends, killed or not, so a crash never
leaves a folder locked. Readers take no lock: writers only ever rename complete files into
place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inquire.errors import BusyError

log = logging.getLogger(__name__)

LOCK_FILE = ".writer.lock"
OWNER_FILE = ".writer.owner"
# Folders whose lock this process holds -> the thread holding it (the lock is re-entrant for
# that thread, so a writer may call code that also takes it).
_HELD: dict[str, int] = {}


def lock_owner(folder: str | os.PathLike[str]) -> dict[str, object]:
    """What the folder's last writer recorded about itself (empty if nothing readable)."""
    try:
        info = json.loads((Path(folder) / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


@contextlib.contextmanager
def writer_lock(
    folder: str | os.PathLike[str], what: str, timeout: float | None = None
) -> Iterator[Path]:
    """Hold the writer lock of ``folder`` (created if needed) for the ``with`` block.

    ``what`` names the folder in messages (e.g. ``"collection 'walks'"``). Waits while another
    process writes there (logging a warning once), at most ``timeout`` seconds when given.
    Yields the folder.
    """
    from filelock import FileLock, Timeout

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    if _held_here(key):  # this thread already writes here
        yield path
        return
    lock = FileLock(str(path / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner = lock_owner(path)
        holder = (
            f" (process {owner.get('pid')} on {owner.get('host')}, {owner.get('command')!r}, "
            f"since {owner.get('since')})"
            if owner
            else ""
        )
        limit = "" if timeout is None else f" for up to {timeout:g} s"
        log.warning(
            "%s is being written by another process%s; waiting%s for it to finish",
            what,
            holder,
            limit,
        )
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise BusyError(
                f"{what} is still being written by another process{holder} after "
                f"{timeout:g} s; run again when it has finished (lock file "
                f"{str(path / LOCK_FILE)!r}, released when that process ends)"
            ) from None
    with _holding(key, lock):
        _write_owner(path)
        yield path


@contextlib.contextmanager
def try_writer_lock(folder: str | os.PathLike[str]) -> Iterator[bool]:
    """Hold the writer lock of an existing ``folder`` if it is free, without waiting.

    Yields True when held (or already held by this thread), False when another writer has
    it: a reader then keeps what it computed in memory instead of writing a shared file.
    """
    from filelock import FileLock, Timeout

    path = Path(folder)
    key = str(path.resolve())
    if _held_here(key):
        yield True
        return
    lock = FileLock(str(path / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):  # busy, or a read-only folder: read without writing
        yield False
        return
    with _holding(key, lock):
        yield True


def _held_here(key: str) -> bool:
    """Whether this thread holds the lock of the folder ``key`` (its resolved path)."""
    return _HELD.get(key) == threading.get_ident()


@contextlib.contextmanager
def _holding(key: str, lock: Any) -> Iterator[None]:
    """Record the acquired ``lock`` of folder ``key`` as this thread's; release it after."""
    _HELD[key] = threading.get_ident()
    try:
        yield
    finally:
        _HELD.pop(key, None)
        lock.release()


def _write_owner(folder: Path) -> None:
    from inquire._io import write_json

    with contextlib.suppress(OSError):  # advisory only: never fail a write over it
        write_json(
            folder / OWNER_FILE,
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200],
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
