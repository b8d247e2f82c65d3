"""The accounting harness: a mixed workload with known expectations, and the audit of a run.

Every valid event must end, for every plugin routed to it, as a result on that plugin's
output topic or as a dead letter naming the plugin; every bad record as a decode dead
letter. Nothing else is acceptable: that is "lost = 0". Duplicates on topics are counted
(at-least-once allows them); duplicates in Redis feeds are not allowed.

The bad records (5%) are the adversarial ones real producers send (``ADVERSARIAL``, in
turn), some playbacks carry a Kafka key that is not their user (a ``state`` dead letter
from each stateful plugin, results from the others), and one valid record in 7 carries
hostile headers (``HOSTILE_HEADERS``, in turn), which must change nothing.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import redis
from kafka import KafkaConsumer, KafkaProducer
from streamproc_recommender.plugin import DEFAULT_HISTORY_SIZE

from streamproc.engine.keys import RedisKeys
from streamproc.media import encode_wav

FULL = os.environ.get("STREAMPROC_TEST_FULL") == "1"
EVENTS = 20_000 if FULL else 3_000
RATE = EVENTS / (50.0 if FULL else 40.0)  # records/s: production lasts long enough for mid-stream faults
RESULTS = Path(os.environ.get("STREAMPROC_RELIABILITY_OUT", "/tmp/streamproc-reliability"))
ITEMS = 97
"""Distinct items a user plays: the n-th playback of a user is item n % ITEMS."""
PLAYBACKS = EVENTS * 12 // 20
USERS = max(50, -(-PLAYBACKS // ITEMS))
"""Enough users, taking turns, that none plays more than ITEMS times (50 at CI size, 124 in the FULL run):
each play is then a different item and the recommender's history (one entry per item, at
most ``DEFAULT_HISTORY_SIZE``) holds every one, so the audit can expect each play once."""
PLUGINS = ["echo", "shout", "counter", "flaky", "slow", "recommender"]
KINDS = {
    "echo": "echo",
    "shout": "shout",
    "counter": "count",
    "flaky": "flaky",
    "slow": "slow",
    "recommender": "recommendations",
}


Headers = list[tuple[str, bytes]]
Record = tuple[str, bytes, bytes | None, Headers]
"""topic, key, value (``None``: a tombstone), headers."""

STATEFUL = ("counter", "recommender")
"""The workload's plugins with keyed state: a playback keyed by another user is refused by these."""


def adversarial_value(kind: str, ident: str) -> bytes | None:
    """The value of a bad record of ``kind`` whose id (where it can be read) is ``ident``."""
    head = f'{{"id": "{ident}", "type": "upload", "user_id": "up", "upload_id": "{ident}", "title": "t", '
    values: dict[str, bytes | None] = {
        "truncated": f'{{"id": "{ident}", "type": '.encode(),
        "tombstone": None,
        "nan": (head + '"ts": NaN}').encode(),
        "giant-number": (head + f'"ts": {"9" * 5_000}}}').encode(),
        "future-ts": (head + f'"ts": {10**30}}}').encode(),
        "overflow-ts": (head + f'"ts": {10**400}}}').encode(),
        "not-utf8": b"\xff\xfe" + (head + '"ts": 1}').encode(),
        "deep-nesting": b"[" * 50_000,
        "array": f'[{{"id": "{ident}", "type": "upload"}}]'.encode(),
        "random": bytes((i * 131 + len(ident)) % 256 for i in range(97)),
    }
    return values[kind]


ADVERSARIAL = (
    "truncated",
    "tombstone",
    "nan",
    "giant-number",
    "future-ts",
    "overflow-ts",
    "not-utf8",
    "deep-nesting",
    "array",
    "random",
)
"""Bad records, each refused at decode; the key is the id so a dead letter names it either way."""

HOSTILE_HEADERS: tuple[Headers, ...] = (
    [(f"h{n}", b"v") for n in range(200)],  # many
    [("trace", b"a"), ("trace", b"b"), ("trace", b"")],  # one name repeated
    [("bin", b"\xff\xfe\x00\x80"), ("\u00e9t\u00e9", b"\xc3(")],  # values that are not UTF-8
    [("big", b"\xff" * 64 * 1024)],  # one huge value
)
"""Headers put on valid records; the engine reads none, so they must change nothing.
(Null values and names that are not UTF-8 are in tests/integration/test_hostile_records.py.)"""


