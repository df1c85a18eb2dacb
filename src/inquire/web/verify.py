"""The verification page and its JSON API, as a FastAPI router.

Mount it in any app (``app.include_router(make_router())``) or serve it alone with
``inquire collection serve`` (:func:`make_app`). All routes live under ``/verify``:

    GET  /verify                                        the page (with its CSRF token)
    GET  /verify/api/collections                        [{name, model_id, images}]
    GET  /verify/api/c/{name}/searches                  saved searches
    POST /verify/api/c/{name}/searches                  {text, like, taxa, date_from, date_to,
                                                         bbox, under, who}
                                                        -> {search_id, request, ranked}
    GET  /verify/api/c/{name}/searches/{sid}/results?offset&limit   results ranked so far
    POST /verify/api/c/{name}/searches/{sid}/results    {offset, limit}: rank more, that page
    PUT  /verify/api/c/{name}/searches/{sid}/marks      {image_id, who, mark} -> saved at once
    GET  /verify/api/c/{name}/searches/{sid}/summary?who            effort + agreement
    GET  /verify/api/c/{name}/searches/{sid}/trend.svg?by&who       inline SVG chart
    GET  /verify/api/c/{name}/searches/{sid}/efficiency.svg?who
    GET  /verify/api/c/{name}/searches/{sid}/export.{csv|parquet}?who
    GET  /verify/api/c/{name}/searches/{sid}/export/{inquire-search|dwca}?who&unverified
    GET  /verify/api/c/{name}/images/{image_id}?size    the photo (JPEG thumbnail with size)

No GET changes anything; POST / PUT need the page's Origin and CSRF token, and every route
a Host naming this server (:mod:`inquire.web.security`). Bodies and parameters are typed and
bounded (out of range or of the wrong type: 422 with a one-line message). ``like`` takes
image ids or paths relative to the collection's images folder only, looked up in its
database: no request makes the server open, decode, embed or test for existence a file
outside the collection. A search that is refused is not saved.

Handlers are plain functions (FastAPI runs them in threads); each request opens its own
SQLite connection, and WAL mode lets readers and one writer work at once.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from functools import lru_cache, wraps
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Body, Cookie, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from inquire.collection.actions import collections_overview
from inquire.collection.filters import parse_filters
from inquire.collection.search import SearchRequest
from inquire.collection.store import (
    Collection,
    CollectionIndex,
    records,
)
from inquire.collection.verify import Verification, table_bytes
from inquire.embed.base import Encoder
from inquire.errors import InputError, InquireError
from inquire.web.config import MAX_THUMB_SIZE
from inquire.web.errors import install_error_handlers
from inquire.web.images import (
    BadImagePath,
    ImageRoots,
    check_relative,
    image_format,
)
from inquire.web.resident import Resident
from inquire.web.security import (
    INT64_MAX,
    INT64_MIN,
    RequestGuard,
    check_request,
    csrf_token,
    error_status,
    public_message,
    secure,
)

F = TypeVar("F", bound=Callable[..., Any])

# Bounds of request values (beyond them a request is refused with 422).
MAX_TEXT = 2000  # characters of a search text
MAX_NAME = 200  # characters of a taxon, folder, date or bounding-box string
MAX_ITEMS = 50  # examples, taxa or folders in one search
MAX_OFFSET = 10**9  # results deep into a ranking
MAX_LIMIT = 500  # results per page
FIRST_PAGE = 24  # results ranked when a search is made
MIN_CHART_WIDTH, MAX_CHART_WIDTH = 280, 960  # px
_ID_TEXT = re.compile(r"^-?[0-9]{1,40}$")  # ASCII digits only: int() takes other digits too

Id = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]
Short = Annotated[str, Field(max_length=MAX_NAME)]
Who = Annotated[str, Field(max_length=64)]
CollName = Annotated[str, PathParam(max_length=64)]
SearchId = Annotated[str, PathParam(max_length=64)]
WhoQuery = Annotated[str | None, Query(max_length=64)]


class SearchBody(BaseModel):
    """``POST .../searches``: what to look for. ``like``: image ids of the collection, or
    paths relative to its images folder (one, or a list); nothing else is looked up."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field("", max_length=MAX_TEXT)
    like: Annotated[list[Id | Short], Field(max_length=MAX_ITEMS)] | Id | Short | None = None
    taxa: Annotated[list[Short], Field(max_length=MAX_ITEMS)] | Short = Field(default_factory=list)
    date_from: Short | None = None
    date_to: Short | None = None
    bbox: Short | Annotated[list[float], Field(max_length=4)] | None = None
    under: Annotated[list[Short], Field(max_length=MAX_ITEMS)] | Short = Field(default_factory=list)
    who: Who | None = None


