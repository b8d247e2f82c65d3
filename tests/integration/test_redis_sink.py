"""The Redis sink against a real Redis server: one round trip per batch, scripts by SHA."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from streamproc.config import RedisSettings, Settings
from streamproc.engine.keys import RedisKeys
from streamproc.engine.sinks import RedisSink
from streamproc.engine.state import KeyedStateStore, StateWrite
from streamproc.errors import PartitionFenced, StateError
from streamproc.events import decode_event
from streamproc.records import ResultRecord, SourceRecord
from streamproc.redis_clients import async_redis
from streamproc.registry import load_plugins

pytestmark = pytest.mark.integration


def _result(n: int) -> ResultRecord:
    return ResultRecord(f"e{n}", "echo", "v1", "echoes", f"user{n}", 1_000 + n, 2_000 + n, {"n": n}, input_digest="d")


def _state(key: str, offset: int) -> StateWrite:
    state, ids = json.dumps({"last": offset}), json.dumps([f"e{offset}"])
    return StateWrite(key, state, ids, ("in", 0), offset, f"{key}:owner", 1)


def _calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _write(url: str, prefix: str, results, writes, before=None) -> list[ResultRecord]:
    async def go() -> list[ResultRecord]:
        client = async_redis(RedisSettings(url=url, key_prefix=prefix))
        sink = RedisSink(client, RedisSettings(url=url, key_prefix=prefix))
        try:
            if before is not None:
                await before(sink)
            return await sink.write(results, writes)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_a_batch_costs_evalsha_calls_only_and_one_state_write_per_key(endpoints, unique) -> None:
    prefix = f"t:{unique}:"
    client = redis.Redis.from_url(endpoints.redis_url)
    key = RedisKeys(prefix).state("echo", "user1")
    writes = [_state(key, offset) for offset in (5, 6, 7)]

    async def warm(sink: RedisSink) -> None:
        await sink.write([_result(0)], [])  # loads the scripts

    before = _calls(client)
    refused = _write(endpoints.redis_url, prefix, [_result(n) for n in range(1, 4)], writes, warm)
    after = _calls(client)

    assert refused == []
    assert after.get("script|exists", 0) == before.get("script|exists", 0), "no SCRIPT EXISTS per batch"
    assert after["evalsha"] - before.get("evalsha", 0) == 1 + 3 + 1, "warm-up, 3 results, 1 state write"
    stored = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
    assert json.loads(stored["state"]) == {"last": 7}
    assert stored["in:0"] == "7"


def test_scripts_redis_lost_are_loaded_again_and_the_batch_is_written(endpoints, unique) -> None:
    prefix = f"t:{unique}:"
    client = redis.Redis.from_url(endpoints.redis_url)

    async def flush_after_load(sink: RedisSink) -> None:
        await sink.write([_result(0)], [])
        await sink.redis.script_flush()

    refused = _write(endpoints.redis_url, prefix, [_result(1)], [], flush_after_load)

    assert refused == []
    assert client.get(RedisKeys(prefix).latest("echoes", "user1")) == _result(1).to_json()


def test_a_state_write_of_a_member_whose_partition_was_claimed_since_is_refused(endpoints, unique) -> None:
    """A zombie's late write, even of a newer offset, cannot overwrite the new owner's state."""
    prefix = f"t:{unique}:"
    keys = RedisKeys(prefix)
    client = redis.Redis.from_url(endpoints.redis_url)
    key, owner_key = keys.state("echo", "user1"), keys.owner("group", "in", 0)

    async def claim_twice_then_write() -> None:
        connection = async_redis(RedisSettings(url=endpoints.redis_url, key_prefix=prefix))
        try:
            zombie = KeyedStateStore(connection, keys, "group", ttl_s=60)
            owner = KeyedStateStore(connection, keys, "group", ttl_s=60)
            await zombie.claim([("in", 0)])
            zombie_epoch = int(client.get(owner_key))
            await owner.claim([("in", 0)])
            owner_epoch = int(client.get(owner_key))
            sink = RedisSink(connection, RedisSettings(url=endpoints.redis_url, key_prefix=prefix))
            await sink.write([], [replace(_state(key, 5), owner_key=owner_key, epoch=owner_epoch)])
            with pytest.raises(PartitionFenced) as fenced:
                await sink.write([], [replace(_state(key, 9), owner_key=owner_key, epoch=zombie_epoch)])
            assert fenced.value.partition == ("in", 0) and fenced.value.sink == "redis"
        finally:
            await connection.aclose()

    asyncio.run(claim_twice_then_write())
    stored = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
    assert json.loads(stored["state"]) == {"last": 5} and stored["in:0"] == "5"


def test_a_record_handed_over_before_its_partition_is_claimed_waits_for_the_claim(
    endpoints, unique, test_plugins_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust may deliver a newly assigned partition's records before the assignment callback
    claimed it: the state is applied once the claim lands, with its epoch; a record of a
    partition revoked before it was claimed fails with ``StateError`` instead of hanging."""
    monkeypatch.syspath_prepend(str(test_plugins_path))  # the counter test plugin
    settings = Settings(enabled_plugins=["counter"])
    counter = load_plugins(settings)[0]["counter"].plugin
    event = {"id": "e1", "type": "playback", "ts": 1, "user_id": "u1", "item_id": "i1", "action": "start"}
    value = json.dumps({**event, "position_s": 0.0, "duration_s": 60.0, "media": "video"}).encode()
    decoded = decode_event(value, settings.limits.payload_limits())
    keys = RedisKeys(f"t:{unique}:")

    async def hand_over_early() -> tuple[int, int, str]:
        connection = async_redis(RedisSettings(url=endpoints.redis_url, key_prefix=keys.prefix))
        try:
            store = KeyedStateStore(connection, keys, "group", ttl_s=60)
            early = asyncio.ensure_future(store.apply(counter, decoded, SourceRecord("in", 0, 0, b"u1", value)))
            orphan = asyncio.ensure_future(store.apply(counter, decoded, SourceRecord("in", 1, 0, b"u1", value)))
            await asyncio.sleep(0.2)
            assert not early.done() and not orphan.done(), "both wait for their partition's claim"
            await store.claim([("in", 0)])
            store.release([("in", 1)])
            _, write = await early
            with pytest.raises(StateError) as refused:
                await orphan
            return write.epoch, int(await connection.get(keys.owner("group", "in", 0))), str(refused.value)
        finally:
            await connection.aclose()

    epoch, owner_epoch, reason = asyncio.run(hand_over_early())
    assert epoch == owner_epoch == 1
    assert "revoked before it was claimed" in reason


