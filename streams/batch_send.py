"""Send many records at once: one record batch per topic partition, not a future per record.

``AIOKafkaProducer.send`` costs a future, a partition lookup and an accumulator append per
record, and waiting on thousands of futures costs a callback each. Ingest forwarded its
batches that way; sending them as below took the worker's CPU per event end to end from
96.6 to 78.7 µs (benchmarks/RESULTS.md, "Per-core speed (issue 21)"). Each partition's
records are appended to one ``BatchBuilder`` and sent with ``send_batch``:

* the partition is the one ``send`` would choose: the producer's own partitioner over the
  topic's partitions (the murmur2 hash of the key; a record without a key goes to a
  partition that has a leader). A key's partition is kept for the producer's next calls
  while the topic's partitions stay the same: a subject's events come in many batches,
  and aiokafka's murmur2, in Python, was about 3 % of a worker's CPU end to end;
* records keep their order within a partition (aiokafka sends a partition's next batch only
  once the one before it is drained), and their headers;
* inside a transaction each batch joins it, with the idempotent producer's sequence numbers,
  as ``send`` would;
* a batch the broker refuses raises here, so a caller's transaction aborts rather than
  committing without it (a commit alone does not look at the batches' results).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

Headers = Sequence[tuple[str, bytes]]
Record = tuple[str, bytes | None, bytes, Headers | None]  # topic, key, value, headers


# Per producer: topic -> (its partitions, {key: partition}); at most CHOSEN_KEPT keys a topic.
_chosen: weakref.WeakKeyDictionary[
    AIOKafkaProducer, dict[str, tuple[list[int], dict[bytes, int]]]
] = weakref.WeakKeyDictionary()
CHOSEN_KEPT = 100_000


class RecordTooLarge(ValueError):
    """A record that does not fit even an empty batch (cannot happen: the first record of
    a batch is always taken; kept so that a change in the client cannot lose one)."""


async def send_records(producer: AIOKafkaProducer, records: Iterable[Record]) -> list[int]:
    """Send ``records`` and wait until the broker has every one; returns the partition of
    each, in order. Raises the first failure of any batch."""
    partitions: dict[str, tuple[list[int], list[int]]] = {}  # topic: all, with a leader
    kept = _chosen.setdefault(producer, {})
    chosen: dict[str, dict[bytes, int]] = {}  # topic: {key: partition}
    open_batches: dict[tuple[str, int], Any] = {}  # aiokafka's BatchBuilder
    delivered: list[asyncio.Future[Any]] = []
    sent: list[int] = []
    try:
        for topic, key, value, headers in records:
            if topic not in partitions:
                every = sorted(await producer.partitions_for(topic))
                led = producer.client.cluster.available_partitions_for_topic(topic)
                partitions[topic] = every, list(led or every)
                known = kept.get(topic)
                if known is None or known[0] != every or len(known[1]) >= CHOSEN_KEPT:
                    known = kept[topic] = (every, {})
                chosen[topic] = known[1]
            every, led = partitions[topic]
            partition = chosen[topic].get(key) if key is not None else None
            if partition is None:
                partition = producer._partitioner(key, every, led)
                if key is not None:
                    chosen[topic][key] = partition
            where = (topic, partition)
            fields = {"timestamp": None, "key": key, "value": value, "headers": [*(headers or ())]}
            batch = open_batches.get(where)
            if batch is None or batch.append(**fields) is None:
                if batch is not None:  # full: send it, and start the partition's next one
                    delivered.append(await producer.send_batch(batch, topic, partition=partition))
                batch = open_batches[where] = producer.create_batch()
                if batch.append(**fields) is None:
                    raise RecordTooLarge(f"a record of {len(value):,} bytes fits no batch")
            sent.append(partition)
        for (topic, partition), batch in open_batches.items():
            delivered.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*delivered)
    finally:
        for future in delivered:  # every failure read, not only the first one raised
            future.add_done_callback(_read_outcome)
    return sent


def _read_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
