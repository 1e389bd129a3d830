"""Faust agents for benchmarks.throughput: the naive baseline, and Faust's own stream ceiling.

    NAIVE_MODE=naive|stream NAIVE_TOPIC=... NAIVE_BOOTSTRAP=... NAIVE_REDIS=... NAIVE_KEY=... \\
        python -m benchmarks.naive_agent worker -l warn

``naive`` (what a first-time Faust user writes): one message at a time, decode
the JSON and count it by type and UTC day with one Redis round trip per event.
It keeps no checkpoint and no KPI catalogue, so it does far less work per
event than salespulse; it is the floor a batching design must beat.

``stream``: ``take_events(10000)`` and nothing else but one counter increment
per batch: what a Faust stream alone can deliver to a batching agent.
"""

from __future__ import annotations

import os

import faust
import orjson
import redis.asyncio as aioredis

TOPIC = os.environ.get("NAIVE_TOPIC", "naive.events")
KEY = os.environ.get("NAIVE_KEY", "naive:counts")

app = faust.App(
    f"{TOPIC}-{os.environ.get('NAIVE_MODE', 'naive')}",  # a group of its own per mode
    broker=f"kafka://{os.environ.get('NAIVE_BOOTSTRAP', '127.0.0.1:19092')}",
    store="memory://",
    datadir=os.environ.get("NAIVE_DATADIR", "naive-data"),
    web_enabled=False,
    topic_allow_declare=False,
    consumer_auto_offset_reset="earliest",
)
events = app.topic(TOPIC, key_serializer="raw", value_serializer="raw")
client = aioredis.Redis.from_url(os.environ.get("NAIVE_REDIS", "redis://127.0.0.1:16379/0"))


@app.agent(events)
async def count(stream: faust.StreamT[bytes]) -> None:
    if os.environ.get("NAIVE_MODE", "naive") == "stream":
        assert isinstance(stream, faust.Stream)  # StreamT's stubs lack take_events
        async for batch in stream.take_events(10_000, within=0.2):
            await client.hincrby(KEY, "records", len(batch))
        return
    async for value in stream:
        event = orjson.loads(value)
        await client.hincrby(KEY, f"{event['type']}|{event['occurred_at'][:10]}", 1)


if __name__ == "__main__":
    app.main()
