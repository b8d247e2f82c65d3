"""Keyed plugin state (the recommender's per-user history), kept in Redis.

Why Redis rather than a Faust table: the state must survive a worker restart and a
partition move, and be read by whichever pod owns the key next. Redis already is the
store every result is acknowledged by, so a state write joins the same pipeline as the
results of its event and is acknowledged before the input offset is committed. A
Faust table would add a changelog topic whose replay delays every rebalance.

Each key is a Redis hash: ``state`` (JSON), ``ids`` (the ids of the last events applied,
JSON) and, per source partition, the offset of the last record applied
(``<topic>:<partition>``). The engine applies ``update_state`` at most once per record
and per event id: a redelivered record (offset not above the stored one) or a
re-published event (an id among the last ``recent_ids``) reads the state and changes
nothing. Writes are conditional on that offset (a Lua script), so
a late write can never roll state back. States of owned keys are cached in memory; an
entry whose write is still in flight is never evicted.

Fencing: a member paused past its session (a zombie) still holds cached states and records
of partitions the group gave to another member. Resumed, it would apply them to its stale
cache and overwrite the new owner's newer state (its offsets may be higher). So when the
group assigns a partition, the member claims it: it increments the partition's owner epoch
in Redis (``claim``), and each state write carries the writer's epoch; the script refuses a
write whose epoch is no longer the partition's (``STATE_FENCED``), and the publisher drops
that batch uncommitted (``PartitionFenced``). A zombie never claims: it learns of its lost
partitions only through a rebalance, which revokes them first.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamproc.engine.keys import RedisKeys
from streamproc.errors import StateError
from streamproc.events import Event
from streamproc.plugin import Plugin
from streamproc.records import SourceRecord

log = logging.getLogger(__name__)

STATE_FENCED = -1
"""The state script's answer to a write whose epoch is not its partition's owner epoch."""

# KEYS[1] = state hash, KEYS[2] = owner epoch; ARGV = state json, partition mark, offset, ttl,
# recent ids json, the writer's epoch
WRITE_IF_NEWER = """
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[6] then return -1 end
local applied = redis.call('HGET', KEYS[1], ARGV[2])
if applied and tonumber(applied) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'ids', ARGV[5], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


def partition_mark(partition: tuple[str, int]) -> str:
    """The state hash field holding the last offset applied from ``partition``."""
    return f"{partition[0]}:{partition[1]}"


@dataclass(frozen=True)
class StateWrite:
    """A state change to persist with its event's results."""

    redis_key: str
    state_json: str
    ids_json: str
    partition: tuple[str, int]
    """The input partition of the record applied (topic, partition)."""
    offset: int
    owner_key: str
    """The owner epoch key of the record's partition (``RedisKeys.owner``)."""
    epoch: int
    """The writer's epoch for that partition: the write is refused once another member claimed it."""

    @property
    def mark(self) -> str:
        return partition_mark(self.partition)


@dataclass
class _Entry:
    state: Mapping[str, Any] | None
    applied: dict[str, int]
    ids: list[str]
    unwritten: int = 0


