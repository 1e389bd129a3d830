"""Kafka helpers for tests: read whole topics back; tell when the engine has caught up."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError, NotCoordinatorForGroupError

from config.connections import kafka_options
from config.settings import Settings
from projections.store import RedisStore


@dataclass(frozen=True)
class Read:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp: int  # ms since the epoch: the producer's create time


async def read_topic(
    settings: Settings,
    topic: str,
    partitions: int,
    *,
    expect: int | None = None,
    timeout: float = 60.0,
) -> list[Read]:
    """All committed records of ``topic``; with ``expect``, wait until at least that many
    were read. (Offsets are not records: transaction markers take offsets too.)"""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        **kafka_options(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        deadline = time.monotonic() + timeout
        # Explicit seeks: seek_to_beginning right after assign() was seen to leave the
        # position at the end (aiokafka 0.14 against Kafka 4.1).
        for tp, start in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, start)
        records: list[Read] = []
        while True:
            ends = await consumer.end_offsets(tps)
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=1_000)
                for tp, messages in batch.items():
                    records.extend(
                        Read(tp.partition, m.offset, m.key, m.value, dict(m.headers), m.timestamp)
                        for m in messages
                        if m.offset < ends[tp]
                    )
            if expect is None or len(records) >= expect or time.monotonic() > deadline:
                return records
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition's end offset."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        **kafka_options(settings),
        request_timeout_ms=10_000,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def ingest_committed(settings: Settings) -> dict[int, int]:
    """The raw topic's offsets the ingest agent's group has committed, per partition."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap, request_timeout_ms=10_000, **kafka_options(settings)
    )
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(f"{settings.topic_prefix}-ingest")
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in committed.items()
        if tp.topic == settings.raw_topic
    }


async def ingested(settings: Settings, raw_ends: dict[int, int]) -> bool:
    """Ingest has committed the raw topic up to ``raw_ends`` (not yet, while the broker has no
    coordinator for the group: it is still loading its offsets, as after a restart)."""
    try:
        committed = await ingest_committed(settings)
    except (GroupCoordinatorNotAvailableError, NotCoordinatorForGroupError):
        return False
    return all(committed.get(p, 0) >= end for p, end in raw_ends.items() if end)


async def projected(store: RedisStore, topic: str, ends: dict[int, int]) -> bool:
    """The projections have checkpointed ``topic`` up to ``ends``, and reads show it (every
    commit is folded into the rollups)."""
    for partition, end in ends.items():
        if end and (await store.checkpoints(partition)).get(topic, -1) < end - 1:
            return False
    return not await store.unfolded(list(ends))


async def caught_up(settings: Settings, store: RedisStore) -> bool:
    """Ingest has committed the whole raw topic; projections have checkpointed both topics."""
    if not await ingested(settings, await end_offsets(settings, settings.raw_topic)):
        return False
    for topic in (settings.events_topic, settings.facts_topic):
        if not await projected(store, topic, await end_offsets(settings, topic)):
            return False
    return True


async def wait_caught_up(
    settings: Settings, store: RedisStore, timeout: float = 180.0, what: str = "the worker"
) -> None:
    """Wait until ``caught_up``; fail (never hang the session) when it takes longer than
    ``timeout`` seconds: a stalled worker is a failure to report, not a wait for ever."""
    deadline = time.monotonic() + timeout
    while not await caught_up(settings, store):
        assert time.monotonic() < deadline, f"{what} did not catch up within {timeout:.0f} s"
        await asyncio.sleep(0.5)
