"""Thread mode: the threads of timed-out batches are counted and bounded per plugin.

A thread cannot be killed, so a batch that outlives ``infer_timeout_s`` leaves its thread
computing. The fixture plugin ``slow`` (``tests/fixture_plugins``) sleeps ``hang_s`` on an
input whose id starts with ``hang``: each such batch times out and leaves a thread behind.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from streamproc.config import Settings
from streamproc.engine.batching import MicroBatcher
from streamproc.engine.runtime import AbandonedThreads, Outcome, PluginRuntime
from streamproc.events import Event, decode_event
from streamproc.media import encode_wav
from streamproc.registry import load_plugins

HANG_S = 3.0
TIMEOUT_S = 0.1


@pytest.fixture(autouse=True)
def fixture_plugins(test_plugins_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture plugins, discoverable through their entry points."""
    monkeypatch.syspath_prepend(str(test_plugins_path))


def slow_runtime(max_abandoned_threads: int) -> PluginRuntime:
    settings = Settings(
        enabled_plugins=["slow"],
        max_abandoned_threads=max_abandoned_threads,
        plugins={"slow": {"options": {"delay_s": 0.0, "hang_s": HANG_S}}},
    )
    runtimes, reports = load_plugins(settings)
    assert not [r.error for r in reports if r.error]
    return runtimes["slow"]


def audio(event_id: str) -> Event:
    wav = base64.b64encode(encode_wav(np.zeros(80, np.float32))).decode()
    doc = {"id": event_id, "type": "audio", "ts": int(time.time() * 1000), "user_id": "u", "audio": wav}
    return decode_event(json.dumps({**doc, "audio_id": event_id}).encode())


def plugin_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("plugin-slow"))


def test_threads_of_timed_out_batches_are_bounded_and_batches_fail_at_once_until_they_return() -> None:
    runtime = slow_runtime(max_abandoned_threads=2)

    async def main() -> tuple[list[Outcome], int, int, Outcome]:
        batcher = MicroBatcher(runtime, TIMEOUT_S)
        batcher.start()
        try:
            # one at a time: each is a batch of its own, submitted after the previous one ended
            hung = [await batcher.submit(audio(f"hang{n}"), None) for n in range(3)]
            at_bound = (runtime.abandoned.running, plugin_threads())
            deadline = time.monotonic() + HANG_S + 10
            while runtime.abandoned.running and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            after = await batcher.submit(audio("ok"), None)
        finally:
            await batcher.stop()
        return hung, *at_bound, after

    hung, running, threads, after = asyncio.run(main())
    assert [o.failure.stage if o.failure else None for o in hung] == ["timeout"] * 3
    assert [o.failure.reason for o in hung[:2]] == [f"batch exceeded {TIMEOUT_S:.1f} s"] * 2
    assert "max_abandoned_threads 2" in hung[2].failure.reason  # refused without starting a thread
    assert running == 2 and threads == 2
    assert runtime.abandoned.total == 2 and runtime.abandoned.running == 0
    assert after.body == {"id": "ok"}, "once the threads returned, batches run again"


def test_the_refusal_is_set_at_the_bound_and_cleared_when_the_work_returns() -> None:
    threads = AbandonedThreads(limit=1)
    work: Future[None] = Future()
    assert threads.refusal is None
    assert threads.adopt(work) == 1
    assert threads.refusal is not None and "1 threads of timed-out batches still running" in threads.refusal
    work.set_result(None)
    assert threads.running == 0 and threads.refusal is None and threads.total == 1
    with pytest.raises(ValueError, match="at least 1"):
        AbandonedThreads(limit=0)
