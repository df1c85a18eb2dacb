"""Serving images safely: resolve ids and relative paths under the configured roots only,
and cache thumbnails on disk.

Every file the web app sends goes through :meth:`ImageRoots.resolve`, which

1. rejects a relative path that is absolute, has a ``..``, ``.`` or empty component, a
   backslash, a NUL byte or a drive letter (:class:`BadImagePath`, HTTP 400);
2. resolves symlinks and rejects a real path outside the root's real path
   (:class:`OutsideRoot`, HTTP 403) -- a symlink inside the root may point elsewhere inside it;
3. accepts only regular files with an image suffix whose header Pillow recognises as an image
   format (:class:`NotAnImage`, HTTP 415); a missing file is :class:`ImageNotFound` (404).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from inquire._io import atomic_path
from inquire.embed.folder import image_path_candidates
from inquire.embed.images import IMAGE_SUFFIXES, SNIFF_BYTES, UnknownImageFormat, sniff_mime
from inquire.embed.images import open_image as _open_image
from inquire.errors import InputError
from inquire.web.config import (
    DEFAULT_THUMB_CACHE_BYTES,
    MAX_THUMB_SIZE,
    MIN_THUMB_SIZE,
    THUMB_SIZES,
)

log = logging.getLogger(__name__)

# Bump when the thumbnail recipe changes so old cache entries are not reused. 2: decoded by
# inquire.embed.images.open_image, as the models see images (alpha over white, 16-bit scaled).
THUMB_VERSION = "2"
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


class ImageError(InputError):
    """An image request that must be refused; ``status`` is the HTTP status to answer."""

    status = 400


class BadImagePath(ImageError):
    status = 400


class OutsideRoot(ImageError):
    status = 403


class ImageNotFound(ImageError):
    status = 404


class NotAnImage(ImageError):
    status = 415


class BadThumbSize(ImageError):
    status = 422


def shown(text: str, limit: int = 100) -> str:
    """``repr(text)`` for a message, cut after ``limit`` characters: a request's path may be
    kilobytes long, and an error repeats only its start."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text):,} chars)"


def check_relative(rel: str, backslash: bool = False) -> tuple[str, ...]:
    """The components of ``rel`` if it is a plain relative path, else :class:`BadImagePath`.

    ``backslash``: allow ``\\`` as part of a file name (paths the server recorded itself,
    from a POSIX folder); a path from a request never has one."""
    bad_slash = "\\" in rel and not (backslash and os.sep == "/")
    if not rel or "\x00" in rel or bad_slash or rel.startswith("/") or _DRIVE_RE.match(rel):
        raise BadImagePath(
            f"image path {shown(rel)} is not a plain relative path; give a path relative to an "
            f"image root, with '/' separators and no '..'"
        )
    parts = tuple(rel.split("/"))
    if any(p in ("", ".", "..") for p in parts):
        raise BadImagePath(
            f"image path {shown(rel)} has an empty, '.' or '..' component; give a path relative to "
            f"an image root without them"
        )
    return parts


