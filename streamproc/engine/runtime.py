"""Running one plugin: device and precision choice, and the synchronous batch step.

``PluginRuntime.run_batch`` is the whole contract between the engine and a plugin's
model code: prepare each item, run one batched ``infer`` under inference mode (and
autocast on CUDA), build each result. It never raises: every item ends as a result, a
skip, or a failure with the stage and reason. A failed batch is retried item by item
so that one poisonous input does not take its batch-mates with it.

A thread cannot be killed: when a batch outlives ``infer_timeout_s`` in thread mode its
thread goes on computing, holding a core and its memory, until ``infer`` returns (perhaps
never). ``AbandonedThreads`` counts those threads per plugin and bounds them; model
processes (``model_processes``) kill hung work instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from streamproc.config import PluginSettings
from streamproc.errors import InvalidInput
from streamproc.events import Event
from streamproc.plugin import BatchPolicy, LoadContext, Plugin
from streamproc.records import DEFAULT_MAX_RESULT_BYTES, DeadLetterStage, clean_reason, encode_body

log = logging.getLogger(__name__)

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
DEFAULT_MAX_ABANDONED_THREADS = 2
"""The default of ``max_abandoned_threads``: per plugin, threads of timed-out batches that may
still run before the plugin's batches are refused."""


@dataclass(frozen=True)
class Failure:
    """Why one item failed: the stage (prepare, infer, result, timeout) and a reason."""

    stage: DeadLetterStage
    reason: str


@dataclass(frozen=True)
class Outcome:
    """What became of one event in one plugin: a result body (with its JSON), a skip, or a
    failure."""

    body: Mapping[str, Any] | None = None
    failure: Failure | None = None
    body_json: str = ""

    @property
    def skipped(self) -> bool:
        return self.body is None and self.failure is None


SKIPPED = Outcome()


@dataclass
class BatchStats:
    """Figures of the last batch, for metrics: size and inference seconds."""

    size: int = 0
    infer_s: float = 0.0
    retried: bool = False
    errors: dict[str, int] = field(default_factory=dict)


class AbandonedThreads:
    """The threads of one plugin's timed-out batches that are still running, bounded.

    ``adopt`` takes the work of a batch that exceeded its time: its thread is counted until
    the work returns (``running``; ``total`` counts every one ever adopted). While
    ``running`` is at ``limit``, ``refusal`` says why the plugin's next batches must fail
    without starting another thread; it clears as the threads return. Thread-safe: work
    returns on its own thread."""

    def __init__(self, limit: int = DEFAULT_MAX_ABANDONED_THREADS) -> None:
        if limit < 1:
            raise ValueError(f"max_abandoned_threads must be at least 1, got {limit}")
        self.limit = limit
        self.total = 0
        self._running = 0
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        """Adopted threads whose work has not returned yet."""
        with self._lock:
            return self._running

    @property
    def refusal(self) -> str | None:
        """``None`` while fewer than ``limit`` threads run; else the reason to refuse a batch."""
        running = self.running
        if running < self.limit:
            return None
        return (
            f"not run: {running} threads of timed-out batches still running (max_abandoned_threads {self.limit}); "
            "batches are refused until they return (model_processes kill hung work instead)"
        )

    def adopt(self, work: Future[Any]) -> int:
        """Count ``work``'s thread until ``work`` is done; returns the threads now running."""
        with self._lock:
            self._running += 1
            self.total += 1
            running = self._running
        work.add_done_callback(self._returned)
        return running

    def _returned(self, _: Future[Any]) -> None:
        with self._lock:
            self._running -= 1


