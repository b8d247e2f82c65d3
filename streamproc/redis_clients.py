"""Redis clients for the configured server, one way for every part (worker, tools, page).

Light on purpose (no torch, no Faust): the command-line tools and the results page import
it. ``redis.password`` overrides a password in the URL; ``rediss://`` is TLS, verified against
``redis.ssl_cafile`` when set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamproc.config import RedisSettings

if TYPE_CHECKING:
    import redis
    import redis.asyncio


def _auth(settings: RedisSettings) -> dict[str, object]:
    """The password and, for ``rediss://`` with a CA bundle, the bundle: what every client passes."""
    options: dict[str, object] = {}
    if settings.password:
        options["password"] = settings.password.get_secret_value()
    if settings.ssl_cafile and settings.url.startswith("rediss://"):
        options["ssl_ca_certs"] = settings.ssl_cafile
    return options


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
