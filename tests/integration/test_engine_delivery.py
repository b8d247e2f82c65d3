"""Delivery promises against the real stack: dead letters, retries, replays, backpressure, SIGTERM."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import redis
from harness import (
    WorkerProcess,
    audio,
    committed_to_end,
    create_topics,
    envelope,
    feed,
    make_settings,
    playback,
    produce,
    read_topic,
    upload,
    wait_for,
)
from kafka import KafkaAdminClient
from PIL import Image

from streamproc.media import encode_wav

pytestmark = pytest.mark.integration


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _start(endpoints, unique, tmp_path, test_plugins_path, enabled, plugins=None, **overrides) -> WorkerProcess:
    settings = make_settings(endpoints, unique, plugins or {}, enabled_plugins=enabled, **overrides)
    create_topics(endpoints.kafka_bootstrap, settings["kafka"]["input_topics"].values())
    return WorkerProcess(settings, tmp_path, test_plugins_path).start()


def test_bad_records_become_dead_letters_with_reasons_and_the_worker_keeps_consuming(
    endpoints, unique, tmp_path: Path, test_plugins_path: Path
) -> None:
    worker = _start(
        endpoints,
        unique,
        tmp_path,
        test_plugins_path,
        ["echo", "media"],
        limits={"max_image_bytes": 1000, "max_audio_seconds": 2.0},
    )
    png = _png()
    truncated_png = png[: len(png) // 2]
    long_wav = encode_wav(np.zeros(16000 * 3, np.float32))
    corrupt_wav = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x07\x00"
    bad = [
        (b"k1", b'{"id": "x", "type": '),
        (b"k2", b"\xff\xfe not utf-8"),
        (b"k3", json.dumps(envelope("unknown-type", "telemetry")).encode()),
        (
            b"k4",
            json.dumps(
                {k: v for k, v in json.loads(playback("missing", "u", "1")[1]).items() if k != "item_id"}
            ).encode(),
        ),
        (b"k5", json.dumps({**json.loads(playback("mistyped", "u", "1")[1]), "position_s": "ten"}).encode()),
        upload("oversized", "up-big", image=png + b"\x00" * 2000),
        upload("not-an-image", "up-gif", image=b"GIF89a" + b"\x00" * 20),
        upload("corrupt-image", "up-trunc", image=truncated_png),
        audio("too-long", "a-long", long_wav),
        audio("corrupt-audio", "a-bad", corrupt_wav),
    ]
    good = [upload("good-image", "up-ok", image=png), playback("good-play", "u9", "3")]
    try:
        produce(endpoints.kafka_bootstrap, f"{unique}-upload", bad + good)
        letters = read_topic(endpoints.kafka_bootstrap, f"{unique}-dlq", len(bad))
        echoes = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-echo", 3)  # good ones + corrupt media
        assert worker.proc.poll() is None, "the worker must keep running"
        assert worker.metric("streamproc_dead_letters_total") == len(bad)
    finally:
        worker.terminate()
    by_key = {d["key"]: (d["stage"], d["plugin"], d["reason"]) for d in letters}
    reasons = by_key | {d["event_id"]: (d["stage"], d["plugin"], d["reason"]) for d in letters if d["event_id"]}
    assert len(letters) == len(bad)
    # a record that is not a valid event still names the id and type it claims, when it has them
    assert {(d["key"], d["event_id"], d["event_type"]) for d in letters if d["key"] in ("k3", "k4")} == {
        ("k3", "unknown-type", "telemetry"),
        ("k4", "missing", "playback"),
    }
    assert reasons["k1"][0] == "decode" and "not JSON" in reasons["k1"][2]
    assert "not UTF-8" in reasons["k2"][2]
    assert "unknown event type 'telemetry'" in reasons["k3"][2]
    assert "item_id" in reasons["k4"][2]
    assert "position_s" in reasons["k5"][2]
    assert "exceeds the limit" in reasons["up-big"][2]
    assert "not a PNG or JPEG" in reasons["up-gif"][2]
    assert reasons["corrupt-image"] == ("prepare", "media", reasons["corrupt-image"][2])
    assert "corrupt or truncated PNG" in reasons["corrupt-image"][2]
    assert "exceeds the limit of 2 s" in reasons["a-long"][2]
    assert "audio" in reasons["a-bad"][2]
    originals = {d["key"]: base64.b64decode(d["original"]) for d in letters}
    assert originals["k1"] == b'{"id": "x", "type": '
    assert {e["event_id"] for e in echoes} >= {"good-image", "good-play"}


def test_plugin_failing_in_infer_dead_letters_its_events_and_spares_other_plugins(
    endpoints, unique, tmp_path: Path, test_plugins_path: Path
) -> None:
    worker = _start(
        endpoints,
        unique,
        tmp_path,
        test_plugins_path,
        ["echo", "flaky"],
        plugins={"flaky": {"batch": {"max_batch_size": 8, "max_wait_ms": 50}}},
    )
    titles = ["fine"] * 10 + ["boom", "refuse"] + ["fine"] * 10
    records = [upload(f"e{i}", f"up{i}", title=t) for i, t in enumerate(titles)]
    try:
        produce(endpoints.kafka_bootstrap, f"{unique}-upload", records)
        letters = read_topic(endpoints.kafka_bootstrap, f"{unique}-dlq", 2)
        flaky = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-flaky", len(titles) - 2)
        echoes = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-echo", len(titles))
        errors = worker.metric("streamproc_plugin_errors_total", plugin="flaky", stage="infer")
    finally:
        worker.terminate()
    by_id = {d["event_id"]: d for d in letters}
    assert set(by_id) == {"e10", "e11"}
    assert by_id["e10"]["stage"] == "infer" and "boom" in by_id["e10"]["reason"]
    assert by_id["e11"]["stage"] == "prepare" and "refused" in by_id["e11"]["reason"]
    assert {r["event_id"] for r in flaky} == {f"e{i}" for i in range(len(titles))} - {"e10", "e11"}
    assert {r["event_id"] for r in echoes} == {f"e{i}" for i in range(len(titles))}
    assert errors == 1


def test_replayed_events_leave_redis_feeds_and_keyed_state_unchanged(
    endpoints, unique, tmp_path: Path, test_plugins_path: Path
) -> None:
    worker = _start(endpoints, unique, tmp_path, test_plugins_path, ["echo", "counter"])
    events = [playback(f"r{i}", f"user{i % 3}", str(i)) for i in range(30)]
    client = redis.Redis.from_url(endpoints.redis_url)
    prefix = worker.settings["redis"]["key_prefix"]
    try:
        produce(endpoints.kafka_bootstrap, f"{unique}-playback", events)
        read_topic(endpoints.kafka_bootstrap, f"{unique}-out-count", 30)
        wait_for(lambda: len(feed(client, prefix, "count")) == 30, 30, "30 counts in the feed")
        before = {k: feed(client, prefix, k) for k in ("echo", "count")}
        latest_before = client.get(f"{prefix}latest:count:user1")
        produce(endpoints.kafka_bootstrap, f"{unique}-playback", events)  # the same events again
        wait_for(
            lambda: (
                worker.metric("streamproc_events_consumed_total") == 60
                and worker.metric("streamproc_in_flight_events") == 0
            ),
            60,
            "the replay to be consumed",
        )
    finally:
        worker.terminate()
    assert {k: feed(client, prefix, k) for k in ("echo", "count")} == before
    assert client.get(f"{prefix}latest:count:user1") == latest_before
    state = json.loads(client.hget(f"{prefix}state:counter:user1", "state"))
    assert state["count"] == 10, "a replayed event must not update keyed state twice"


def _metric_values(text: str, names: tuple[str, ...], plugin: str) -> dict[str, float]:
    """Sums of the families ``names`` in one /metrics scrape (queue depth of ``plugin`` only)."""
    totals = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals and (name != "streamproc_queue_depth" or f'plugin="{plugin}"' in line):
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def test_slow_plugin_applies_backpressure_and_drops_nothing(
    endpoints, unique, tmp_path: Path, test_plugins_path: Path
) -> None:
    """A full plugin queue stops the consumer: records are taken from Kafka only as
    in-flight slots free up (taken minus finished never exceeds ``max_in_flight``, in one
    scrape), the queue really fills to its bound, and every record is answered."""
    max_in_flight, max_queue, count = 24, 8, 160
    # 40 batches of 4 at 0.25 s: about 10 s, two refreshes of the gauges (every 5 s) at least
    worker = _start(
        endpoints,
        unique,
        tmp_path,
        test_plugins_path,
        ["slow"],
        max_in_flight=max_in_flight,
        plugins={"slow": {"options": {"delay_s": 0.25}, "batch": {"max_queue": max_queue, "max_batch_size": 4}}},
    )
    wav = encode_wav(np.zeros(1600, np.float32))
    names = (
        "streamproc_in_flight_events",
        "streamproc_queue_depth",
        "streamproc_events_consumed_total",
        "streamproc_results_total",
        "streamproc_dead_letters_total",
    )
    samples: list[dict[str, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(_metric_values(worker.http("/metrics")[1], names, "slow"))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        produce(endpoints.kafka_bootstrap, f"{unique}-audio", [audio(f"s{i}", f"a{i}", wav) for i in range(count)])
        results = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-slow", count, timeout_s=120)
    finally:
        stop.set()
        sampler.join()
        worker.terminate()
    assert {r["event_id"] for r in results} == {f"s{i}" for i in range(count)}
    taken_not_done = [
        s["streamproc_events_consumed_total"] - s["streamproc_results_total"] - s["streamproc_dead_letters_total"]
        for s in samples
    ]
    assert max(taken_not_done) <= max_in_flight, "records were taken from Kafka beyond the in-flight bound"
    assert max(s["streamproc_in_flight_events"] for s in samples) >= max_in_flight / 2, "the bound was never approached"
    assert max(s["streamproc_queue_depth"] for s in samples) == max_queue, "the plugin's queue never filled"


def test_sigterm_drains_commits_and_exits_within_bound_and_restart_repeats_nothing(
    endpoints, unique, tmp_path: Path, test_plugins_path: Path
) -> None:
    count, bound = 200, 20
    worker = _start(
        endpoints,
        unique,
        tmp_path,
        test_plugins_path,
        ["slow"],
        shutdown_timeout_s=bound,
        max_in_flight=16,
        plugins={"slow": {"options": {"delay_s": 0.1}}},
    )
    wav = encode_wav(np.zeros(1600, np.float32))
    produce(endpoints.kafka_bootstrap, f"{unique}-audio", [audio(f"t{i}", f"a{i % 9}", wav) for i in range(count)])
    wait_for(lambda: worker.metric("streamproc_results_total") >= 30, 60, "some results before SIGTERM")
    code, seconds = worker.terminate()
    assert code == 0 and seconds < bound, f"exit {code} after {seconds:.1f} s"
    first = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-slow", 1)
    assert len(first) < count, "the worker finished before SIGTERM: not a mid-stream test"
    committed = _committed(endpoints.kafka_bootstrap, worker.settings["app_id"], f"{unique}-audio")
    assert committed == len(first), "every published record is committed, and nothing else"

    again = WorkerProcess(worker.settings, tmp_path, test_plugins_path).start()
    try:
        results = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-slow", count, timeout_s=120)
    finally:
        again.terminate()
    ids = Counter(r["event_id"] for r in results)
    assert set(ids) == {f"t{i}" for i in range(count)}
    assert max(ids.values()) == 1, f"processed twice: {[k for k, v in ids.items() if v > 1][:5]}"
    per_key: dict[str, list[int]] = {}
    for r in results:
        per_key.setdefault(r["key"], []).append(int(r["event_id"][1:]))
    assert all(v == sorted(v) for v in per_key.values()), "per-key order broken"


def _committed(bootstrap: str, group: str, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


def test_keyed_state_survives_kill_9_and_redelivery_counts_nothing_twice(
    endpoints, unique, tmp_path: Path, test_plugins_path: Path
) -> None:
    users, per_user = 4, 60
    worker = _start(
        endpoints,
        unique,
        tmp_path,
        test_plugins_path,
        ["counter", "slow"],
        max_in_flight=8,
        kafka={"commit_interval_s": 5.0},
    )
    events = [playback(f"k{i}", f"user{i % users}", str(i)) for i in range(users * per_user)]
    produce(endpoints.kafka_bootstrap, f"{unique}-playback", events)
    wait_for(lambda: worker.metric("streamproc_results_total") >= 40, 60, "some counts before the kill")
    worker.kill()  # no drain, no commit: everything since the last commit is redelivered
    client = redis.Redis.from_url(endpoints.redis_url)
    prefix = worker.settings["redis"]["key_prefix"]
    committed = _committed(endpoints.kafka_bootstrap, worker.settings["app_id"], f"{unique}-playback")
    published = len({r["event_id"] for r in feed(client, prefix, "count")})
    assert published > committed, f"{published} published, {committed} committed: nothing to redeliver"
    again = WorkerProcess(worker.settings, tmp_path, test_plugins_path).start()
    try:
        wait_for(
            lambda: len({r["event_id"] for r in feed(client, prefix, "count")}) == len(events),
            120,
            "a count for every event",
        )
        # The feed may hold every count before the restart (all published, none committed):
        # read the consumed count once the restarted worker has committed everything.
        wait_for(lambda: committed_to_end(endpoints.kafka_bootstrap, worker.settings), 120, "everything committed")
        redelivered = again.metric("streamproc_events_consumed_total") - (len(events) - published)
    finally:
        again.terminate()
    assert redelivered == published - committed, (
        "the restarted worker did not consume the uncommitted published records"
    )
    for user in range(users):
        state = json.loads(client.hget(f"{prefix}state:counter:user{user}", "state"))
        assert state["count"] == per_user, f"user{user}: {state['count']} != {per_user}"
    feed_ids = [r["event_id"] for r in feed(client, prefix, "count")]
    assert len(feed_ids) == len(set(feed_ids)), "a redelivered event added a second feed entry"


def test_committed_lag_counts_records_taken_but_not_committed_and_returns_to_zero(
    endpoints, unique, tmp_path: Path, test_plugins_path: Path
) -> None:
    worker = _start(
        endpoints,
        unique,
        tmp_path,
        test_plugins_path,
        ["slow"],
        plugins={"slow": {"options": {"delay_s": 1.0}, "batch": {"max_batch_size": 2}}},
    )
    wav = encode_wav(np.zeros(800, np.float32))
    try:
        produce(endpoints.kafka_bootstrap, f"{unique}-audio", [audio(f"c{i}", f"a{i}", wav) for i in range(24)])
        wait_for(lambda: worker.metric("streamproc_committed_lag") > 0, 60, "committed lag to show the backlog")
        read_topic(endpoints.kafka_bootstrap, f"{unique}-out-slow", 24, timeout_s=120)
        wait_for(lambda: worker.metric("streamproc_committed_lag") == 0, 60, "committed lag back to zero")
    finally:
        worker.terminate()
