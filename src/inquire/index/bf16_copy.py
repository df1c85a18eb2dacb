"""A derived bfloat16 copy of an embedding store, built once beside it like a cache.

bfloat16 screening (:mod:`inquire.index.screen`) multiplies bfloat16 rows; without a copy
every screened search converts every float16 row to bfloat16 and computes every chunk's
largest row norm again. The copy holds, per shard, the rows already rounded to bfloat16
(round to nearest even, exactly what the per-chunk conversion gives), each row's L2 norm
(computed in float32 from the stored row, as the search computes it) and the L2 norm of its
bfloat16 rounding error (the differences ``x - bf16(x)`` are exact in float32), so the
screened path reads bfloat16 blocks straight from disk and can use the narrower bound of
:func:`inquire.index.screen.split_terms`.

Layout, beside the shards::

    DIR/img_emb_bf16/img_emb_{i}.{key}.bf16.npy    (n_i, d) uint16: bfloat16 bits of each row
    DIR/img_emb_bf16/img_emb_{i}.{key}.norms.npy   (n_i, 2) float32: per row ||x||, ||x - bf16(x)||
    DIR/img_emb_bf16/img_emb_{i}.{key}.sha256      SHA-256 of the two files above, in that order

``key`` is a digest of the source shard's identity: its file name, size, modification and
change times (``st_ctime`` cannot be set back by a program), inode, dtype and shape, and its
first and last 4 KiB. A shard that is replaced, rewritten or added gets another key, so a
stale copy is never read: it is ignored and, when the copy is built again, replaced. Each
shard's three files are written to temporary files and renamed into place (digest, norms,
then rows; a copy counts only when all three exist under the current key), under a
per-shard file lock (``filelock``), so two processes building at once do not both do the work
and a reader never sees half a file; an interrupted build resumes with the shards still missing.

The screening bound trusts the copy (a flipped bit in a bfloat16 row or a smaller stored
error norm could screen out a true top-k row), so a copy is used only after its files hash to
the stored SHA-256: once per file version (size, modification and change times, inode,
device), a full read of the copy. A check that passed is recorded beside the digest
(``.img_emb_{i}.{key}.sha256.verified``: the three files' versions), so later processes
skip the read (~0.5 s per GiB) while the files are those versions; any write to a file
changes its change time, and a marker that does not match, or is not a plain file, is
ignored. The folder and every file in it must be what they seem:
where ``img_emb_bf16`` or a copy file is a symbolic link or not a plain folder/file, the copy
is not read and nothing is written (files are created with ``O_EXCL | O_NOFOLLOW``), so files
planted there cannot make a build write outside the folder.

Nothing here is needed for a correct search: where the copy is missing, stale or cannot be
written (read-only folder, full disk), the search converts each chunk as before and says so
once per folder in the log.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import shutil
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError
from inquire.index.rescore import shard_mapping

log = logging.getLogger(__name__)

#: Sub-folder of the embedding folder that holds the copy.
FOLDER = "img_emb_bf16"
#: Bumped when the file format or the rounding changes (old copies are then ignored).
FORMAT_VERSION = 3
_ROWS_PER_WRITE = 16384

_warned: set[str] = set()
_warned_lock = threading.Lock()
#: Copy files whose content was checked against their digest, by file identity.
_verified: set[tuple[str, tuple[int, ...]]] = set()
_HASH_BYTES = 1 << 22


def copy_dir(store_root: str | os.PathLike[str]) -> Path:
    """Where the bfloat16 copy of the embedding folder ``store_root`` lives."""
    return Path(store_root) / FOLDER


class ShardReplaced(OSError):
    """The file at a shard's path is not the one the store mapped (:func:`shard_key`)."""


def shard_key(path: Path, shard: np.ndarray, expect: tuple[int, int] | None = None) -> str:
    """A digest of the shard file's identity (see the module doc); 16 hex digits.

    ``expect``: the ``(device, inode)`` of the file the store mapped
    (``EmbeddingStore.shard_files``); another file at ``path`` (renamed over it since) is
    :class:`ShardReplaced`: its key names that file's copy, not the mapped rows'."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if expect is not None and (st.st_dev, st.st_ino) != tuple(expect):
            raise ShardReplaced(f"{path} is not the file the store mapped")
        h = hashlib.sha256()
        h.update(
            f"v{FORMAT_VERSION}|{path.name}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|"
            f"{st.st_ino}|{shard.dtype.str}|{shard.shape}".encode()
        )
        h.update(fh.read(4096))
        fh.seek(max(0, st.st_size - 4096))
        h.update(fh.read(4096))
    return h.hexdigest()[:16]


def _names(path: Path, key: str) -> tuple[str, str]:
    return f"{path.stem}.{key}.bf16.npy", f"{path.stem}.{key}.norms.npy"


def _sum_name(path: Path, key: str) -> str:
    return f"{path.stem}.{key}.sha256"


def _real_folder(folder: Path) -> bool:
    """True where ``folder`` is a folder itself, not a symbolic link or anything else."""
    try:
        return stat.S_ISDIR(os.lstat(folder).st_mode)
    except OSError:
        return False


def _identity(path: Path) -> tuple[int, ...] | None:
    """``path``'s identity when it is a plain file (not a link), else None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            while block := fh.read(_HASH_BYTES):
                h.update(block)
    return h.hexdigest()