class MoreBody(BaseModel):
    """``POST .../results``: rank results ``offset .. offset+limit`` if not ranked yet."""

    model_config = ConfigDict(extra="forbid")

    offset: StrictInt = Field(0, ge=0, le=MAX_OFFSET)
    limit: StrictInt = Field(FIRST_PAGE, ge=1, le=MAX_LIMIT)


class LearnBody(BaseModel):
    """``POST .../learn``: start a ranking round learnt from the marks (relevance feedback).

    ``shown``: the results the person has seen (those after it that nobody marked are
    replaced); ``model``: a row of :data:`inquire.collection.feedback.FEEDBACK_MODELS`."""

    model_config = ConfigDict(extra="forbid")

    shown: StrictInt = Field(0, ge=0, le=MAX_OFFSET)
    model: Literal["rocchio", "logistic"] = "rocchio"
    who: str | None = Field(None, max_length=64)
    depth: StrictInt = Field(FIRST_PAGE, ge=1, le=MAX_LIMIT)


class MarkBody(BaseModel):
    """``PUT .../marks``: ``who``'s mark on one ranked image (``clear`` removes it)."""

    model_config = ConfigDict(extra="forbid")

    image_id: Id
    mark: Literal["relevant", "not_relevant", "unsure", "clear"]
    who: Who | None = None