class ImageRoots:
    """The configured collection roots and the image-id -> relative-path table.

    ``paths``: image id -> path relative to a root, with or without an image suffix
    (INQUIRE's embedding metadata has none; ``.jpg`` is then tried).
    """

    def __init__(self, roots: Sequence[Path], paths: Mapping[int, str] | None = None) -> None:
        self.roots: list[Path] = []
        for r in roots:
            real = Path(os.path.realpath(Path(r).expanduser()))
            if not real.is_dir():
                raise InputError(
                    f"image root {str(r)!r} is not a folder; pass --images with the folder that "
                    f"holds the collection's images"
                )
            self.roots.append(real)
        self._ids = pd.Index(np.empty(0, np.int64))
        self._paths = np.empty(0, object)
        self._lock = threading.Lock()
        if paths:
            self.add_paths(paths.keys(), paths.values())

    def add_paths(self, image_ids: Iterable[int], rel_paths: Iterable[str]) -> None:
        """Add id -> relative path entries (later entries do not override earlier ones)."""
        if isinstance(image_ids, np.ndarray):  # millions of rows: skip the Python loop
            ids = image_ids.astype(np.int64, copy=False)
        else:
            ids = np.fromiter((int(i) for i in image_ids), np.int64)
        paths = np.asarray([str(p) for p in rel_paths], dtype=object)
        if len(ids) != len(paths):
            raise InputError(f"{len(ids)} image ids but {len(paths)} paths")
        with self._lock:
            all_ids = np.concatenate([self._ids.to_numpy(np.int64), ids])
            all_paths = np.concatenate([self._paths, paths])
            _, first = np.unique(all_ids, return_index=True)
            first.sort()
            self._ids = pd.Index(all_ids[first])
            self._paths = all_paths[first]

    def __len__(self) -> int:
        return len(self._ids)

    def path_of(self, image_id: int) -> str | None:
        """The relative path recorded for ``image_id``, or None."""
        pos = self._ids.get_indexer(pd.Index([int(image_id)]))[0]
        return None if pos < 0 else str(self._paths[pos])

    def resolve_id(self, image_id: int) -> Path:
        """The real path of image ``image_id`` under a root (see :meth:`resolve`)."""
        rel = self.path_of(image_id)
        if rel is None:
            raise ImageNotFound(
                f"image id {image_id} is unknown: it is in neither the embedding metadata nor the "
                f"annotations given to the server"
            )
        return self.resolve(rel)

    def resolve(self, rel: str, root_index: int | None = None, stored: bool = False) -> Path:
        """The real path of ``rel`` under the roots (or only root ``root_index``).

        A path without an image suffix is tried with ``.jpg`` appended as well. Raises an
        :class:`ImageError` subclass; never returns a path outside a root. ``stored``: ``rel``
        was recorded by the server (a collection's database), so a backslash in it is part of
        a file name, not a separator.
        """
        parts = check_relative(rel, backslash=stored)
        if not self.roots:
            raise ImageNotFound("no image roots are configured; start the server with --images")
        if root_index is None:
            roots = self.roots
        elif 0 <= root_index < len(self.roots):
            roots = [self.roots[root_index]]
        else:
            raise ImageNotFound(
                f"image root {root_index} does not exist; "
                f"roots are numbered 0..{len(self.roots) - 1}"
            )
        candidates = [(*parts[:-1], name) for name in image_path_candidates(parts[-1])]
        outside: Path | None = None
        for root in roots:
            for cand in candidates:
                joined = root.joinpath(*cand)
                if not os.path.lexists(joined):
                    continue
                real = Path(os.path.realpath(joined))
                if not real.is_relative_to(root):
                    outside = joined
                    continue
                if not real.is_file():
                    continue
                return self._check_image(real, rel)
        if outside is not None:
            log.warning("refused %s: it resolves outside its image root", outside)
            raise OutsideRoot(
                f"image path {shown(rel)} resolves outside the configured image roots"
            )
        raise ImageNotFound(f"image {shown(rel)} is not under any configured image root")

    @staticmethod
    def _check_image(real: Path, rel: str) -> Path:
        if real.suffix.lower() not in IMAGE_SUFFIXES:
            raise NotAnImage(
                f"{shown(rel)} is not an image file; allowed suffixes: {sorted(IMAGE_SUFFIXES)}"
            )
        return real


