"""Download registered artifacts: verified, atomic, offline-first, each through the library
made for its host.

``fetch(name)`` returns the local path of an artifact from :mod:`inquire.data.registry`:

1. A cached file that verifies (:mod:`inquire.data.download_cache`) is returned with **no
   network call at all**.
2. INQUIRE-Rerank shards (artifacts with a ``hub`` entry) come through ``huggingface_hub``
   at the pinned revision, into the Hugging Face cache (:mod:`inquire.data.download_hub`).
3. The GitHub and iNat files (and every artifact when ``INQUIRE_BASE_URL`` names a static
   mirror) come through ``pooch`` with ``tenacity`` retries, resuming large files
   (:mod:`inquire.data.download_http`).

``extract`` streams one member of a downloaded ``.tar.gz`` into the cache.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
from pathlib import Path

from inquire import config
from inquire._io import atomic_path
from inquire.data.download_cache import CHUNK, download_dir, download_lock, verify_cached
from inquire.data.download_http import download_verified
from inquire.data.download_hub import fetch_from_hub, hub_cached, hub_url, verify_hub_cached
from inquire.data.registry import Artifact, get_artifact, group_members
from inquire.errors import DownloadError, InputError

log = logging.getLogger(__name__)

RETRIES = 5  # extra attempts after the first, on transient failures (timeouts, 5xx, cut-offs)
BACKOFF_S = 1.0  # first wait; doubles each retry


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
    return hub_cached(art.hub) if art.hub is not None else None


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
            return hub_url(art.hub)
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
    if not force and dest.is_file() and verify_cached(art, dest, rehash=rehash) is None:
        log.debug("%s: using cached %s", art.name, dest)
        return dest
    if art.hub is not None:
        if not config.base_url():
            return fetch_from_hub(art, art.hub, force=force, progress=progress, rehash=rehash)
        # A static mirror is set, but a copy already in the Hugging Face cache needs none.
        hit = None if force else hub_cached(art.hub)
        if hit is not None and verify_hub_cached(art, art.hub, hit, rehash) is None:
            return hit
    # One downloader per file: a second process waits here, then finds the file cached.
    with download_lock(f"file-{art.mirror_path}"):
        if not force and dest.is_file():
            problem = verify_cached(art, dest, rehash=rehash)
            if problem is None:
                return dest
            log.warning(
                "%s: cached file %s is unusable (%s); fetching it again", art.name, dest, problem
            )
        return download_verified(art, dest, source_url(art), force, progress, retries, backoff_s)


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


def _resolve(name: str | Artifact) -> Artifact:
    return name if isinstance(name, Artifact) else get_artifact(name)
