"""Redis clients for the configured server, one way for every part (worker, tools, page).

Light on purpose (no torch, no Faust): the command-line tools and the results page import
it. ``redis.password`` overrides a password in the URL; ``rediss://`` is TLS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamproc.config import RedisSettings

if TYPE_CHECKING:
    import redis
    import redis.asyncio


def _auth(settings: RedisSettings) -> dict[str, object]:
    password = settings.password.get_secret_value() if settings.password else None
    return {"password": password} if password else {}


def async_redis(settings: RedisSettings) -> redis.asyncio.Redis:
    """The worker's client: bounded connect and socket timeouts, periodic health checks."""
    from redis.asyncio import Redis

    return Redis.from_url(
        settings.url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30, **_auth(settings)
    )


def sync_redis(settings: RedisSettings, timeout_s: float | None = None) -> redis.Redis:
    """A synchronous client for the tools; ``timeout_s`` bounds connecting and each reply."""
    import redis

    return redis.Redis.from_url(
        settings.url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, **_auth(settings)
    )
