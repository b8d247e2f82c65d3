"""Test harness for integration tests: worker processes, event builders, topic readers."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from streamproc.dev.stack import free_ports


def make_settings(endpoints: Any, name: str, plugins: dict[str, dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    """Worker settings (as YAML data) with this test's own topics, group and key prefix."""
    data: dict[str, Any] = {
        "app_id": f"test-{name}",
        "kafka": {
            "bootstrap": endpoints.kafka_bootstrap,
            "partitions": 3,
            "input_topics": {t: f"{name}-{t}" for t in ("playback", "upload", "audio")},
            "output_topic_prefix": f"{name}-out-",
            "dead_letter_topic": f"{name}-dlq",
            "commit_interval_s": 0.5,
            "session_timeout_s": 10,
        },
        "redis": {"url": endpoints.redis_url, "key_prefix": f"t:{name}:"},
        "http": {"bind": "127.0.0.1", "port": 0},
        "plugins": plugins,
        "shutdown_timeout_s": 20,
        "cpu_threads": 1,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def all_plugins_off(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    return {n: {"enabled": False} for n in names}


@dataclass
class WorkerProcess:
    """A ``streamproc worker`` child process with its own YAML settings."""

    settings: dict[str, Any]
    workdir: Path
    extra_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    log_path: Path = field(init=False)

    def start(self, ready_timeout_s: float = 120.0) -> WorkerProcess:
        self.port = free_ports(1)[0]
        self.settings["http"]["port"] = self.port
        config = self.workdir / f"worker-{self.port}.yaml"
        config.write_text(yaml.safe_dump(self.settings))
        self.log_path = self.workdir / f"worker-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_") or k == "STREAMPROC_CACHE"}
        env["STREAMPROC_CONFIG_FILE"] = str(config)
        if self.extra_path is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.extra_path), env.get("PYTHONPATH")]))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamproc", "worker"], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.http("/readyz")[0] == 200:
                return self
            time.sleep(0.3)
        raise RuntimeError(f"worker not ready after {ready_timeout_s} s:\n{self.log_tail()}")

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric family's samples whose labels include ``labels``."""
        total = 0.0
        for line in self.http("/metrics")[1].splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def terminate(self, timeout_s: float = 60.0) -> tuple[int, float]:
        """SIGTERM; returns (exit status, seconds until exit)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout_s)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_for(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.3) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 3) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        existing = set(admin.list_topics())
        config = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}  # as the worker creates its topics
        new = [NewTopic(n, partitions, 1, topic_configs=config) for n in names if n not in existing]
        if new:
            admin.create_topics(new)
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=16 * 1024 * 1024)
    futures = [producer.send(topic, key=key, value=value) for key, value in records]
    producer.flush()
    for future in futures:
        future.get(timeout=30)  # raises if the broker refused a record
    producer.close()
    return len(futures)


def read_topic(bootstrap: str, topic: str, min_count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Every JSON record of ``topic`` from the start, waiting until at least ``min_count`` arrived
    (read ``read_committed``: what exactly_once promises to; all records without transactions)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        consumer_timeout_ms=1000,
    )
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for message in consumer:
                records.append(json.loads(message.value))
            if len(records) >= min_count:
                # one more short read: anything past min_count shows duplicates or extras
                for message in consumer:
                    records.append(json.loads(message.value))
                break
    finally:
        consumer.close()
    return records


def feed(client: redis.Redis, prefix: str, kind: str) -> list[dict[str, Any]]:
    return [json.loads(fields[b"record"]) for _, fields in client.xrange(f"{prefix}feed:{kind}")]


def envelope(event_id: str, event_type: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": event_type,
        "ts": int(time.time() * 1000),
        "user_id": fields.pop("user_id", "u1"),
        **fields,
    }


def playback(
    event_id: str, user: str, item: str, action: str = "complete", media: str = "video"
) -> tuple[bytes, bytes]:
    doc = envelope(
        event_id, "playback", user_id=user, item_id=item, action=action, position_s=0.0, duration_s=100.0, media=media
    )
    return user.encode(), json.dumps(doc).encode()


def upload(
    event_id: str, upload_id: str, title: str = "A title", image: bytes | None = None, **fields: Any
) -> tuple[bytes, bytes]:
    doc = envelope(event_id, "upload", upload_id=upload_id, title=title, **fields)
    if image is not None:
        doc["image"] = base64.b64encode(image).decode()
    return upload_id.encode(), json.dumps(doc).encode()


def audio(event_id: str, audio_id: str, wav: bytes, **fields: Any) -> tuple[bytes, bytes]:
    doc = envelope(event_id, "audio", audio_id=audio_id, audio=base64.b64encode(wav).decode(), **fields)
    return audio_id.encode(), json.dumps(doc).encode()


def committed_to_end(bootstrap: str, settings: dict[str, Any]) -> bool:
    """The worker's group has committed every record of every input topic (lag 0)."""
    group = settings["app_id"]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        committed = admin.list_group_offsets(group).get(group, {})
        topics = settings["kafka"]["input_topics"].values()
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        ends = consumer.end_offsets(tps)
        return all(end == 0 or (tp in committed and committed[tp].offset >= end) for tp, end in ends.items())
    finally:
        admin.close()
        consumer.close()


@contextlib.contextmanager
def password_redis(password: str) -> Iterator[int]:
    """A private ``redis-server --requirepass`` on a free port, answering AUTH'd PINGs;
    yields its port and stops it afterwards."""
    port = free_ports(1)[0]
    command = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    server = subprocess.Popen([*command, "--save", "", "--requirepass", password], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, password=password, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, 10, "the password-protected Redis", 0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)