def image_format(source: Path | bytes, name: str | None = None) -> str:
    """The media type of an image file (``Path``) or encoded image bytes, or
    :class:`NotAnImage`: the type from the leading bytes (:func:`inquire.embed.images.sniff_mime`),
    and Pillow must recognise the header. ``name`` labels bytes in messages (a file is named by
    its file name, never its absolute path: Pillow's own message holds that, so it is not
    passed on)."""
    from PIL import Image, UnidentifiedImageError

    opened: Path | io.BytesIO
    if isinstance(source, bytes):
        label, opened, head = name or "image", io.BytesIO(source), source[:SNIFF_BYTES]
    else:
        label, opened = repr(source.name), source
        try:
            with open(source, "rb") as fh:
                head = fh.read(SNIFF_BYTES)
        except OSError as exc:
            raise NotAnImage(f"{label} is not a readable image ({type(exc).__name__})") from None
    try:
        mime = sniff_mime(head, label)
    except UnknownImageFormat:
        raise NotAnImage(
            f"{label} is not an image the page shows (JPEG, PNG, GIF, TIFF, BMP or WebP)"
        ) from None
    try:
        with Image.open(opened):
            pass
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        detail = "" if isinstance(source, bytes) else f" ({type(exc).__name__})"
        raise NotAnImage(f"{label} is not a readable image{detail}") from None
    return mime


def check_thumb_size(size: int) -> int:
    """``size`` if it is an allowed thumbnail edge length, else :class:`BadThumbSize`."""
    if not MIN_THUMB_SIZE <= size <= MAX_THUMB_SIZE:
        raise BadThumbSize(
            f"thumbnail size {size} is out of range; use {MIN_THUMB_SIZE}..{MAX_THUMB_SIZE} pixels"
        )
    return size


def snap_thumb_size(size: int) -> int:
    """The edge length a thumbnail of ``size`` px is made at: the smallest of
    :data:`~inquire.web.config.THUMB_SIZES` at least ``size`` (after :func:`check_thumb_size`)."""
    check_thumb_size(size)
    return next(s for s in THUMB_SIZES if s >= size)


READ_TRIES = 5  # makes of one thumbnail at most, when others keep deleting it


