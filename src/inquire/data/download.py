"""Download registered artifacts: verified, atomic, offline-first, each through the library
made for its host.

``fetch(name)`` returns the local path of an artifact from :mod:`inquire.data.registry`:

1. A cached file that verifies is returned with **no network call at all**. Verification: the
   size must match the registry (or the manifest record); the sha256 is recomputed unless
   the file's size and modification time still equal those recorded when it was last
   verified (a file changed since then is always re-hashed).
2. INQUIRE-Rerank shards (artifacts with a ``hub`` entry) come through
   ``huggingface_hub.hf_hub_download`` at the pinned revision, into the Hugging Face cache
   (``HF_HUB_CACHE`` / ``HF_HOME``, default ``~/.cache/huggingface/hub``). Files already in
   that cache (``hf download``, ``snapshot_download``, other hub clients) are therefore reused:
   at the pinned commit with no network call, at another commit after one HEAD request (the
   hub client links unchanged blobs instead of downloading them). ``HF_ENDPOINT`` (a hub
   mirror), ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` work as for any hub download, and the hub's
   own client retries and resumes. After the download the
   file's sha256 is checked against the registry, else against the hub's ETag (the sha256 of
   an LFS file), and recorded in the manifest.
3. The GitHub and iNat files (and every artifact when ``INQUIRE_BASE_URL`` names a static
   mirror) come through ``pooch.retrieve``: it downloads to a temporary file beside the
   destination, checks the sha256 (the registry's, else the one recorded in the manifest on
   the first download) and only then moves the file into place, so a failed or corrupt
   download leaves nothing behind. Transient failures (timeouts, connections broken
   mid-answer, cut-off bodies, 5xx answers) are retried with exponential backoff by
   ``tenacity``; a host that cannot be reached at all (name not resolved, connection refused,
   no route) fails at once: waiting would not bring the network back. 4xx answers are not
   retried.

Resuming. pooch's HTTP downloader always starts from byte 0 (it has no ``Range`` support:
it opens its output for writing and sends a plain GET), which is fine for the query and
annotation CSVs (kB to a few MB) but wastes hundreds of MB when the 438 MB iNat tarball (or a
~400 MB Rerank shard taken from ``INQUIRE_BASE_URL``) breaks near its end. For artifacts
marked ``resumable`` the pooch downloader here (``_Download``, through ``_download_once``)
keeps ``<file>.part`` between attempts and between runs, asks for the rest with
``Range: bytes=N-``, restarts from zero when the server ignores ``Range`` or the ``.part``
cannot be continued, and hands the complete file to pooch for the checksum and the move.

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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inquire import config
from inquire._io import atomic_path, file_sha256, write_json
from inquire._progress import ByteProgress, hub_tqdm_class
from inquire.data.registry import Artifact, HubFile, get_artifact, group_members
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
    """Where ``artifact`` lives in inquire's download cache (whether or not it was fetched).

    Rerank shards fetched from the hub live in the Hugging Face cache instead (see
    :func:`cached_path`); they are kept here only when fetched from ``INQUIRE_BASE_URL``.
    """
    art = _resolve(artifact)
    return download_dir() / art.mirror_path


def cached_path(artifact: str | Artifact) -> Path | None:
    """The local copy of ``artifact`` if there is one (not verified, no network), else None.

    Looks in inquire's download cache, then, for hub artifacts, in the Hugging Face cache
    at the pinned revision.
    """
    art = _resolve(artifact)
    path = local_path(art)
    if path.is_file():
        return path
    return _hub_cached(art.hub) if art.hub is not None else None


def source_url(artifact: str | Artifact) -> str:
    """The URL ``artifact`` is fetched from: the mirror's when ``INQUIRE_BASE_URL`` is set.

    ``INQUIRE_BASE_URL`` may be an ``http(s)://`` URL, a ``file://`` URL or a plain local
    folder (for machines without network access that share a mirror on disk). Hub artifacts
    without a mirror come from ``{HF_ENDPOINT}/datasets/<id>/resolve/<revision>/<path>``.
    """
    art = _resolve(artifact)
    base = config.base_url()
    if not base:
        if art.hub is not None:
            return _hub_url(art.hub)
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

    ``force`` downloads again even if a verified copy exists (the cached copy is dropped
    first). ``rehash`` recomputes the sha256 of a cached file even when its size and mtime
    match the manifest. ``retries`` and ``backoff_s`` control retrying transient failures
    of pooch downloads (timeouts, broken connections, 5xx; waits ``backoff_s * 2**i``
    seconds; defaults: the module's ``RETRIES`` and ``BACKOFF_S``); hub downloads use the
    hub client's own retries. An unreachable host (DNS failure, connection refused, no
    route) is not retried.
    Raises :class:`DownloadError` (unreachable, HTTP error, not cached while offline) or
    :class:`ChecksumError`.
    """
    retries = RETRIES if retries is None else retries
    backoff_s = BACKOFF_S if backoff_s is None else backoff_s
    art = _resolve(name)
    dest = local_path(art)
    if not force and dest.is_file() and _verify_cached(art, dest, rehash=rehash) is None:
        log.debug("%s: using cached %s", art.name, dest)
        return dest
    if art.hub is not None:
        if not config.base_url():
            return _fetch_from_hub(art, art.hub, force=force, progress=progress, rehash=rehash)
        # A static mirror is set, but a copy already in the Hugging Face cache needs none.
        hit = None if force else _hub_cached(art.hub)
        if hit is not None and _verify_hub_cached(art, art.hub, hit, rehash) is None:
            return hit
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
    """Download ``art`` to ``dest`` through pooch, verify, record; the caller holds the lock."""
    import pooch

    url = source_url(art)
    record = _read_manifest().get(art.mirror_path) or {}
    known = art.sha256 or record.get("sha256")
    part = dest.with_name(dest.name + ".part")
    if force and part.exists():
        part.unlink()
    # Whatever is at dest failed verification (or --force asked for a new copy); pooch only
    # downloads over a file whose hash it knows to be wrong, so drop it first.
    dest.unlink(missing_ok=True)
    download = _Download(art, url, dest, progress, retries, backoff_s, record)
    for attempt in (1, 2):
        try:
            with _pooch_log_level():
                pooch.retrieve(
                    url,
                    known_hash=f"sha256:{known}" if known else None,
                    fname=dest.name,
                    path=dest.parent,
                    downloader=download,
                )
            break
        except (ValueError, _Mismatch) as exc:
            problem = str(exc) if isinstance(exc, _Mismatch) else f"sha256 mismatch: {exc}"
            if download.resumed and attempt == 1:
                # The old .part may come from a different version of the file: once from zero.
                log.warning(
                    "%s: resumed download does not verify (%s); starting over", art.name, problem
                )
                download.resumed = False
                continue
            if isinstance(exc, ValueError) and "hash" not in str(exc).lower():
                raise
            raise ChecksumError(
                f"artifact {art.name!r} from {url}: {problem}; the corrupt download was "
                f"deleted. Retry with `inquire download {art.name} --force`; if it fails again "
                f"the source serves different bytes (point INQUIRE_BASE_URL at a good mirror, "
                f"or put a good copy at {dest})"
            ) from None
    size = dest.stat().st_size
    digest = known.lower() if known else file_sha256(dest, CHUNK)
    _record(art.mirror_path, art, dest, size, digest, url)
    log.info("%s: downloaded %d bytes to %s", art.name, size, dest)
    return dest


