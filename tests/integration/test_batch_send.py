"""streams.batch_send on the real broker: records sent a batch per partition land where
``AIOKafkaProducer.send`` would put them (the murmur2 partition of their key: the oracle's
``kafka_partition`` uses aiokafka's murmur2 too, so this shows parity with ``send``), in
order, with their headers, inside a transaction."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from config.connections import kafka_options
from config.settings import Settings
from streams.batch_send import send_records
from streams.topics import ensure_topics
from tests.kafka_reader import read_topic
from tests.oracle import kafka_partition

pytestmark = pytest.mark.integration

PARTITIONS = 4


async def test_records_land_on_their_keys_partitions_in_order(stack_env: dict[str, str]) -> None:
    settings = dataclasses.replace(
        Settings.from_env(stack_env),
        topic_prefix=f"bs{uuid.uuid4().hex[:8]}",
        partitions=PARTITIONS,
    )
    await ensure_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        **kafka_options(settings),
        transactional_id=f"{settings.topic_prefix}-test",
        enable_idempotence=True,
        acks="all",
        max_batch_size=1024,  # small: each partition's records span about ten batches
    )
    # 3,000 records over 40 keys, each key's in sequence; some with headers; one of 600 KB
    # (larger than a batch: it gets one of its own); dead letters without a key.
    events = [
        (settings.events_topic, f"k{n % 40}".encode(), f"{n}".encode(), None) for n in range(3000)
    ]
    events[7] = (settings.events_topic, b"k7", b"7" + b" " * 600_000, [("h", b"v")])
    letters = [
        (settings.dlq_topic, None, f"dead {n}".encode(), [("n", b"%d" % n)]) for n in range(5)
    ]
    await producer.start()
    try:
        async with producer.transaction():
            sent_to = await send_records(producer, events + letters)
    finally:
        await producer.stop()

    read = await read_topic(settings, settings.events_topic, PARTITIONS, expect=3000)
    assert len(read) == 3000
    # Each record's partition, as the send said it: where the broker has it.
    assert len(sent_to) == 3005
    where = {(r.key, r.value): r.partition for r in read}
    assert [where[key, value] for _, key, value, _ in events] == sent_to[:3000]
    by_key: dict[bytes, list[int]] = {}
    for record in sorted(read, key=lambda r: (r.partition, r.offset)):
        assert record.key is not None and record.value is not None
        assert record.partition == kafka_partition(record.key.decode(), PARTITIONS)
        by_key.setdefault(record.key, []).append(int(record.value.split(b" ")[0]))
    assert all(sequence == sorted(sequence) for sequence in by_key.values())
    assert sorted(n for sequence in by_key.values() for n in sequence) == list(range(3000))
    big = next(r for r in read if r.value and r.value.startswith(b"7 "))
    assert big.headers == {"h": b"v"}
    dead = await read_topic(settings, settings.dlq_topic, PARTITIONS, expect=5)
    assert sorted((r.value, r.headers["n"]) for r in dead) == [
        (f"dead {n}".encode(), b"%d" % n) for n in range(5)
    ]
