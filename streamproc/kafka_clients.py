"""Kafka client options, built once from ``KafkaSettings`` for every client library used.

The worker reads through Faust, writes through aiokafka, and administers topics (and the
tools produce) through kafka-python. Each library spells connection and security
options its own way; this module is the one place that translates the settings, so
SASL/TLS behave the same in every client. It also creates topics with size limits
consistent with each other: a topic accepts the largest record the worker may write
(``kafka.max_message_bytes``), the producer's request size is the same bound.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from streamproc.config import KafkaSettings

if TYPE_CHECKING:
    from faust.auth import Credentials

log = logging.getLogger(__name__)

LEADER_WAIT_S = 30.0


def _ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.ssl_cafile)
    if settings.ssl_certfile:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    return context


def _sasl_password(settings: KafkaSettings) -> str | None:
    return settings.sasl_password.get_secret_value() if settings.sasl_password else None


def aiokafka_options(settings: KafkaSettings) -> dict[str, object]:
    """Connection options for ``AIOKafkaProducer``/``AIOKafkaConsumer`` (bootstrap, SASL, TLS)."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.bootstrap,
        "security_protocol": settings.security_protocol,
    }
    context = _ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = _sasl_password(settings)
    return options


def kafka_python_options(settings: KafkaSettings) -> dict[str, object]:
    """Connection options for kafka-python's ``KafkaProducer``/``KafkaConsumer``/``KafkaAdminClient``."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.bootstrap.split(","),
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=_sasl_password(settings),
        )
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options.update(
            ssl_cafile=settings.ssl_cafile, ssl_certfile=settings.ssl_certfile, ssl_keyfile=settings.ssl_keyfile
        )
    return options


def faust_credentials(settings: KafkaSettings) -> Credentials | None:
    """Faust's ``broker_credentials`` for the settings (``None`` for PLAINTEXT).

    Faust is imported here, not at the top: the engine shares this module's builders and
    never loads Faust."""
    import faust

    if settings.security_protocol == "PLAINTEXT":
        return None
    context = _ssl_context(settings)
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=_sasl_password(settings),
        mechanism=settings.sasl_mechanism,
        ssl_context=context,
    )


def ensure_topics(settings: KafkaSettings, topics: Iterable[str], wait_for_leaders: bool = False) -> list[str]:
    """Create missing topics with the configured partitions, replication and
    ``max.message.bytes`` (``kafka.max_message_bytes``); returns the names created.

    With ``wait_for_leaders``, returns once every partition of ``topics`` has a leader
    (new partitions elect one a moment after creation).
    """
    names = sorted(set(topics))
    admin = KafkaAdminClient(**kafka_python_options(settings))
    try:
        existing = set(admin.list_topics())
        config = {"max.message.bytes": str(settings.max_message_bytes)}
        new = [
            NewTopic(t, settings.partitions, settings.replication_factor, topic_configs=config)
            for t in names
            if t not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
            log.info("created topics: %s", ", ".join(t.name for t in new))
        if wait_for_leaders:
            _wait_for_leaders(admin, names)
        return [t.name for t in new]
    finally:
        admin.close()


def _wait_for_leaders(admin: KafkaAdminClient, names: list[str]) -> None:
    deadline = time.monotonic() + LEADER_WAIT_S
    while time.monotonic() < deadline:
        described = admin.describe_topics(names)
        if all(t["error_code"] == 0 and all(p.get("leader_id", -1) >= 0 for p in t["partitions"]) for t in described):
            return
        time.sleep(0.1)
