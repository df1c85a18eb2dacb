"""The verification page and its JSON API, as a FastAPI router.

Mount it in any app (``app.include_router(make_router())``) or serve it alone with
``inquire collection serve`` (:func:`make_app`). All routes live under ``/verify``:

    GET  /verify                                        the page
    GET  /verify/api/collections                        [{name, model_id, images}]
    GET  /verify/api/c/{name}/searches                  saved searches
    POST /verify/api/c/{name}/searches                  {text, like, taxa, date_from, date_to,
                                                         bbox, who} -> {search_id, request}
    GET  /verify/api/c/{name}/searches/{sid}/results?offset&limit   ranked results + marks
    PUT  /verify/api/c/{name}/searches/{sid}/marks      {image_id, who, mark} -> saved at once
    GET  /verify/api/c/{name}/searches/{sid}/summary?who            effort + agreement
    GET  /verify/api/c/{name}/searches/{sid}/trend.svg?by&who       inline SVG chart
    GET  /verify/api/c/{name}/searches/{sid}/efficiency.svg?who
    GET  /verify/api/c/{name}/searches/{sid}/export.{csv|parquet}?who
    GET  /verify/api/c/{name}/images/{image_id}?size    the photo (JPEG thumbnail with size)

Handlers are plain functions (FastAPI runs them in threads); each request opens its own
SQLite connection, and WAL mode lets readers and one writer work at once.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Body, Cookie, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from inquire.collection.filters import parse_filters
from inquire.collection.search import SearchRequest
from inquire.collection.store import (
    Collection,
    CollectionIndex,
    list_collections,
    open_collection,
    records,
)
from inquire.collection.verify import Verification, write_table
from inquire.config import cache_dir
from inquire.embed.base import Encoder
from inquire.errors import InquireError, UnknownNameError
from inquire.web.config import MAX_THUMB_SIZE
from inquire.web.images import ImageError, ImageRoots, ThumbnailCache, image_format

F = TypeVar("F", bound=Callable[..., Any])


def _http_errors(fn: F) -> F:
    """InquireError -> HTTP 400 (404 for unknown names) with the message as ``detail``."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UnknownNameError as exc:
            raise HTTPException(404, str(exc)) from None
        except InquireError as exc:
            raise HTTPException(400, str(exc)) from None

    return wrapper  # type: ignore[return-value]


