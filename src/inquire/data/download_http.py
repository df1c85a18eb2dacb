"""Download an artifact over HTTP (or from a local mirror) through pooch, with retries and
resuming.

``pooch.retrieve`` downloads to a temporary file beside the destination, checks the sha256
(the registry's, else the one recorded in the manifest on the first download) and only then
moves the file into place, so a failed or corrupt download leaves nothing behind. Transient
failures (timeouts, connections broken mid-answer, cut-off bodies, 5xx answers) are retried
with exponential backoff by ``tenacity``; a host that cannot be reached at all (name not
resolved, connection refused, no route) fails at once: waiting would not bring the network
back. 4xx answers are not retried.

Resuming. pooch's HTTP downloader always starts from byte 0 (it has no ``Range`` support: it
opens its output for writing and sends a plain GET), which is fine for the query and
annotation CSVs (kB to a few MB) but wastes hundreds of MB when the 438 MB iNat tarball (or a
~400 MB Rerank shard taken from ``INQUIRE_BASE_URL``) breaks near its end. For artifacts
marked ``resumable`` the downloader here (``_Download``, through ``_download_once``) keeps
``<file>.part`` between attempts and between runs, asks for the rest with
``Range: bytes=N-``, restarts from zero when the server ignores ``Range`` or the ``.part``
cannot be continued, and hands the complete file to pooch for the checksum and the move.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inquire import config
from inquire._io import file_sha256
from inquire._progress import ByteProgress
from inquire.data.download_cache import CHUNK, mismatch, read_manifest, record_verified
from inquire.data.registry import Artifact
from inquire.errors import ChecksumError, DownloadError

log = logging.getLogger(__name__)

NET_CHUNK = 1 << 16  # bytes per network read: what arrived before a cut-off is kept
TIMEOUT_S = (10.0, 60.0)  # (connect, read) seconds


def download_verified(
    art: Artifact,
    dest: Path,
    url: str,
    force: bool,
    progress: bool,
    retries: int,
    backoff_s: float,
) -> Path:
    """Download ``art`` from ``url`` to ``dest`` through pooch, verify, record; the caller
    holds the lock. ``retries`` extra attempts on transient failures, the first wait
    ``backoff_s`` seconds, doubling."""
    import pooch

    record = read_manifest().get(art.mirror_path) or {}
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
    record_verified(art.mirror_path, art, dest, size, digest, url)
    log.info("%s: downloaded %d bytes to %s", art.name, size, dest)
    return dest


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
        problem = mismatch(self.art, path.stat().st_size, None, self.record)
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
