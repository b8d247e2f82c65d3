"""The stack is real: kafka-python, aiokafka (consumer group), Redis and Faust all talk to it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from aiokafka import AIOKafkaConsumer
from harness import create_topics, produce

pytestmark = pytest.mark.integration

COUNT = 1000


def test_thousand_records_go_through_kafka_consumer_group_and_redis(endpoints, unique) -> None:
    topic = f"{unique}-smoke"
    create_topics(endpoints.kafka_bootstrap, [topic])
    produce(endpoints.kafka_bootstrap, topic, ((str(i % 10).encode(), f"record-{i}".encode()) for i in range(COUNT)))
    client = redis.Redis.from_url(endpoints.redis_url)

    async def consume() -> int:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=endpoints.kafka_bootstrap,
            group_id=f"{unique}-group",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        seen = 0
        try:
            while seen < COUNT:
                batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                for messages in batches.values():
                    pipe = client.pipeline(transaction=False)
                    for message in messages:
                        pipe.sadd(f"smoke:{unique}", message.value)
                    pipe.execute()
                    seen += len(messages)
            await consumer.commit()
            assigned = consumer.assignment()
        finally:
            await consumer.stop()
        assert len(assigned) == 3, "the consumer group owned every partition"
        return seen

    assert asyncio.run(consume()) == COUNT
    stored = client.smembers(f"smoke:{unique}")
    assert stored == {f"record-{i}".encode() for i in range(COUNT)}


def test_minimal_faust_agent_forwards_every_record(endpoints, unique, tmp_path: Path) -> None:
    source, target = f"{unique}-faust-in", f"{unique}-faust-out"
    create_topics(endpoints.kafka_bootstrap, [source, target])
    produce(endpoints.kafka_bootstrap, source, ((str(i).encode(), f"v{i}".encode()) for i in range(COUNT)))
    script = Path(__file__).with_name("faust_forwarder.py")
    log = (tmp_path / "faust.log").open("wb")
    app = subprocess.Popen(
        [sys.executable, str(script), endpoints.kafka_bootstrap, f"smoke-{unique}", source, target],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        forwarded = read_topic_raw(endpoints.kafka_bootstrap, target, COUNT)
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=60)
    assert sorted(forwarded) == sorted(f"v{i}" for i in range(COUNT)), "records missing or extra"


def read_topic_raw(bootstrap: str, topic: str, count: int) -> list[str]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=60_000,
    )
    values = []
    try:
        for message in consumer:
            values.append(message.value.decode())
            if len(values) >= count:
                break
    finally:
        consumer.close()
    return values
