"""``plm-index serve``: a local web app over one index — a search page, a JSON API, thumbnails, videos.

Built on Starlette (routing, range-aware file responses) served by uvicorn, with a Jinja2 page.
The index is opened once when the app is made (and re-opened, between requests, only when a
periodic sync finds newly committed videos); every request ranks through
``search.run.search_moments``, the same call the CLI makes, and the JSON API answers with the
CLI's own ``search.render.moment_dict``.

Videos: a local file is sent with HTTP range requests (so the player can seek); a remote one
(``gs://``, ``s3://``, ``http(s)://``) is streamed through the server range by range with
``core.storage``. Only the videos the index holds are served: ``/video`` and ``/thumbnail`` answer
404 for any uri that is not exactly one of the index's, so ``/video?uri=/etc/passwd`` and path
tricks (``..``, ``file://``, symlinked names) reach nothing. The server binds 127.0.0.1 unless told
otherwise, and then also refuses requests whose Host header is not a loopback name (DNS rebinding).
"""

from __future__ import annotations

import json
import logging
import math
import mimetypes
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pyarrow.compute as pc
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from core import storage
from core.paths import local_path
from search.engine import DEFAULT_MODE, MODES, SearchEngine
from search.moments import DEFAULT_MERGE_GAP_S, Moment
from search.query import SearchFilters, SearchQueryError
from search.render import clock, moment_dict, thumbnail_jpeg
from search.run import search_moments

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
# How often a running server looks for newly committed videos (a sync of an unchanged 1M-row index: 0.25 s).
DEFAULT_REFRESH_S = 30.0
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
MAX_LIMIT = 100
# Remote videos are streamed in pieces of this many bytes; an open-ended range is cut to this many.
STREAM_CHUNK = 1 << 20
MAX_REMOTE_RANGE = 8 << 20
THUMBNAIL_CACHE = 512
TEMPLATES = Path(__file__).with_name("templates")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class ServeError(ValueError):
    """A request the server will not answer as asked (a bad parameter); says which and what to send."""


