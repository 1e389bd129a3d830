"""Send many records at once: one record batch per topic partition, not a future per record.

``AIOKafkaProducer.send`` costs a future, a partition lookup and an accumulator append per
record, and waiting on thousands of futures costs a callback each: about a fifth of the
worker's CPU when ingest forwarded a batch that way (benchmarks/RESULTS.md, "Per-core
speed"). Here each partition's records are appended to one ``BatchBuilder`` and sent with
``send_batch``: the partition is chosen by the producer's own default partitioner (the
murmur2 hash of the key, as ``send`` would), records keep their order within a partition,
and inside a transaction the batches join it as ``send`` would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

Headers = Sequence[tuple[str, bytes]]
Record = tuple[str, bytes | None, bytes, Headers | None]  # topic, key, value, headers

_PARTITIONER = DefaultPartitioner()


class RecordTooLarge(ValueError):
    """A record that does not fit even an empty batch (cannot happen: the first record of
    a batch is always taken; kept so that a change in the client cannot lose one)."""


async def send_records(producer: AIOKafkaProducer, records: Iterable[Record]) -> int:
    """Send ``records`` and wait until the broker has every one; returns how many."""
    partitions: dict[str, list[int]] = {}
    chosen: dict[tuple[str, bytes | None], int] = {}  # a subject's events share their key
    open_batches: dict[tuple[str, int], Any] = {}  # aiokafka's BatchBuilder
    delivered: list[asyncio.Future[Any]] = []
    count = 0
    for topic, key, value, headers in records:
        known = partitions.get(topic)
        if known is None:
            known = partitions[topic] = sorted(await producer.partitions_for(topic))
        partition = chosen.get((topic, key)) if key is not None else None
        if partition is None:
            partition = chosen[(topic, key)] = _PARTITIONER(key, known, known)
        where = (topic, partition)
        fields = {"timestamp": None, "key": key, "value": value, "headers": list(headers or ())}
        batch = open_batches.get(where)
        if batch is None or batch.append(**fields) is None:
            if batch is not None:  # full: send it, and start the partition's next one
                delivered.append(await producer.send_batch(batch, topic, partition=partition))
            batch = open_batches[where] = producer.create_batch()
            if batch.append(**fields) is None:
                raise RecordTooLarge(f"a record of {len(value):,} bytes fits no batch")
        count += 1
    for (topic, partition), batch in open_batches.items():
        delivered.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*delivered)
    return count
