"""The readers that fill the page's board; each runs until cancelled and never writes.

- ``follow_feeds``: every result feed in Redis (found by ``SCAN``, the last ``backlog``
  entries first, then ``XREAD``), and the keyed state behind recommendation cards;
- ``follow_topic``: one Kafka topic without a consumer group (nothing is committed), from
  ``backlog`` records before its end per partition: the dead-letter topic
  (``dead_letter_handler``) and the input topics (``media_handler``: images and clips).

A reader that cannot reach its server shows why on the page (``Board.set_source``) and
tries again; it never stops the page.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamproc.config import KafkaSettings
from streamproc.engine.keys import FEED_FIELD, RedisKeys
from streamproc.kafka_clients import aiokafka_options
from streamproc.ui.board import Board
from streamproc.ui.media import Media, content_type

log = logging.getLogger(__name__)

FEED_BACKLOG = 200
TOPIC_BACKLOG = 100
RESCAN_S = 5.0
RETRY_S = 3.0
MEDIA_FIELDS = {"upload": ("uploads", "upload_id", "image"), "audio": ("audio", "audio_id", "audio")}


async def follow_feeds(client: Redis, keys: RedisKeys, board: Board, backlog: int = FEED_BACKLOG) -> None:
    """Put every result of every feed on the board, as it is added."""
    cursors: dict[str, str] = {}
    scanned_at = 0.0
    while True:
        try:
            if time.monotonic() - scanned_at > RESCAN_S:
                async for raw in client.scan_iter(match=keys.feed_pattern(), count=100):
                    name = raw.decode() if isinstance(raw, bytes) else raw
                    if name not in cursors:
                        entries = await client.xrevrange(name, count=backlog)
                        _add_entries(board, reversed(entries))
                        cursors[name] = entries[0][0].decode() if entries else "0"
                scanned_at = time.monotonic()
                board.set_source("redis", f"reading {len(cursors)} feeds")
            if not cursors:
                await asyncio.sleep(1.0)
                continue
            for stream, entries in await client.xread(cursors, count=1000, block=500) or []:
                cursors[stream.decode()] = entries[-1][0].decode()
                _add_entries(board, entries)
            await _read_histories(client, keys, board)
        except (RedisError, OSError) as exc:
            _end_if_cancelled()
            _report(board, "redis", f"unreachable ({_why(exc)}); retrying")
            await asyncio.sleep(RETRY_S)


def _end_if_cancelled() -> None:
    """Re-raise a cancel that a client library turned into an error while it failed.

    A reader retries on ``OSError``, and a timeout is one (``asyncio.TimeoutError`` is
    ``TimeoutError`` from Python 3.11): a cancel that reaches a client inside its own
    timeout or while its connection breaks can come out as such an error. Retried, the
    cancel would be lost and the page's shutdown would wait for the reader forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _report(board: Board, source: str, status: str) -> None:
    """Show a reader's trouble on the page, and log it once per change."""
    if board.sources.get(source) != status:
        log.warning("results page: %s: %s", source, status)
    board.set_source(source, status)


def _why(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def _add_entries(board: Board, entries: Any) -> None:
    for _, fields in entries:
        try:
            record = json.loads(fields[FEED_FIELD.encode()])
        except (KeyError, ValueError):
            continue
        if isinstance(record, dict):
            board.add_result(record)


async def _read_histories(client: Redis, keys: RedisKeys, board: Board) -> None:
    wanted = board.history_wanted()
    if not wanted:
        return
    async with client.pipeline(transaction=False) as pipe:
        for plugin, state_key in wanted.values():
            pipe.hget(keys.state(plugin, state_key), "state")
        answers = await pipe.execute()
    for card_id, raw in zip(wanted, answers, strict=True):
        try:
            board.set_history(card_id, json.loads(raw) if raw else None)
        except ValueError:
            board.set_history(card_id, None)


async def follow_topic(
    kafka: KafkaSettings,
    topic: str,
    source: str,
    board: Board,
    handle: Callable[[Board, ConsumerRecord], None],
    backlog: int = TOPIC_BACKLOG,
) -> None:
    """Hand every record of ``topic`` to ``handle``, from ``backlog`` records before its end."""
    while True:
        consumer = AIOKafkaConsumer(
            **aiokafka_options(kafka),
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=kafka.max_message_bytes,
            fetch_max_bytes=max(52_428_800, kafka.max_message_bytes),
        )
        try:
            partitions = [TopicPartition(topic, p) for p in await _wait_for_partitions(kafka, topic, source, board)]
            await consumer.start()
            consumer.assign(partitions)
            starts, ends = await consumer.beginning_offsets(partitions), await consumer.end_offsets(partitions)
            for tp in partitions:
                consumer.seek(tp, max(starts[tp], ends[tp] - backlog))
            board.set_source(source, f"reading topic {topic}")
            while True:
                for records in (await consumer.getmany(timeout_ms=500, max_records=500)).values():
                    for record in records:
                        handle(board, record)
        except (KafkaError, OSError) as exc:
            _end_if_cancelled()
            _report(board, source, f"{topic}: {_why(exc)}; retrying")
            await asyncio.sleep(RETRY_S)
        finally:
            await consumer.stop()


async def _wait_for_partitions(kafka: KafkaSettings, topic: str, source: str, board: Board) -> list[int]:
    """The topic's partition numbers, once it exists. Only an existing topic is described:
    asking a broker about a missing one may create it (``auto.create.topics.enable``)."""
    admin = AIOKafkaAdminClient(**aiokafka_options(kafka))
    await admin.start()
    try:
        while True:
            if topic in await admin.list_topics():
                (found,) = await admin.describe_topics([topic])
                if found["error_code"] == 0 and found["partitions"]:
                    return sorted(p["partition"] for p in found["partitions"])
            board.set_source(source, f"waiting for topic {topic}")
            await asyncio.sleep(RETRY_S)
    finally:
        await admin.close()


def dead_letter_handler(board: Board, record: ConsumerRecord) -> None:
    """A dead letter of the dead-letter topic onto the board (not JSON: skipped)."""
    try:
        letter = json.loads(record.value or b"")
    except ValueError:
        return
    if isinstance(letter, dict):
        board.add_dead_letter(letter)


def media_handler(board: Board, record: ConsumerRecord) -> None:
    """An input event's inline image (upload) or clip (audio) into the media cache. Records
    without one are skipped before their JSON is parsed; invalid ones are skipped (the
    worker dead-letters them)."""
    value = record.value or b""
    if b'"image"' not in value and b'"audio"' not in value:
        return
    try:
        event = json.loads(value)
        section, key_field, media_field = MEDIA_FIELDS[event["type"]]
        data = base64.b64decode(event[media_field], validate=True)
        key, event_id = str(event[key_field]), str(event["id"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return
    mime = content_type(section, data)
    if mime is not None:
        board.add_media(section, key, Media(event_id, mime, data))