def _float_param(request: Request, name: str) -> float | None:
    value = request.query_params.get(name, "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise ServeError(f"{name!r} must be a number of seconds, not {value[:40]!r}") from None
    if not math.isfinite(number):
        raise ServeError(f"{name!r} must be a finite number of seconds, not {value[:40]!r}")
    return number


class IndexApp:
    """One opened index and the handlers that answer for it (kept apart from Starlette for tests' sake)."""

    def __init__(self, index: str, embedding_model: str | None = None) -> None:
        self.index = index
        self.embedding_model = embedding_model
        self.engine = SearchEngine.open(index, embedding_model)
        self.uris, self.tasks = self._catalogue(self.engine)
        self._lock = threading.Lock()
        self._thumbs: OrderedDict[tuple[str, float], bytes] = OrderedDict()
        self._sizes: dict[str, int] = {}
        env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
        env.filters["clock"] = clock
        self.page = env.get_template("search.html")

    @staticmethod
    def _signature(engine: SearchEngine) -> tuple:
        """What the opened derived index holds: its parts and their dead rows."""
        return tuple((p.name, p.rows, 0 if p.dead is None else len(p.dead)) for p in engine.store.parts)

    def refresh(self) -> bool:
        """Sync the derived index with the Parquet index and, if it changed, swap in the new one.

        Returns whether it changed. Queries keep running on the old engine until the swap.
        """
        fresh = SearchEngine.open(self.index, self.embedding_model)
        if self._signature(fresh) == self._signature(self.engine):
            return False
        catalogue = self._catalogue(fresh)
        with self._lock:
            self.engine = fresh
            self.uris, self.tasks = catalogue
            self._sizes.clear()
        log.info("search index of %s refreshed: %d units", self.index, fresh.num_rows)
        return True

    def refresh_every(self, seconds: float, stop: threading.Event) -> None:
        """Call ``refresh`` every ``seconds`` until ``stop`` is set (a failed refresh is logged, not fatal)."""
        while not stop.wait(seconds):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the server keeps answering from the index it has
                log.warning("could not refresh the search index of %s: %s", self.index, exc)

    @staticmethod
    def _catalogue(engine: SearchEngine) -> tuple[frozenset[str], list[str]]:
        """The uris the index holds (the only videos served) and its tasks (the task filter's choices)."""
        uris: set[str] = set()
        tasks: set[str] = set()
        for part in engine.store.parts:
            if not part.rows:
                continue
            table = part.columns(["uri", "task"])
            mask = part.live_mask()
            if mask is not None:
                table = table.filter(mask)
            uris.update(pc.unique(table.column("uri")).to_pylist())
            tasks.update(pc.unique(table.column("task")).to_pylist())
        uris.update(engine.store.copies)  # identical copies are shown under their own names (index.read rule 8)
        uris.discard(None)
        tasks.discard(None)
        return frozenset(uris), sorted(tasks)

    # --- the one search call, shared by the page and the API ---------------------------------------

    def request_args(self, request: Request) -> dict:
        """The search request's parameters, checked (``ServeError`` names a bad one)."""
        params = request.query_params
        mode = params.get("mode") or DEFAULT_MODE
        if mode not in MODES:
            raise ServeError(f"'mode' must be one of {', '.join(MODES)}, not {mode[:40]!r}")
        limit_text = params.get("limit") or "10"
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise ServeError(f"'limit' must be a whole number from 1 to {MAX_LIMIT}, not {limit_text[:40]!r}")
        task = params.get("task") or None
        filters = SearchFilters(video=params.get("video") or None, task=task,
                                start_s=_float_param(request, "from"), end_s=_float_param(request, "to"))
        return {"query": params.get("q", ""), "mode": mode, "limit": int(limit_text), "filters": filters}

    def search(self, query: str, mode: str, limit: int, filters: SearchFilters) -> list[Moment]:
        """Rank through ``search.run.search_moments`` on the opened engine (one query at a time)."""
        with self._lock:
            return search_moments(self.engine, query, limit, mode=mode, filters=filters,
                                  merge_gap_s=DEFAULT_MERGE_GAP_S)

    def api_search(self, request: Request) -> Response:
        """``GET /api/search?q=...``: the moments as the CLI's ``--json`` gives them.

        The ``Server-Timing`` header says how long the server itself took (checking, ranking, JSON).
        """
        started = time.perf_counter()
        try:
            args = self.request_args(request)
            moments = self.search(**args)
        except (ServeError, SearchQueryError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        body = json.dumps({"query": args["query"], "mode": args["mode"], "searched": self.engine.num_rows,
                           "moments": [moment_dict(m) for m in moments]}, ensure_ascii=False).encode()
        spent_ms = (time.perf_counter() - started) * 1000
        return Response(body, media_type="application/json", headers={"server-timing": f"search;dur={spent_ms:.2f}"})

    def api_stats(self, request: Request) -> Response:
        """``GET /api/stats``: what the opened index holds (units, videos, tasks)."""
        return JSONResponse({"index": self.index, "units": self.engine.num_rows, "videos": len(self.uris),
                             "tasks": self.tasks})

    def home(self, request: Request) -> Response:
        """``GET /``: the page — query box, filters, player, and result cards when a query is given."""
        params = request.query_params
        error, moments, args = None, [], None
        if params.get("q", "").strip():
            try:
                args = self.request_args(request)
                moments = self.search(**args)
            except (ServeError, SearchQueryError) as exc:
                error = str(exc)
        cards = [{"rank": rank, "m": m, "video_url": "/video?" + urlencode({"uri": m.uri}),
                  "thumb_url": "/thumbnail?" + urlencode({"uri": m.uri, "t": f"{(m.start_s + m.end_s) / 2:.3f}"})}
                 for rank, m in enumerate(moments, start=1)]
        html = self.page.render(params=params, cards=cards, error=error, tasks=self.tasks, modes=MODES,
                                mode=params.get("mode") or DEFAULT_MODE, searched=self.engine.num_rows,
                                searched_for=args is not None, index=self.index)
        return HTMLResponse(html, status_code=400 if error else 200)

    # --- the index's own videos only ---------------------------------------------------------------

    def allowed_uri(self, request: Request) -> str | None:
        """The requested uri if the index holds exactly it, else None."""
        uri = request.query_params.get("uri", "")
        return uri if uri in self.uris else None

    def video(self, request: Request) -> Response:
        """``GET /video?uri=...``: one of the index's videos, with range requests."""
        uri = self.allowed_uri(request)
        if uri is None:
            return Response("not a video of this index", status_code=404, media_type="text/plain")
        media_type = mimetypes.guess_type(uri)[0] or "application/octet-stream"
        if not storage.opens_by_path(uri):  # remote objects and tar members, range by range
            return self._remote_video(request, uri, media_type)
        path = local_path(uri)
        if not os.path.isfile(path):
            return Response(f"the index names {uri} but it is not there", status_code=404, media_type="text/plain")
        return FileResponse(path, media_type=media_type)

    def _remote_video(self, request: Request, uri: str, media_type: str) -> Response:
        size = self._sizes.get(uri)
        if size is None:
            try:
                size = self._sizes[uri] = storage.size_of(uri)
            except FileNotFoundError:
                return Response(f"the index names {uri} but it is not there", status_code=404,
                                media_type="text/plain")
        headers = {"accept-ranges": "bytes"}
        wanted = request.headers.get("range")
        if wanted is None:
            start, end, status = 0, size, 200
        else:
            match = _RANGE.match(wanted.strip())
            if not match or (not match[1] and not match[2]):
                return Response("only one byte range (bytes=START-END) is served", status_code=416,
                                headers={"content-range": f"bytes */{size}"})
            if match[1]:
                start = int(match[1])
                end = min(int(match[2]) + 1, size) if match[2] else min(start + MAX_REMOTE_RANGE, size)
            else:  # bytes=-N: the last N bytes
                start, end = max(size - int(match[2]), 0), size
            if start >= size or end <= start:
                return Response("range not satisfiable", status_code=416, headers={"content-range": f"bytes */{size}"})
            status = 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        headers["content-length"] = str(end - start)

        def pieces() -> Iterator[bytes]:
            for at in range(start, end, STREAM_CHUNK):
                yield storage.read_bytes(uri, at, min(at + STREAM_CHUNK, end))

        return StreamingResponse(pieces(), status_code=status, headers=headers, media_type=media_type)

    def thumbnail(self, request: Request) -> Response:
        """``GET /thumbnail?uri=...&t=SECONDS``: a JPEG of one of the index's videos at ``t``."""
        uri = self.allowed_uri(request)
        if uri is None:
            return Response("not a video of this index", status_code=404, media_type="text/plain")
        try:
            at = max(_float_param(request, "t") or 0.0, 0.0)
        except ServeError as exc:
            return Response(str(exc), status_code=400, media_type="text/plain")
        key = (uri, round(at, 2))
        data = self._thumbs.get(key)
        if data is None:
            try:
                data = thumbnail_jpeg(uri, at)
            except Exception as exc:  # noqa: BLE001 - a missing or unreadable video gets no picture, the page stays
                log.warning("no thumbnail for %s at %.2f s: %s", uri, at, exc)
                return Response(f"no thumbnail: {type(exc).__name__}", status_code=404, media_type="text/plain")
            self._thumbs[key] = data
            while len(self._thumbs) > THUMBNAIL_CACHE:
                self._thumbs.popitem(last=False)
        return Response(data, media_type="image/jpeg", headers={"cache-control": "max-age=3600"})


def create_app(index: str, embedding_model: str | None = None, host: str = DEFAULT_HOST) -> Starlette:
    """The web app over the index at ``index`` (opened now, once).

    Bound to a loopback address, it answers only requests addressed to a loopback name.
    """
    app_state = IndexApp(index, embedding_model)
    middleware = []
    if host in LOOPBACK_HOSTS:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_HOSTS)))
    routes = [Route("/", app_state.home), Route("/api/search", app_state.api_search),
              Route("/api/stats", app_state.api_stats),
              Route("/video", app_state.video), Route("/thumbnail", app_state.thumbnail)]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.index_app = app_state
    return app


def serve(index: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, embedding_model: str | None = None,
          refresh_s: float = DEFAULT_REFRESH_S) -> None:
    """Open the index and serve it until interrupted, picking up newly committed videos every
    ``refresh_s`` seconds (0: never)."""
    import uvicorn

    app = create_app(index, embedding_model, host)
    state: IndexApp = app.state.index_app
    print(f"serving {index} ({state.engine.num_rows} units, {len(state.uris)} videos) at http://{host}:{port}/",
          flush=True)
    stop = threading.Event()
    if refresh_s > 0:
        threading.Thread(target=state.refresh_every, args=(refresh_s, stop), name="refresh", daemon=True).start()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        stop.set()


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_REFRESH_S", "IndexApp", "ServeError", "create_app", "serve"]
