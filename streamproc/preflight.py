"""Checks a command runs before it starts work, each failing fast with one clear line.

* ``check_kafka``/``check_redis``: the configured broker and Redis answer within
  ``CONNECT_TIMEOUT_S`` (else ``Unreachable`` naming the address tried and a hint), so a
  mistyped or stopped address never becomes half a minute of client retries and a traceback;
  ``check_kafka_and_redis`` checks both at once for commands that need both;
* ``check_plugin_names``: every name in ``enabled_plugins`` and ``plugins`` is an installed
  entry point (a typo is an error, not a worker that silently runs without the plugin);
* ``check_device``: the configured device exists on this machine (``cuda`` without CUDA).

Each raises a ``StreamprocError`` subclass; the CLI prints it as one line and exits 2.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import entry_points

from streamproc.config import Settings
from streamproc.errors import ConfigError, StreamprocError
from streamproc.redis_clients import sync_redis

CONNECT_TIMEOUT_S = 3.0
HINT = "start the local stack with `streamproc stack up`, or set {variable} (docs/configuration.md)"


class Unreachable(StreamprocError):
    """A service the command needs did not answer: the address tried and what to do."""


def check_kafka(settings: Settings, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A bootstrap server answers Kafka's protocol (with the configured SASL/TLS) within
    ``timeout_s``: a TCP connection alone proves little behind proxies and load balancers.
    kafka-python's own log lines are held back meanwhile and only read for the cause."""
    from kafka import KafkaAdminClient

    from streamproc.kafka_clients import kafka_python_options

    timeout_ms = int(timeout_s * 1000)
    with _held_back("kafka") as held:
        try:
            client = KafkaAdminClient(
                **kafka_python_options(settings.kafka), bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms
            )
        except Exception as exc:  # kafka-python raises several unrelated types for one cause
            failure: Exception | None = exc
        else:
            client.close()
            failure = None
    if failure is None:
        return
    # A broker that refuses SASL credentials answers the version handshake, then closes the
    # connection; kafka-python only logs that it was disconnected.
    answered_then_closed = any("broker_version=(" in line and "disconnected" in line for line in held)
    if settings.kafka.security_protocol.startswith("SASL") and answered_then_closed:
        raise Unreachable(
            f"Kafka at {settings.kafka.bootstrap} answered, then closed the connection during SASL "
            f"{settings.kafka.sasl_mechanism} authentication as {settings.kafka.sasl_username!r}: "
            "check kafka.sasl_username and STREAMPROC_KAFKA_SASL_PASSWORD"
        )
    handshake = next((why for why in map(_tls_failure, held) if why), None)
    if handshake:
        raise Unreachable(
            f"Kafka at {settings.kafka.bootstrap} failed the TLS handshake ({handshake}): "
            "check kafka.ssl_cafile (STREAMPROC_KAFKA_SSL_CAFILE) and kafka.security_protocol"
        )
    hint = HINT.format(variable="STREAMPROC_KAFKA_BOOTSTRAP")
    why = "no answer" if "bootstrap" in str(failure).lower() else _reason(failure)
    raise Unreachable(f"Kafka is not reachable at {settings.kafka.bootstrap} ({why}): {hint}")


@contextlib.contextmanager
def _held_back(logger_name: str) -> Iterator[list[str]]:
    """The logger's records (WARNING and up) collected in a list instead of printed."""
    logger = logging.getLogger(logger_name)
    held: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: held.append(record.getMessage())  # type: ignore[method-assign]
    saved = logger.level, logger.propagate, logger.handlers[:]
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logger.handlers[:] = [handler]
    try:
        yield held
    finally:
        logger.level, logger.propagate = saved[0], saved[1]
        logger.handlers[:] = saved[2]


def check_redis(settings: Settings, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Redis answers PING (authenticated with the configured password) within ``timeout_s``."""
    import redis

    client = sync_redis(settings.redis, timeout_s)
    where = _masked_url(settings)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise Unreachable(
            f"Redis at {where} refused the credentials ({exc}): check STREAMPROC_REDIS_PASSWORD"
        ) from None
    except (redis.RedisError, OSError) as exc:
        handshake = _tls_failure(str(exc))
        if handshake:
            raise Unreachable(
                f"Redis at {where} failed the TLS handshake ({handshake}): "
                "check redis.ssl_cafile (STREAMPROC_REDIS_SSL_CAFILE)"
            ) from None
        hint = HINT.format(variable="STREAMPROC_REDIS_URL")
        raise Unreachable(f"Redis is not reachable at {where} ({_reason(exc)}): {hint}") from None
    finally:
        client.close()


def check_kafka_and_redis(settings: Settings, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Both the broker and Redis answer, checked side by side so that the whole check stays
    within ``timeout_s`` (plus a little); else one ``Unreachable`` whose line is that of each
    service that failed (Kafka's first)."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="preflight") as pool:
        checks = [pool.submit(check, settings, timeout_s) for check in (check_kafka, check_redis)]
    errors = [error for error in (check.exception() for check in checks) if error is not None]
    for error in errors:
        if not isinstance(error, Unreachable):  # a bug, not an answer: raised as it is
            raise error
    if errors:
        raise Unreachable("; ".join(str(error) for error in errors))


def check_plugin_names(settings: Settings) -> None:
    """Every plugin named in the settings is installed (an entry point of the group)."""
    from streamproc.plugin import ENTRY_POINT_GROUP  # imports torch: only when checked

    installed = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
    named = [("enabled_plugins", n) for n in settings.enabled_plugins or ()]
    named += [(f"plugins.{n}", n) for n in settings.plugins]
    unknown = [f"{where}: {name!r}" for where, name in named if name not in installed]
    if unknown:
        raise ConfigError(f"unknown plugin name(s) {'; '.join(unknown)} (installed: {', '.join(installed) or 'none'})")


def check_device(settings: Settings) -> None:
    """The configured device exists here: ``cuda``/``cuda:N`` needs CUDA and that GPU."""
    if not settings.device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"setting device: {settings.device!r} but CUDA is not available on this machine (use cpu or auto)"
        )
    index, count = int(settings.device.partition(":")[2] or 0), torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"setting device: {settings.device!r} but this machine has {count} GPU(s)")


def _masked_url(settings: Settings) -> str:
    return settings.masked()["redis"]["url"]


def _tls_failure(text: str) -> str | None:
    """The words of an OpenSSL verification or handshake failure in a client's message
    (``certificate verify failed: self-signed certificate``), else ``None``."""
    match = re.search(r"\[SSL: [A-Z_]+\] ([^(]+?)\s*\(_ssl", text)
    return match.group(1) if match else None


def _reason(exc: BaseException) -> str:
    """A few words for a connection failure, whichever client raised it."""
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    lowered = text.lower()
    if isinstance(exc, TimeoutError | socket.timeout) or "timed out" in lowered or "timeout" in lowered:
        return "timed out"
    if isinstance(exc, ConnectionRefusedError) or "refused" in lowered:
        return "connection refused"
    if isinstance(exc, socket.gaierror) or "name or service not known" in lowered or "not known" in lowered:
        return "unknown host"
    return text[:160]
