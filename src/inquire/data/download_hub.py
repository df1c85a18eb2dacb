"""Fetch an artifact from the Hugging Face hub (the INQUIRE-Rerank shards).

``huggingface_hub.hf_hub_download`` at the pinned revision, into the Hugging Face cache
(``HF_HUB_CACHE`` / ``HF_HOME``, default ``~/.cache/huggingface/hub``). Files already in that
cache (``hf download``, ``snapshot_download``, other hub clients) are therefore reused: at the
pinned commit with no network call, at another commit after one HEAD request (the hub client
links unchanged blobs instead of downloading them). ``HF_ENDPOINT`` (a hub mirror),
``HF_TOKEN`` and ``HF_HUB_OFFLINE`` work as for any hub download, and the hub's own client
retries and resumes. After the download the file's sha256 is checked against the registry,
else against the hub's ETag (the sha256 of an LFS file), and recorded in the manifest.
"""

from __future__ import annotations

import logging
from pathlib import Path

from inquire._io import file_sha256
from inquire._progress import hub_tqdm_class
from inquire.data.download_cache import CHUNK, mismatch, record_verified, verify_cached
from inquire.data.registry import Artifact, HubFile
from inquire.errors import ChecksumError, DownloadError

log = logging.getLogger(__name__)


def _hub_key(hub: HubFile) -> str:
    """The manifest entry of a file in the Hugging Face cache."""
    return f"hf://{hub.repo_type}s/{hub.repo_id}@{hub.revision}/{hub.filename}"


def hub_url(hub: HubFile) -> str:
    from huggingface_hub import hf_hub_url

    return str(
        hf_hub_url(hub.repo_id, hub.filename, repo_type=hub.repo_type, revision=hub.revision)
    )


def hub_cached(hub: HubFile) -> Path | None:
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


def verify_hub_cached(art: Artifact, hub: HubFile, path: Path, rehash: bool) -> str | None:
    """:func:`verify_cached` for a file in the Hugging Face cache (the ETag as fallback)."""
    return verify_cached(art, path, rehash, key=_hub_key(hub), etag=_hub_etag_sha256(path))


def fetch_from_hub(
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
        cached = None if force else hub_cached(hub)
        if cached is not None and attempt == 1:
            problem = verify_hub_cached(art, hub, cached, rehash)
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
        problem = mismatch(art, size, digest)
        if problem is None and want is not None and digest != want.lower():
            problem = f"sha256 {digest}, expected {want} (the hub's ETag)"
        if problem is None:
            record_verified(key, art, path, size, digest, hub_url(hub))
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
