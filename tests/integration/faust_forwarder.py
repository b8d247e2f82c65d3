"""A minimal Faust app whose agent forwards one topic to another (the stack smoke test).

Usage: python faust_forwarder.py <bootstrap> <app id> <source topic> <target topic>
"""

import sys

import faust

bootstrap, app_id, source_name, target_name = sys.argv[1:5]
app = faust.App(
    app_id,
    broker=f"kafka://{bootstrap}",
    value_serializer="raw",
    key_serializer="raw",
    web_enabled=False,
    topic_partitions=3,
    consumer_auto_offset_reset="earliest",
)
source = app.topic(source_name, key_type=bytes, value_type=bytes)
target = app.topic(target_name, key_type=bytes, value_type=bytes)


@app.agent(source)
async def forward(stream: faust.StreamT) -> None:
    async for event in stream.events():
        await target.send(key=event.key, value=event.value)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
