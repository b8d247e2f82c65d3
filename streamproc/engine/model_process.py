"""Model processes: a plugin's batches computed outside the worker process (off its GIL).

With ``model_processes: N`` (N >= 1) each plugin gets N processes of its own. Each loads
the plugin as the worker would (``load_plugins`` with only that plugin enabled), uses
``model_threads`` torch threads, and serves ``PluginRuntime.run_batch`` over a pipe: the
worker sends the batch's events and states, the process answers the outcomes, result
bodies already encoded. The worker's event loop then spends no time in ``prepare``,
``infer`` or ``result`` and never waits for the GIL while a model computes.

A model process that does not answer within ``infer_timeout_s`` is killed and restarted;
its batch fails with stage ``timeout``. One that dies (a segfault, the OOM killer) is
restarted and its batch retried item by item, each in a fresh process, so one poisonous
input fails alone (stage ``infer``, "model process died"). Every restart is counted.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from streamproc.config import Settings
from streamproc.engine.runtime import BatchStats, Failure, Outcome
from streamproc.errors import PluginLoadError
from streamproc.events import Event

log = logging.getLogger(__name__)

Item = tuple[Event, Mapping[str, Any] | None]
READY_TIMEOUT_S = 600.0
"""How long a model process may take to import and load its plugin."""
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _serve(conn: Connection, settings: Settings, plugin: str, threads: int) -> None:
    """The model process: load one plugin, then answer batches until the pipe closes."""
    import torch

    from streamproc.ops.logs import configure_logging
    from streamproc.registry import load_plugins

    configure_logging(settings.log_level, settings.log_format)
    runtimes, reports = load_plugins(settings.model_copy(update={"enabled_plugins": [plugin], "fail_fast": False}))
    if plugin not in runtimes:
        reason = next((r.error for r in reports if r.name == plugin and r.error), "not loaded")
        conn.send(("error", reason))
        return
    torch.set_num_threads(threads)
    runtime = runtimes[plugin]
    conn.send(("ready", runtime.plugin.model_version))
    while True:
        try:
            items = conn.recv()
        except EOFError:  # the worker closed the pipe: stop
            return
        conn.send(runtime.run_batch(items))


class ModelProcess:
    """One model process of a plugin and the pipe to it."""

    def __init__(self, settings: Settings, plugin: str, threads: int) -> None:
        self.settings = settings
        self.plugin = plugin
        self.threads = threads
        self.model_version = "unversioned"
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def start(self) -> ModelProcess:
        """Start the process and wait until its plugin is loaded; raises ``PluginLoadError``."""
        context = multiprocessing.get_context("spawn")  # no forked event loop, threads or sockets
        parent, child = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(child, self.settings, self.plugin, self.threads),
            name=f"model-{self.plugin}",
            daemon=True,
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        if not parent.poll(READY_TIMEOUT_S):
            self.kill()
            raise PluginLoadError(f"model process of {self.plugin} not ready within {READY_TIMEOUT_S:.0f} s")
        try:
            status, detail = parent.recv()
        except EOFError:
            code = self._exit_code()
            raise PluginLoadError(f"model process of {self.plugin} exited while loading (exit code {code})") from None
        if status != "ready":
            self.kill()
            raise PluginLoadError(f"model process of {self.plugin}: {detail}")
        self.model_version = detail
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def run_batch(self, items: Sequence[Item], timeout_s: float) -> tuple[list[Outcome], BatchStats]:
        """The outcomes of ``items``. Raises ``TimeoutError`` (no answer in time) or
        ``ModelProcessDied``; the caller restarts the process after either."""
        assert self._conn is not None
        try:
            self._conn.send(list(items))
            if not self._conn.poll(timeout_s):
                raise TimeoutError(f"batch exceeded {timeout_s:.1f} s")
            return self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            raise ModelProcessDied(self._exit_code()) from None

    def kill(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None and self._process.is_alive():
            self._process.kill()
        if self._process is not None:
            self._process.join(5)

    def _exit_code(self) -> int | None:
        if self._process is None:
            return None
        self._process.join(1)
        return self._process.exitcode


class ModelProcessDied(Exception):
    """The model process exited while it held a batch."""

    def __init__(self, exit_code: int | None) -> None:
        super().__init__(f"model process died (exit code {exit_code})")
        self.exit_code = exit_code


class ModelProcessPool:
    """A plugin's model processes: each batch is served by an idle one (blocking calls,
    made from the batcher's threads). Never raises for a batch: every item ends as an
    outcome."""

    def __init__(
        self,
        settings: Settings,
        plugin: str,
        processes: int,
        threads: int,
        timeout_s: float,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        """``on_restart(reason)`` is told of every restart (``timeout`` or ``died``)."""
        self.settings = settings
        self.plugin = plugin
        self.size = processes
        self.threads = threads
        self.timeout_s = timeout_s
        self._on_restart = on_restart
        self._idle: queue.Queue[ModelProcess] = queue.Queue()
        self._all: list[ModelProcess] = []
        self._lock = threading.Lock()

    def start(self) -> ModelProcessPool:
        """Start every process (in parallel) and wait until all are loaded."""
        started: list[ModelProcess | Exception] = []

        def one() -> None:
            try:
                started.append(ModelProcess(self.settings, self.plugin, self.threads).start())
            except Exception as exc:
                started.append(exc)

        workers = [threading.Thread(target=one) for _ in range(self.size)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        errors = [s for s in started if isinstance(s, Exception)]
        for process in (s for s in started if isinstance(s, ModelProcess)):
            self._all.append(process)
            self._idle.put(process)
        if errors:
            self.stop()
            raise errors[0]
        return self

    @property
    def model_version(self) -> str:
        return self._all[0].model_version if self._all else "unversioned"

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._all if p.pid is not None]

    def rss_bytes(self) -> list[int]:
        """Resident memory of each live model process (Linux ``/proc``; empty elsewhere)."""
        sizes = []
        for pid in self.pids():
            try:
                pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            except (OSError, ValueError, IndexError):
                continue
            sizes.append(pages * PAGE_BYTES)
        return sizes

    def run_batch(self, items: Sequence[Item]) -> tuple[list[Outcome], BatchStats]:
        """Outcomes of ``items`` in order (blocking)."""
        process = self._idle.get()
        try:
            try:
                return process.run_batch(items, self.timeout_s)
            except TimeoutError as exc:
                process = self._restart(process, "timeout")
                failure = Outcome(failure=Failure("timeout", str(exc)))
                return [failure] * len(items), BatchStats(size=len(items), errors={"timeout": len(items)})
            except ModelProcessDied as exc:
                log.warning("%s model process: %s; retrying its %d items one by one", self.plugin, exc, len(items))
                process = self._restart(process, "died")
            outcomes, stats, process = self._one_by_one(process, items)
            return outcomes, stats
        finally:
            self._idle.put(process)

    def _one_by_one(
        self, process: ModelProcess, items: Sequence[Item]
    ) -> tuple[list[Outcome], BatchStats, ModelProcess]:
        """Each item alone, after a crash; also returns the process to use next (a fresh one
        when an item killed or hung it)."""
        stats = BatchStats(size=len(items), retried=True)
        outcomes: list[Outcome] = []
        for item in items:
            started = time.perf_counter()
            try:
                (outcome,), item_stats = process.run_batch([item], self.timeout_s)
                for stage, count in item_stats.errors.items():
                    stats.errors[stage] = stats.errors.get(stage, 0) + count
            except (TimeoutError, ModelProcessDied) as exc:
                stage = "timeout" if isinstance(exc, TimeoutError) else "infer"
                process = self._restart(process, "timeout" if stage == "timeout" else "died")
                outcome = Outcome(failure=Failure(stage, str(exc)))
                stats.errors[stage] = stats.errors.get(stage, 0) + 1
            stats.infer_s += time.perf_counter() - started
            outcomes.append(outcome)
        return outcomes, stats, process

    def _restart(self, process: ModelProcess, reason: str) -> ModelProcess:
        process.kill()
        if self._on_restart is not None:
            self._on_restart(reason)
        fresh = ModelProcess(self.settings, self.plugin, self.threads)
        while True:
            try:
                fresh.start()
                break
            except PluginLoadError as exc:  # loaded before: a transient failure; keep trying
                log.error("restarting the %s model process failed (%s); retrying in 5 s", self.plugin, exc)
                time.sleep(5)
                fresh = ModelProcess(self.settings, self.plugin, self.threads)
        with self._lock:
            self._all = [fresh if p is process else p for p in self._all]
        return fresh

    def stop(self) -> None:
        with self._lock:
            processes, self._all = self._all, []
        for process in processes:
            process.kill()
