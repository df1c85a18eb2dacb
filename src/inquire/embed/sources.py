"""Where the pipeline's images come from: a folder tree, a tar archive, or an iNat-style tree.

Every source is a fixed, ordered list of items (a relative ``image_path`` each, and an
``image_id`` where the source knows one) plus ``read(i) -> bytes``. The order is
deterministic, so shard ``k`` of a run always covers the same items and a resumed run can
skip whole shards. Sources are picklable and open their files lazily in each worker.

Kinds (rows of ``SOURCE_KINDS``, tried in order):

- ``inat``: a COCO-style JSON (``images: [{id, file_name}, ...]``), e.g. iNat24's
  ``train.json``. PATH is the JSON file, a ``train/`` folder with ``train.json`` beside it,
  or a folder holding ``train.json``/``val.json``. ``file_name`` is relative to the JSON's
  folder; ids come from the JSON.
- ``tar``: an uncompressed ``.tar`` archive; members with an image extension, archive order.
- ``folder``: every image file under PATH by the rule of :func:`scan_image_files` (the one a
  collection uses: hidden files and symlinked folders skipped, no link out of the folder),
  sorted by relative path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inquire.embed.images import IMAGE_SUFFIXES, is_image_name
from inquire.errors import InputError

log = logging.getLogger(__name__)

_COCO_NAMES = ("train.json", "val.json")
# Serialises the lazy opening of an archive's descriptor, so two threads reading the same
# source at once cannot both open it (and leak one descriptor).
_OPEN_LOCK = threading.Lock()


@dataclass
class ImageSource:
    """An ordered list of images and how to read their bytes.

    ``paths``: relative image paths (what the metadata's ``image_path`` records);
    ``image_ids``: ``(n,) int64`` or None when the source has no ids;
    ``spans``: ``(n, 2) int64`` byte offset and size of each member (tar sources only).

    A tar source keeps one read-only descriptor per process and reads members with
    ``os.pread`` (no shared file position), so threads may call :meth:`read` concurrently.
    :meth:`close` (or ``with source:``) releases the descriptor; a later read reopens it.
    """

    kind: str
    root: Path
    paths: list[str]
    image_ids: np.ndarray | None = None
    spans: np.ndarray | None = None
    _fd: int | None = field(default=None, repr=False, compare=False)
    _pid: int = field(default=-1, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fd"], state["_pid"] = None, -1  # descriptors do not cross processes
        return state

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.close()

    def close(self) -> None:
        """Close the archive descriptor this process opened (a no-op for other kinds)."""
        with _OPEN_LOCK:
            fd, self._fd = self._fd, None
            if fd is not None and self._pid == os.getpid():
                os.close(fd)
            self._pid = -1

    def _descriptor(self) -> int:
        with _OPEN_LOCK:
            if self._fd is None or self._pid != os.getpid():
                # A descriptor inherited through fork belongs to the parent: open our own.
                self._fd, self._pid = os.open(self.root, os.O_RDONLY), os.getpid()
            return self._fd

    def read(self, i: int) -> bytes:
        """The bytes of item ``i`` (raises ``OSError`` when it cannot be read)."""
        if self.spans is None:
            return (self.root / self.paths[i]).read_bytes()
        offset, size = (int(v) for v in self.spans[i])
        data = _pread_all(self._descriptor(), size, offset)
        if len(data) != size:
            raise OSError(f"archive ended after {len(data)} of {size} bytes")
        return data

    def fingerprint(self) -> str:
        """SHA-256 over the item list (paths and ids): a resumed run must see the same list."""
        h = hashlib.sha256()
        h.update(self.kind.encode())
        for p in self.paths:
            h.update(p.encode("utf-8", "surrogateescape") + b"\0")
        if self.image_ids is not None:
            h.update(np.ascontiguousarray(self.image_ids, dtype=np.int64).tobytes())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for the manifest."""
        return {
            "kind": self.kind,
            "path": str(self.root),
            "n_items": len(self),
            "fingerprint": self.fingerprint(),
        }


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset`` (fewer only at end of file); the file position is untouched."""
    parts: list[bytes] = []
    got = 0
    while got < size:
        chunk = os.pread(fd, size - got, offset + got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _coco_json(path: Path) -> Path | None:
    if path.is_file() and path.suffix.lower() == ".json":
        return path
    if path.is_dir():
        beside = path.with_name(path.name + ".json")
        if beside.is_file():
            return beside
        inside = [path / n for n in _COCO_NAMES if (path / n).is_file()]
        if len(inside) > 1:
            raise InputError(
                f"{str(path)!r} holds both {' and '.join(p.name for p in inside)}; pass the JSON "
                f"file of the split to embed"
            )
        return inside[0] if inside else None
    return None


def _open_inat(path: Path) -> ImageSource:
    js = _coco_json(path)
    if js is None:
        raise InputError(f"no COCO-style JSON for {str(path)!r}")
    try:
        doc = json.loads(js.read_text(encoding="utf-8"))
        images = doc["images"]
        ids = np.array([int(im["id"]) for im in images], dtype=np.int64)
        paths = [str(im["file_name"]) for im in images]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{str(js)!r} is not a COCO-style image list: expected "
            f'{{"images": [{{"id": int, "file_name": str}}, ...]}} ({exc!r})'
        ) from exc
    if len(np.unique(ids)) != len(ids):
        raise InputError(f"{str(js)!r} lists some image ids more than once")
    return ImageSource("inat", js.parent, paths, ids)


def _open_tar(path: Path) -> ImageSource:
    try:
        with tarfile.open(path, "r:") as tf:
            members = [m for m in tf.getmembers() if m.isfile() and is_image_name(m.name)]
    except tarfile.ReadError as exc:
        raise InputError(
            f"{str(path)!r} is not an uncompressed tar archive ({exc}); images are read by "
            f"byte offset, so decompress it first (e.g. gunzip)"
        ) from exc
    spans = np.array([(m.offset_data, m.size) for m in members], dtype=np.int64).reshape(-1, 2)
    return ImageSource("tar", path, [m.name for m in members], None, spans)


def _utf8_name(path: Path) -> bool:
    """Whether ``path``'s name is valid UTF-8 (a name from another system's encoding holds
    bytes that no metadata file or database can store as text); warns and says how to fix."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        log.warning(
            "skipped %s: its name is not valid UTF-8; rename it (e.g. `convmv -f latin1 -t utf8`)",
            ascii(str(path)),
        )
        return False
    return True


