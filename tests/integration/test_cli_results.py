"""The user's commands against the real stack and a running worker: ``produce --file`` with
bad lines, ``get``, ``tail --limit``, ``dead-letters list|show|replay``, and ``tail`` with
a Redis password, ``produce`` and ``dead-letters`` through SASL, ``produce`` and ``tail``
over TLS; and a newer producer's extra fields, accepted and counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from harness import (
    WorkerProcess,
    committed_to_end,
    create_topics,
    feed,
    make_settings,
    password_redis,
    produce,
    read_topic,
    upload,
    wait_for,
)

from streamproc.dev.stack import LocalStack

pytestmark = pytest.mark.integration


def cli(settings: dict[str, Any], tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``streamproc ARGV`` with ``settings`` as its YAML file and no STREAMPROC_* variables."""
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_") or k == "STREAMPROC_CACHE"}
    return subprocess.run(
        [sys.executable, "-m", "streamproc", "--config", str(config), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_produce_file_sends_every_good_line_and_reports_each_bad_one_with_its_number(
    endpoints, unique, tmp_path: Path
) -> None:
    settings = make_settings(endpoints, unique, {})
    good = [upload("g1", "up1")[1], upload("g2", "up2")[1], upload("g3", "up3")[1]]
    big = b'{"id": "big", "type": "upload", "upload_id": "x", "title": "' + b"a" * (20 * 1024 * 1024) + b'"}'
    lines = [
        good[0],
        b"[" * 100_000,  # 2: deep nesting
        b'{"id": "\xff\xfe", "type": "upload"}',  # 3: not UTF-8
        json.dumps({"id": "l", "type": ["upload"], "ts": 1, "user_id": "u"}).encode(),  # 4: a list as type
        b"",  # blank lines are skipped, not counted as bad
        good[1],
        big,  # 7: 20 MB
        good[2],
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    done = cli(settings, tmp_path, "produce", "--file", str(path))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(done.stdout) == {"upload": 3}
    assert f"{path}: line 2: record: JSON nested too deeply (not sent)" in done.stderr
    assert f"{path}: line 3: record: not UTF-8" in done.stderr
    assert f"{path}: line 4: type: unknown event type ['upload']" in done.stderr
    assert f"{path}: line 7: record: {len(big)} bytes exceeds the limit of" in done.stderr
    assert "4 bad line(s) not sent, 3 sent" in done.stderr
    sent = read_topic(endpoints.kafka_bootstrap, f"{unique}-upload", 3, timeout_s=30)
    assert sorted(r["id"] for r in sent) == ["g1", "g2", "g3"]


def test_get_and_tail_read_the_worker_results_and_tail_stops_at_exactly_the_limit(
    endpoints, unique, tmp_path: Path, test_plugins_path: Path
) -> None:
    settings = make_settings(endpoints, unique, {}, enabled_plugins=["echo"])
    create_topics(endpoints.kafka_bootstrap, settings["kafka"]["input_topics"].values())
    worker = WorkerProcess(settings, tmp_path, test_plugins_path).start()
    try:
        events = [upload(f"e{i}", f"up{i}") for i in range(7)]
        # A newer producer: an extra field and a numeric user id are accepted (schema evolution).
        events.append(upload("e7", "up7", user_id=7007, app_version="3.1", client={"os": "android"}))
        produce(endpoints.kafka_bootstrap, f"{unique}-upload", events)
        client = redis.Redis.from_url(endpoints.redis_url)
        prefix = settings["redis"]["key_prefix"]
        wait_for(lambda: len(feed(client, prefix, "echo")) == 8, 60, "8 echo results")
        assert worker.metric("streamproc_event_fields_ignored_total", type="upload") == 2
        assert worker.metric("streamproc_dead_letters_total") == 0
    finally:
        worker.terminate()
    got = cli(settings, tmp_path, "get", "echo", "up5")
    assert got.returncode == 0, got.stderr
    record = json.loads(got.stdout)
    assert (record["event_id"], record["kind"], record["key"], record["body"]["id"]) == ("e5", "echo", "up5", "e5")
    missing = cli(settings, tmp_path, "get", "echo", "nobody")
    assert missing.returncode == 1 and "no echo result for key 'nobody'" in missing.stderr
    for argv in (("tail", "--from-start", "--limit", "3"), ("tail", "echo", "--from-start", "--limit", "5")):
        tailed = cli(settings, tmp_path, *argv)
        assert tailed.returncode == 0, tailed.stderr
        shown = tailed.stdout.strip().splitlines()
        assert len(shown) == int(argv[-1]), tailed.stdout
        assert all(line.startswith("[echo] echo up") for line in shown)


def test_dead_letters_are_listed_filtered_shown_and_replayed_once_after_a_fix(
    endpoints, unique, tmp_path: Path, test_plugins_path: Path
) -> None:
    # Before the fix: titles over 12 characters are refused at decode; flaky fails on "boom".
    settings = make_settings(endpoints, unique, {}, enabled_plugins=["echo", "flaky"], limits={"max_text_chars": 12})
    create_topics(endpoints.kafka_bootstrap, [*settings["kafka"]["input_topics"].values(), f"{unique}-dlq"])
    client = redis.Redis.from_url(endpoints.redis_url)
    prefix = settings["redis"]["key_prefix"]
    worker = WorkerProcess(settings, tmp_path, test_plugins_path).start()
    try:
        events = [upload("ok", "up-ok", title="fine"), upload("long", "up-long", title="a title too long")]
        events.append(upload("boom", "up-boom", title="boom"))
        produce(endpoints.kafka_bootstrap, f"{unique}-upload", events)
        wait_for(lambda: committed_to_end(endpoints.kafka_bootstrap, settings), 90, "all input committed")
    finally:
        worker.terminate()

    listed = cli(settings, tmp_path, "dead-letters", "list")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.strip().splitlines()) == 2 and "2 dead letter(s)" in listed.stderr

    def refs(*argv: str) -> list[str]:
        done = cli(settings, tmp_path, "dead-letters", "list", *argv)
        assert done.returncode == 0, done.stderr
        return [line.split()[0] for line in done.stdout.strip().splitlines()]

    [decode_ref] = refs("--stage", "decode")
    [flaky_ref] = refs("--plugin", "flaky")
    assert refs("--reason", "BOOM") == [flaky_ref]
    assert sorted(refs("--since", "1h")) == sorted([decode_ref, flaky_ref])
    assert refs("--until", "2000-01-01T00:00:00") == []
    shown = cli(settings, tmp_path, "dead-letters", "show", decode_ref)
    assert shown.returncode == 0, shown.stderr
    letter = json.loads(shown.stdout)
    assert letter["stage"] == "decode" and "exceed 12 characters" in letter["reason"]
    assert letter["event_id"] == "long" and letter["original"]["title"] == "a title too long"
    bad_time = cli(settings, tmp_path, "dead-letters", "list", "--since", "yesterday")
    assert bad_time.returncode == 2 and "use a duration ago" in bad_time.stderr

    # The fix: the default text limit. Replaying twice publishes the event's result once.
    fixed = make_settings(endpoints, unique, {}, enabled_plugins=["echo", "flaky"])
    worker = WorkerProcess(fixed, tmp_path, test_plugins_path).start()
    try:
        for _ in range(2):
            replayed = cli(settings, tmp_path, "dead-letters", "replay", "--stage", "decode")
            assert replayed.returncode == 0, replayed.stderr
            assert f"replayed {decode_ref} (event long) to {unique}-upload" in replayed.stdout
            wait_for(lambda: committed_to_end(endpoints.kafka_bootstrap, fixed), 90, "the replay committed")
        echoed = [r["event_id"] for r in feed(client, prefix, "echo")]
        assert echoed.count("long") == 1 and echoed.count("ok") == 1
        assert json.loads(client.get(f"{prefix}latest:flaky:up-long"))["body"]["title"] == "a title too long"
    finally:
        worker.terminate()
    dry = cli(settings, tmp_path, "dead-letters", "replay", "--plugin", "flaky", "--dry-run")
    assert dry.returncode == 0 and f"would replay {flaky_ref} (event boom)" in dry.stdout


def test_tail_and_get_authenticate_with_the_redis_password(endpoints, unique, tmp_path: Path) -> None:
    password = f"pw-{unique}"
    with password_redis(password) as port:
        settings = make_settings(endpoints, unique, {})
        settings["redis"]["url"] = f"redis://127.0.0.1:{port}/0"
        record = {"event_id": "e1", "plugin": "echo", "kind": "echo", "key": "k1", "body": {"id": "e1"}}
        client = redis.Redis(port=port, password=password)
        client.xadd(f"{settings['redis']['key_prefix']}feed:echo", {"record": json.dumps(record)})
        client.set(f"{settings['redis']['key_prefix']}latest:echo:k1", json.dumps(record))
        refused = cli(settings, tmp_path, "tail", "--from-start", "--limit", "1")
        assert refused.returncode == 2 and "STREAMPROC_REDIS_PASSWORD" in refused.stderr
        settings["redis"]["password"] = password
        tailed = cli(settings, tmp_path, "tail", "--from-start", "--limit", "1")
        assert tailed.returncode == 0 and tailed.stdout.strip() == '[echo] echo k1: {"id": "e1"}', tailed.stderr
        got = cli(settings, tmp_path, "get", "echo", "k1")
        assert got.returncode == 0 and json.loads(got.stdout)["event_id"] == "e1"
        assert password not in tailed.stderr + got.stderr


def _topic_names(unique: str) -> dict[str, Any]:
    """The ``kafka`` settings naming a test's input and dead-letter topics."""
    return {
        "input_topics": {t: f"{unique}-{t}" for t in ("playback", "upload", "audio")},
        "dead_letter_topic": f"{unique}-dlq",
    }


def test_produce_and_dead_letters_authenticate_with_sasl(unique, tmp_path: Path) -> None:
    """A broker whose client listener requires SASL/PLAIN: the tools use the same SASL
    settings as the worker, and a wrong password is one line naming the user."""
    password = f"pw-{unique}"
    stack = LocalStack(tmp_path / "sasl-stack", sasl_users={"alice": password})
    info = stack.up(lambda message: None)
    try:
        settings: dict[str, Any] = {
            "kafka": {
                "bootstrap": info.sasl_bootstrap,
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "alice",
                "sasl_password": password,
                **_topic_names(unique),
            },
            "redis": {"url": info.redis_url},
        }
        path = tmp_path / "events.jsonl"
        path.write_bytes(b"\n".join(upload(f"s{i}", f"up{i}")[1] for i in range(3)) + b"\n")
        done = cli(settings, tmp_path, "produce", "--file", str(path))
        assert done.returncode == 0, done.stderr
        sent = read_topic(info.kafka_bootstrap, f"{unique}-upload", 3, timeout_s=30)  # read on the plain listener
        assert sorted(r["id"] for r in sent) == ["s0", "s1", "s2"]
        listed = cli(settings, tmp_path, "dead-letters", "list")
        assert listed.returncode == 0 and "0 dead letter(s)" in listed.stderr, listed.stderr
        settings["kafka"]["sasl_password"] = "wrong"
        refused = cli(settings, tmp_path, "produce", "--file", str(path))
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert "SASL PLAIN authentication as 'alice'" in refused.stderr and password not in refused.stderr
    finally:
        stack.down()


def test_produce_and_tail_speak_tls_verified_against_the_configured_ca(unique, tmp_path: Path) -> None:
    """A broker listener and a Redis port that speak only TLS, with a self-signed certificate:
    ``produce`` and ``tail`` connect with ``kafka.ssl_cafile`` and ``redis.ssl_cafile`` (the
    worker's own client factories), and without the CA bundle both refuse in one line."""
    stack = LocalStack(tmp_path / "tls-stack", tls=True)
    info = stack.up(lambda message: None)
    try:
        settings: dict[str, Any] = {
            "kafka": {
                "bootstrap": info.ssl_bootstrap,
                "security_protocol": "SSL",
                "ssl_cafile": info.tls_cafile,
                **_topic_names(unique),
            },
            "redis": {"url": info.redis_tls_url, "ssl_cafile": info.tls_cafile, "key_prefix": f"{unique}:"},
        }
        path = tmp_path / "events.jsonl"
        path.write_bytes(b"\n".join(upload(f"t{i}", f"up{i}")[1] for i in range(3)) + b"\n")
        done = cli(settings, tmp_path, "produce", "--file", str(path))
        assert done.returncode == 0, done.stderr
        sent = read_topic(info.kafka_bootstrap, f"{unique}-upload", 3, timeout_s=30)  # read on the plain listener
        assert sorted(r["id"] for r in sent) == ["t0", "t1", "t2"]

        record = {"event_id": "t0", "plugin": "echo", "kind": "echo", "key": "k1", "body": {"id": "t0"}}
        redis.Redis.from_url(info.redis_url).xadd(f"{unique}:feed:echo", {"record": json.dumps(record)})
        tailed = cli(settings, tmp_path, "tail", "--from-start", "--limit", "1")
        assert tailed.returncode == 0 and tailed.stdout.strip() == '[echo] echo k1: {"id": "t0"}', tailed.stderr
        stack.stop_redis()
        stack.start_redis()  # a restarted TLS stack keeps its TLS port and certificate
        redis.Redis.from_url(info.redis_url).xadd(f"{unique}:feed:echo", {"record": json.dumps(record)})
        again = cli(settings, tmp_path, "tail", "--from-start", "--limit", "1")
        assert again.returncode == 0 and "[echo] echo k1" in again.stdout, again.stderr

        settings["kafka"]["ssl_cafile"] = None
        settings["redis"]["ssl_cafile"] = None
        for argv in (("produce", "--file", str(path)), ("tail", "--from-start", "--limit", "1")):
            refused = cli(settings, tmp_path, *argv)
            assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
            assert "failed the TLS handshake (certificate verify failed" in refused.stderr, refused.stderr
    finally:
        stack.down()