def test_a_member_that_claims_a_partition_again_starts_from_the_state_its_owner_left(
    endpoints, unique, test_plugins_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member that lost a partition with a state write in flight keeps that state cached;
    when the group gives the partition back after another member owned it, the member must
    not apply new records to its stale copy (a write with its new epoch would roll the
    owner's counts back): claiming forgets the partition's cached states."""
    monkeypatch.syspath_prepend(str(test_plugins_path))  # the counter test plugin
    settings = Settings(enabled_plugins=["counter"])
    counter = load_plugins(settings)[0]["counter"].plugin
    redis_settings = RedisSettings(url=endpoints.redis_url, key_prefix=f"t:{unique}:")
    keys = RedisKeys(redis_settings.key_prefix)

    def record(offset: int) -> tuple[Any, SourceRecord]:
        event = {"id": f"e{offset}", "type": "playback", "ts": 1, "user_id": "u1", "item_id": "i1", "action": "start"}
        value = json.dumps({**event, "position_s": 0.0, "duration_s": 60.0, "media": "video"}).encode()
        return decode_event(value, settings.limits.payload_limits()), SourceRecord("in", 0, offset, b"u1", value)

    async def hand_back_and_forth() -> int:
        connection = async_redis(redis_settings)
        sink = RedisSink(connection, redis_settings)
        try:
            first, second = (KeyedStateStore(connection, keys, "group", ttl_s=60) for _ in range(2))
            await first.claim([("in", 0)])
            _, write = await first.apply(counter, *record(0))
            await sink.write([], [write])
            first.written(write)
            await first.apply(counter, *record(1))  # its write is still in flight when the partition goes
            first.release([("in", 0)])
            await second.claim([("in", 0)])
            for offset in (1, 2):
                _, write = await second.apply(counter, *record(offset))
                await sink.write([], [write])
            second.release([("in", 0)])
            await first.claim([("in", 0)])
            state, write = await first.apply(counter, *record(3))
            await sink.write([], [write])
            return int(state["count"])
        finally:
            await connection.aclose()

    assert asyncio.run(hand_back_and_forth()) == 4
    stored = json.loads(redis.Redis.from_url(endpoints.redis_url).hget(keys.state("counter", "u1"), "state"))
    assert stored["count"] == 4
