"""The worker's HTTP port (``streamproc.ops.health.HealthServer``) as Prometheus scrapes it."""

from __future__ import annotations

import asyncio

import aiohttp

from streamproc.ops.health import HealthServer
from streamproc.ops.metrics import Metrics


def test_metrics_endpoint_exposes_the_process_metrics() -> None:
    """``/metrics`` carries prometheus_client's process collector (CPU, resident memory,
    file descriptors, start time) next to the worker's own metrics."""

    async def scrape() -> str:
        server = HealthServer(Metrics(), "127.0.0.1", 0, ready=lambda: (True, ""), live=lambda: (True, ""))
        port = await server.start()
        try:
            async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as got:
                assert got.status == 200
                return await got.text()
        finally:
            await server.stop()

    text = asyncio.run(scrape())
    samples = {line.split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ):
        assert name in samples, f"/metrics lacks {name}"
    assert "streamproc_worker_ready" in samples
