"""What the web app shows: result folders, image roots, annotations, an embedded collection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inquire.embed.base import Encoder

# Request limits (bytes, seconds); see inquire.web.security.
DEFAULT_MAX_BODY_BYTES = 256 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 16 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_MAX_HEADER_BYTES = 16 * 1024  # request line (target) and headers together

# Longest side, in pixels, a thumbnail may be asked for; larger requests get 422.
MIN_THUMB_SIZE = 16
MAX_THUMB_SIZE = 1024
DEFAULT_THUMB_SIZE = 256
# The edge lengths thumbnails are made at: a request is answered with the smallest of these
# at least as large as asked, so no page can make the server write one file per size.
THUMB_SIZES = (32, 64, 128, 256, 512, 1024)
# The thumbnail cache's size on disk (bytes); beyond it the least recently used go.
DEFAULT_THUMB_CACHE_BYTES = 256 * 1024 * 1024


@dataclass
class WebConfig:
    """Configuration of :func:`inquire.web.app.create_app`.

    - ``results``: evaluation result folders (``EvalResult.save`` layout: ``summary.json``,
      ``per_query.csv`` and, for the image grid, ``run.parquet``).
    - ``image_roots``: the only folders images are ever served from. Image paths (from the
      embedding metadata or the annotations) are relative to one of them.
    - ``annotations``: annotation CSVs (``query_id, image_id[, image_path]``) that mark
      results relevant / not relevant. A result whose ``config`` names an existing
      ``annotations`` file adds it too.
    - ``queries``: query CSVs (INQUIRE format) that give each ``query_id`` its text (also taken
      from a result's ``config["queries"]`` when that names an existing file).
    - ``embeddings``: a clip-retrieval embedding folder; maps image ids to paths and, with
      ``model``, enables free-text search.
    - ``model``: a model id for :func:`inquire.embed.load_encoder` or an ``Encoder`` object;
      it must embed text into the space of ``embeddings``.
    - ``rerank_data``: INQUIRE-Rerank parquet files whose ``image`` column serves the images
      the other sources do not have (a rerank result's ``config["files"]`` adds its own).
    - ``thumb_cache``: folder of cached thumbnails (default: ``<cache>/web/thumbs``);
      ``thumb_cache_bytes``: its largest size on disk (least recently used go first).
    - ``routers``: extra FastAPI ``APIRouter`` objects included into the app.
    - ``template_dirs``: extra Jinja2 template folders searched before the built-in ones, so
      an extra router can render pages that extend ``base.html``.
    - ``nav_links``: extra ``(label, url)`` entries of the navigation bar.
    - ``host``: the address the server binds to; requests must name it (or a loopback name)
      in their ``Host`` header. ``allowed_hosts``: other names clients may use (a proxy's
      public name, a LAN address). See :mod:`inquire.web.security`.
    - ``max_body_bytes`` / ``max_upload_bytes``: largest request body, ordinary and
      ``multipart/form-data``; ``body_timeout_s``: how long a body may take to arrive.
    """

    results: Sequence[Path] = ()
    image_roots: Sequence[Path] = ()
    annotations: Sequence[Path] = ()
    queries: Sequence[Path] = ()
    embeddings: Path | None = None
    model: str | Encoder | None = None
    rerank_data: Sequence[Path] = ()
    thumb_cache: Path | None = None
    thumb_cache_bytes: int = DEFAULT_THUMB_CACHE_BYTES
    search_k: int = 50
    max_k: int = 500
    routers: Sequence[Any] = ()
    template_dirs: Sequence[Path] = ()
    nav_links: Sequence[tuple[str, str]] = field(default_factory=tuple)
    title: str = "inquire"
    host: str = "127.0.0.1"
    allowed_hosts: Sequence[str] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