def fetch_dataset(group: str, *, force: bool = False, progress: bool = True) -> list[Path]:
    """Fetch every artifact of ``group`` (e.g. ``"rerank-test"``); return their local paths.

    A single artifact name works too (a group of one). Paths are in shard order.
    """
    return [fetch(n, force=force, progress=progress) for n in group_members(group)]


def fetch_and_extract(
    name: str, *, extract_member: bool = False, force: bool = False, progress: bool = True
) -> list[Path]:
    """``inquire download NAME``: fetch artifact or group ``name`` (:func:`fetch_dataset`)
    and, with ``extract_member``, stream its archive's member into the cache
    (:func:`extract`; a single archive artifact only, checked before any download).
    Returns the local paths, the extracted file last."""
    from inquire.data.registry import ARTIFACTS, GROUPS

    members = group_members(name)  # unknown names fail here, before any download
    if extract_member and (name in GROUPS or not get_artifact(name).extract_member):
        archives = [a.name for a in ARTIFACTS.values() if a.extract_member]
        raise InputError(
            f"--extract needs a single archive artifact, not {name!r}; archives: {archives}"
        )
    paths = fetch_dataset(name, force=force, progress=progress)
    if extract_member:
        paths.append(extract(members[0], force=force, progress=progress))
    return paths


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


