"""The page's HTTP side (aiohttp): ``/`` the page, ``/static/*`` its script and style,
``/events`` the live updates (server-sent events), ``/media/{section}/{key}`` input media.

``ResultsPage.attach`` adds the routes to an application and starts the readers with
it (``streamproc ui`` serves a page of its own; the worker mounts it on its HTTP port when
``http.ui`` is on). Each browser gets at most one update every ``UPDATE_INTERVAL_S``
holding what changed since its last one, so its work stays bounded at any result rate.
"""

from __future__ import annotations

import asyncio
import json
import logging
from importlib import resources
from typing import Any

from aiohttp import web

from streamproc.config import Settings
from streamproc.engine.keys import RedisKeys
from streamproc.redis_clients import async_redis
from streamproc.ui.board import Board
from streamproc.ui.sources import dead_letter_handler, follow_feeds, follow_topic, media_handler

log = logging.getLogger(__name__)

UPDATE_INTERVAL_S = 0.25
QUIET_UPDATE_S = 1.0
"""With no change, the figures are still refreshed this often."""
READER_STOP_S = 10.0
"""How long shutdown waits for the cancelled readers (each closes its Kafka or Redis client)."""
STATIC = {"ui.js": "text/javascript", "ui.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class ResultsPage:
    """The live results page for one settings object: its board, readers and routes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.board = Board()
        self._closing = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        files = resources.files("streamproc.ui") / "static"
        self._files = {name: (files / name).read_bytes() for name in ("index.html", *STATIC)}

    def attach(self, app: web.Application) -> None:
        """Add the page's routes to ``app``; its readers run while ``app`` does."""
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/events", self._events)
        app.router.add_get("/media/{section}/{key}", self._media)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._shutdown)

    async def _start(self, _: web.Application) -> None:
        s = self.settings
        redis = async_redis(s.redis)
        readers = [
            follow_feeds(redis, RedisKeys(s.redis.key_prefix), self.board),
            follow_topic(s.kafka, s.kafka.dead_letter_topic, "dead letters", self.board, dead_letter_handler),
        ]
        for topic in sorted(set(s.kafka.input_topics.values())):
            readers.append(follow_topic(s.kafka, topic, f"media from {topic}", self.board, media_handler))
        self._tasks = [asyncio.create_task(reader) for reader in readers]
        self._tasks.append(asyncio.create_task(self._close_on_cancel(redis)))

    async def _close_on_cancel(self, redis: Any) -> None:
        try:
            await self._closing.wait()
        finally:
            await redis.aclose()

    async def _shutdown(self, _: web.Application) -> None:
        """Cancel the readers and wait for them, at most ``READER_STOP_S``: a client that
        hangs while it closes must not hold up the worker's shutdown."""
        self._closing.set()
        for task in self._tasks:
            task.cancel()
        if not self._tasks:
            return
        done, pending = await asyncio.wait(self._tasks, timeout=READER_STOP_S)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.warning("results page: a reader ended with %r", task.exception())
        for task in pending:
            log.warning("results page: a reader did not stop within %.0f s: %s", READER_STOP_S, task.get_coro())

    async def _index(self, _: web.Request) -> web.Response:
        return web.Response(body=self._files["index.html"], content_type="text/html", headers=SECURITY_HEADERS)

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=self._files[name], content_type=STATIC[name], headers=SECURITY_HEADERS)

    async def _media(self, request: web.Request) -> web.Response:
        media = self.board.media.get(request.match_info["section"], request.match_info["key"])
        if media is None:
            raise web.HTTPNotFound(text="no such media in the page's recent inputs")
        return web.Response(
            body=media.data,
            content_type=media.content_type,
            headers={**SECURITY_HEADERS, "Cache-Control": "private, max-age=3600"},
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``update`` messages, each what changed since the last one."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        seq = _last_event_id(request)
        if seq > self.board.seq:  # the page restarted since this browser's last update
            seq = 0
        quiet, sent = 0.0, False
        try:
            while not self._closing.is_set():
                if not sent or self.board.seq != seq or quiet >= QUIET_UPDATE_S:
                    changes = self.board.changes_since(seq)
                    seq = changes["seq"]
                    payload = json.dumps(changes, ensure_ascii=False, separators=(",", ":"))
                    await response.write(f"id: {seq}\nevent: update\ndata: {payload}\n\n".encode())
                    quiet, sent = 0.0, True
                try:
                    await asyncio.wait_for(self._closing.wait(), UPDATE_INTERVAL_S)
                except TimeoutError:
                    quiet += UPDATE_INTERVAL_S
        except ConnectionResetError:
            pass  # the browser went away
        return response


def _last_event_id(request: web.Request) -> int:
    try:
        return max(0, int(request.headers.get("Last-Event-ID", "0")))
    except ValueError:
        return 0


def serve(settings: Settings, bind: str, port: int) -> None:
    """Serve the page until interrupted (``streamproc ui``)."""
    # The page shows each reader's state and logs it once per change; aiokafka would log
    # every failed connection attempt of every reader, every few seconds.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    app = web.Application()
    ResultsPage(settings).attach(app)
    redis_url = settings.masked()["redis"]["url"]
    print(
        f"streamproc ui: results page on http://{bind}:{port}/ (Redis {redis_url}, Kafka {settings.kafka.bootstrap}; "
        "Ctrl-C to stop)",
        flush=True,
    )
    web.run_app(app, host=bind, port=port, print=None, access_log=None, shutdown_timeout=5)
