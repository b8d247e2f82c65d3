"""Faults during a run, each with zero lost events and recovery without a manual step.

Each test streams a paced mixed workload (``accounting.build``: a plugin that raises on
some inputs and one that hangs on others are part of every run), injects its fault
mid-stream, lets the worker(s) finish, and audits every event. Recovery time: from the
end of the fault (restart done) to the first new result. The figures of each run are
written as JSON to ``$STREAMPROC_RELIABILITY_OUT``. ``STREAMPROC_TEST_FULL=1`` runs
20,000 events per fault instead of 3,000.

Every fault runs under both processing guarantees. At least once allows duplicates on the
output topics; exactly once allows none there (read ``read_committed``). Neither allows
a lost event or a duplicate in a Redis feed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from accounting import EVENTS, KINDS, RATE, RESULTS, PacedProducer, audit, build, settings_for
from harness import WorkerProcess, committed_to_end, create_topics, feed, wait_for

from streamproc.dev.stack import alive

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GUARANTEES = ["at_least_once", "exactly_once"]
both_guarantees = pytest.mark.parametrize("guarantee", GUARANTEES)

K8S_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "config" / "streamproc.yaml"


def _run(
    fault_stack,
    name: str,
    tmp_path: Path,
    test_plugins_path: Path,
    inject: Callable[[list[WorkerProcess], dict[str, Any], PacedProducer], dict[str, float]],
    guarantee: str,
    kafka: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One fault run under ``guarantee``; ``kafka`` overrides the workers' Kafka settings."""
    _, info = fault_stack
    settings = settings_for(info.kafka_bootstrap, info.redis_url, name)
    settings["kafka"].update(kafka or {}, processing_guarantee=guarantee)
    work = build(name, EVENTS)
    create_topics(info.kafka_bootstrap, settings["kafka"]["input_topics"].values(), partitions=4)
    workers = [WorkerProcess(settings, tmp_path, test_plugins_path).start()]
    try:
        producer = PacedProducer(info.kafka_bootstrap, work, RATE)
        started = time.monotonic()
        producer.start()
        recovery = inject(workers, settings, producer)
        producer.join(timeout=600)
        assert producer.error is None, f"producer failed: {producer.error!r}"
        live = [w for w in workers if w.proc and w.proc.poll() is None]
        wait_for(lambda: committed_to_end(info.kafka_bootstrap, settings), 300, "every input record to be committed")
        elapsed = time.monotonic() - started
        for worker in live:
            worker.terminate()
    finally:
        for worker in workers:
            worker.kill()
    result = audit(work, info.kafka_bootstrap, info.redis_url, settings["redis"]["key_prefix"])
    figures = {
        "fault": name,
        "guarantee": guarantee,
        **result.summary(),
        "recovery_s": recovery,
        "run_s": round(elapsed, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name.split('-')[0]}-{guarantee}.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    assert result.lost_total == 0, f"lost: {result.lost}"
    assert not result.wrong_dead_letters, result.wrong_dead_letters[:10]
    assert result.feed_duplicates == 0
    if guarantee == "exactly_once":
        assert result.topic_duplicates == 0, "duplicates on output topics (read_committed) under exactly_once"
    assert not result.state_errors, result.state_errors[:10]
    return figures


def _first_result_after(worker: WorkerProcess, baseline: float, since: float) -> float:
    """Seconds from ``since`` (the fault) until ``worker`` publishes past ``baseline`` results."""
    wait_for(lambda: worker.metric("streamproc_results_total") > baseline, 300, "results to resume", 0.1)
    return round(time.monotonic() - since, 2)


def _at(producer: PacedProducer, share: float, settings: dict[str, Any]) -> None:
    """Wait until ``share`` of the stream is produced. The fault that follows is mid-stream:
    records are still being produced or, on a slow machine where production already ended
    (recoveries from earlier faults take their time), still uncommitted."""
    wait_for(lambda: producer.sent >= share * EVENTS or not producer.is_alive(), 300, f"{share:.0%} produced")
    unfinished = producer.is_alive() or not committed_to_end(settings["kafka"]["bootstrap"], settings)
    assert unfinished, f"every record was committed before {share:.0%}: not a mid-stream fault"


def kubernetes_membership() -> dict[str, Any]:
    """The group membership a pod of deploy/k8s gets: the config's session timeout and a
    static group instance id (the pod name, which survives a container restart)."""
    config = yaml.safe_load(K8S_CONFIG.read_text())
    return {"session_timeout_s": config["kafka"]["session_timeout_s"], "group_instance_id": "streamproc-0"}


@both_guarantees
def test_kill_9_three_times_mid_stream_loses_nothing(
    fault_stack, unique, tmp_path, test_plugins_path, guarantee
) -> None:
    """With Kubernetes' settings the restarted worker (the same pod) rejoins as the same static
    member: its partitions come back without waiting for the killed session to expire."""

    def inject(workers, settings, producer) -> dict[str, float]:
        recovery = {}
        for n, share in enumerate((0.25, 0.5, 0.75), start=1):
            _at(producer, share, settings)
            killed_at = time.monotonic()
            workers[-1].kill()
            workers.append(WorkerProcess(settings, tmp_path, test_plugins_path).start())  # what k8s would do
            recovery[f"kill_{n}_to_ready_s"] = round(time.monotonic() - killed_at, 2)
            recovery[f"kill_{n}_to_results_s"] = _first_result_after(workers[-1], 0, killed_at)
        return recovery

    _run(fault_stack, f"kill9-{unique}", tmp_path, test_plugins_path, inject, guarantee, kubernetes_membership())


@both_guarantees
def test_kafka_broker_restart_mid_stream_loses_nothing(
    fault_stack, unique, tmp_path, test_plugins_path, guarantee
) -> None:
    stack, _ = fault_stack

    def inject(workers, settings, producer) -> dict[str, float]:
        _at(producer, 0.4, settings)
        stack.restart_kafka(down_s=5.0)
        back_at = time.monotonic()
        baseline = workers[0].metric("streamproc_results_total")
        return {"broker_back_to_results_s": _first_result_after(workers[0], baseline, back_at)}

    _run(fault_stack, f"broker-{unique}", tmp_path, test_plugins_path, inject, guarantee)


@both_guarantees
def test_redis_down_for_20_seconds_loses_nothing(fault_stack, unique, tmp_path, test_plugins_path, guarantee) -> None:
    stack, _ = fault_stack

    def inject(workers, settings, producer) -> dict[str, float]:
        _at(producer, 0.3, settings)
        stack.stop_redis()
        time.sleep(20)
        stuck = workers[0].metric("streamproc_results_total")
        stack.start_redis()
        return {"redis_back_to_results_s": _first_result_after(workers[0], stuck, time.monotonic())}

    _run(fault_stack, f"redis-{unique}", tmp_path, test_plugins_path, inject, guarantee)


FSYNC_MARGIN_S = 2.5
"""``appendfsync everysec``: Redis fsyncs once a second and postpones a write by at most 2 s
when an fsync is slow; a result acknowledged longer ago than that is on disk."""


def _sigkill(pid: int) -> None:
    """SIGKILL a stack process (no shutdown, no final fsync) and reap it."""
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 10, f"process {pid} to die")
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _published(client: redis.Redis, prefix: str) -> set[tuple[str, str]]:
    """(kind, event id) of every result in the feeds."""
    return {(kind, r["event_id"]) for kind in set(KINDS.values()) for r in feed(client, prefix, kind)}


