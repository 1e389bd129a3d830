"""``send_records`` raises when the broker refuses a batch: a transaction's commit alone does
not look at its batches' results, so without this a refused batch would be committed away
(the real broker's happy path is tests/integration/test_batch_send.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from streams.batch_send import send_records

pytestmark = pytest.mark.unit


class Refused(KafkaError):
    """What the broker answered for one batch."""


class Builder:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def append(self, **fields: Any) -> object | None:
        if len(self.records) >= 2:  # full after two records
            return None
        self.records.append(fields)
        return object()


class Cluster:
    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1}


class Client:
    cluster = Cluster()


class Producer:
    """Enough of AIOKafkaProducer for send_records: the batches it is given, each answered
    with success, except those for ``refused`` partitions."""

    def __init__(self, refused: set[int]) -> None:
        self.refused = refused
        self.partitions = {0, 1}
        self.client = Client()
        self._partitioner = DefaultPartitioner()
        self.sent: list[tuple[str, int, Builder]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return self.partitions

    def create_batch(self) -> Builder:
        return Builder()

    async def send_batch(self, batch: Builder, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, batch))
        answered: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if partition in self.refused:
            answered.set_exception(Refused(f"partition {partition}"))
        else:
            answered.set_result(object())
        return answered


RECORDS = [("events", f"k{n}".encode(), b"v%d" % n, None) for n in range(12)]


async def test_every_record_goes_in_batches_of_its_partition() -> None:
    producer = Producer(refused=set())
    sent_to = await send_records(producer, RECORDS)  # type: ignore[arg-type]
    partition_of = {key: DefaultPartitioner()(key, [0, 1], [0, 1]) for _, key, _, _ in RECORDS}
    assert sent_to == [partition_of[key] for _, key, _, _ in RECORDS]  # each record's, in order
    assert set(sent_to) == {0, 1}
    for _, partition, batch in producer.sent:
        assert 1 <= len(batch.records) <= 2
        assert {partition_of[r["key"]] for r in batch.records} == {partition}
    sent = [r["key"] for _, _, batch in producer.sent for r in batch.records]
    assert sorted(sent) == sorted(key for _, key, _, _ in RECORDS)


async def test_a_refused_batch_raises() -> None:
    refused = DefaultPartitioner()(b"k0", [0, 1], [0, 1])
    with pytest.raises(Refused):
        await send_records(Producer(refused={refused}), RECORDS)  # type: ignore[arg-type]


class Counting(DefaultPartitioner):
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, key: bytes | None, every: list[int], led: list[int]) -> int:
        self.calls += 1
        return int(super().__call__(key, every, led))


async def test_a_keys_partition_is_chosen_once_while_the_topics_partitions_stay() -> None:
    producer = Producer(refused=set())
    producer._partitioner = counting = Counting()
    await send_records(producer, RECORDS)  # type: ignore[arg-type]
    await send_records(producer, RECORDS)  # type: ignore[arg-type]
    assert counting.calls == len(RECORDS)
    producer.partitions = {0, 1, 2}  # partitions added: every key is placed again
    producer.sent.clear()
    await send_records(producer, RECORDS)  # type: ignore[arg-type]
    assert counting.calls == 2 * len(RECORDS)
    every = [0, 1, 2]
    for _, partition, batch in producer.sent:
        assert {DefaultPartitioner()(r["key"], every, every) for r in batch.records} == {partition}
