"""Download registered artifacts into the cache: resumable, verified, atomic, offline-first.

``fetch(name)`` returns the local path of an artifact from :mod:`inquire.data.registry`:

1. If the cached file exists and verifies, it is returned with **no network call at all**.
   Verification: the size must match the registry (or the manifest record); the sha256 is
   recomputed unless the file's size and modification time still equal those recorded when
   it was last verified (a file changed since then is always re-hashed).
2. Otherwise the file is downloaded to ``<file>.part`` beside its final place. An existing
   ``.part`` is resumed with an HTTP ``Range`` request; a server that ignores ``Range``
   (answers 200) makes the download restart from byte 0. Timeouts, connections broken
   mid-answer, cut-off bodies and 5xx answers are retried with exponential backoff, resuming
   each time. A host that cannot be reached at all (name not resolved, connection refused,
   no route) fails at once, without retries: waiting would not bring the network back.
3. The complete ``.part`` is checked against the registry's size/sha256 and only then renamed
   onto the final path; on a mismatch it is deleted and :class:`ChecksumError` is raised.
   Artifacts without a registered checksum record the first download's size and sha256 in
   ``downloads/manifest.json`` and are verified against that record from then on.

Files live under ``config.cache_dir("downloads")`` at their ``mirror_path``
(``host/path...``), so the cache folder is itself a valid mirror for ``INQUIRE_BASE_URL``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inquire import config
from inquire._io import atomic_path, write_json
from inquire.data.registry import Artifact, get_artifact, group_members
from inquire.errors import ChecksumError, DownloadError, InputError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CHUNK = 1 << 20  # bytes per read while hashing or extracting
NET_CHUNK = 1 << 16  # bytes per network read: what arrived before a cut-off is kept
RETRIES = 5  # extra attempts after the first, on transient failures (timeouts, 5xx, cut-offs)
BACKOFF_S = 1.0  # first wait; doubles each retry
TIMEOUT_S = (10.0, 60.0)  # (connect, read) seconds


def download_dir() -> Path:
    """The folder downloads are kept in: ``config.cache_dir("downloads")``."""
    return config.cache_dir("downloads")


def local_path(artifact: str | Artifact) -> Path:
    """Where ``artifact`` lives in the cache (whether or not it was fetched yet)."""
    art = _resolve(artifact)
    return download_dir() / art.mirror_path


def source_url(artifact: str | Artifact) -> str:
    """The URL ``artifact`` is fetched from: the mirror's when ``INQUIRE_BASE_URL`` is set.

    ``INQUIRE_BASE_URL`` may be an ``http(s)://`` URL, a ``file://`` URL or a plain local
    folder (for machines without network access that share a mirror on disk).
    """
    art = _resolve(artifact)
    base = config.base_url()
    if not base:
        return art.url
    if "://" not in base:
        base = Path(base).expanduser().resolve().as_uri()
    return f"{base}/{art.mirror_path}"


def fetch(
    name: str | Artifact,
    *,
    force: bool = False,
    progress: bool = True,
    rehash: bool = False,
    retries: int | None = None,
    backoff_s: float | None = None,
) -> Path:
    """Return the local path of artifact ``name``, downloading it only when needed.

    ``force`` downloads again even if a verified copy exists. ``rehash`` recomputes the
    sha256 of a cached file even when its size and mtime match the manifest. ``retries`` and
    ``backoff_s`` control retrying transient failures (timeouts, broken connections, 5xx;
    waits ``backoff_s * 2**i`` seconds; defaults: the module's ``RETRIES`` and ``BACKOFF_S``).
    An unreachable host (DNS failure, connection refused, no route) is not retried.
    Raises :class:`DownloadError` (unreachable, HTTP error) or :class:`ChecksumError`.
    """
    retries = RETRIES if retries is None else retries
    backoff_s = BACKOFF_S if backoff_s is None else backoff_s
    art = _resolve(name)
    dest = local_path(art)
    if not force and dest.is_file() and _verify_cached(art, dest, rehash=rehash) is None:
        log.debug("%s: using cached %s", art.name, dest)
        return dest
    # One downloader per file: a second process waits here, then finds the file cached.
    with _lock(f"file-{art.mirror_path}"):
        if not force and dest.is_file():
            problem = _verify_cached(art, dest, rehash=rehash)
            if problem is None:
                return dest
            log.warning(
                "%s: cached file %s is unusable (%s); fetching it again", art.name, dest, problem
            )
        return _download_verified(art, dest, force, progress, retries, backoff_s)


def _download_verified(
    art: Artifact, dest: Path, force: bool, progress: bool, retries: int, backoff_s: float
) -> Path:
    """Download ``art`` to ``dest`` via ``.part``, verify, rename; the caller holds the lock."""
    url = source_url(art)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if force and part.exists():
        part.unlink()
    resumed = part.exists()
    _download_with_retries(art, url, part, progress=progress, retries=retries, backoff_s=backoff_s)
    size, digest = part.stat().st_size, _sha256(part)
    problem = _mismatch(art, size, digest)
    if problem is not None and resumed:
        # The old .part may come from a different version of the file: try once from zero.
        log.warning("%s: resumed download does not verify (%s); starting over", art.name, problem)
        part.unlink()
        _download_with_retries(
            art, url, part, progress=progress, retries=retries, backoff_s=backoff_s
        )
        size, digest = part.stat().st_size, _sha256(part)
        problem = _mismatch(art, size, digest)
    if problem is not None:
        part.unlink()
        raise ChecksumError(
            f"artifact {art.name!r} from {url}: {problem}; the corrupt download was deleted. "
            f"Retry with `inquire download {art.name} --force`; if it fails again the source "
            f"serves different bytes (point INQUIRE_BASE_URL at a good mirror, or put a good "
            f"copy at {dest})"
        )
    os.replace(part, dest)
    _record(art, dest, size, digest, url)
    log.info("%s: downloaded %d bytes to %s", art.name, size, dest)
    return dest


def fetch_dataset(group: str, *, force: bool = False, progress: bool = True) -> list[Path]:
    """Fetch every artifact of ``group`` (e.g. ``"rerank-test"``); return their local paths.

    A single artifact name works too (a group of one). Paths are in shard order.
    """
    return [fetch(n, force=force, progress=progress) for n in group_members(group)]


def extract(
    name: str | Artifact,
    member: str | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Stream one ``member`` of a ``.tar.gz`` artifact into the cache; return its path.

    ``member`` defaults to the artifact's ``extract_member`` (``train.json`` for
    ``inat24-train-json``) and matches a member's full name or its base name. The archive is
    read as a stream (never fully in memory) and the member written atomically under
    ``cache_dir("extracted", name)``. An existing extraction is reused when its size equals
    the member's size recorded beside it.
    """
    art = _resolve(name)
    member = member or art.extract_member
    if not member:
        raise InputError(
            f"artifact {art.name!r} has no default member to extract; pass member=NAME"
        )
    out = config.cache_dir("extracted", art.name) / member
    stamp = out.with_name(out.name + ".size")
    if (
        not force
        and out.is_file()
        and stamp.is_file()
        and stamp.read_text().strip() == str(out.stat().st_size)
    ):
        return out
    archive = fetch(art, force=force, progress=progress)
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for info in tar:
                if info.isfile() and (info.name == member or Path(info.name).name == member):
                    src = tar.extractfile(info)
                    if src is None:
                        break
                    with atomic_path(out) as tmp, open(tmp, "wb") as fh, src:
                        shutil.copyfileobj(src, fh, CHUNK)
                    with atomic_path(stamp) as tmp:
                        tmp.write_text(f"{info.size}\n")
                    return out
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DownloadError(
            f"artifact {art.name!r} at {archive} is not a readable .tar.gz ({exc}); "
            f"fetch it again with `inquire download {art.name} --force`"
        ) from exc
    raise InputError(f"artifact {art.name!r} ({archive}) has no member named {member!r}")


# ---------------------------------------------------------------------------- internals


def _resolve(name: str | Artifact) -> Artifact:
    return name if isinstance(name, Artifact) else get_artifact(name)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _mismatch(
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


def _read_manifest() -> dict[str, Any]:
    path = download_dir() / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("download manifest %s is unreadable; starting a new one", path)
        return {}
    return data if isinstance(data, dict) else {}


def _record(art: Artifact, dest: Path, size: int, digest: str, url: str) -> None:
    stat = dest.stat()
    with _lock("manifest"):  # read-modify-write: concurrent fetches must not drop entries
        manifest = _read_manifest()
        manifest[art.mirror_path] = {
            "name": art.name,
            "url": url,
            "size": size,
            "sha256": digest,
            "mtime_ns": stat.st_mtime_ns,
            "verified_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(download_dir() / MANIFEST, manifest)


@contextmanager
def _lock(key: str) -> Iterator[None]:
    """An exclusive inter-process lock (``fcntl.flock``) named by ``key``.

    Lock files live in ``cache_dir("locks")``, away from the downloads. Where ``fcntl`` is
    missing (Windows) this is a no-op: one process per cache is then assumed.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:16]
    path = config.cache_dir("locks") / f"{digest}.lock"
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _verify_cached(art: Artifact, dest: Path, rehash: bool) -> str | None:
    """None if the cached ``dest`` is good, else why not. Never touches the network."""
    record = _read_manifest().get(art.mirror_path)
    stat = dest.stat()
    problem = _mismatch(art, stat.st_size, None, record)
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
    digest = _sha256(dest)
    problem = _mismatch(art, stat.st_size, digest, record)
    if problem is None:
        # A file placed by hand (or changed on disk but still correct): trust and record it.
        _record(art, dest, stat.st_size, digest, (record or {}).get("url", "local file"))
    return problem


class _Retryable(Exception):
    """A transient failure: the connection broke, the body was cut off, or a 5xx answer."""


def _download_with_retries(
    art: Artifact, url: str, part: Path, *, progress: bool, retries: int, backoff_s: float
) -> None:
    if url.startswith("file://"):
        _copy_local(art, url, part)
        return
    import requests

    session = requests.Session()
    attempt = 0
    try:
        while True:
            try:
                _download_once(art, url, part, session, progress)
                return
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                _Retryable,
            ) as exc:
                unreachable = _unreachable(exc)
                if unreachable is not None:
                    # No server or no network: retrying in seconds would not change that.
                    raise DownloadError(
                        f"could not download artifact {art.name!r} from {url}: {unreachable} "
                        f"(not retried). Check the network, set INQUIRE_BASE_URL to a mirror, "
                        f"or put the file at {part.with_suffix('')} yourself"
                    ) from exc
                # A body cut off mid-way surfaces as ChunkedEncodingError (urllib3 enforces
                # Content-Length) or as _Retryable; the .part keeps what arrived and the next
                # attempt resumes from there.
                if attempt >= retries:
                    raise DownloadError(
                        f"could not download artifact {art.name!r} from {url} after "
                        f"{attempt + 1} attempts: {exc}. Check the network, set "
                        f"INQUIRE_BASE_URL to a mirror, or put the file at "
                        f"{part.with_suffix('')} yourself"
                    ) from exc
                wait = backoff_s * 2**attempt
                attempt += 1
                log.warning("%s: %s; retry %d/%d in %.1f s", art.name, exc, attempt, retries, wait)
                time.sleep(wait)
            except requests.RequestException as exc:
                raise DownloadError(
                    f"could not download artifact {art.name!r} from {url}: {exc}. Check the "
                    f"URL or set INQUIRE_BASE_URL to a mirror"
                ) from exc
    finally:
        session.close()


def _unreachable(exc: BaseException) -> str | None:
    """Why the host could not be reached at all, or None for a transient failure.

    A name that does not resolve (DNS) and a refused or impossible connection (no server on
    the port, no route, no network) fail at once; timeouts, connections broken mid-answer
    and 5xx answers are transient and retried.
    """
    import errno
    import socket
    from urllib.parse import urlsplit

    from urllib3.exceptions import NameResolutionError, NewConnectionError

    found: list[BaseException] = []
    stack: list[object] = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or any(e is f for f in found):
            continue
        found.append(e)
        stack += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
    host = ""
    for e in found:
        url = getattr(getattr(e, "request", None), "url", None)
        if isinstance(url, str):
            host = urlsplit(url).netloc
            break
    where = f" {host}" if host else ""
    if any(isinstance(e, (NameResolutionError, socket.gaierror)) for e in found):
        return f"the host name{where} could not be resolved (DNS failure or no network)"
    if any(isinstance(e, ConnectionRefusedError) for e in found):
        return f"connection to{where} refused (no server listening there)"
    unreachable = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN)
    if any(isinstance(e, OSError) and e.errno in unreachable for e in found):
        return f"no route to{where} (no network)"
    if any(isinstance(e, NewConnectionError) for e in found):
        return f"could not connect to{where}"
    return None


def _copy_local(art: Artifact, url: str, part: Path) -> None:
    """Copy from a ``file://`` mirror into ``part`` (no resume: local copies are quick)."""
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    src = Path(url2pathname(urlsplit(url).path))
    if not src.is_file():
        raise DownloadError(
            f"could not download artifact {art.name!r}: the local mirror has no file {src} "
            f"(INQUIRE_BASE_URL={config.base_url()}); put the file there, or at "
            f"{part.with_suffix('')}"
        )
    with open(src, "rb") as fin, open(part, "wb") as fout:
        shutil.copyfileobj(fin, fout, CHUNK)


def _download_once(art: Artifact, url: str, part: Path, session: Any, progress: bool) -> None:
    """One HTTP request that appends to ``part`` (resuming) or rewrites it from byte 0."""
    offset = part.stat().st_size if part.exists() else 0
    if art.size is not None and offset > art.size:
        part.unlink()  # longer than the file can be: not a prefix of it
        offset = 0
    if art.size is not None and offset == art.size:
        return  # complete already; the caller verifies it
    # identity encoding: Range offsets and Content-Length then count the file's own bytes
    # (a gzip-encoded answer would count compressed ones).
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=TIMEOUT_S) as resp:
        status = resp.status_code
        if status == 416 and offset:
            if resp.headers.get("Content-Range", "") == f"bytes */{offset}":
                return  # the .part already holds the whole file; the caller verifies it
            # The .part is not a prefix the server can continue: start over.
            part.unlink()
            raise _Retryable(f"server refused to resume at byte {offset} (HTTP 416)")
        if status >= 500:
            raise _Retryable(f"HTTP {status} {resp.reason}")
        if status not in (200, 206):
            hint = (
                f"INQUIRE_BASE_URL is set: check that the mirror has this file at {art.mirror_path}"
                if config.base_url()
                else "set INQUIRE_BASE_URL to a mirror that has it"
            )
            raise DownloadError(
                f"could not download artifact {art.name!r}: {url} answered HTTP {status} "
                f"{resp.reason}; {hint}, or put the file at {part.with_suffix('')}"
            )
        if status == 206 and not _range_starts_at(resp.headers.get("Content-Range"), offset):
            part.unlink()
            raise _Retryable(f"server resumed at the wrong place: {resp.headers['Content-Range']}")
        if status == 200 and offset:
            log.info("%s: server ignores Range; restarting from byte 0", art.name)
            offset = 0
        length = resp.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        total = offset + expected if expected is not None else art.size
        written = 0
        with (
            _progress_bar(art.name, total, offset, progress) as update,
            open(part, "ab" if offset else "wb") as fh,
        ):
            for chunk in resp.iter_content(NET_CHUNK):
                fh.write(chunk)
                written += len(chunk)
                update(len(chunk))
    if expected is not None and written < expected:
        raise _Retryable(f"connection closed after {written} of {expected} bytes")


def _range_starts_at(content_range: str | None, offset: int) -> bool:
    # "bytes START-END/TOTAL"
    if not content_range or not content_range.startswith("bytes "):
        return False
    start = content_range[6:].split("-", 1)[0]
    return start.isdigit() and int(start) == offset


@contextmanager
def _progress_bar(
    label: str, total: int | None, initial: int, enabled: bool
) -> Iterator[Callable[[int], object]]:
    from tqdm.auto import tqdm

    with tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        disable=not enabled,
        leave=False,
    ) as bar:
        yield bar.update
