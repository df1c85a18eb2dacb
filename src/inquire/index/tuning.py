"""Exact search's measured choices, kept on disk per machine so later processes skip them.

Exact search measures two things before it trusts them (:mod:`inquire.index.exact`):

- ``"gemm"``: which float32 GEMM is fastest for a shape (:meth:`~inquire.index.kernels.
  Kernels.choose_gemm`, ~0.1-0.3 s);
- ``"screen"``: whether ``screen="auto"`` screens in bfloat16 for a search's shape (a timed
  trial on its first chunks, :class:`~inquire.index.fanout.Chooser`). Until the trial decides,
  the search converts each chunk instead of reading the store's bfloat16 copy.

Each process kept them in memory, so a command-line search (one search per process) paid for
both every time: at 1M rows x 1024, its ``auto`` search took 1.9-2.7 s where a search that
knew the answer took 1.2-1.5 s, and was often slower than ``screen="off"``. Here they are kept
in ``INQUIRE_HOME/tuning/<machine>.json`` as data: ``{"entries": {key: {"value": ...,
"at": unix seconds}}}``.

- ``<machine>`` is a digest of what the timings depend on: the CPU's model name and flags,
  the cores this process may use, the inquire, torch and numpy versions, and the environment
  variables that cap oneDNN's or MKL's instruction sets. A home folder shared by several
  machines (NFS) keeps one file per machine.
- An entry older than :data:`MAX_AGE_S` (7 days) is measured again, so a choice measured on
  a busy machine does not last. Deleting the folder measures everything again.
- ``INQUIRE_TUNING=off`` keeps choices per process only (nothing read or written).
- Writes take a lock beside the file (``filelock``; a second process waits at most
  :data:`LOCK_TIMEOUT_S`, then skips its write), re-read the file, and rename a complete new
  file into place: a reader sees the old file or the new one, never a mix (a writer killed
  mid-write leaves its temporary file, removed by the next write). A folder that
  cannot be written, or a file that is not ours (unreadable, not a regular file, not JSON or
  nested too deeply, too large, values of the wrong kind), costs only the measurement: it is
  never an error, nor a wait.
- Values are checked by the caller against what may run now (a GEMM that is no longer
  available is measured again).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import platform
import stat
import threading
import time
from pathlib import Path
from typing import Any

from inquire._io import atomic_path
from inquire.config import home_path

log = logging.getLogger(__name__)

ENV_TUNING = "INQUIRE_TUNING"
#: Entries older than this are measured again.
MAX_AGE_S = 7 * 24 * 3600.0
#: Entries kept per file at most (the oldest go first).
MAX_ENTRIES = 512
#: A file larger than this is not read (it is not one of ours; the next write replaces it).
MAX_FILE_BYTES = 1 << 20
# Longer values or keys than ours are not carried over by a write (not ours).
_MAX_VALUE_CHARS = 64
_MAX_KEY_CHARS = 4096
#: How long a writer waits for another process's write before skipping its own.
LOCK_TIMEOUT_S = 2.0
#: Environment variables that change which kernels oneDNN, MKL or torch may use.
_KERNEL_ENV = (
    "ATEN_CPU_CAPABILITY",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_DEBUG_CPU_TYPE",
    "OPENBLAS_CORETYPE",
)

_lock = threading.Lock()
_machine: list[str] = []
# path -> ((size, mtime_ns, inode), entries): re-read only when the file changed.
_loaded: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}
_warned: set[str] = set()


def enabled() -> bool:
    """Whether choices are kept on disk (``INQUIRE_TUNING`` is not ``off``/``0``/``no``)."""
    value = os.environ.get(ENV_TUNING, "").strip().lower()
    return value not in ("off", "0", "no", "false")


def machine_id() -> str:
    """A digest of what the measured choices depend on (see the module doc); 16 hex digits."""
    with _lock:
        if _machine:
            return _machine[0]
    facts: dict[str, Any] = {"machine": platform.machine(), "system": platform.system()}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                name = name.strip()
                if name in ("model name", "flags", "Features", "CPU part") and name not in facts:
                    facts[name] = " ".join(sorted(value.split()))
    except OSError:
        facts["processor"] = platform.processor()
    try:
        facts["cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        facts["cores"] = os.cpu_count()
    import numpy as np

    facts["numpy"] = np.__version__
    try:
        import torch

        facts["torch"] = torch.__version__
    except ImportError:
        facts["torch"] = None
    facts["env"] = {k: os.environ[k] for k in _KERNEL_ENV if k in os.environ}
    from inquire._version import __version__

    facts["inquire"] = __version__  # a new version may time its paths differently
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    with _lock:
        if not _machine:
            _machine.append(digest)
        return _machine[0]


def tuning_path() -> Path:
    """This machine's file (under ``INQUIRE_HOME``, read again at each call)."""
    return home_path() / "tuning" / f"{machine_id()}.json"


