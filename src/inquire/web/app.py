"""The FastAPI app: server-side rendered pages, a JSON API and the image routes.

Routes (``create_app`` includes ``config.routers`` after these):

- ``/``: the runs with their overall metrics; ``/runs/{run}``: its queries, filterable by
  supercategory / category / iconic group; ``/runs/{run}/queries/{query_id}``: the top-k as an
  image grid (relevant / not relevant, score, rank in another run); ``/search``: free text.
- ``/api/...``: the same data as JSON (``/api/runs``, ``/api/runs/{run}/queries``,
  ``/api/runs/{run}/queries/{query_id}``, ``/api/search``, ``/api/health``).
- ``/images/{image_id}[?size=N]`` and ``/files/{root}/{path}[?size=N]``: an image (or its
  thumbnail, longest side N px) from the configured roots only; see :mod:`inquire.web.images`.

Other routers get the shared state with :func:`get_context` and render pages that extend
``base.html`` with :meth:`WebContext.render`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BeforeValidator, Field

from inquire.config import cache_dir
from inquire.errors import InputError
from inquire.eval.evaluate import GROUP_COLUMNS
from inquire.metrics import metric_label
from inquire.report.build import LEVEL_TITLES
from inquire.web.catalog import Catalog
from inquire.web.config import DEFAULT_THUMB_SIZE, MAX_THUMB_SIZE, MIN_THUMB_SIZE, WebConfig
from inquire.web.errors import install_error_handlers, invalid_parameter
from inquire.web.images import ThumbnailCache, image_format
from inquire.web.parquet_images import ParquetImage, ParquetImages
from inquire.web.runs import RunEntry
from inquire.web.security import (
    INT64_MAX,
    INT64_MIN,
    RequestGuard,
    csrf_token,
    public_message,
    secure,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
GRID_THUMB = DEFAULT_THUMB_SIZE


@dataclass
class WebContext:
    """State shared by all routes: the config, the catalog, thumbnails and templates."""

    config: WebConfig
    catalog: Catalog
    thumbs: ThumbnailCache
    templates: Any  # starlette Jinja2Templates

    def render(self, request: Request, name: str, status_code: int = 200, **ctx: Any) -> Any:
        """Render template ``name`` with the navigation and helpers every page needs."""
        base = {
            "title": self.config.title,
            "nav_links": list(self.config.nav_links),
            "can_search": self.catalog.can_search,
            "csrf_token": csrf_token(request),
        }
        return self.templates.TemplateResponse(request, name, base | ctx, status_code=status_code)


def get_context(request: Request) -> WebContext:
    """The app's :class:`WebContext` (use as a FastAPI dependency in extra routers)."""
    ctx: WebContext = request.app.state.inquire
    return ctx


def thumb_url(image_id: int, size: int = GRID_THUMB) -> str:
    """URL of the thumbnail of ``image_id``."""
    return f"/images/{int(image_id)}?size={int(size)}"


def _make_templates(config: WebConfig) -> Any:
    import jinja2
    from fastapi.templating import Jinja2Templates

    loader = jinja2.ChoiceLoader(
        [
            jinja2.FileSystemLoader([str(p) for p in config.template_dirs]),
            jinja2.FileSystemLoader(str(TEMPLATES)),
        ]
    )
    env = jinja2.Environment(loader=loader, autoescape=jinja2.select_autoescape(["html"]))
    from inquire.metrics import format_fraction, format_value, scale_note
    from inquire.report.cells import fmt_cell, fmt_p

    env.globals.update(
        metric_label=metric_label,
        scale_note=scale_note,
        format_fraction=format_fraction,
        thumb_url=thumb_url,
        fmt_cell=fmt_cell,
        format_value=format_value,
        fmt_p=fmt_p,
    )
    return Jinja2Templates(env=env)