@both_guarantees
def test_redis_sigkill_keeps_what_was_acknowledged_before_the_fsync_interval(
    fault_stack, unique, tmp_path, test_plugins_path, guarantee
) -> None:
    """Redis (append-only file, ``appendfsync everysec``) killed with SIGKILL mid-stream and
    restarted: every result acknowledged more than FSYNC_MARGIN_S before the kill is still
    there, and the run loses nothing."""
    stack, info = fault_stack
    client = redis.Redis.from_url(info.redis_url)

    def inject(workers, settings, producer) -> dict[str, float]:
        _at(producer, 0.4, settings)
        before = _published(client, settings["redis"]["key_prefix"])
        time.sleep(FSYNC_MARGIN_S)
        _sigkill(stack.status().redis_pid)
        stuck = workers[0].metric("streamproc_results_total")
        stack.start_redis()
        kept = _published(client, settings["redis"]["key_prefix"])
        assert before and before <= kept, f"{len(before - kept)} acknowledged results lost by the kill"
        return {"redis_sigkill_to_results_s": _first_result_after(workers[0], stuck, time.monotonic())}

    _run(fault_stack, f"redissigkill-{unique}", tmp_path, test_plugins_path, inject, guarantee)


@both_guarantees
def test_kafka_broker_sigkill_mid_stream_loses_nothing(
    fault_stack, unique, tmp_path, test_plugins_path, guarantee
) -> None:
    stack, _ = fault_stack

    def inject(workers, settings, producer) -> dict[str, float]:
        _at(producer, 0.4, settings)
        _sigkill(stack.status().kafka_pid)
        stack.restart_kafka(down_s=5.0)  # the broker is gone already: this starts it on its data
        back_at = time.monotonic()
        baseline = workers[0].metric("streamproc_results_total")
        return {"broker_sigkill_to_results_s": _first_result_after(workers[0], baseline, back_at)}

    _run(fault_stack, f"brokersigkill-{unique}", tmp_path, test_plugins_path, inject, guarantee)