def _verified_files(data: Path, norms: Path, sums: Path) -> bool:
    """True where the three copy files are plain files and the first two hash to the digest
    stored in the third (checked once per process and file version)."""
    ids = [_identity(p) for p in (data, norms, sums)]
    if any(i is None for i in ids):
        return False
    versions = tuple(v for i in ids for v in (i or ()))
    key = (str(data), versions)
    if key in _verified:
        return True
    if _read_marker(sums) == versions:  # checked by an earlier process
        _verified.add(key)
        return True
    try:
        want = sums.read_text(encoding="ascii").strip()
        ok = _digest([data, norms]) == want
    except (OSError, ValueError):
        return False
    if not ok:
        log.warning("the bfloat16 copy %s does not match its digest; not used", data.name)
        return False
    _verified.add(key)
    _write_marker(sums, versions)
    return True


def _marker(sums: Path) -> Path:
    """The file recording the versions at which a shard's copy matched its digest."""
    return sums.with_name(f".{sums.name}.verified")


def _read_marker(sums: Path) -> tuple[int, ...] | None:
    """The file versions recorded by :func:`_write_marker`, or None (missing, not a plain
    file, unreadable, malformed)."""
    path = _marker(sums)
    # Non-blocking: a FIFO planted in the marker's place opens at once (and is then refused
    # as not a plain file) rather than waiting forever for a writer.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None
            text = fh.read(4096).decode("ascii")
        return tuple(int(v) for v in text.split())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _write_marker(sums: Path, versions: tuple[int, ...]) -> None:
    """Record that the copy files matched their digest at ``versions`` (best effort: a
    read-only folder only means the next process checks again)."""
    path = _marker(sums)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with _create(tmp) as fh:
            fh.write(" ".join(map(str, versions)).encode("ascii"))
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("could not record the check of %s: %s", sums.name, exc)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _create(path: Path) -> Any:
    """A new file at ``path`` opened for writing; never follows or replaces what is there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o644), "wb")


@dataclass
class Bf16Copy:
    """An opened, current bfloat16 copy of a store: ``shards[i]`` ``(n_i, d) uint16``
    memory-mapped (bfloat16 bits of shard ``i``'s rows) and ``norms`` ``(N, 2) float32``
    (per row, global row order, the float32-computed ``||x||`` and ``||x - bf16(x)||``)."""

    root: Path
    shards: list[np.ndarray]
    norms: np.ndarray

    def max_norms(self, first: int, rows: int) -> tuple[float, float]:
        """The largest float32-computed ``||x||`` and ``||x - bf16(x)||`` of global rows
        ``first .. first + rows`` (NaN or inf where a row holds NaN or inf)."""
        part = self.norms[first : first + rows]
        if np.isnan(part).any():
            return float("nan"), float("nan")
        top = part.max(axis=0, initial=0.0)
        return float(top[0]), float(top[1])


def open_copy(store: EmbeddingStore) -> Bf16Copy | None:
    """The store's bfloat16 copy when one exists for every shard as the shards are now,
    else None (missing, stale or unreadable: never an error). Also None where a shard file
    was replaced since the store mapped it: the copy keyed by the file now at its path holds
    that file's rows, and screening the mapped rows with them could drop true top rows."""
    folder = copy_dir(store.root)
    if not _real_folder(folder):
        return None
    files = getattr(store, "shard_files", None)
    shards, norms = [], []
    try:
        for s, (path, shard) in enumerate(zip(store.shard_paths, store.shards, strict=True)):
            if len(shard) == 0:  # nothing to read: no files
                shards.append(np.zeros(shard.shape, np.uint16))
                norms.append(np.zeros((0, 2), np.float32))
                continue
            key = shard_key(path, shard, None if files is None else files[s])
            found = _open_shard(folder, path, shard, key)
            if found is None:
                return None
            shards.append(found[0])
            norms.append(found[1])
    except OSError:  # a shard file vanished or was replaced (ShardReplaced)
        return None
    return Bf16Copy(folder, shards, np.concatenate(norms))


def _open_shard(
    folder: Path, path: Path, shard: np.ndarray, key: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """Shard ``path``'s copy under ``key``, memory-mapped, or None (missing, truncated, of
    another shape or dtype)."""
    data_name, norms_name = _names(path, key)
    if not _verified_files(folder / data_name, folder / norms_name, folder / _sum_name(path, key)):
        return None
    try:
        data = np.load(folder / data_name, mmap_mode="r", allow_pickle=False)
        nrm = np.load(folder / norms_name, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if (
        data.dtype != np.uint16
        or data.shape != shard.shape
        or nrm.dtype != np.float32
        or nrm.shape != (len(shard), 2)
    ):
        return None
    return data, nrm


def _to_bf16_bits(x: np.ndarray, torch: object) -> tuple[np.ndarray, np.ndarray]:
    """``(bfloat16 bits (b, d) uint16, norms (b, 2) float32)`` of ``x`` (float16/float32
    rows), rounded the way the search's conversion rounds (torch: to nearest, ties to even);
    ``norms[:, 0] = ||x||``, ``norms[:, 1] = ||x - bf16(x)||`` (differences exact in float32),
    both summed in float32 (the search inflates them to upper bounds)."""
    t: Any = torch
    x32 = t.from_numpy(np.array(x, np.float32))  # a writable float32 copy
    xb = x32.to(t.bfloat16)
    norms = t.stack(
        [t.linalg.vector_norm(x32, dim=1), t.linalg.vector_norm(x32 - xb.float(), dim=1)], dim=1
    ).numpy()
    bits = xb.view(t.int16).numpy().view(np.uint16)
    return bits, norms.astype(np.float32, copy=False)


def _write_shard(folder: Path, path: Path, shard: np.ndarray, key: str, torch: object) -> None:
    """Write shard ``path``'s copy under ``key`` (temporary files, renamed into place)."""
    data_name, norms_name = _names(path, key)
    n, d = shard.shape
    tmp_data = folder / f".{data_name}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp_norms = folder / f".{norms_name}.{os.getpid()}.{threading.get_ident()}.tmp"
    sum_name = _sum_name(path, key)
    tmp_sum = folder / f".{sum_name}.{os.getpid()}.{threading.get_ident()}.tmp"
    norms = np.empty((n, 2), np.float32)
    try:
        # Plain writes, not a writable memory map: a full disk is then an OSError here, not
        # a SIGBUS later.
        with _create(tmp_data) as fh:
            header = {"descr": np.dtype(np.uint16).str, "fortran_order": False, "shape": (n, d)}
            np.lib.format.write_array_header_1_0(fh, header)  # type: ignore[no-untyped-call]
            mapping = shard_mapping(shard)
            for lo in range(0, n, _ROWS_PER_WRITE):
                bits, nrm = _to_bf16_bits(shard[lo : lo + _ROWS_PER_WRITE], torch)
                fh.write(bits.tobytes())
                norms[lo : lo + len(nrm)] = nrm
                if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
                    # The rows read stay in the OS cache, not in this process's memory.
                    with contextlib.suppress(OSError, ValueError):
                        mapping.madvise(mmap.MADV_DONTNEED)
            fh.flush()
            os.fsync(fh.fileno())
        with _create(tmp_norms) as fh:
            np.save(fh, norms)
            fh.flush()
            os.fsync(fh.fileno())
        with _create(tmp_sum) as fh:
            fh.write(_digest([tmp_data, tmp_norms]).encode("ascii"))
            fh.flush()
            os.fsync(fh.fileno())
        if shard_key(path, shard) != key:  # the shard changed while it was read
            raise OSError(f"{path} changed while its bfloat16 copy was built")
        os.replace(tmp_sum, folder / sum_name)
        os.replace(tmp_norms, folder / norms_name)
        os.replace(tmp_data, folder / data_name)
    finally:
        for tmp in (tmp_data, tmp_norms, tmp_sum):
            with contextlib.suppress(OSError):
                tmp.unlink()
    # Copies of earlier versions of this shard are stale for good.
    for old in [*folder.glob(f"{path.stem}.*"), *folder.glob(f".{path.stem}.*.verified")]:
        if old.name not in (data_name, norms_name, sum_name, _marker(folder / sum_name).name):
            with contextlib.suppress(OSError):
                old.unlink()


def build_copy(
    store: EmbeddingStore,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Build (or complete) the bfloat16 copy of ``store`` in ``DIR/img_emb_bf16/`` and return
    that folder. Shards whose copy is current are skipped, so this is cheap to call again and
    resumes an interrupted build. ``progress(rows_done, rows_total)`` is called per shard.

    Raises :class:`~inquire.errors.InputError` without torch, for a store that is not
    float16/float32 or a shard file shorter than its header says, and ``OSError`` where the
    folder cannot be written (read-only, full)."""
    try:
        import torch
    except ImportError:
        raise InputError(
            "building a bfloat16 copy needs torch; install it (pip install torch)"
        ) from None
    if store.dtype not in (np.float16, np.float32):
        raise InputError(f"a bfloat16 copy needs a float16/float32 store, not {store.dtype}")
    from filelock import FileLock

    folder = copy_dir(store.root)
    with contextlib.suppress(FileExistsError):
        folder.mkdir()
    if not _real_folder(folder):
        raise OSError(f"{folder} is not a folder of its own (a link or a file); not written")
    done = 0
    for s, (path, shard) in enumerate(zip(store.shard_paths, store.shards, strict=True)):
        if len(shard) == 0:
            continue
        key = shard_key(path, shard)
        lock = folder / f".{path.stem}.lock"
        if lock.is_symlink():  # planted: locking would open (and truncate) its target
            lock.unlink()
        with FileLock(str(lock)):
            # Under the lock no one else writes this shard: temporary files are left over
            # from a build that was killed.
            for tmp in folder.glob(f".{path.stem}.*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()
            if _open_shard(folder, path, shard, key) is None:
                _check_length(path, shard)
                _check_mapped(store, s, path)
                log.info("writing the bfloat16 copy of %s (%d rows)", path.name, len(shard))
                _write_shard(folder, path, shard, key, torch)
        done += len(shard)
        if progress is not None:
            progress(done, len(store))
    return folder


def _check_mapped(store: EmbeddingStore, s: int, path: Path) -> None:
    """Raise :class:`~inquire.errors.InputError` where shard ``s``'s file was replaced since
    ``store`` mapped it: a copy of the mapped rows, keyed by the file now at ``path``, would
    be read as that file's copy by every later search."""
    replaced = getattr(store, "replaced", None)
    if replaced is not None and replaced(s):
        raise InputError(
            f"embedding shard {str(path)!r} was replaced since the store was opened (the "
            f"store still reads the earlier file); open the store again"
        )


def _check_length(path: Path, shard: np.ndarray) -> None:
    """Raise :class:`~inquire.errors.InputError` where the shard file is shorter than its
    header says (cut after the store mapped it): reading its memory map past the end would
    kill the process (SIGBUS) or, within the last page, read zeros."""
    offset = getattr(shard, "offset", None)
    if not isinstance(shard, np.memmap) or offset is None:
        return
    size = path.stat().st_size
    if size < int(offset) + shard.nbytes:
        raise InputError(
            f"embedding shard {str(path)!r} is shorter than its header says ({size} of "
            f"{int(offset) + shard.nbytes} bytes); the file is truncated"
        )


def ensure_copy(store: EmbeddingStore, build: bool) -> Bf16Copy | None:
    """The current bfloat16 copy of ``store``; built first where missing or stale when
    ``build``. None where there is none and it cannot be built: the reason is logged once
    per folder, and the search converts each chunk instead. A folder where building failed
    is not tried again by this process (a full disk would fail again after writing)."""
    found = open_copy(store)
    key = str(store.root)
    with _warned_lock:
        failed_before = key in _warned
    if found is not None or not build or failed_before:
        return found
    try:
        build_copy(store)
    except (OSError, InputError) as exc:
        with _warned_lock:
            first = key not in _warned
            _warned.add(key)
        if first:
            log.warning(
                "no bfloat16 copy of %s (%s); screening converts each chunk instead",
                store.root,
                exc,
            )
        return None
    return open_copy(store)


def copy_expected(store: EmbeddingStore, build: bool) -> bool:
    """Whether screening ``store`` would read its bfloat16 copy: it exists and is current,
    or ``build``, building it has not failed in this process and the folder it goes into
    looks writable (a read-only store folder: the build would fail)."""
    if build:
        with _warned_lock:
            failed = str(store.root) in _warned
        if not failed and _looks_writable(store.root):
            return True
    return open_copy(store) is not None


def _looks_writable(store_root: Path) -> bool:
    """Whether this process may write the copy folder (or create it in ``store_root``)."""
    folder = copy_dir(store_root)
    target = folder if _real_folder(folder) else Path(store_root)
    return os.access(target, os.W_OK | os.X_OK)


def remove_copy(store_root: str | os.PathLike[str]) -> bool:
    """Delete the bfloat16 copy of the embedding folder ``store_root``; False if none."""
    folder = copy_dir(store_root)
    if not _real_folder(folder):
        return False
    shutil.rmtree(folder)
    return True