class KeyedStateStore:
    """Reads, updates and (through the publisher) persists plugin state per key."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        group: str,
        ttl_s: int,
        cache_size: int = 100_000,
        retry_s: float = 1.0,
        recent_ids: int = 64,
    ) -> None:
        """``group``: the consumer group whose members claim partitions; ``cache_size``: states
        kept in memory; ``recent_ids``: event ids remembered per key."""
        self.redis = redis
        self.group = group
        self._claims: dict[tuple[str, int], asyncio.Future[int]] = {}
        """This member's owner epoch of each assigned partition, once claimed."""
        self.recent_ids = recent_ids
        self.retry_s = retry_s
        self.keys = keys
        self.ttl_s = ttl_s
        self.cache_size = cache_size
        self._cache: OrderedDict[str, _Entry] = OrderedDict()

    async def apply(
        self, plugin: Plugin, event: Event, source: SourceRecord
    ) -> tuple[Mapping[str, Any] | None, StateWrite | None]:
        """The plugin's state after ``event`` and the write to persist (``None`` on replay).

        Raises ``StateError`` when ``state_key`` or ``update_state`` fails, or when the
        record's Kafka key is set and is not the event's key: state updated from records of
        one key spread over partitions would be applied out of order by different workers."""
        try:
            key = plugin.state_key(event)
        except Exception as exc:
            raise StateError(f"state_key failed: {type(exc).__name__}: {exc}") from exc
        if key is None:
            return None, None
        if source.key is not None and source.key != event.key.encode():
            raise StateError(
                f"the record's Kafka key {source.key[:64]!r} is not its event key {event.key[:64]!r}: keyed state "
                "needs every record of a key in one partition (produce with the event key)"
            )
        partition = (source.topic, source.partition)
        epoch = await self._epoch(partition)
        redis_key = self.keys.state(plugin.name, key)
        entry = self._cache.get(redis_key)
        if entry is None:
            entry = await self._load(redis_key)
            self._remember(redis_key, entry)
        else:
            self._cache.move_to_end(redis_key)
        mark = partition_mark(partition)
        if entry.applied.get(mark, -1) >= source.offset or event.id in entry.ids:
            return entry.state, None
        try:  # the plugin's bugs fail this event for this plugin and leave the state unchanged
            state = dict(plugin.update_state(entry.state, event))
        except Exception as exc:
            raise StateError(f"update_state failed: {type(exc).__name__}: {exc}") from exc
        try:
            state_json = orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError as exc:
            raise StateError(f"update_state returned a state that is not JSON: {exc}") from exc
        entry.state = state
        entry.applied[mark] = source.offset
        entry.ids = [*entry.ids[-(self.recent_ids - 1) :], event.id][-self.recent_ids :]
        entry.unwritten += 1
        ids_json = orjson.dumps(entry.ids).decode()
        owner_key = self.keys.owner(self.group, *partition)
        return entry.state, StateWrite(redis_key, state_json, ids_json, partition, source.offset, owner_key, epoch)

    async def claim(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Claim newly assigned partitions: increment their owner epochs in Redis, which
        refuses every later state write of their previous owners. Waits while Redis is down
        (the group assigned them; records of them cannot be applied before the claim).

        Cached states of a newly claimed partition are forgotten before its records may
        apply: another member may have owned it since this one last did (a paused member
        resumed, a revoke with writes in flight), so Redis holds the state to start from."""
        claims = {p: self._claim_of(p) for p in sorted(set(partitions))}
        new = [p for p, claim in claims.items() if not claim.done()]
        if not new:
            return
        while True:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for topic, partition in new:
                        pipe.incr(self.keys.owner(self.group, topic, partition))
                    epochs = await pipe.execute()
                break
            except RedisError as exc:
                log.warning("claiming %d partitions failed (%s); retrying in %.1f s", len(new), exc, self.retry_s)
                await asyncio.sleep(self.retry_s)
        for partition, epoch in zip(new, epochs, strict=True):
            if not claims[partition].done():  # not revoked while Redis answered
                self.evict_partition(partition)
                claims[partition].set_result(int(epoch))

    def release(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Forget the claims of revoked partitions, and cached states with no write in flight
        (their keys may move to another member)."""
        for partition in partitions:
            claim = self._claims.pop(partition, None)
            if claim is not None and not claim.done():  # records wait for it: they fail, not hang
                claim.set_exception(StateError(f"{partition[0]}[{partition[1]}] was revoked before it was claimed"))
                claim.exception()  # retrieved: a claim nobody waited for is not worth a log line
        for key in [k for k, e in self._cache.items() if e.unwritten == 0]:
            del self._cache[key]

    def evict_partition(self, partition: tuple[str, int]) -> None:
        """Forget every cached state that applied a record of ``partition``, written or not:
        after a fence (the partition's unsent records were dropped, so those states may hold
        effects Redis never got, and Redis has the owner's newer state) and when the
        partition is claimed (another member may have owned it meanwhile)."""
        mark = partition_mark(partition)
        for key in [k for k, e in self._cache.items() if mark in e.applied]:
            del self._cache[key]

    def _claim_of(self, partition: tuple[str, int]) -> asyncio.Future[int]:
        claim = self._claims.get(partition)
        if claim is None:
            claim = self._claims[partition] = asyncio.get_running_loop().create_future()
        return claim

    async def _epoch(self, partition: tuple[str, int]) -> int:
        """This member's epoch for ``partition``. Faust may hand over a newly assigned
        partition's records before its assignment callback claimed it: they wait for the
        claim (as they wait for Redis), and fail with ``StateError`` if the partition is
        revoked first."""
        claim = self._claim_of(partition)
        if claim.done():  # every record but the first few after an assignment
            return claim.result()
        return await asyncio.shield(claim)

    def written(self, write: StateWrite) -> None:
        """Called by the publisher once Redis acknowledged ``write``."""
        entry = self._cache.get(write.redis_key)
        if entry is not None:
            entry.unwritten = max(0, entry.unwritten - 1)

    async def _load(self, redis_key: str) -> _Entry:
        while True:  # while Redis is down the agent waits here: backpressure, nothing skipped
            try:
                raw = await self.redis.hgetall(redis_key)
                break
            except RedisError as exc:
                log.warning("reading state %s failed (%s); retrying in %.1f s", redis_key, exc, self.retry_s)
                await asyncio.sleep(self.retry_s)
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        state_json = fields.pop("state", None)
        ids_json = fields.pop("ids", None)
        return _Entry(
            state=orjson.loads(state_json) if state_json else None,
            applied={k: int(v) for k, v in fields.items()},
            ids=orjson.loads(ids_json) if ids_json else [],
        )

    def _remember(self, redis_key: str, entry: _Entry) -> None:
        self._cache[redis_key] = entry
        if len(self._cache) <= self.cache_size:
            return
        for key in list(self._cache):
            if len(self._cache) <= self.cache_size:
                break
            if self._cache[key].unwritten == 0:
                del self._cache[key]