def create_app(config: WebConfig) -> FastAPI:
    """Build the web app over ``config``; bad folders or files fail here, not on a request.

    The app answers only requests whose ``Host`` names ``config.host`` (or a loopback name,
    or one of ``config.allowed_hosts``) and takes state-changing requests only from its own
    pages (Origin + CSRF token): see :mod:`inquire.web.security`."""
    guard = RequestGuard(
        config.host,
        config.allowed_hosts,
        config.max_body_bytes,
        config.max_upload_bytes,
        config.body_timeout_s,
    )
    catalog = Catalog(config)
    thumbs = ThumbnailCache(
        config.thumb_cache or cache_dir("web", "thumbs"), config.thumb_cache_bytes
    )
    ctx = WebContext(config, catalog, thumbs, _make_templates(config))
    # No Swagger UI: it loads its scripts from a CDN, which the page never does.
    app = FastAPI(
        title=config.title, docs_url=None, redoc_url=None, openapi_url="/api/openapi.json"
    )
    app.state.inquire = ctx
    secure(app, guard)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    def _error_page(request: Request, status: int, message: str) -> Response:
        page: Response = ctx.render(
            request, "error.html", status_code=status, message=message, status=status
        )
        return page

    install_error_handlers(app, _error_page)
    app.include_router(_pages_router())
    app.include_router(_api_router(), prefix="/api")
    app.include_router(_images_router())
    for router in config.routers:
        app.include_router(router)
    return app


# --- request parameters --------------------------------------------------------------------
# Every parameter is typed and bounded here; a request that does not fit is answered 422 by
# the one handler of inquire.web.errors. What only the library can judge (a known run, a
# column to sort by, the search text) is its InputError: 400, or 404 for an unknown name.
MAX_NAME = 200  # characters of a run name, group value or column name


def _blank_is_none(value: Any) -> Any:
    """An empty form field (``?k=``) is the parameter left out."""
    return None if value == "" else value


Name = Annotated[str, PathParam(max_length=MAX_NAME, description="a run's name, as listed")]
QueryId = Annotated[
    int, PathParam(ge=INT64_MIN, le=INT64_MAX, description="a query id (64-bit integer)")
]
ImageId = Annotated[
    int, PathParam(ge=INT64_MIN, le=INT64_MAX, description="an image id (64-bit integer)")
]
Cutoff = Annotated[
    Annotated[int, Field(ge=1)] | None,
    BeforeValidator(_blank_is_none),
    Query(description="how many results: 1 to the server's max_k (default 500)"),
]
Other = Annotated[
    str | None,
    Query(
        max_length=MAX_NAME,
        description="the run to compare with; empty: none; left out: the first other run",
    ),
]
Size = Annotated[
    Annotated[int, Field(ge=MIN_THUMB_SIZE, le=MAX_THUMB_SIZE)] | None,
    BeforeValidator(_blank_is_none),
    Query(description="longest side of a thumbnail in pixels; left out: the image itself"),
]
Text = Annotated[str, Field(max_length=MAX_NAME)]
Sort = Annotated[Text | None, BeforeValidator(_blank_is_none), Query()]
Group = Annotated[Text | None, BeforeValidator(_blank_is_none), Query()]


def _filters(
    supercategory: Group = None, category: Group = None, iconic_group: Group = None
) -> dict[str, str | None]:
    """The group filters of a query list, keyed as :data:`GROUP_COLUMNS`."""
    return dict(zip(GROUP_COLUMNS, (supercategory, category, iconic_group), strict=True))


Filters = Annotated[dict[str, str | None], Depends(_filters)]


def cut_off(k: int | None, default: int, max_k: int) -> int:
    """``k`` (already at least 1), or ``default`` when left out; above the configured
    ``max_k`` it is refused as FastAPI refuses any parameter out of bounds (422)."""
    if k is None:
        return default
    if k > max_k:
        raise invalid_parameter("query", "k", f"Input should be less than or equal to {max_k}", k)
    return k


def _other(catalog: Catalog, entry: RunEntry, compare: str | None) -> RunEntry | None:
    """The run to compare with: the named one, else the first other run that has a run file."""
    if compare == "":
        return None
    if compare is not None:
        return catalog.get_run(compare)
    for other in catalog.runs.values():
        if other.slug != entry.slug and other.run is not None:
            return other
    return None