def _record(key: str, art: Artifact, dest: Path, size: int, digest: str, url: str) -> None:
    """Remember that ``dest`` (manifest entry ``key``) verified with this size and sha256."""
    stat = dest.stat()
    with _lock("manifest"):  # read-modify-write: concurrent fetches must not drop entries
        manifest = _read_manifest()
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
def _lock(key: str) -> Iterator[None]:
    """An exclusive inter-process lock (``filelock``) named by ``key``.

    Lock files live in ``cache_dir("locks")``, away from the downloads.
    """
    from filelock import FileLock

    digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:16]
    with FileLock(config.cache_dir("locks") / f"{digest}.lock"):
        yield


def _verify_cached(
    art: Artifact, dest: Path, rehash: bool, key: str | None = None, etag: str | None = None
) -> str | None:
    """None if the cached ``dest`` is good, else why not. Never touches the network.

    ``key`` is its manifest entry (default: the artifact's mirror path); ``etag`` a sha256
    to expect when neither the registry nor the manifest has one (the hub's, for LFS files).
    """
    key = key or art.mirror_path
    record = _read_manifest().get(key) or ({"sha256": etag} if etag else None)
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
    digest = file_sha256(dest, CHUNK)
    problem = _mismatch(art, stat.st_size, digest, record)
    if problem is None:
        # A file placed by hand (or changed on disk but still correct): trust and record it.
        _record(key, art, dest, stat.st_size, digest, (record or {}).get("url", "local file"))
    return problem


# ---------------------------------------------------------------- the Hugging Face hub


def _hub_key(hub: HubFile) -> str:
    """The manifest entry of a file in the Hugging Face cache."""
    return f"hf://{hub.repo_type}s/{hub.repo_id}@{hub.revision}/{hub.filename}"


def _hub_url(hub: HubFile) -> str:
    from huggingface_hub import hf_hub_url

    return str(
        hf_hub_url(hub.repo_id, hub.filename, repo_type=hub.repo_type, revision=hub.revision)
    )


def _hub_cached(hub: HubFile) -> Path | None:
    """The file in the Hugging Face cache at ``hub.revision``, or None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(
        hub.repo_id, hub.filename, revision=hub.revision, repo_type=hub.repo_type
    )
    return Path(hit) if isinstance(hit, str) else None


def _other_snapshots(hub: HubFile) -> list[str]:
    """Revisions (short) of the Hugging Face cache that hold ``hub.filename``, not the pinned."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    folder = Path(constants.HF_HUB_CACHE) / repo_folder_name(
        repo_id=hub.repo_id, repo_type=hub.repo_type
    )
    found = [
        p.name for p in sorted((folder / "snapshots").glob("*")) if (p / hub.filename).exists()
    ]
    return [rev[:12] for rev in found if rev != hub.revision]


def _hub_etag_sha256(path: Path) -> str | None:
    """The sha256 the hub announced for ``path``: its blob's name, the ETag of an LFS file."""
    blob = path.resolve().name
    if len(blob) == 64 and all(c in "0123456789abcdef" for c in blob):
        return blob
    return None