class _Resident:
    """Search indexes and encoders kept in memory between requests, reloaded when the
    collection's generation changes (after ``inquire collection update``)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.indexes: dict[str, CollectionIndex] = {}
        self.encoders: dict[str, Encoder] = {}
        self._thumbs: ThumbnailCache | None = None

    def collection(self, name: str) -> Collection:
        return open_collection(name, self.root)

    def index(self, coll: Collection) -> CollectionIndex:
        with self.lock:
            idx = self.indexes.get(coll.name)
            if idx is None or idx.generation != coll.generation:
                idx = self.indexes[coll.name] = coll.index()
            return idx

    def thumbs(self) -> ThumbnailCache:
        with self.lock:
            if self._thumbs is None:
                self._thumbs = ThumbnailCache(cache_dir("web", "thumbs"))
            return self._thumbs

    def encoder(self, model_id: str) -> Encoder:
        with self.lock:
            if model_id not in self.encoders:
                from inquire.embed.models import load_encoder

                self.encoders[model_id] = load_encoder(model_id)
            return self.encoders[model_id]

    @contextmanager
    def verification(self, name: str) -> Iterator[Verification]:
        coll = self.collection(name)
        v = Verification(coll)
        try:
            yield v
        finally:
            v.close()
            coll.close()


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def make_router(
    collections_root: str | os.PathLike[str] | None = None, prefix: str = "/verify"
) -> APIRouter:
    """The verification routes for the collections under ``collections_root`` (default: the
    cache's ``collections`` folder, looked up per request)."""
    res = _Resident(Path(collections_root) if collections_root is not None else None)
    r = APIRouter(prefix=prefix, tags=["verify"])

    @r.get("", response_class=HTMLResponse, include_in_schema=False)
    @r.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return _page(prefix)

    @r.get("/assets/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        # Script and style are files, not inline, so the pages work under a strict CSP.
        if name not in _ASSETS:
            raise HTTPException(404, f"no asset {name!r}")
        from importlib.resources import files

        body = (files("inquire.web") / "static" / name).read_bytes()
        return Response(body, media_type=_ASSETS[name])

    @r.get("/api/collections")
    @_http_errors
    def collections() -> list[dict[str, Any]]:
        out = []
        for name in list_collections(res.root):
            c = res.collection(name)
            try:
                n_ok = c.counts().get("ok", 0)
                out.append({"name": name, "model_id": c.model_id, "images": n_ok})
            finally:
                c.close()
        return out

    @r.get("/api/c/{name}/searches")
    @_http_errors
    def searches(name: str) -> list[dict[str, Any]]:
        with res.verification(name) as v:
            return [{str(k): x for k, x in row.items()} for row in v.searches().to_dict("records")]

    @r.post("/api/c/{name}/searches")
    @_http_errors
    def new_search(
        name: str,
        body: dict[str, Any] = Body(...),
        inquire_who: str | None = Cookie(None),
    ) -> dict[str, Any]:
        like = body.get("like") or []
        like = [like] if isinstance(like, (str, int)) else like
        filters = parse_filters(
            body.get("taxa") or [],
            body.get("date_from"),
            body.get("date_to"),
            body.get("bbox"),
            body.get("under") or [],
        )
        req = SearchRequest(
            str(body.get("text") or ""), tuple(str(x).strip() for x in like), filters
        )
        with res.verification(name) as v:
            idx = res.index(v.coll)
            enc = res.encoder(v.coll.model_id)
            sid = v.save_search(req, str(body.get("who") or inquire_who or ""))
            n = v.extend(sid, 24, idx, enc)
            return {"search_id": sid, "request": req.as_dict(), "ranked": n}

    @r.get("/api/c/{name}/searches/{sid}/results")
    @_http_errors
    def results(
        name: str, sid: str, offset: int = Query(0, ge=0), limit: int = Query(24, ge=1, le=500)
    ) -> dict[str, Any]:
        with res.verification(name) as v:
            req = v.request(sid)
            n = v.extend(sid, offset + limit, res.index(v.coll), res.encoder(v.coll.model_id))
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
                }
                for x in records(df)
            ]
            return {"search_id": sid, "request": req.as_dict(), "ranked": n, "results": items}

    @r.put("/api/c/{name}/searches/{sid}/marks")
    @_http_errors
    def put_mark(
        name: str,
        sid: str,
        body: dict[str, Any] = Body(...),
        inquire_who: str | None = Cookie(None),
    ) -> dict[str, Any]:
        who = str(body.get("who") or inquire_who or "")
        try:
            image_id = int(body.get("image_id"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise HTTPException(
                400, f"image_id {body.get('image_id')!r} is not an integer"
            ) from None
        with res.verification(name) as v:
            at = v.mark(sid, image_id, who, str(body.get("mark") or ""))
        return {"ok": True, "image_id": image_id, "who": who, "mark": body.get("mark"), "at": at}

    @r.get("/api/c/{name}/searches/{sid}/summary")
    @_http_errors
    def summary(name: str, sid: str, who: str | None = None) -> dict[str, Any]:
        with res.verification(name) as v:
            eff = v.efficiency(sid, who or None)
            return {"efficiency": eff, "agreement": v.agreement(sid)}

    @r.get("/api/c/{name}/searches/{sid}/trend.svg")
    @_http_errors
    def trend_svg(name: str, sid: str, by: str = "month", who: str | None = None) -> Response:
        from inquire.collection.charts import trend_svg as render

        with res.verification(name) as v:
            t = v.trend(sid, by, who or None)
            title = f"{v.request(sid).text or 'search'}: verified positives by {by}"
        return Response(render(t, title, by=by), media_type="image/svg+xml")

    @r.get("/api/c/{name}/searches/{sid}/efficiency.svg")
    @_http_errors
    def efficiency_svg(name: str, sid: str, who: str | None = None) -> Response:
        from inquire.collection.charts import efficiency_svg as render

        with res.verification(name) as v:
            curve = v.efficiency(sid, who or None)["curve"]
        return Response(render(curve), media_type="image/svg+xml")

    @r.get("/api/c/{name}/searches/{sid}/export.{fmt}")
    @_http_errors
    def export(name: str, sid: str, fmt: str, who: str | None = None) -> Response:
        media = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
        if fmt not in media:
            raise HTTPException(404, f"export format {fmt!r} is not csv or parquet")
        with res.verification(name) as v:
            df = v.export(sid, who or None)
            tmp_dir = v.coll.folder / "exports"
            tmp_dir.mkdir(exist_ok=True)
            out = write_table(df, tmp_dir / f"{sid}-{threading.get_ident()}.{fmt}")
        data = out.read_bytes()
        out.unlink()
        headers = {"content-disposition": f'attachment; filename="{name}-{sid}.{fmt}"'}
        return Response(data, media_type=media[fmt], headers=headers)

    @r.get("/api/c/{name}/images/{image_id}")
    @_http_errors
    def image(name: str, image_id: int, size: int = Query(0, ge=0, le=MAX_THUMB_SIZE)) -> Response:
        coll = res.collection(name)
        try:
            info = coll.images([image_id])
            root = coll.images_root
        finally:
            coll.close()
        rel = info["path"].iloc[0]
        if not isinstance(rel, str):
            raise HTTPException(404, f"image {image_id} of collection {name!r} has no file")
        try:
            # The same checks as every other image route: the real path (symlinks resolved)
            # must lie under the collection's folder and the file must be an image.
            path = ImageRoots([root]).resolve(rel)
            if not size:
                return Response(path.read_bytes(), media_type=image_format(path))
            # Thumbnails as the main page makes them: upright (EXIF), cached on disk.
            thumb = res.thumbs().get(path, size)
        except ImageError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return Response(thumb.read_bytes(), media_type="image/jpeg")

    return r


_ASSETS = {"verify.js": "text/javascript", "verify.css": "text/css"}


def _page(prefix: str) -> str:
    from importlib.resources import files

    html = (files("inquire.web") / "templates" / "collection_verify.html").read_text("utf-8")
    return html.replace("{{ASSETS}}", f"{prefix}/assets")


def make_app(collections_root: str | os.PathLike[str] | None = None) -> FastAPI:
    """A FastAPI app serving only the verification page (``inquire collection serve``)."""
    app = FastAPI(title="inquire verify")
    app.include_router(make_router(collections_root))
    return app


# For apps that mount routers by import: the cache's collections, under /verify.
router = make_router()