# --- pages ---------------------------------------------------------------------------------
def _pages_router() -> APIRouter:
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    def runs_page(request: Request) -> Any:
        ctx = get_context(request)
        runs = ctx.catalog.runs_table()
        metrics: list[str] = []
        ks = {r["k"] for r in runs}
        for entry in ctx.catalog.runs.values():
            metrics.extend(m for m in entry.result.metrics if m not in metrics)
        return ctx.render(
            request, "runs.html", runs=runs, metrics=metrics, k=ks.pop() if len(ks) == 1 else None
        )

    @router.get("/runs/{slug}", response_class=HTMLResponse)
    def run_page(request: Request, slug: Name, filters: Filters, sort: Sort = None) -> Any:
        ctx = get_context(request)
        entry = ctx.catalog.get_run(slug)
        rows = ctx.catalog.queries_table(entry, filters, sort)
        keep = {g: v for g, v in filters.items() if v}
        sort_urls = {
            col: f"/runs/{slug}?" + urlencode(keep | {"sort": col})
            for col in ["query_id", *entry.result.metrics]
        }
        return ctx.render(
            request,
            "run.html",
            entry=entry,
            report=ctx.catalog.group_report(entry),
            level_titles=LEVEL_TITLES,
            reference=ctx.catalog.reference(entry),
            group_url=lambda level, group: f"/runs/{slug}?" + urlencode({level: group}),
            rows=rows,
            filters=filters,
            sort=sort,
            sort_urls=sort_urls,
            groups=ctx.catalog.group_values(entry),
            metrics=list(entry.result.metrics),
            k=entry.result.k,
            n_total=len(entry.result.per_query),
        )

    @router.get("/runs/{slug}/queries/{query_id}", response_class=HTMLResponse)
    def query_page(
        request: Request, slug: Name, query_id: QueryId, k: Cutoff = None, compare: Other = None
    ) -> Any:
        ctx = get_context(request)
        entry = ctx.catalog.get_run(slug)
        other = _other(ctx.catalog, entry, compare)
        kk = cut_off(k, entry.result.k, ctx.config.max_k)
        data = ctx.catalog.query_results(entry, query_id, kk, other)
        prev_q, next_q = ctx.catalog.neighbours(entry, query_id)
        keep = urlencode({"k": kk, "compare": other.slug if other is not None else ""})
        others = [e for e in ctx.catalog.runs.values() if e.slug != slug]
        return ctx.render(
            request,
            "query.html",
            entry=entry,
            data=data,
            others=others,
            other=other,
            metrics=list(entry.result.metrics),
            prev_url=f"/runs/{slug}/queries/{prev_q}?{keep}" if prev_q is not None else None,
            next_url=f"/runs/{slug}/queries/{next_q}?{keep}" if next_q is not None else None,
        )

    @router.get("/compare", response_class=HTMLResponse)
    def compare_page(
        request: Request,
        runs: Annotated[
            list[Annotated[str, Query(max_length=MAX_NAME)]],
            Query(max_length=100, description="the runs to compare (two or more)"),
        ] = [],  # noqa: B006 - FastAPI copies the default
        intersect: Annotated[
            bool, Query(description="compare on the queries every run has")
        ] = False,
    ) -> Any:
        ctx = get_context(request)
        slugs = runs
        try:
            cmp = ctx.catalog.compare(slugs, intersect=intersect)
        except InputError as exc:
            if intersect or "different queries" not in str(exc):
                raise
            # query sets differ: say so, and offer the comparison on the shared queries
            shared = "/compare?" + urlencode([("runs", s) for s in slugs] + [("intersect", "1")])
            return ctx.render(
                request,
                "error.html",
                status_code=400,
                status=400,
                message=str(exc),
                link=(shared, "Compare on the shared queries only"),
            )
        entries = [ctx.catalog.get_run(s) for s in dict.fromkeys(slugs)]
        return ctx.render(
            request,
            "compare.html",
            cmp=cmp,
            entries=entries,
            # the comparison names runs as unique_names does; the same order as the entries
            slug_of=dict(zip(cmp.runs, [e.slug for e in entries], strict=True)),
            intersect=intersect,
        )

    @router.get("/search", response_class=HTMLResponse)
    def search_page(request: Request, q: str = "", k: Cutoff = None) -> Any:
        ctx = get_context(request)
        kk = cut_off(k, ctx.config.search_k, ctx.config.max_k)
        results, error, status = None, None, 200
        if q.strip() and ctx.catalog.can_search:
            try:
                results = ctx.catalog.search(q, kk)
            except InputError as exc:  # shown above the form, so the user can fix the text
                error, status = public_message(str(exc)), 400
        examples = sorted(ctx.catalog.query_text.values())[:500]
        return ctx.render(
            request,
            "search.html",
            status_code=status,
            q=q,
            k=kk,
            results=results,
            error=error,
            examples=examples,
        )

    return router


