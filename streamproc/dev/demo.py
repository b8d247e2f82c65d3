"""``streamproc demo``: the local stack, a worker, a burst of demo events, results live, a summary.

Each run uses its own topics, consumer group and Redis key prefix, so runs never see each
other's events. The stack is started when none is running and stopped at the end (unless
``--keep-stack``); the worker runs as a child process and is stopped with SIGTERM, as in
production.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import redis
import yaml
from kafka import KafkaConsumer

from streamproc.config import Settings
from streamproc.dev.demo_events import OUT_OF_SCOPE_PREFIX, demo_records
from streamproc.dev.feeds import FeedReader, summarize
from streamproc.dev.producer import produce
from streamproc.dev.stack import LocalStack, free_ports
from streamproc.kafka_clients import kafka_python_options

READY_TIMEOUT_S = 300.0
DRAIN_TIMEOUT_S = 300.0
SHOW_PER_PLUGIN = 6  # live lines per plugin; the summary counts them all


def demo_settings(base: Settings, run_id: str, bootstrap: str, redis_url: str) -> Settings:
    """The base settings with this run's stack, topics, group, key prefix and a free port."""
    data = base.model_dump()
    data["app_id"] = f"streamproc-demo-{run_id}"
    data["kafka"].update(
        bootstrap=bootstrap,
        consumer_group=None,
        input_topics={t: f"demo-{run_id}-{t}" for t in ("playback", "upload", "audio")},
        output_topic_prefix=f"demo-{run_id}-",
        dead_letter_topic=f"demo-{run_id}-dead-letters",
    )
    data["redis"].update(url=redis_url, key_prefix=f"demo:{run_id}:")
    data["http"].update(bind="127.0.0.1", port=free_ports(1)[0])
    return Settings.model_validate(data)


def run_demo(base: Settings, count: int, keep_stack: bool) -> int:
    """Run the whole demo; returns the process exit status (0 when every event was accounted for)."""
    stack = LocalStack()
    started_stack = stack.status() is None
    info = stack.up(_say)
    _say(info.describe())
    run_id = time.strftime("%Y%m%d-%H%M%S")
    settings = demo_settings(base, run_id, info.kafka_bootstrap, info.redis_url)
    workdir = Path(tempfile.mkdtemp(prefix=f"streamproc-demo-{run_id}-"))
    config_file = workdir / "demo.yaml"
    config_file.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    log_file = workdir / "worker.log"
    _say(f"starting the worker (config {config_file}, log {log_file}) ...")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_") or k == "STREAMPROC_CACHE"}
    env["STREAMPROC_CONFIG_FILE"] = str(config_file)
    with log_file.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "worker"], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    try:
        status = _drive(settings, worker, count, log_file)
    finally:
        _stop(worker)
        if started_stack and not keep_stack:
            stack.down()
    return status


def _drive(settings: Settings, worker: subprocess.Popen[bytes], count: int, log_file: Path) -> int:
    base_url = f"http://127.0.0.1:{settings.http.port}"
    plugins = _wait_ready(base_url, worker, log_file)
    _say(f"worker ready; plugins: {', '.join(plugins) or '(none installed)'}")
    records = list(demo_records(count))
    produced = produce(settings, records, len(records), settings.kafka.input_topics)
    _say(f"produced {len(records)} events: {dict(produced)}")
    reader = FeedReader(redis.Redis.from_url(settings.redis.url), settings.redis.key_prefix)
    results, latencies = Counter(), []
    out_of_scope: list[dict[str, Any]] = []
    handled = 0.0
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        for record in reader.poll(block_ms=500):
            results[record["plugin"]] += 1
            latencies.append(record["result_ts"] - record["event_ts"])
            if record["event_id"].startswith(OUT_OF_SCOPE_PREFIX):
                out_of_scope.append(record)
            elif results[record["plugin"]] <= SHOW_PER_PLUGIN:
                print(summarize(record), flush=True)
        metrics = _scrape(base_url)
        handled = metrics.get("streamproc_events_consumed_total", 0) + metrics.get("streamproc_events_invalid_total", 0)
        if handled >= len(records) and metrics.get("streamproc_in_flight_events", 1) == 0:
            for record in reader.poll():
                results[record["plugin"]] += 1
                latencies.append(record["result_ts"] - record["event_ts"])
                if record["event_id"].startswith(OUT_OF_SCOPE_PREFIX):
                    out_of_scope.append(record)
            break
        if worker.poll() is not None:
            _say(f"worker exited with {worker.returncode}; see {log_file}")
            return 1
    dead = _dead_letters(settings)
    _print_summary(produced, results, dead, latencies, handled, len(records))
    print("inputs the models were not made for, and their answers:")
    for record in sorted(out_of_scope, key=lambda r: (r["event_id"], r["plugin"])):
        print(f"  - {record['event_id'].removeprefix(OUT_OF_SCOPE_PREFIX)}: {summarize(record)}")
    return 0 if handled >= len(records) else 1


def _wait_ready(base_url: str, worker: subprocess.Popen[bytes], log_file: Path) -> list[str]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"worker exited with {worker.returncode} during start-up; see {log_file}")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    text = urllib.request.urlopen(f"{base_url}/metrics", timeout=2).read().decode()
                    return sorted(
                        {
                            line.split('plugin="')[1].split('"')[0]
                            for line in text.splitlines()
                            if line.startswith("streamproc_model_info{")
                        }
                    )
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"worker not ready after {READY_TIMEOUT_S:.0f} s; see {log_file}")


def _scrape(base_url: str) -> dict[str, float]:
    """Sum each metric family's samples from /metrics."""
    try:
        text = urllib.request.urlopen(f"{base_url}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{")[0].split(" ")[0]
        sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return sums


def _dead_letters(settings: Settings) -> list[dict[str, object]]:
    consumer = KafkaConsumer(
        settings.kafka.dead_letter_topic,
        **kafka_python_options(settings.kafka),
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
        enable_auto_commit=False,
    )
    try:
        return [json.loads(message.value) for message in consumer]
    finally:
        consumer.close()


def _print_summary(
    produced: dict[str, int],
    results: Counter[str],
    dead: list[dict[str, object]],
    latencies: list[int],
    handled: float,
    total: int,
) -> None:
    print("\n== demo summary ==")
    print(
        f"events in:     {total} ({', '.join(f'{k} {v}' for k, v in sorted(produced.items()))}); handled {handled:.0f}"
    )
    print("results out:   " + (", ".join(f"{k} {v}" for k, v in sorted(results.items())) or "none (no plugins)"))
    print(f"dead letters:  {len(dead)}")
    for letter in dead[:10]:
        print(f"  - {letter.get('stage')}/{letter.get('plugin') or '-'}: {letter.get('reason')}")
    if latencies:
        ordered = sorted(latencies)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
        print(
            f"latency (event time -> result, ms): p50 {pick(0.5)}, p95 {pick(0.95)}, p99 {pick(0.99)}, "
            f"max {ordered[-1]}"
        )


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
