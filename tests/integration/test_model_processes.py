"""Model processes (``model_processes: N``) in a real worker against the real Kafka and Redis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from harness import (
    WorkerProcess,
    audio,
    create_topics,
    make_settings,
    playback,
    produce,
    read_topic,
    upload,
    wait_for,
)

from streamproc.media import encode_wav

pytestmark = pytest.mark.integration


def test_model_processes_serve_every_plugin_with_state_refusals_and_failures_as_in_threads(
    endpoints, unique, tmp_path: Path, test_plugins_path: Path
) -> None:
    settings = make_settings(endpoints, unique, {}, enabled_plugins=["echo", "counter", "flaky"], model_processes=2)
    create_topics(endpoints.kafka_bootstrap, settings["kafka"]["input_topics"].values())
    worker = WorkerProcess(settings, tmp_path, test_plugins_path).start()
    try:
        plays = [playback(f"p{i}", f"user{i % 3}", str(i)) for i in range(30)]
        titles = ["fine"] * 8 + ["refuse", "boom"]
        ups = [upload(f"u{i}", f"up{i}", title=t) for i, t in enumerate(titles)]
        produce(endpoints.kafka_bootstrap, f"{unique}-playback", plays)
        produce(endpoints.kafka_bootstrap, f"{unique}-upload", ups)
        counts = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-count", 30)
        flaky = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-flaky", 8)
        letters = read_topic(endpoints.kafka_bootstrap, f"{unique}-dlq", 2)
        echoes = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-echo", 40)
        memory = "streamproc_model_process_resident_bytes"
        wait_for(lambda: worker.metric(memory, plugin="echo") > 10e6, 30, "the echo model processes' memory")
    finally:
        worker.terminate()
    assert {r["event_id"] for r in echoes} == {f"p{i}" for i in range(30)} | {f"u{i}" for i in range(10)}
    per_user = {f"user{u}": sorted(r["body"]["count"] for r in counts if r["key"] == f"user{u}") for u in range(3)}
    assert per_user == {user: list(range(1, 11)) for user in per_user}, "state applied once per event, in order"
    assert {r["event_id"] for r in flaky} == {f"u{i}" for i in range(8)}
    assert {(d["event_id"], d["stage"]) for d in letters} == {("u8", "prepare"), ("u9", "infer")}
    assert echoes[0]["model_version"] == "test-1", "the model processes' version reaches the records"


def test_a_model_process_that_dies_is_restarted_and_only_the_event_that_killed_it_fails(
    endpoints, unique, tmp_path: Path, test_plugins_path: Path
) -> None:
    plugins = {"flaky": {"options": {"crash_on": "crash"}, "batch": {"max_batch_size": 8, "max_wait_ms": 200}}}
    settings = make_settings(endpoints, unique, plugins, enabled_plugins=["flaky"], model_processes=1)
    create_topics(endpoints.kafka_bootstrap, settings["kafka"]["input_topics"].values(), partitions=1)
    worker = WorkerProcess(settings, tmp_path, test_plugins_path).start()
    try:
        titles = ["a", "b", "crash", "c", "d"]
        produce(
            endpoints.kafka_bootstrap,
            f"{unique}-upload",
            [upload(f"u{i}", "same", title=t) for i, t in enumerate(titles)],
        )
        results = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-flaky", 4, timeout_s=120)
        letters = read_topic(endpoints.kafka_bootstrap, f"{unique}-dlq", 1, timeout_s=120)
        restarts = worker.metric("streamproc_model_process_restarts_total", plugin="flaky", reason="died")
        produce(endpoints.kafka_bootstrap, f"{unique}-upload", [upload("after", "same", title="e")])
        later = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-flaky", 5, timeout_s=120)
    finally:
        worker.terminate()
    assert {r["event_id"] for r in results} == {"u0", "u1", "u3", "u4"}
    assert [(d["event_id"], d["stage"]) for d in letters] == [("u2", "infer")]
    assert "model process died" in letters[0]["reason"]
    assert restarts >= 2, "the batch's process and the one the poisonous event killed alone"
    assert "after" in {r["event_id"] for r in later}, "the restarted process serves the next batches"


def test_a_hung_model_process_is_killed_its_batch_times_out_and_the_worker_goes_on(
    endpoints, unique, tmp_path: Path, test_plugins_path: Path
) -> None:
    plugins = {"slow": {"options": {"delay_s": 0.0, "hang_s": 30.0}}}
    settings = make_settings(
        endpoints, unique, plugins, enabled_plugins=["slow"], model_processes=1, infer_timeout_s=2.0
    )
    create_topics(endpoints.kafka_bootstrap, settings["kafka"]["input_topics"].values(), partitions=1)
    worker = WorkerProcess(settings, tmp_path, test_plugins_path).start()
    wav = encode_wav(np.zeros(800, np.float32))
    try:
        produce(endpoints.kafka_bootstrap, f"{unique}-audio", [audio("hang-1", "a1", wav)])
        letters = read_topic(endpoints.kafka_bootstrap, f"{unique}-dlq", 1, timeout_s=120)
        produce(endpoints.kafka_bootstrap, f"{unique}-audio", [audio("fine-1", "a1", wav)])
        results = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-slow", 1, timeout_s=120)
        restarts = worker.metric("streamproc_model_process_restarts_total", plugin="slow", reason="timeout")
    finally:
        worker.terminate()
    assert [(d["event_id"], d["stage"]) for d in letters] == [("hang-1", "timeout")]
    assert [r["event_id"] for r in results] == ["fine-1"]
    assert restarts == 1