# --- JSON API ------------------------------------------------------------------------------
def _api_router() -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    def health(request: Request) -> dict[str, Any]:
        ctx = get_context(request)
        return {
            "status": "ok",
            "runs": len(ctx.catalog.runs),
            "search": ctx.catalog.can_search,
            "images": len(ctx.catalog.images),
        }

    @router.get("/runs")
    def api_runs(request: Request) -> list[dict[str, Any]]:
        return get_context(request).catalog.runs_table()

    @router.get("/runs/{slug}/queries")
    def api_queries(
        request: Request, slug: Name, filters: Filters, sort: Sort = None
    ) -> list[dict[str, Any]]:
        ctx = get_context(request)
        return ctx.catalog.queries_table(ctx.catalog.get_run(slug), filters, sort)

    @router.get("/runs/{slug}/queries/{query_id}")
    def api_query(
        request: Request, slug: Name, query_id: QueryId, k: Cutoff = None, compare: Other = None
    ) -> dict[str, Any]:
        ctx = get_context(request)
        entry = ctx.catalog.get_run(slug)
        kk = cut_off(k, entry.result.k, ctx.config.max_k)
        data = ctx.catalog.query_results(entry, query_id, kk, _other(ctx.catalog, entry, compare))
        for item in data["results"]:
            item["thumb_url"] = thumb_url(item["image_id"])
        return data

    @router.get("/search")
    def api_search(request: Request, q: str = "", k: Cutoff = None) -> dict[str, Any]:
        ctx = get_context(request)
        kk = cut_off(k, ctx.config.search_k, ctx.config.max_k)
        items = ctx.catalog.search(q, kk)
        return {
            "q": q,
            "k": kk,
            "results": [it | {"thumb_url": thumb_url(it["image_id"])} for it in items],
        }

    return router


# --- images --------------------------------------------------------------------------------
def image_response(thumbs: ThumbnailCache, path: Path, size: int | None) -> Response:
    """The image at ``path`` (already resolved under a root), or its cached thumbnail with
    longest side ``size`` px. Extra routers serving their own collections use this too."""
    headers = {"Cache-Control": "public, max-age=3600"}
    if size is None:
        return FileResponse(path, media_type=image_format(path), headers=headers)
    # the bytes, not the file: it may be deleted to make room before a FileResponse reads it
    return Response(thumbs.read(path, size), media_type="image/jpeg", headers=headers)


def parquet_image_response(
    thumbs: ThumbnailCache, source: ParquetImages, image: ParquetImage, size: int | None
) -> Response:
    """An image inside a rerank parquet file, or its cached thumbnail (``size`` px); the
    bytes are read only when the thumbnail is not cached yet."""
    headers = {"Cache-Control": "public, max-age=3600"}
    if size is None:
        data, media_type = source.read(image)
        return Response(data, media_type=media_type, headers=headers)
    thumb = thumbs.read_bytes(image.source_key, lambda: source.read(image)[0], image.name, size)
    return Response(thumb, media_type="image/jpeg", headers=headers)


def _images_router() -> APIRouter:
    router = APIRouter()

    @router.get("/images/{image_id}")
    def image_by_id(request: Request, image_id: ImageId, size: Size = None) -> Response:
        ctx = get_context(request)
        image = ctx.catalog.image(image_id)
        if isinstance(image, ParquetImage):
            return parquet_image_response(ctx.thumbs, ctx.catalog.parquet_images, image, size)
        return image_response(ctx.thumbs, image, size)

    @router.get("/files/{root}/{path:path}")
    def image_by_path(
        request: Request,
        root: Annotated[int, PathParam(ge=0, le=INT64_MAX, description="an image root's number")],
        path: str,
        size: Size = None,
    ) -> Response:
        ctx = get_context(request)
        resolved = ctx.catalog.images.resolve(path, root_index=root)
        return image_response(ctx.thumbs, resolved, size)

    return router