class ThumbnailCache:
    """JPEG thumbnails on disk, keyed by the image's real path, mtime, byte size and the edge
    length, so a changed image gets a new thumbnail.

    Sizes are snapped (:func:`snap_thumb_size`), so at most ``len(THUMB_SIZES)`` files exist
    per image, and the cache holds at most ``max_bytes``: after a write, the least recently
    used thumbnails (by access time, set on each use) are deleted until it
    fits again. Thumbnails of other processes sharing the folder are counted when this one
    starts (each process keeps its own bound, so ``n`` of them hold at most ``n`` times
    ``max_bytes``); use :meth:`read` / :meth:`read_bytes` to send one, since another process
    may delete the file to make room at any time.

    Layout: ``root/<key[:2]>/<key>.jpg``; each file is written atomically (temp + rename), so
    concurrent requests for one thumbnail at worst both render it.
    """

    def __init__(self, root: Path, max_bytes: int = DEFAULT_THUMB_CACHE_BYTES) -> None:
        if max_bytes < 1:
            raise InputError(f"thumbnail cache size must be positive, got {max_bytes} bytes")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._files: OrderedDict[Path, int] | None = None  # oldest use first
        self._total = 0

    def _index(self) -> OrderedDict[Path, int]:
        """The cache's files and sizes, least recently used first (read from disk once)."""
        if self._files is None:
            found = []
            for p in self.root.glob("*/*.jpg"):
                try:
                    st = p.stat()
                except OSError:
                    continue
                found.append((max(st.st_atime_ns, st.st_mtime_ns), p, st.st_size))
            found.sort()
            self._files = OrderedDict((p, n) for _, p, n in found)
            self._total = sum(n for _, _, n in found)
        return self._files

    def _used(self, target: Path) -> None:
        """Mark ``target`` as just used (it is then the last to go)."""
        with self._lock:
            files = self._index()
            if target in files:
                files.move_to_end(target)
            # the access time says when it was last used; its mtime stays as written
            with contextlib.suppress(OSError):
                os.utime(target, ns=(time.time_ns(), target.stat().st_mtime_ns))

    def _added(self, target: Path) -> None:
        """Count a new file and delete the least recently used ones beyond ``max_bytes``."""
        with self._lock:
            files = self._index()
            try:
                size = target.stat().st_size
            except OSError:
                return
            self._total += size - files.pop(target, 0)
            files[target] = size
            while self._total > self.max_bytes and len(files) > 1:
                old, n = files.popitem(last=False)
                self._total -= n
                try:
                    old.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning("could not delete an old thumbnail (%s)", type(exc).__name__)

    def total_bytes(self) -> int:
        """Bytes of thumbnails this cache counts now."""
        with self._lock:
            self._index()
            return self._total

    def key(self, path: Path, size: int) -> str:
        """The cache key of ``path`` at edge length ``size`` (hex sha256)."""
        st = path.stat()
        raw = f"{THUMB_VERSION}|{path}|{st.st_mtime_ns}|{st.st_size}|{size}"
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def get(self, path: Path, size: int) -> Path:
        """The cached thumbnail of ``path`` (longest side at most ``snap_thumb_size(size)``
        px), made if needed."""
        size = snap_thumb_size(size)
        key = self.key(path, size)
        target = self.root / key[:2] / f"{key}.jpg"
        if target.is_file():
            self._used(target)
            return target
        self._render(path, path.name, size, target)
        self._added(target)
        return target

    def read(self, path: Path, size: int) -> bytes:
        """The bytes of :meth:`get`'s thumbnail. Another thread, or another process sharing
        the folder, may delete the file between the two (it makes room for its own): then
        it is made again, a few times at most."""
        return self._read(lambda: self.get(path, size))

    def read_bytes(self, source_key: str, load: Callable[[], bytes], name: str, size: int) -> bytes:
        """The bytes of :meth:`get_bytes`'s thumbnail, made again if deleted meanwhile."""
        return self._read(lambda: self.get_bytes(source_key, load, name, size))

    def _read(self, get: Callable[[], Path]) -> bytes:
        for _ in range(READ_TRIES):
            target = get()
            try:
                return target.read_bytes()
            except FileNotFoundError:  # deleted to make room since get() saw or wrote it
                with self._lock:
                    # Forget it only while it is still gone: another thread of this cache may
                    # have made it again since (and counted it in _added); forgetting that
                    # file would leave it on disk counted by no cache, beyond max_bytes.
                    if not os.path.lexists(target):
                        self._total -= self._index().pop(target, 0)
        raise InputError(
            f"the thumbnail cache at {self.root.name!r} is too small: thumbnails were deleted "
            f"{READ_TRIES} times before they could be sent; give it more than "
            f"{self.max_bytes:,} bytes"
        )

    def get_bytes(self, source_key: str, load: Callable[[], bytes], name: str, size: int) -> Path:
        """The cached thumbnail of an encoded image that is not a file (e.g. a parquet cell).

        ``source_key`` names where the bytes come from and their version (for parquet: real
        path, mtime, byte size and row); ``load()`` returns the checked bytes and is called
        only on a cache miss; ``name`` is what error messages call the image.
        """
        size = snap_thumb_size(size)
        raw = f"{THUMB_VERSION}|{source_key}|{size}"
        key = hashlib.sha256(raw.encode("utf-8")).hexdigest()
        target = self.root / key[:2] / f"{key}.jpg"
        if target.is_file():
            self._used(target)
            return target
        self._render(io.BytesIO(load()), name, size, target)
        self._added(target)
        return target

    @staticmethod
    def _render(source: Path | io.BytesIO, name: str, size: int, target: Path) -> None:
        """Decode ``source`` as the models see it (:func:`inquire.embed.images.open_image`,
        JPEGs drafted at reduced scale), shrink to ``size`` and write a JPEG to ``target``."""
        from PIL import Image, UnidentifiedImageError

        path = Path(name)  # error messages name the image, never a server path
        try:
            img = _open_image(source, draft=size)
            img.thumbnail((size, size), Image.Resampling.LANCZOS)
            with atomic_path(target) as tmp:
                img.save(tmp, format="JPEG", quality=85)
        except Image.DecompressionBombError:
            raise NotAnImage(f"{path.name!r} has too many pixels to thumbnail safely") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise NotAnImage(
                f"{path.name!r} is not a readable image ({type(exc).__name__})"
            ) from None