def choose_device(setting: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {setting!r} requested but CUDA is not available")
    return device


def choose_autocast(device: torch.device, precision: str) -> torch.dtype | None:
    """Reduced precision for autocast on CUDA; ``None`` means float32 (always on CPU)."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def cpu_thread_count(setting: int, plugin_threads: int, reserved_cores: int = 1) -> int:
    """Torch intra-op threads per plugin thread on CPU.

    ``setting`` when non-zero. Otherwise the available cores (``available_cores``) left
    after ``reserved_cores`` (in the
    worker: the event loop and the Kafka client's thread), shared by the
    ``plugin_threads`` that may compute at once; at least 1, at most 8. Every plugin
    thread that runs torch gets its own OpenMP team, so more threads than cores spin
    against one another: on 2 cores the mixed workload's p99 latency at 50% load was 8.3 s
    with 2 threads per plugin thread and 0.9-5.7 s over three runs with 1
    (docs/performance.md).
    """
    if setting:
        return setting
    return max(1, min(8, (available_cores() - reserved_cores) // max(1, plugin_threads)))


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota
    (a Kubernetes CPU limit) rounded up, when one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def configure_cpu_threads(setting: int, plugin_threads: int, reserved_cores: int = 1) -> int:
    """Set torch's intra-op threads to ``cpu_thread_count(...)``; returns the count."""
    threads = cpu_thread_count(setting, plugin_threads, reserved_cores)
    torch.set_num_threads(threads)
    return threads


def merged_policy(default: BatchPolicy, settings: PluginSettings) -> BatchPolicy:
    """The plugin's default batch policy with configured fields overriding it."""
    overrides = {k: v for k, v in settings.batch.model_dump().items() if v is not None}
    merged = {**default.__dict__, **overrides}
    merged["max_queue"] = max(merged["max_queue"], merged["max_batch_size"])
    return BatchPolicy(**merged)


class PluginRuntime:
    """One loaded plugin with its device, precision and batch policy."""

    def __init__(
        self,
        plugin: Plugin,
        settings: PluginSettings,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        infer_retries: int,
        options: Mapping[str, Any] | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        max_abandoned_threads: int = DEFAULT_MAX_ABANDONED_THREADS,
    ) -> None:
        """``options`` are the validated plugin options (default: ``settings.options`` as given);
        a result body whose JSON exceeds ``max_result_bytes`` fails its event (stage result);
        ``max_abandoned_threads`` bounds ``abandoned``, the threads of timed-out batches."""
        self.max_result_bytes = max_result_bytes
        self.abandoned = AbandonedThreads(max_abandoned_threads)
        self.plugin = plugin
        self.name = plugin.name
        self.produces = plugin.produces
        self.policy = merged_policy(plugin.batch_policy, settings)
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.infer_retries = infer_retries
        options = dict(settings.options if options is None else options)
        self.context = LoadContext(device=device, autocast_dtype=autocast_dtype, options=options)

    @property
    def dtype_name(self) -> str:
        return str(self.autocast_dtype or torch.float32).removeprefix("torch.")

    def load(self) -> None:
        self.plugin.load(self.context)

    def run_batch(self, items: Sequence[tuple[Event, Mapping[str, Any] | None]]) -> tuple[list[Outcome], BatchStats]:
        """Prepare, infer and build results for ``items``; one outcome per item, in order."""
        stats = BatchStats()
        outcomes: list[Outcome] = [SKIPPED] * len(items)
        ready: list[int] = []
        inputs: list[Any] = []
        for i, (event, state) in enumerate(items):
            try:
                prepared = self.plugin.prepare(event, state)
            except InvalidInput as exc:
                outcomes[i] = Outcome(failure=Failure("prepare", clean_reason(exc.reason, 500)))
                continue
            except Exception as exc:  # plugin bug: the item fails, the worker goes on
                outcomes[i] = self._error("prepare", exc, stats)
                continue
            if prepared is not None:
                ready.append(i)
                inputs.append(prepared)
        if not inputs:
            return outcomes, stats
        stats.size = len(inputs)
        started = time.perf_counter()
        try:
            outputs = self._infer(inputs)
        except Exception as exc:
            log.warning(
                "plugin %s: batch of %d failed (%s: %s); retrying one by one",
                self.name,
                len(inputs),
                type(exc).__name__,
                exc,
            )
            stats.retried = True
            outputs = [self._infer_alone(x, stats) for x in inputs]
        stats.infer_s = time.perf_counter() - started
        for i, output in zip(ready, outputs, strict=True):
            if isinstance(output, Outcome):
                outcomes[i] = output
                continue
            try:
                body = dict(self.plugin.result(items[i][0], output))
            except Exception as exc:
                outcomes[i] = self._error("result", exc, stats)
                continue
            outcomes[i] = self._encoded(body, stats)
        return outcomes, stats

    def _encoded(self, body: dict[str, Any], stats: BatchStats) -> Outcome:
        """The body with its JSON, or a ``result`` failure when it is not strict JSON (a
        tensor, NaN) or is larger than ``max_result_bytes``: the event fails, not its sink."""
        try:
            body_json = encode_body(body)
        except (TypeError, ValueError) as exc:
            stats.errors["result"] = stats.errors.get("result", 0) + 1
            return Outcome(failure=Failure("result", clean_reason(f"result body is not JSON: {exc}", 500)))
        size = len(body_json.encode())
        if size > self.max_result_bytes:
            stats.errors["result"] = stats.errors.get("result", 0) + 1
            reason = f"result body of {size} bytes exceeds limits.max_result_bytes ({self.max_result_bytes})"
            return Outcome(failure=Failure("result", reason))
        return Outcome(body=body, body_json=body_json)

    def _infer(self, inputs: list[Any]) -> Sequence[Any]:
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            outputs = self.plugin.infer(inputs)
        if len(outputs) != len(inputs):
            raise RuntimeError(f"infer returned {len(outputs)} outputs for {len(inputs)} inputs")
        return outputs

    def _infer_alone(self, item: Any, stats: BatchStats) -> Any:
        last: Exception | None = None
        for _ in range(max(1, self.infer_retries)):
            try:
                return self._infer([item])[0]
            except Exception as exc:
                last = exc
        assert last is not None
        return self._error("infer", last, stats)

    def _error(self, stage: DeadLetterStage, exc: Exception, stats: BatchStats) -> Outcome:
        stats.errors[stage] = stats.errors.get(stage, 0) + 1
        return Outcome(failure=Failure(stage, clean_reason(f"{type(exc).__name__}: {exc}", 500)))