def _http_errors(fn: F) -> F:
    """InquireError -> HTTPException with the status of :func:`error_status` and the
    message as ``detail``, server paths replaced (:func:`public_message`). A decorator, not
    an exception handler, because a router mounted in another app brings no handlers."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InquireError as exc:
            raise HTTPException(error_status(exc), public_message(str(exc))) from None

    return wrapper  # type: ignore[return-value]


def _listed(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, list) else [value]


def example_ids(coll: Collection, like: Any) -> tuple[int, ...]:
    """Image ids of the examples ``like`` (ids, digit strings or paths relative to the
    collection's images folder), looked up in the collection's database only: no file is
    opened or even tested for existence. Anything else is an :class:`InputError`."""
    out: list[int] = []
    for item in _listed(like):
        if isinstance(item, int):
            out.append(int(item))
            continue
        text = str(item).strip()
        if _ID_TEXT.match(text):
            number = int(text)
            if not INT64_MIN <= number <= INT64_MAX:
                raise InputError(f"example {text[:40]} is out of range; ids are 64-bit integers")
            out.append(number)
            continue
        try:
            check_relative(text)
        except BadImagePath:
            raise InputError(
                f"example {text[:100]!r} is not an image id or a path relative to the "
                f"collection's images folder; give an id shown in the results"
            ) from None
        image_id = coll.image_id_of_relative(text)
        if image_id is None:
            raise InputError(
                f"example {text[:100]!r} is not a photo of collection {coll.name!r}; give an "
                "image id shown in the results or a path relative to its images folder"
            )
        out.append(image_id)
    if len(out) > MAX_ITEMS:
        raise InputError(f"{len(out)} example images; give at most {MAX_ITEMS}")
    return tuple(out)


def _ranking(
    res: Resident, v: Verification, req: SearchRequest
) -> tuple[SearchRequest, CollectionIndex, Encoder]:
    """What ranks the saved search ``req`` further: the request with its examples as ids
    (:func:`_stored_examples`), the collection's index and its encoder."""
    req = SearchRequest(req.text, _stored_examples(v.coll, req.like), req.filters)
    return req, res.index(v.coll), res.encoder(v.coll.model_id)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def make_router(
    collections_root: str | os.PathLike[str] | None = None, prefix: str = "/verify"
) -> APIRouter:
    """The verification routes for the collections under ``collections_root`` (default: the
    cache's ``collections`` folder, looked up per request).

    Every route checks the request's Host, and state-changing routes its Origin and CSRF
    token (:func:`inquire.web.security.check_request`), even in an app built without
    :func:`inquire.web.security.secure`."""
    res = Resident(Path(collections_root) if collections_root is not None else None)
    r = APIRouter(prefix=prefix, tags=["verify"], dependencies=[Depends(check_request)])

    @r.get("", response_class=HTMLResponse, include_in_schema=False)
    @r.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request) -> str:
        return _page(prefix, csrf_token(request))

    @r.get("/assets/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        # Script and style are files, not inline, so the pages work under a strict CSP.
        if name not in _ASSETS:
            raise HTTPException(404, f"no asset {name[:100]!r}")
        from importlib.resources import files

        body = (files("inquire.web") / "static" / name).read_bytes()
        return Response(body, media_type=_ASSETS[name])

    @r.get("/api/token", include_in_schema=False)
    def token(request: Request) -> Response:
        # A fresh CSRF token for a page whose token this server no longer knows (it was
        # restarted). Like the page itself, only a page of this origin can read it (no CORS
        # headers are ever sent), and a foreign Host is refused (check_request).
        body = json.dumps({"token": csrf_token(request)})
        return Response(body, media_type="application/json", headers={"cache-control": "no-store"})

    @r.get("/api/collections")
    @_http_errors
    def collections() -> list[dict[str, Any]]:
        table = collections_overview(res.root)  # no images_root: no server path leaves
        return [
            {"name": r["name"], "model_id": r["model_id"], "images": int(r["ok"])}
            for r in records(table)
        ]

    @r.get("/api/c/{name}/searches")
    @_http_errors
    def searches(name: CollName) -> list[dict[str, Any]]:
        with res.verification(name) as v:
            rows = [{str(k): x for k, x in row.items()} for row in v.searches().to_dict("records")]
            for row in rows:  # examples saved from the command line may be server paths
                req = json.loads(row["request"])
                req["like"] = _public_examples(v.coll, req.get("like") or [])
                row["request"] = json.dumps(req)
            return rows

    @r.post("/api/c/{name}/searches")
    @_http_errors
    def new_search(
        name: CollName,
        body: SearchBody = Body(...),
        inquire_who: str | None = Cookie(None, max_length=1024),
    ) -> dict[str, Any]:
        filters = parse_filters(
            _listed(body.taxa), body.date_from, body.date_to, body.bbox, _listed(body.under)
        )
        if len(filters.taxa) > MAX_ITEMS or len(filters.under) > MAX_ITEMS:
            raise InputError(f"too many taxa or folders; give at most {MAX_ITEMS} of each")
        with res.verification(name) as v:
            req = SearchRequest(body.text, example_ids(v.coll, body.like), filters)
            idx = res.index(v.coll)
            enc = res.encoder(v.coll.model_id)
            who = body.who or _cookie_who(inquire_who)
            sid = v.start_search(req, idx, enc, who, FIRST_PAGE)
            return {"search_id": sid, "request": req.as_dict(), "ranked": v.n_ranked(sid)}

    def _page_of(v: Verification, sid: str, offset: int, limit: int) -> dict[str, Any]:
        req = v.request(sid)
        df = v.results(sid, offset, limit)
        marks = v.marks(sid)
        by_image: dict[int, dict[str, str]] = {}
        for m in records(marks):
            by_image.setdefault(int(m["image_id"]), {})[str(m["who"])] = str(m["mark"])
        items = [
            {
                "rank": int(x["rank"]),
                "image_id": int(x["image_id"]),
                "score": float(x["score"]),
                "path": x["path"],
                "taxon": x["taxon"],
                "date": x["date"],
                "status": x["status"],
                "lat": _clean(x["lat"]),
                "lon": _clean(x["lon"]),
                "marks": by_image.get(int(x["image_id"]), {}),
                "round": int(x["round"]),
            }
            for x in records(df)
        ]
        rounds = v.rounds(sid)
        last = records(rounds.tail(1))
        request = req.as_dict()
        request["like"] = _public_examples(v.coll, request["like"])
        return {
            "search_id": sid,
            "request": request,
            "ranked": v.n_ranked(sid),
            "results": items,
            "round": int(last[0]["round"]) if last else 0,
            "round_model": str(last[0]["model"]) if last else "",
            "round_relevant": int(last[0]["n_relevant"]) if last else 0,
            "round_not_relevant": int(last[0]["n_not_relevant"]) if last else 0,
        }

    @r.get("/api/c/{name}/searches/{sid}/results")
    @_http_errors
    def results(
        name: CollName,
        sid: SearchId,
        offset: int = Query(0, ge=0, le=MAX_OFFSET),
        limit: int = Query(FIRST_PAGE, ge=1, le=MAX_LIMIT),
    ) -> dict[str, Any]:
        """The results ranked so far (reading never ranks more: POST does)."""
        with res.verification(name) as v:
            return _page_of(v, sid, offset, limit)

    @r.post("/api/c/{name}/searches/{sid}/results")
    @_http_errors
    def more_results(name: CollName, sid: SearchId, body: MoreBody = Body(...)) -> dict[str, Any]:
        """Rank the search down to ``offset + limit`` (if the collection has that many
        matches) and return that page."""
        with res.verification(name) as v:
            req = v.request(sid)
            ranked = v.n_ranked(sid)
            if body.offset > ranked:
                raise InputError(
                    f"offset {body.offset} is past the {ranked} results ranked so far; "
                    f"ask for offset {ranked} or less"
                )
            if body.offset + body.limit > ranked:
                req, idx, enc = _ranking(res, v, req)
                v.extend(sid, body.offset + body.limit, idx, enc, request=req)
            return _page_of(v, sid, body.offset, body.limit)

    @r.post("/api/c/{name}/searches/{sid}/learn")
    @_http_errors
    def learn(
        name: CollName,
        sid: SearchId,
        body: LearnBody = Body(...),
        inquire_who: str | None = Cookie(None, max_length=1024),
    ) -> dict[str, Any]:
        """Re-rank what nobody marked yet from the marks; returns the round and the first
        page of the new ranking (from ``after_rank``)."""
        who = body.who or _cookie_who(inquire_who)
        with res.verification(name) as v:
            req, idx, enc = _ranking(res, v, v.request(sid))
            fb = v.feedback(
                sid,
                idx,
                body.depth,
                encoder=enc,
                model=body.model,
                save=True,
                who=who,
                shown=body.shown,
                request=req,
            )
            info = fb.round or {}
            page = _page_of(v, sid, info["after_rank"], body.depth)
        return {**info, "results": page["results"], "ranked": page["ranked"]}

    @r.put("/api/c/{name}/searches/{sid}/marks")
    @_http_errors
    def put_mark(
        name: CollName,
        sid: SearchId,
        body: MarkBody = Body(...),
        inquire_who: str | None = Cookie(None, max_length=1024),
    ) -> dict[str, Any]:
        who = body.who or _cookie_who(inquire_who)
        with res.verification(name) as v:
            at = v.mark(sid, body.image_id, who, body.mark)
        return {"ok": True, "image_id": body.image_id, "who": who, "mark": body.mark, "at": at}

    @r.get("/api/c/{name}/searches/{sid}/summary")
    @_http_errors
    def summary(name: CollName, sid: SearchId, who: WhoQuery = None) -> dict[str, Any]:
        with res.verification(name) as v:
            eff = v.efficiency(sid, who or None)
            return {"efficiency": eff, "agreement": v.agreement(sid)}

    @r.get("/api/c/{name}/searches/{sid}/trend.svg")
    @_http_errors
    def trend_svg(
        name: CollName,
        sid: SearchId,
        by: str = Query("month", max_length=32),
        who: WhoQuery = None,
        width: int = Query(720, ge=MIN_CHART_WIDTH, le=MAX_CHART_WIDTH),
    ) -> Response:
        """The trend chart, ``width`` px wide (the page asks for its box's width, so the
        chart's text is drawn at its own size, never shrunk)."""
        from inquire.collection.charts import trend_svg as render

        with res.verification(name) as v:
            t = v.trend(sid, by, who or None)
            title = f"{v.request(sid).text or 'search'}: verified positives by {by}"
        return Response(render(t, title, width=width, by=by), media_type="image/svg+xml")

    @r.get("/api/c/{name}/searches/{sid}/efficiency.svg")
    @_http_errors
    def efficiency_svg(
        name: CollName,
        sid: SearchId,
        who: WhoQuery = None,
        width: int = Query(360, ge=MIN_CHART_WIDTH, le=MAX_CHART_WIDTH),
    ) -> Response:
        from inquire.collection.charts import efficiency_svg as render

        with res.verification(name) as v:
            curve = v.efficiency(sid, who or None)["curve"]
        return Response(render(curve, width=width), media_type="image/svg+xml")

    @r.get("/api/c/{name}/searches/{sid}/export.{fmt}")
    @_http_errors
    def export(
        name: CollName, sid: SearchId, fmt: Literal["csv", "parquet"], who: WhoQuery = None
    ) -> Response:
        """The marks as CSV (cells a spreadsheet would run as formulas are escaped) or
        parquet, built in memory. ``path`` is relative to the collection's images folder:
        no server path reaches a client."""
        media = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
        with res.verification(name) as v:
            df = _relative_paths(v.coll, v.export(sid, who or None))
        headers = {"content-disposition": f'attachment; filename="{name}-{sid}.{fmt}"'}
        return Response(table_bytes(df, fmt), media_type=media[fmt], headers=headers)

    @r.get("/api/c/{name}/searches/{sid}/export/{fmt}")
    @_http_errors
    def export_for_tool(
        name: CollName,
        sid: SearchId,
        fmt: Literal["inquire-search", "dwca"],
        who: WhoQuery = None,
        unverified: bool = False,
    ) -> Response:
        """INQUIRE-Search's CSV or a Darwin Core Archive (docs/interop.md), built in memory."""
        from inquire.collection.interop.exports import ExportOptions, build_export

        with res.verification(name) as v:
            f = build_export(v, sid, fmt, ExportOptions(who or None, unverified=unverified))
        headers = {"content-disposition": f'attachment; filename="{f.filename}"'}
        return Response(f.data, media_type=f.media_type, headers=headers)

    @r.get("/api/c/{name}/images/{image_id}")
    @_http_errors
    def image(
        name: CollName,
        image_id: int = PathParam(..., ge=INT64_MIN, le=INT64_MAX),
        size: int = Query(0, ge=0, le=MAX_THUMB_SIZE),
    ) -> Response:
        with res.collection(name) as coll:
            info = coll.images([image_id])
            root = coll.images_root
        rel = info["path"].iloc[0]
        if not isinstance(rel, str):
            raise HTTPException(404, f"image {image_id} of collection {name!r} has no file")
        # The same checks as every other image route: the real path (symlinks resolved)
        # must lie under the collection's folder and the file must be an image. The path
        # comes from the collection's database, so a backslash is part of a file name.
        path = ImageRoots([root]).resolve(rel, stored=True)
        if not size:
            return Response(path.read_bytes(), media_type=image_format(path))
        # Thumbnails as the main page makes them: upright (EXIF), cached on disk.
        return Response(res.thumbs().read(path, size), media_type="image/jpeg")

    return r


def _cookie_who(value: str | None) -> str:
    """The name in the ``inquire_who`` cookie: the page writes it percent-encoded
    (``encodeURIComponent``), so ``Jos%C3%A9`` is ``José``; at most 64 characters."""
    from urllib.parse import unquote

    who = unquote(value or "", errors="replace").strip()
    if len(who) > 64:
        raise InputError(
            f"the name in the inquire_who cookie has {len(who)} characters; use 64 or fewer"
        )
    return who


def _public_examples(coll: Collection, like: Sequence[Any]) -> list[str]:
    """A saved search's examples as a client may see them: ids as they are, paths relative to
    the collection's images folder; a file outside it (saved from the command line) by its
    file name only."""
    root = Path(coll.images_root)
    out = []
    for item in like:
        text = str(item)
        if not os.path.isabs(text):
            out.append(text)
            continue
        p = Path(text)
        try:
            out.append(p.relative_to(root).as_posix())
        except ValueError:
            out.append(f"(outside the collection) {p.name}")
    return out


def _relative_paths(coll: Collection, df: Any) -> Any:
    """An export with its ``path`` column relative to the collection's images folder (the
    library's export names absolute paths, for the command line)."""
    if len(df):
        info = coll.images([int(i) for i in df["image_id"]])
        df = df.copy()
        df["path"] = info["path"].to_numpy()
    return df


def _stored_examples(coll: Collection, like: Any) -> tuple[int, ...]:
    """The examples of a saved search as ids; a search saved from the command line with a
    file outside the collection as its example is refused (its path is not repeated)."""
    try:
        return example_ids(coll, list(like))
    except InputError:
        raise InputError(
            "this search has an example image outside the collection (saved from the command "
            "line); rank it further with `inquire search`, or search again on the page"
        ) from None


_ASSETS = {
    "verify.js": "text/javascript",
    "keyqueue.js": "text/javascript",
    "verify.css": "text/css",
}


@lru_cache(maxsize=1)
def _page_template() -> Any:
    import jinja2

    templates = Path(__file__).resolve().parent / "templates"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)), autoescape=jinja2.select_autoescape()
    )
    return env.get_template("collection_verify.html")


def _page(prefix: str, token: str) -> str:
    """The page, rendered by Jinja2 with autoescape as every page of the main app."""
    html: str = _page_template().render(assets=f"{prefix}/assets", csrf_token=token)
    return html


def make_app(
    collections_root: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    allowed_hosts: Sequence[str] = (),
    guard: RequestGuard | None = None,
) -> FastAPI:
    """A FastAPI app serving only the verification page (``inquire collection serve``),
    with the same security headers and request guard as :func:`inquire.web.app.create_app`:
    requests must name ``host`` (or a loopback name, or one of ``allowed_hosts``)."""
    app = FastAPI(
        title="inquire verify",
        docs_url=None,
        redoc_url=None,
        openapi_url="/verify/api/openapi.json",
    )
    secure(app, guard or RequestGuard(host, allowed_hosts))

    install_error_handlers(app)
    app.include_router(make_router(collections_root))
    return app


# For apps that mount routers by import: the cache's collections, under /verify.
router = make_router()
