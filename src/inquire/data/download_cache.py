"""inquire's download cache: where downloaded files live, the manifest of what verified, and
the check of a cached copy.

Files live under ``config.cache_dir("downloads")`` at their ``mirror_path``
(``host/path...``), so the cache folder is itself a valid mirror for ``INQUIRE_BASE_URL``.
A cached file verifies when its size matches the registry (or the manifest record) and its
sha256 does; the sha256 is recomputed unless the file's size and modification time still
equal those recorded when it was last verified (a file changed since then is always
re-hashed). Checking a cached copy never touches the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inquire import config
from inquire._io import file_sha256, write_json
from inquire.data.registry import Artifact

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CHUNK = 1 << 20  # bytes per read while hashing or extracting


def download_dir() -> Path:
    """The folder downloads are kept in: ``config.cache_dir("downloads")``."""
    return config.cache_dir("downloads")


def mismatch(
    art: Artifact, size: int, digest: str | None, record: dict[str, Any] | None = None
) -> str | None:
    """Why (size, digest) does not match the registry (then the manifest record), or None."""
    want_size = art.size if art.size is not None else (record or {}).get("size")
    want_sha = art.sha256 if art.sha256 is not None else (record or {}).get("sha256")
    if want_size is not None and size != want_size:
        return f"size {size} bytes, expected {want_size}"
    if digest is not None and want_sha is not None and digest != want_sha.lower():
        return f"sha256 {digest}, expected {want_sha}"
    return None


def read_manifest() -> dict[str, Any]:
    """The manifest: entry (mirror path, or hub key) -> what last verified; ``{}`` if none."""
    path = download_dir() / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("download manifest %s is unreadable; starting a new one", path)
        return {}
    return data if isinstance(data, dict) else {}


def record_verified(key: str, art: Artifact, dest: Path, size: int, digest: str, url: str) -> None:
    """Remember that ``dest`` (manifest entry ``key``) verified with this size and sha256."""
    stat = dest.stat()
    with download_lock("manifest"):  # read-modify-write: concurrent fetches must not drop entries
        manifest = read_manifest()
        manifest[key] = {
            "name": art.name,
            "url": url,
            "size": size,
            "sha256": digest,
            "mtime_ns": stat.st_mtime_ns,
            "verified_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(download_dir() / MANIFEST, manifest)


@contextmanager
def download_lock(key: str) -> Iterator[None]:
    """An exclusive inter-process lock (``filelock``) named by ``key``.

    Lock files live in ``cache_dir("locks")``, away from the downloads.
    """
    from filelock import FileLock

    digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:16]
    with FileLock(config.cache_dir("locks") / f"{digest}.lock"):
        yield


def verify_cached(
    art: Artifact, dest: Path, rehash: bool, key: str | None = None, etag: str | None = None
) -> str | None:
    """None if the cached ``dest`` is good, else why not. Never touches the network.

    ``key`` is its manifest entry (default: the artifact's mirror path); ``etag`` a sha256
    to expect when neither the registry nor the manifest has one (the hub's, for LFS files).
    """
    key = key or art.mirror_path
    record = read_manifest().get(key) or ({"sha256": etag} if etag else None)
    stat = dest.stat()
    problem = mismatch(art, stat.st_size, None, record)
    if problem is not None:
        return problem
    unchanged = (
        record is not None
        and record.get("size") == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
        and (art.sha256 is None or record.get("sha256") == art.sha256)
    )
    if unchanged and not rehash:
        return None
    digest = file_sha256(dest, CHUNK)
    problem = mismatch(art, stat.st_size, digest, record)
    if problem is None:
        # A file placed by hand (or changed on disk but still correct): trust and record it.
        record_verified(
            key, art, dest, stat.st_size, digest, (record or {}).get("url", "local file")
        )
    return problem
