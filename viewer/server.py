"""`bft view`'s local web server: the page and its JSON API, on 127.0.0.1 only, with nothing from a CDN.

Routes (all GET):

    /                     the page (`viewer/static/index.html`), its script and style under /static/
    /api/summary          rows per config and split, the run's counters (stats.json)
    /api/charts           what the summary draws: the stage funnel, reject reasons, score and length
                          histograms, as bins and counts (`viewer/charts.py`; computed once)
    /api/facets           a part's distinct statuses, stages, reasons, flag kinds and scores, with counts
    /api/rows             a page of matching rows: config, split, offset, limit and the filters
                          (status, stage, reason, flag, min_score, max_score, q)
    /api/sample           n rows picked at random among the matching ones (seed optional)
    /api/record           one whole row (config, split, row), with the rewrite's grounding highlight

Documents are written by strangers, so the page puts every text in with `textContent` (never as HTML),
and the server sends a Content-Security-Policy that allows only its own script: a document holding
`<script>` or an `onerror=` shows as text. Requests whose Host is not this server's loopback address are
refused (a web page elsewhere cannot read the data through DNS rebinding).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from aiohttp import web

from bft.generation.errors import ConfigError
from bft.viewer.charts import chart_data
from bft.viewer.data import Filters, Folder

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"viewer.js": "text/javascript", "charts.js": "text/javascript", "viewer.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _int(query, name: str, default: int) -> int:
    value = query.get(name, "")
    try:
        return int(value) if value != "" else default
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a whole number") from None


def make_app(folder: Folder) -> web.Application:
    """The viewer's aiohttp application over `folder`."""

    @web.middleware
    async def guard(request: web.Request, handler):
        host = request.host.rsplit(":", 1)[0].strip("[]")
        if host not in ("127.0.0.1", "localhost", "::1"):
            return web.Response(status=403, text="bft view answers on 127.0.0.1 only")
        try:
            response = await handler(request)
        except ConfigError as error:
            response = web.json_response({"error": str(error)}, status=400)
        response.headers.update(SECURITY_HEADERS)
        return response

    def part_args(request):
        query = request.query
        return query.get("config", ""), query.get("split", "train")

    async def index(request):
        return web.FileResponse(STATIC / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})

    async def static(request):
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / name, headers={"Content-Type": f"{STATIC_FILES[name]}; charset=utf-8"})

    async def no_icon(request):
        return web.Response(status=204)

    async def summary(request):
        return web.json_response(folder.summary())

    async def in_thread(function, *args):  # parquet scans run beside the loop, which keeps answering
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)

    charts: dict = {}
    charts_lock = asyncio.Lock()

    async def chart_summary(request):  # read every row group once, then answered from memory
        async with charts_lock:
            if "data" not in charts:
                charts["data"] = await in_thread(chart_data, folder)
        return web.json_response(charts["data"])

    async def facets(request):
        config, split = part_args(request)
        return web.json_response(await in_thread(lambda: folder.part(config, split).facets()))

    async def rows(request):
        config, split = part_args(request)
        filters = Filters.from_query(request.query)
        offset, limit = _int(request.query, "offset", 0), _int(request.query, "limit", 50)
        return web.json_response(await in_thread(folder.page, config, split, filters, offset, limit))

    async def sample(request):
        config, split = part_args(request)
        filters = Filters.from_query(request.query)
        size = _int(request.query, "n", 10)
        seed = _int(request.query, "seed", -1)
        page = await in_thread(folder.sample, config, split, filters, size, None if seed < 0 else seed)
        return web.json_response(page)

    async def record(request):
        config, split = part_args(request)
        return web.json_response(await in_thread(folder.record, config, split, _int(request.query, "row", 0)))

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/favicon.ico", no_icon)
    app.router.add_get("/api/summary", summary)
    app.router.add_get("/api/charts", chart_summary)
    app.router.add_get("/api/facets", facets)
    app.router.add_get("/api/rows", rows)
    app.router.add_get("/api/sample", sample)
    app.router.add_get("/api/record", record)
    return app


class ViewerServer:
    """The viewer served from a thread of its own (for `bft view` and for tests): `with ViewerServer(p) as s`."""

    def __init__(self, path: Path, port: int = 0, host: str = "127.0.0.1"):
        self.folder = Folder(path)
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> ViewerServer:
        self._thread = threading.Thread(target=self._serve, name="bft-view", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise ConfigError(f"bft view: cannot listen on {self.host}:{self.port} ({self._error})")
        return self

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = web.AppRunner(make_app(self.folder), access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
        except OSError as error:
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ViewerServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