@both_guarantees
def test_two_workers_rebalancing_mid_stream_lose_nothing_and_keep_state(
    fault_stack, unique, tmp_path, test_plugins_path, guarantee
) -> None:
    def inject(workers, settings, producer) -> dict[str, float]:
        _at(producer, 0.3, settings)
        workers.append(WorkerProcess(settings, tmp_path, test_plugins_path).start())  # rebalance: join
        _at(producer, 0.6, settings)
        baseline = workers[1].metric("streamproc_results_total")
        left_at = time.monotonic()
        code, seconds = workers[0].terminate()  # rebalance: leave
        assert code == 0
        return {
            "leave_drain_s": round(seconds, 2),
            "leave_to_results_s": _first_result_after(workers[1], baseline, left_at),
        }

    _run(fault_stack, f"rebalance-{unique}", tmp_path, test_plugins_path, inject, guarantee)


FAUST_HEARTBEAT_INTERVAL_S = 3.0
"""How often a worker heartbeats to the group coordinator (Faust's broker_heartbeat_interval)."""


def test_a_worker_paused_past_its_session_cannot_commit_and_its_late_writes_are_aborted(
    fault_stack, unique, tmp_path, test_plugins_path
) -> None:
    """Zombie fencing under exactly_once: worker A is stopped (SIGSTOP) with transactions
    open, B takes its partitions once A's session expired, then A resumes. A's late
    transactions are fenced (its producers are older than B's): nothing of them is visible
    read_committed, and A drops its batches instead of committing them."""
    session_s = 6.0

    def inject(workers, settings, producer) -> dict[str, float]:
        zombie = workers[0]
        _at(producer, 0.3, settings)
        # The premise: A is stopped holding records it has not published yet (a worker that had
        # caught up would have nothing to write late: the full-size run once stopped A there).
        wait_for(lambda: zombie.metric("streamproc_in_flight_events") > 0, 60, "A to hold records in flight")
        zombie.proc.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        workers.append(WorkerProcess(settings, tmp_path, test_plugins_path).start())
        taken_over = _first_result_after(workers[1], 0, stopped_at)
        # A's session expires session_s after its last heartbeat, which may precede the stop by
        # up to one heartbeat interval (Faust's default, 3 s).
        expired_at_the_earliest = session_s - FAUST_HEARTBEAT_INTERVAL_S
        assert time.monotonic() - stopped_at > expired_at_the_earliest, "B published before A's session could expire"
        zombie.proc.send_signal(signal.SIGCONT)
        # Resumed, A either tries to commit what it held (fenced: "dropping N uncommitted
        # records") or finds itself out of the group first and holds nothing by then; either
        # way nothing of it may become visible, which the audit checks (no duplicate, none lost).
        wait_for(
            lambda: "dropping" in zombie.log_path.read_text() or zombie.metric("streamproc_in_flight_events") == 0,
            120,
            "the resumed zombie to drop or finish its records",
        )
        dropped = "dropping" in zombie.log_path.read_text()
        return {"stop_to_takeover_results_s": taken_over, "zombie_dropped_late_batches": float(dropped)}

    figures = _run(
        fault_stack,
        f"zombie-{unique}",
        tmp_path,
        test_plugins_path,
        inject,
        "exactly_once",
        {"session_timeout_s": session_s},
    )
    assert figures["duplicates_on_topics"] == 0
