"""Kafka helpers for tests: read whole topics back; tell when the engine has caught up."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from projections.store import Store
from streams.settings import Settings


@dataclass(frozen=True)
class Read:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


async def read_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    *,
    expect: int | None = None,
    timeout: float = 60.0,
) -> list[Read]:
    """All records of ``topic``; with ``expect``, wait until at least that many exist."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        deadline = time.monotonic() + timeout
        while True:
            ends = await consumer.end_offsets(tps)
            if expect is None or sum(ends.values()) >= expect or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        # Explicit seeks: seek_to_beginning right after assign() was seen to leave the
        # position at the end (aiokafka 0.14 against Kafka 4.1).
        for tp, start in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, start)
        records: list[Read] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1_000)
            for tp, messages in batch.items():
                records.extend(
                    Read(tp.partition, m.offset, m.key, m.value, dict(m.headers))
                    for m in messages
                    if m.offset < ends[tp]
                )
        return records
    finally:
        await consumer.stop()


async def _end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def caught_up(settings: Settings, store: Store) -> bool:
    """Ingest has committed the whole raw topic; projections have checkpointed both topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(f"{settings.topic_prefix}-ingest")
    finally:
        await admin.close()
    raw_ends = await _end_offsets(settings, settings.raw_topic)
    for partition, end in raw_ends.items():
        meta = committed.get(TopicPartition(settings.raw_topic, partition))
        if end and (meta is None or meta.offset < end):
            return False
    for topic in (settings.events_topic, settings.facts_topic):
        for partition, end in (await _end_offsets(settings, topic)).items():
            done = (await store.checkpoints(partition)).get(topic, -1)
            if end and done < end - 1:
                return False
    return True
