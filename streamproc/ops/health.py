"""The worker's HTTP endpoints: ``/metrics``, ``/healthz`` (liveness), ``/readyz`` (readiness),
and the live results page (``streamproc.ui``) when ``http.ui`` is on."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from streamproc.ops.metrics import Metrics

if TYPE_CHECKING:
    from streamproc.config import Settings

log = logging.getLogger(__name__)

Probe = Callable[[], tuple[bool, str]]


class HealthServer:
    """Serves metrics and probes on one port: ``ready`` decides /readyz (take traffic?),
    ``live`` decides /healthz (restart me?); each answers 503 with its reason when false.
    Given the worker's ``settings`` with ``http.ui`` on, the same port also serves the live
    results page, reading the feeds and topics those settings name."""

    def __init__(
        self,
        metrics: Metrics,
        bind: str,
        port: int,
        ready: Probe,
        live: Probe,
        settings: Settings | None = None,
    ) -> None:
        self.metrics = metrics
        self.bind = bind
        self.port = port
        self._ready = ready
        self._live = live
        self._page_settings = settings if settings is not None and settings.http.ui else None
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Start serving; returns the bound port (useful with port 0)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self._page_settings is not None:
            from streamproc.ui.server import ResultsPage

            ResultsPage(self._page_settings).attach(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, self.port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # aiohttp exposes no public accessor
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        page = " and the results page" if self._page_settings is not None else ""
        log.info("metrics and probes%s on http://%s:%d", page, self.bind, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        ok, reason = self._live()
        return web.json_response({"alive": ok, "reason": reason}, status=200 if ok else 503)

    async def _readyz(self, _: web.Request) -> web.Response:
        ok, reason = self._ready()
        return web.json_response({"ready": ok, "reason": reason}, status=200 if ok else 503)