def _verify_hub_cached(art: Artifact, hub: HubFile, path: Path, rehash: bool) -> str | None:
    """:func:`_verify_cached` for a file in the Hugging Face cache (the ETag as fallback)."""
    return _verify_cached(art, path, rehash, key=_hub_key(hub), etag=_hub_etag_sha256(path))


def _fetch_from_hub(
    art: Artifact, hub: HubFile, *, force: bool, progress: bool, rehash: bool
) -> Path:
    """``hf_hub_download`` at the pinned revision, then the sha256 check and the record."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    key = _hub_key(hub)
    where = f"{hub.repo_id} at revision {hub.revision}, file {hub.filename}"
    endpoint = constants.ENDPOINT
    for attempt in (1, 2):
        cached = None if force else _hub_cached(hub)
        if cached is not None and attempt == 1:
            problem = _verify_hub_cached(art, hub, cached, rehash)
            if problem is None:
                return cached
            if constants.is_offline_mode():
                raise DownloadError(
                    f"artifact {art.name!r}: the copy in the Hugging Face cache ({cached}) does "
                    f"not verify ({problem}) and HF_HUB_OFFLINE is set, so it cannot be "
                    f"downloaded again; unset HF_HUB_OFFLINE, or set INQUIRE_BASE_URL to a "
                    f"mirror that has {art.mirror_path}"
                )
            log.warning(
                "%s: %s in the Hugging Face cache is unusable (%s); fetching it again",
                art.name,
                cached,
                problem,
            )
        try:
            path = Path(
                hf_hub_download(
                    hub.repo_id,
                    hub.filename,
                    repo_type=hub.repo_type,
                    revision=hub.revision,
                    force_download=force or attempt == 2 or cached is not None,
                    tqdm_class=hub_tqdm_class(progress, art.name),
                )
            )
        except LocalEntryNotFoundError as exc:
            offline = constants.is_offline_mode()
            why = "HF_HUB_OFFLINE is set" if offline else f"{endpoint} could not be reached"
            detail = "" if offline else f" ({str(exc).splitlines()[0]})"
            elsewhere = _other_snapshots(hub)
            other = (
                f". The cache holds this file at other revision(s) ({', '.join(elsewhere)}), "
                f"e.g. from a download of the dataset's main branch: one run with network "
                f"access links the pinned revision to the same bytes without downloading them "
                f"again if they are unchanged"
                if elsewhere
                else ""
            )
            raise DownloadError(
                f"artifact {art.name!r} ({where}) is not in the Hugging Face cache "
                f"({constants.HF_HUB_CACHE}) and {why}{detail}{other}. Download it once with "
                f"network access{' (unset HF_HUB_OFFLINE)' if offline else ''}, point "
                f"HF_ENDPOINT at a hub mirror, or set INQUIRE_BASE_URL to a mirror that has "
                f"{art.mirror_path}"
            ) from None
        except (GatedRepoError, RepositoryNotFoundError) as exc:
            raise DownloadError(
                f"artifact {art.name!r}: the dataset {hub.repo_id} is not accessible on "
                f"{endpoint} ({type(exc).__name__}); log in with `hf auth login` or set "
                f"HF_TOKEN, and check HF_ENDPOINT"
            ) from None
        except RevisionNotFoundError:
            raise DownloadError(
                f"artifact {art.name!r}: {endpoint} has no revision {hub.revision} of "
                f"{hub.repo_id}; if HF_ENDPOINT names a mirror, it must mirror that commit"
            ) from None
        except EntryNotFoundError:
            raise DownloadError(
                f"artifact {art.name!r}: {hub.repo_id} at revision {hub.revision} has no file "
                f"{hub.filename} on {endpoint}; check HF_ENDPOINT"
            ) from None
        except (HfHubHTTPError, OSError) as exc:
            raise DownloadError(
                f"could not download artifact {art.name!r} ({where}) from {endpoint}: {exc}. "
                f"Check the network or HF_ENDPOINT, or set INQUIRE_BASE_URL to a mirror"
            ) from None
        size, digest = path.stat().st_size, file_sha256(path, CHUNK)
        want = art.sha256 or _hub_etag_sha256(path)
        problem = _mismatch(art, size, digest)
        if problem is None and want is not None and digest != want.lower():
            problem = f"sha256 {digest}, expected {want} (the hub's ETag)"
        if problem is None:
            _record(key, art, path, size, digest, _hub_url(hub))
            log.info("%s: %d bytes in the Hugging Face cache at %s", art.name, size, path)
            return path
        if attempt == 1:
            log.warning(
                "%s: %s does not verify (%s); downloading it again", art.name, path, problem
            )
            continue
        # Leave no wrong bytes in the Hugging Face cache: drop the snapshot entry and blob.
        blob = path.resolve()
        path.unlink(missing_ok=True)
        if blob != path:
            blob.unlink(missing_ok=True)
        raise ChecksumError(
            f"artifact {art.name!r} ({where}) from {endpoint}: {problem}; the corrupt file was "
            f"deleted from the Hugging Face cache. If HF_ENDPOINT names a mirror, it serves "
            f"different bytes: fix the mirror or unset HF_ENDPOINT"
        )
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------- pooch downloads


@contextmanager
def _pooch_log_level() -> Iterator[None]:
    """pooch logs each download at INFO on its own stderr handler: keep it as quiet as ours."""
    import pooch

    logger = pooch.get_logger()
    old = logger.level
    logger.setLevel(logging.INFO if log.isEnabledFor(logging.INFO) else logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


class _Retryable(Exception):
    """A transient failure: the connection broke, the body was cut off, or a 5xx answer."""


class _Mismatch(Exception):
    """The downloaded bytes have the wrong size (the message says which)."""


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # looked up at call time, so tests can replace ``time.sleep``


class _Download:
    """A pooch downloader (``downloader(url, output_file, pooch)``) for one artifact.

    Runs each attempt under tenacity's retry policy; ``file://`` mirrors are copied;
    ``resumable`` artifacts resume their ``.part`` (see the module docstring), the others go
    through pooch's own ``HTTPDownloader``. The size is checked before pooch checks the hash.
    """

    def __init__(
        self,
        art: Artifact,
        url: str,
        dest: Path,
        progress: bool,
        retries: int,
        backoff_s: float,
        record: dict[str, Any],
    ) -> None:
        self.art, self.url, self.dest = art, url, dest
        self.progress, self.retries, self.backoff_s = progress, retries, backoff_s
        self.record = record
        self.part = dest.with_name(dest.name + ".part")
        self.resumed = False

    def __call__(self, url: str, output_file: str, pooch: Any, check_only: bool = False) -> None:
        if self.url.startswith("file://"):
            _copy_local(self.art, self.url, Path(output_file), self.dest)
        elif self.art.resumable:
            self.resumed = self.part.is_file() and self.part.stat().st_size > 0
            self._with_retries(lambda: _download_once(self.art, self.url, self.part, self.progress))
            self._check_size(self.part)
            os.replace(self.part, output_file)  # pooch checks the hash, then moves it
            return
        else:
            self._with_retries(lambda: self._plain(output_file))
        self._check_size(Path(output_file))

    def _plain(self, output_file: str) -> None:
        from pooch import HTTPDownloader

        with ByteProgress(self.art.name, show=self.progress) as bar:
            HTTPDownloader(progressbar=bar, chunk_size=NET_CHUNK, timeout=TIMEOUT_S)(
                self.url, output_file, None
            )

    def _check_size(self, path: Path) -> None:
        problem = _mismatch(self.art, path.stat().st_size, None, self.record)
        if problem is not None:
            path.unlink(missing_ok=True)
            raise _Mismatch(problem)

    def _with_retries(self, attempt_once: Any) -> None:
        import requests
        from tenacity import (
            Retrying,
            retry_if_exception,
            stop_after_attempt,
            wait_exponential,
        )

        art, url = self.art, self.url

        def log_retry(state: Any) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            n = state.attempt_number
            log.warning("%s: %s; retry %d/%d in %.1f s", art.name, exc, n, self.retries, wait)

        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=self.backoff_s, exp_base=2, min=0),
            retry=retry_if_exception(_transient),
            sleep=_sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            retrying(attempt_once)
        except (requests.RequestException, _Retryable) as exc:
            unreachable = _unreachable(exc)
            fix = (
                f"Check the network, set INQUIRE_BASE_URL to a mirror, or put the file at "
                f"{self.dest} yourself"
            )
            if unreachable is not None:
                # No server or no network: retrying in seconds would not change that.
                raise DownloadError(
                    f"could not download artifact {art.name!r} from {url}: {unreachable} "
                    f"(not retried). {fix}"
                ) from exc
            status = _http_status(exc)
            if status is not None and status < 500:
                reason = getattr(getattr(exc, "response", None), "reason", "") or ""
                hint = (
                    f"INQUIRE_BASE_URL is set: check that the mirror has this file at "
                    f"{art.mirror_path}"
                    if config.base_url()
                    else "set INQUIRE_BASE_URL to a mirror that has it"
                )
                raise DownloadError(
                    f"could not download artifact {art.name!r}: {url} answered HTTP {status} "
                    f"{reason}; {hint}, or put the file at {self.dest}"
                ) from None
            if _transient(exc):
                attempts = retrying.statistics.get("attempt_number", self.retries + 1)
                raise DownloadError(
                    f"could not download artifact {art.name!r} from {url} after {attempts} "
                    f"attempts: {exc}. {fix}"
                ) from exc
            raise DownloadError(
                f"could not download artifact {art.name!r} from {url}: {exc}. Check the "
                f"URL or set INQUIRE_BASE_URL to a mirror"
            ) from exc


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return int(status) if isinstance(status, int) else None


def _transient(exc: BaseException) -> bool:
    """Worth retrying: a timeout, a broken connection or cut-off body, or a 5xx answer —
    but not a host that cannot be reached at all."""
    import requests

    if isinstance(exc, requests.HTTPError):
        status = _http_status(exc)
        return status is not None and status >= 500
    transient = (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        _Retryable,
    )
    return isinstance(exc, transient) and _unreachable(exc) is None


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


def _copy_local(art: Artifact, url: str, out: Path, dest: Path) -> None:
    """Copy from a ``file://`` mirror into ``out`` (pooch has no ``file://`` downloader)."""
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    src = Path(url2pathname(urlsplit(url).path))
    if not src.is_file():
        raise DownloadError(
            f"could not download artifact {art.name!r}: the local mirror has no file {src} "
            f"(INQUIRE_BASE_URL={config.base_url()}); put the file there, or at {dest}"
        )
    with open(src, "rb") as fin, open(out, "wb") as fout:
        shutil.copyfileobj(fin, fout, CHUNK)


def _download_once(art: Artifact, url: str, part: Path, progress: bool) -> None:
    """One HTTP request that appends to ``part`` (resuming) or rewrites it from byte 0."""
    import requests

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
    with requests.get(url, headers=headers, stream=True, timeout=TIMEOUT_S) as resp:
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
            resp.raise_for_status()  # 4xx: reported (not retried) by _Download
            raise _Retryable(f"unexpected HTTP {status} {resp.reason}")
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
            ByteProgress(art.name, show=progress, initial=offset) as bar,
            open(part, "ab" if offset else "wb") as fh,
        ):
            bar.total = total
            for chunk in resp.iter_content(NET_CHUNK):
                fh.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    if expected is not None and written < expected:
        raise _Retryable(f"connection closed after {written} of {expected} bytes")


def _range_starts_at(content_range: str | None, offset: int) -> bool:
    # "bytes START-END/TOTAL"
    if not content_range or not content_range.startswith("bytes "):
        return False
    start = content_range[6:].split("-", 1)[0]
    return start.isdigit() and int(start) == offset
