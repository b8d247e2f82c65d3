"""The Redis key layout, in one place. ``<p>`` is ``redis.key_prefix`` (default ``streamproc:``).

- ``<p>latest:<kind>:<entity key>``: the latest result record of that kind (JSON), with a TTL;
- ``<p>feed:<kind>``: a stream of result records (field ``record``), capped;
- ``<p>seen:<plugin>:<event id>``: publication marker (idempotency), with a TTL;
- ``<p>state:<plugin>:<state key>``: keyed plugin state (see ``streamproc.engine.state``);
- ``<p>owner:<group>:<topic>:<partition>``: the epoch of the member whose state writes for
  that input partition are accepted (fencing, see ``streamproc.engine.state``).
"""

from __future__ import annotations

from dataclasses import dataclass

FEED_FIELD = "record"
"""The stream entry field that holds a result record's JSON."""


@dataclass(frozen=True)
class RedisKeys:
    """Builds every key the worker writes and the tools read, under one prefix."""

    prefix: str = "streamproc:"

    def latest(self, kind: str, key: str) -> str:
        return f"{self.prefix}latest:{kind}:{key}"

    def feed(self, kind: str) -> str:
        return f"{self.prefix}feed:{kind}"

    def feed_pattern(self) -> str:
        """A ``SCAN`` pattern matching every feed."""
        return f"{self.prefix}feed:*"

    def seen(self, plugin: str, event_id: str) -> str:
        return f"{self.prefix}seen:{plugin}:{event_id}"

    def state(self, plugin: str, key: str) -> str:
        return f"{self.prefix}state:{plugin}:{key}"

    def owner(self, group: str, topic: str, partition: int) -> str:
        return f"{self.prefix}owner:{group}:{topic}:{partition}"
