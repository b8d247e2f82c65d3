"""Dynamic micro-batching for one plugin (in the manner of Ray Serve's ``@serve.batch``).

A caller submits a group of items (``submit_many``; ``submit`` for one) and awaits their
outcomes, in order: one future per group, not per item. Items queue; a batch runs as soon as
``max_batch_size`` items wait or the oldest waited ``max_wait_ms``. Batches run one at a
time on the plugin's own worker thread, so the event loop keeps heartbeats and I/O
flowing while the model computes, and the next batch fills while this one runs. At most
``max_queue`` items wait: further submitters wait their turn (backpressure that reaches
the consumer through the in-flight bound), nothing is dropped. A batch that exceeds the
timeout fails its items (stage ``timeout``); the stuck thread is abandoned (counted in the
runtime's ``abandoned`` until it returns) and a fresh one serves the next batch. While
``max_abandoned_threads`` of them still run, the plugin's batches fail at once (stage
``timeout``, the reason says why) instead of starting another thread.

With a ``ModelProcessPool`` the batches run in the plugin's model processes instead, up
to one per process at a time; the pool bounds each batch's time itself (a hung process
is killed and restarted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from streamproc.engine.model_process import ModelProcessPool
from streamproc.engine.runtime import BatchStats, Failure, Outcome, PluginRuntime
from streamproc.events import Event

log = logging.getLogger(__name__)

BatchObserver = Callable[[PluginRuntime, BatchStats], None]


class _Group:
    """The outcomes of one submission, completed when its last item's batch finished (the
    items of a group may run in several batches)."""

    __slots__ = ("done", "outcomes", "remaining")

    def __init__(self, size: int) -> None:
        self.outcomes: list[Outcome | None] = [None] * size
        self.remaining = size
        self.done: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()

    def settle(self, index: int, outcome: Outcome) -> None:
        self.outcomes[index] = outcome
        self.remaining -= 1
        if self.remaining == 0 and not self.done.done():  # done already: the submitter was cancelled
            self.done.set_result(self.outcomes)  # type: ignore[arg-type]  # every slot is set now


_Item = tuple[Event, Mapping[str, Any] | None, _Group, int]
"""An event, its plugin state, and its place in its submission."""


class MicroBatcher:
    """Queue, batch and run one plugin's items off the event loop."""

    def __init__(
        self,
        runtime: PluginRuntime,
        timeout_s: float,
        observe: BatchObserver | None = None,
        pool: ModelProcessPool | None = None,
    ) -> None:
        self.runtime = runtime
        self.policy = runtime.policy
        self.timeout_s = timeout_s
        self.pool = pool
        self._observe = observe
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=self.policy.max_queue)
        self._concurrency = pool.size if pool is not None else 1
        self._executor = self._new_executor()
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def _new_executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix=f"plugin-{self.runtime.name}")

    @property
    def depth(self) -> int:
        """Items waiting for a batch."""
        return self._queue.qsize()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.runtime.name}")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, event: Event, state: Mapping[str, Any] | None) -> Outcome:
        """Queue one item (waiting while the queue is full) and await its outcome."""
        (outcome,) = await self.submit_many([(event, state)])
        return outcome

    async def submit_many(self, items: Sequence[tuple[Event, Mapping[str, Any] | None]]) -> list[Outcome]:
        """Queue the items in order (waiting while the queue is full) and await their
        outcomes, in the same order."""
        if not items:
            return []
        group = _Group(len(items))
        for index, (event, state) in enumerate(items):
            await self._queue.put((event, state, group, index))
        return await group.done

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self._concurrency)
        while True:
            await slots.acquire()  # a free slot first: the batch fills while the others run
            batch = [await self._queue.get()]
            deadline = loop.time() + self.policy.max_wait_ms / 1000.0
            while len(batch) < self.policy.max_batch_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            task = loop.create_task(self._execute_in_slot(batch, slots))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute_in_slot(self, batch: list[_Item], slots: asyncio.Semaphore) -> None:
        try:
            await self._execute(batch)
        finally:
            slots.release()

    async def _execute(self, batch: list[_Item]) -> None:
        items = [(event, state) for event, state, _, _ in batch]
        loop = asyncio.get_running_loop()
        work: Future[tuple[list[Outcome], BatchStats]] | None = None
        try:
            if self.pool is not None:
                outcomes, stats = await loop.run_in_executor(self._executor, self.pool.run_batch, items)
            elif (refusal := self.runtime.abandoned.refusal) is not None:
                failure = Outcome(failure=Failure("timeout", refusal))
                outcomes, stats = [failure] * len(items), BatchStats(errors={"timeout": len(items)})
            else:
                work = self._executor.submit(self.runtime.run_batch, items)
                outcomes, stats = await asyncio.wait_for(asyncio.wrap_future(work), self.timeout_s)
        except TimeoutError:
            running = self.runtime.abandoned.adopt(work) if work is not None else 0
            log.error(
                "plugin %s: batch of %d exceeded %.1f s; abandoning its thread (%d of at most %d still running)",
                self.runtime.name,
                len(items),
                self.timeout_s,
                running,
                self.runtime.abandoned.limit,
            )
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            failure = Outcome(failure=Failure("timeout", f"batch exceeded {self.timeout_s:.1f} s"))
            outcomes, stats = [failure] * len(items), BatchStats(size=len(items), errors={"timeout": len(items)})
        except Exception as exc:  # a bug outside the plugin's steps: fail the items, keep batching
            log.exception("plugin %s: batch execution failed", self.runtime.name)
            failure = Outcome(failure=Failure("engine", f"{type(exc).__name__}: {exc}"))
            outcomes, stats = [failure] * len(items), BatchStats(size=len(items), errors={"engine": len(items)})
        if self._observe is not None:
            self._observe(self.runtime, stats)
        for (_, _, group, index), outcome in zip(batch, outcomes, strict=True):
            group.settle(index, outcome)