@dataclass
class Workload:
    """Records to produce, and what each must lead to."""

    name: str
    records: list[Record] = field(default_factory=list)
    expected: dict[str, set[str]] = field(default_factory=dict)  # plugin -> event ids
    must_dead_letter: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # id/key -> [(stage, plugin)]
    plays_per_user: Counter[str] = field(default_factory=Counter)
    play_ids_per_user: dict[str, set[str]] = field(default_factory=dict)


def settings_for(bootstrap: str, redis_url: str, name: str) -> dict[str, Any]:
    """Worker settings for the workload's plugins, topics, group and key prefix."""
    from harness import make_settings

    return make_settings(
        SimpleNamespace(kafka_bootstrap=bootstrap, redis_url=redis_url),
        name,
        {
            "slow": {"options": {"delay_s": 0.005, "hang_s": 4.0}},
            "flaky": {"batch": {"max_batch_size": 8}},
        },
        enabled_plugins=PLUGINS,
        infer_timeout_s=2.0,
        redis={"feed_maxlen": 1_000_000},
        kafka={"partitions": 4, "commit_interval_s": 1.0},
    )


def build(name: str, count: int) -> Workload:
    """``count`` records: 60% playback, 25% upload, 10% audio, 5% bad; some poisonous.

    One playback in 60 is keyed by another user (refused by the stateful plugins); one
    valid record in 7 carries hostile headers."""
    work = Workload(name)
    work.expected = {p: set() for p in PLUGINS}
    wav = encode_wav(np.zeros(800, np.float32))
    import base64

    wav_b64 = base64.b64encode(wav).decode()
    plays = 0  # playbacks so far: users take turns, so each plays at most ceil(PLAYBACKS / USERS) times
    for i in range(count):
        slot = i % 20
        ts = int(time.time() * 1000)
        headers = HOSTILE_HEADERS[(i // 7) % len(HOSTILE_HEADERS)] if i % 7 == 3 else []
        if slot < 12 and i % 60 == 7:
            event_id = f"rekeyed{i}"
            doc = playback_doc(event_id, ts, f"user{i % USERS}", "1")
            work.records.append((f"{name}-playback", b"someone-else", json.dumps(doc).encode(), headers))
            work.must_dead_letter[event_id] = [("state", plugin) for plugin in STATEFUL]
        elif slot < 12:
            user = f"user{plays % USERS}"
            plays += 1
            event_id = f"p{i}"
            doc = playback_doc(event_id, ts, user, str(work.plays_per_user[user] % ITEMS))
            work.records.append((f"{name}-playback", user.encode(), json.dumps(doc).encode(), headers))
            work.expected["counter"].add(event_id)
            work.expected["recommender"].add(event_id)
            work.plays_per_user[user] += 1
            work.play_ids_per_user.setdefault(user, set()).add(event_id)
        elif slot < 17:
            title = "boom" if i % 200 == 12 else "refuse" if i % 200 == 13 else f"title {i}"
            event_id = f"u{i}"
            doc = {"id": event_id, "type": "upload", "ts": ts, "user_id": "up", "upload_id": event_id, "title": title}
            work.records.append((f"{name}-upload", event_id.encode(), json.dumps(doc).encode(), headers))
            if title == "boom":
                work.must_dead_letter[event_id] = [("infer", "flaky")]
            elif title == "refuse":
                work.must_dead_letter[event_id] = [("prepare", "flaky")]
            work.expected["flaky"].add(event_id)
        elif slot < 19:
            event_id = f"hang{i}" if i % 1000 == 17 else f"a{i}"
            doc = {"id": event_id, "type": "audio", "ts": ts, "user_id": "au", "audio_id": event_id, "audio": wav_b64}
            work.records.append((f"{name}-audio", event_id.encode(), json.dumps(doc).encode(), headers))
            if event_id.startswith("hang"):
                work.must_dead_letter[event_id] = [("timeout", "slow")]
            work.expected["slow"].add(event_id)
        else:
            key = f"bad{i}"
            value = adversarial_value(ADVERSARIAL[(i // 20) % len(ADVERSARIAL)], key)
            work.records.append((f"{name}-upload", key.encode(), value, []))
            work.must_dead_letter[key] = [("decode", "")]
            continue
        work.expected["echo"].add(event_id)
        work.expected["shout"].add(event_id)
    assert max(work.plays_per_user.values()) <= min(ITEMS, DEFAULT_HISTORY_SIZE), "plays beyond the history"
    return work


def playback_doc(event_id: str, ts: int, user: str, item: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "playback",
        "ts": ts,
        "user_id": user,
        "item_id": item,
        "action": "complete",
        "position_s": 0.0,
        "duration_s": 60.0,
        "media": "video",
    }


class PacedProducer(threading.Thread):
    """Produces the workload at ``rate`` records/s in a background thread."""

    def __init__(self, bootstrap: str, work: Workload, rate: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.work, self.rate = bootstrap, work, rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = KafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                linger_ms=5,
                retries=20,
                reconnect_backoff_max_ms=2000,
                request_timeout_ms=60000,
            )
            started = time.monotonic()
            for topic, key, value, headers in self.work.records:
                producer.send(topic, key=key, value=value, headers=headers)
                self.sent += 1
                ahead = self.sent / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            producer.flush(timeout=120)
            producer.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def read_all(bootstrap: str, topic: str, idle_s: float = 3.0) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",  # what exactly_once promises to; the same as uncommitted without transactions
        consumer_timeout_ms=int(idle_s * 1000),
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        return [json.loads(message.value) for message in consumer]
    finally:
        consumer.close()


@dataclass
class Audit:
    """What a run did, against what it had to do."""

    events: int
    lost: dict[str, list[str]]
    wrong_dead_letters: list[str]
    topic_duplicates: int
    feed_duplicates: int
    state_errors: list[str]
    dead_letters: int

    @property
    def lost_total(self) -> int:
        return sum(len(v) for v in self.lost.values())

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "lost": self.lost_total,
            "dead_letters": self.dead_letters,
            "duplicates_on_topics": self.topic_duplicates,
            "duplicates_in_feeds": self.feed_duplicates,
            "state_errors": len(self.state_errors),
        }


def audit(work: Workload, bootstrap: str, redis_url: str, prefix: str) -> Audit:
    """Check every expectation of ``work`` against the topics, the DLQ and Redis."""
    name = work.name
    dead = read_all(bootstrap, f"{name}-dlq")
    dead_by_plugin: dict[str, set[str]] = {}
    for letter in dead:
        dead_by_plugin.setdefault(letter["plugin"] or "", set()).add(letter["event_id"] or letter["key"])
    lost: dict[str, list[str]] = {}
    duplicates = 0
    client = redis.Redis.from_url(redis_url)
    keys = RedisKeys(prefix)
    feed_duplicates = 0
    for plugin, ids in work.expected.items():
        results = read_all(bootstrap, f"{name}-out-{KINDS[plugin]}")
        produced = Counter(r["event_id"] for r in results)
        duplicates += sum(c - 1 for c in produced.values())
        missing = ids - set(produced) - dead_by_plugin.get(plugin, set())
        if missing:
            lost[plugin] = sorted(missing)[:20] + ([f"... {len(missing)} in all"] if len(missing) > 20 else [])
        feed = Counter(json.loads(f[b"record"])["event_id"] for _, f in client.xrange(keys.feed(KINDS[plugin])))
        feed_duplicates += sum(c - 1 for c in feed.values())
        gone = ids - set(feed) - dead_by_plugin.get(plugin, set())
        if gone:
            lost.setdefault(f"{plugin} (redis)", sorted(gone)[:20])
    wrong = []
    for key, letters in work.must_dead_letter.items():
        for stage, plugin in letters:
            if not any(
                (d["event_id"] or d["key"]) == key and d["stage"] == stage and (d["plugin"] or "") == plugin
                for d in dead
            ):
                wrong.append(f"{key}: expected a {stage} dead letter from {plugin or 'decode'}")
    state_errors = []
    for user, count in work.plays_per_user.items():
        raw = client.hget(keys.state("counter", user), "state")
        got = json.loads(raw)["count"] if raw else 0
        if got != count:
            state_errors.append(f"{user}: count {got} != {count}")
        # the bundled recommender's history: every playback event of the user, once
        raw = client.hget(keys.state("recommender", f"video:{user}"), "state")
        history = [entry[3] for entry in json.loads(raw)["entries"]] if raw else []
        if sorted(history) != sorted(work.play_ids_per_user[user]):
            state_errors.append(
                f"{user}: recommender history has {len(history)} entries for {len(work.play_ids_per_user[user])} events"
            )
    return Audit(len(work.records), lost, wrong, duplicates, feed_duplicates, state_errors, len(dead))