def scan_image_files(root: str | os.PathLike[str]) -> dict[str, tuple[int, int]]:
    """The image files of a folder tree: THE scanning rule of ``inquire embed`` and of a
    collection (:func:`inquire.collection.store.scan_images`).

    Returns ``{relative POSIX path: (size bytes, mtime ns)}`` in sorted path order. Files
    with an image extension (:data:`IMAGE_SUFFIXES`, any case) count; hidden files and
    folders (names starting with ``.``) are skipped; only regular files count (a pipe or
    device would block or never end); a symlinked file counts only if its target lies inside
    the folder too, and symlinked folders are not entered, so nothing outside the folder is
    ever read and no file is listed twice. A file or folder whose name is not valid UTF-8 is
    skipped with a warning that names it (it could not be stored as text).
    """
    base = Path(root)
    found: dict[str, tuple[int, int]] = {}
    root_real = Path(os.path.realpath(base))
    for dirpath, dirnames, filenames in os.walk(base):  # does not follow links
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and _utf8_name(Path(dirpath) / d)
        )
        for fname in sorted(filenames):
            if fname.startswith(".") or not is_image_name(fname):
                continue
            if not _utf8_name(Path(dirpath) / fname):
                continue
            full = Path(dirpath) / fname
            if full.is_symlink() and not Path(os.path.realpath(full)).is_relative_to(root_real):
                log.warning("skipped %s: it links to a file outside the images folder", full)
                continue
            try:
                st = full.stat()
            except OSError:  # vanished or a broken link
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            found[full.relative_to(base).as_posix()] = (st.st_size, st.st_mtime_ns)
    return dict(sorted(found.items()))


def _open_folder(path: Path) -> ImageSource:
    return ImageSource("folder", path, list(scan_image_files(path)))


# (kind, detect(path), open(path)); the first kind whose detector accepts PATH is used.
SOURCE_KINDS: list[tuple[str, Callable[[Path], bool], Callable[[Path], ImageSource]]] = [
    ("inat", lambda p: _coco_json(p) is not None, _open_inat),
    ("tar", lambda p: p.is_file() and tarfile.is_tarfile(p), _open_tar),
    ("folder", lambda p: p.is_dir(), _open_folder),
]


def open_source(path: str | os.PathLike[str]) -> ImageSource:
    """The :class:`ImageSource` for ``path`` (see the module docs for the kinds)."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise InputError(f"image source {str(p)!r} does not exist")
    for _, detect, opener in SOURCE_KINDS:
        if detect(p):
            source = opener(p)
            if not len(source):
                raise InputError(
                    f"{str(p)!r} ({source.kind}) holds no images with extensions "
                    f"{sorted(IMAGE_SUFFIXES)}"
                )
            return source
    raise InputError(
        f"{str(p)!r} is not an image source: expected a folder of images, an uncompressed .tar "
        f"archive, or a COCO-style JSON such as iNat24's train.json"
    )
