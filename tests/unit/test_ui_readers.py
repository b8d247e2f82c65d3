"""The page's readers end when cancelled, even when a client library turns the cancel into
an error of its own (a timeout, a broken connection) that the reader would retry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from streamproc.engine.keys import RedisKeys
from streamproc.ui.board import Board
from streamproc.ui.sources import follow_feeds


class CancelBecomesTimeout:
    """A Redis client whose ``SCAN`` waits, and answers a cancel with ``TimeoutError``, as a
    client's own timeout context can when the cancel and its deadline meet."""

    def __init__(self) -> None:
        self.scanning = asyncio.Event()

    async def scan_iter(self, **_: object) -> AsyncIterator[bytes]:
        self.scanning.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise TimeoutError("timed out") from None
        yield b"never"


def test_a_feed_reader_ends_on_cancel_when_its_client_turns_the_cancel_into_a_timeout() -> None:
    async def scenario() -> None:
        client = CancelBecomesTimeout()
        board = Board()
        reader = asyncio.create_task(follow_feeds(client, RedisKeys("sp"), board))  # type: ignore[arg-type]
        await client.scanning.wait()
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(reader, 2.0)
        assert "redis" not in board.sources, "a cancel is not a Redis outage to show on the page"

    asyncio.run(scenario())