def _path() -> Path | None:
    """:func:`tuning_path`, or None where ``INQUIRE_HOME`` cannot be resolved (``~user`` of
    an unknown user: pathlib raises RuntimeError); a search needs no cache, so that costs
    only the measurement (logged once)."""
    try:
        return tuning_path()
    except (RuntimeError, OSError, ValueError) as exc:
        _warn_once("home", f"measured choices are not kept: the cache folder is unknown ({exc})")
        return None


def entry_key(kind: str, key: tuple[Any, ...]) -> str:
    """The file's name for ``key`` of ``kind`` (``"gemm"``, ``"screen"``): JSON of both."""
    return json.dumps([kind, key], separators=(",", ":"), default=str)


def recall(kind: str, key: tuple[Any, ...]) -> str | None:
    """The value kept for ``key`` of ``kind`` on this machine, or None (nothing kept, kept
    longer ago than :data:`MAX_AGE_S`, or keeping disabled)."""
    path = _path() if enabled() else None
    if path is None:
        return None
    got = _fresh(_entries(path).get(entry_key(kind, key)), time.time())
    return None if got is None else got[0]


def keep(kind: str, key: tuple[Any, ...], value: str) -> bool:
    """Keep ``value`` for ``key`` of ``kind`` on this machine; whether it was written (never
    raises: a folder that cannot be written, or a writer holding the lock for longer than
    :data:`LOCK_TIMEOUT_S`, only leaves it unwritten)."""
    path = _path() if enabled() else None
    if path is None:
        return False
    from filelock import FileLock, Timeout

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
            now = time.time()
            # Only well-formed fresh entries are carried over, rewritten as ours: whatever
            # else a hand-edited file held (other fields, huge keys) is dropped.
            fresh: dict[str, dict[str, Any]] = {}
            for k, e in _entries(path, fresh=True).items():
                got = _fresh(e, now)
                if got is not None and len(k) <= _MAX_KEY_CHARS:
                    fresh[k] = {"value": got[0], "at": got[1]}
            fresh[entry_key(kind, key)] = {"value": value, "at": now}
            if len(fresh) > MAX_ENTRIES:
                newest = sorted(fresh, key=lambda k: fresh[k]["at"])[-MAX_ENTRIES:]
                fresh = {k: fresh[k] for k in newest}
            _remove_leftovers(path)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps({"entries": fresh}, indent=0), encoding="utf-8")
    except (OSError, Timeout) as exc:
        _warn_once(str(path.parent), f"measured choices are not kept in {path}: {exc}")
        return False
    with _lock:
        _loaded.pop(path, None)
    return True


def _remove_leftovers(path: Path) -> None:
    """Remove the temporary files of writers of ``path`` killed mid-write
    (:func:`~inquire._io.atomic_path`'s ``.<name>.<random>.tmp``). Called under the lock:
    writers write only while holding it, so no other writer's file is there."""
    try:
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
    except OSError:
        pass


def _fresh(entry: Any, now: float) -> tuple[str, float] | None:
    """``entry``'s value and time where it is one of ours (a short string, a finite time: not
    a bool, nor an integer too large for a float) written in the last :data:`MAX_AGE_S`, else
    None (also for a time in the future: the clock was set back)."""
    if not isinstance(entry, dict):
        return None
    value, at = entry.get("value"), entry.get("at")
    if not isinstance(value, str) or len(value) > _MAX_VALUE_CHARS:
        return None
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        return None
    try:
        at = float(at)  # an integer of 400 digits is valid JSON
    except OverflowError:
        return None
    if not 0 <= now - at <= MAX_AGE_S:  # NaN is neither
        return None
    return value, at


def _entries(path: Path, fresh: bool = False) -> dict[str, Any]:
    """The file's entries (empty where it is missing or not ours); re-read only when its
    size, time or inode changed, or ``fresh``."""
    try:
        st = path.stat()
    except OSError:
        return {}
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open, a device never end
        return {}
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    if not fresh:
        with _lock:
            got = _loaded.get(path)
        if got is not None and got[0] == stamp:
            return got[1]
    entries: dict[str, Any] = {}
    if st.st_size <= MAX_FILE_BYTES:
        try:
            # Without waiting where a FIFO took the file's place since the stat.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    raise OSError(f"{path} is not a file")
                raw = fh.read(MAX_FILE_BYTES + 1)  # it may have grown since the stat
            data = json.loads(raw) if len(raw) <= MAX_FILE_BYTES else None
        except (OSError, ValueError, RecursionError):  # RecursionError: nested too deep
            data = None
        if isinstance(data, dict) and isinstance(data.get("entries"), dict):
            entries = data["entries"]
    with _lock:
        if len(_loaded) >= 64:  # one file per INQUIRE_HOME seen by this process
            _loaded.clear()
        _loaded[path] = (stamp, entries)
    return entries


def _warn_once(where: str, message: str) -> None:
    with _lock:
        if where in _warned:
            return
        _warned.add(where)
    log.info(message)
