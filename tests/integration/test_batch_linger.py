"""BatchLoop's linger on the real broker: records that come shortly after a batch began join it
(one batch, not several), a batch stops growing at ``max_records``, and without a linger the
loop hands over what the fetch had; and a loop paced before its fetch (ingest waiting for its
projection) never holds up a rebalance."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from config.connections import kafka_options
from config.settings import Settings
from streams.batch_consumer import BatchLoop, Fetched, Periodic, Spans
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration


async def _topics(stack_env: dict[str, str], partitions: int) -> Settings:
    """Settings with topics of their own, created."""
    settings = dataclasses.replace(
        Settings.from_env(stack_env),
        topic_prefix=f"bl{uuid.uuid4().hex[:8]}",
        partitions=partitions,
    )
    await ensure_topics(settings)
    return settings


def _member(
    settings: Settings,
    name: str,
    sizes: list[int],
    linger_seconds: float,
    max_records: int,
    paced: Periodic | None = None,
) -> BatchLoop:
    """A member of the test's group on the raw topic (a static member of its own, ``name``)
    that notes the size of each batch it hands over in ``sizes``."""

    async def handle(fetched: Fetched, spans: Spans) -> None:
        sizes.append(sum(len(messages) for messages in fetched.values()))

    return BatchLoop(
        dataclasses.replace(settings, worker_id=name),
        f"{settings.topic_prefix}-test",
        [settings.raw_topic],
        handle,
        max_records=max_records,
        idle_seconds=0.1,
        linger_seconds=linger_seconds,
        paced=paced,
    )


async def _batches(
    stack_env: dict[str, str], linger_seconds: float, max_records: int, bursts: int
) -> list[int]:
    """Sizes of the batches a loop hands over while ``bursts`` bursts of 50 records come, 0.3 s
    apart, on one partition."""
    settings = await _topics(stack_env, partitions=1)
    sizes: list[int] = []
    loop = _member(settings, "first", sizes, linger_seconds, max_records)
    running = asyncio.create_task(loop.run())
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, **kafka_options(settings))
    await producer.start()
    try:
        while not loop.consumer.assignment():  # joined: what is sent now is read
            await asyncio.sleep(0.05)
        for burst in range(bursts):
            for n in range(50):
                await producer.send(settings.raw_topic, b"%d-%d" % (burst, n))
            await producer.flush()
            await asyncio.sleep(0.3)
        for _ in range(100):
            if sum(sizes) >= 50 * bursts:
                break
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert sum(sizes) == 50 * bursts
    return sizes


async def test_records_that_come_during_the_linger_join_the_batch(
    stack_env: dict[str, str],
) -> None:
    assert await _batches(stack_env, linger_seconds=2.0, max_records=10_000, bursts=3) == [150]


async def test_a_batch_stops_at_max_records(stack_env: dict[str, str]) -> None:
    sizes = await _batches(stack_env, linger_seconds=2.0, max_records=60, bursts=3)
    assert max(sizes) == 60 and len(sizes) == 3


async def test_without_a_linger_each_burst_is_a_batch_of_its_own(
    stack_env: dict[str, str],
) -> None:
    sizes = await _batches(stack_env, linger_seconds=0.0, max_records=10_000, bursts=3)
    assert len(sizes) >= 3


async def test_a_rebalance_while_a_batch_lingers_is_not_held_up(stack_env: dict[str, str]) -> None:
    """A second member joins while the first lingers over a batch: the revocation waits for
    the batch, never the batch for the rebalance, so the newcomer has partitions within
    seconds (a fetch that waited for the next assignment while the batch was held would hold
    the group until its rebalance timeout, minutes)."""
    settings = await _topics(stack_env, partitions=2)
    handled: list[int] = []
    first = _member(settings, "first", handled, 3.0, 100_000)
    second = _member(settings, "second", handled, 0.0, 100_000)
    loops = [asyncio.create_task(first.run())]
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, **kafka_options(settings))
    await producer.start()

    async def keep_sending() -> None:  # a record every 50 ms: batches linger their 3 s whole
        n = 0
        while True:
            await producer.send_and_wait(settings.raw_topic, b"%d" % n, partition=n % 2)
            n += 1
            await asyncio.sleep(0.05)

    try:
        while not first.consumer.assignment():
            await asyncio.sleep(0.05)
        loops.append(asyncio.create_task(keep_sending()))
        await asyncio.sleep(1.0)  # the first batch is lingering
        loops.append(asyncio.create_task(second.run()))
        joined = asyncio.get_running_loop().time()
        while not second.consumer.assignment():
            assert asyncio.get_running_loop().time() - joined < 30, "the rebalance is held up"
            await asyncio.sleep(0.1)
        assert handled, "the lingering batch was handed over first"
    finally:
        for task in reversed(loops):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await producer.stop()


async def test_a_rebalance_while_a_loop_waits_to_fetch_is_not_held_up(
    stack_env: dict[str, str],
) -> None:
    """After its first batch the first member's ``paced`` waits for good, as ingest waits for
    room while its projection is stuck: a second member that joins still gets partitions
    within seconds, as the loop waits with no batch in hand (not so if the wait were part of
    handling the batch: the revocation waits for the batch)."""
    settings = await _topics(stack_env, partitions=2)
    handled: list[int] = []
    never = asyncio.Event()
    paced_with_batch_held: list[bool] = []

    async def paced() -> None:
        paced_with_batch_held.append(first.busy.locked())
        if handled:
            await never.wait()

    first = _member(settings, "first", handled, 0.0, 100_000, paced)
    second = _member(settings, "second", [], 0.0, 100_000)
    loops = [asyncio.create_task(first.run())]
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, **kafka_options(settings))
    await producer.start()
    try:
        while not first.consumer.assignment():
            await asyncio.sleep(0.05)
        for n in range(10):
            await producer.send_and_wait(settings.raw_topic, b"%d" % n, partition=n % 2)
        while not handled:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the first member now waits in ``paced``
        loops.append(asyncio.create_task(second.run()))
        joined = asyncio.get_running_loop().time()
        while not second.consumer.assignment():
            assert asyncio.get_running_loop().time() - joined < 30, "the rebalance is held up"
            await asyncio.sleep(0.1)
        assert paced_with_batch_held and not any(paced_with_batch_held)
    finally:
        never.set()
        for task in reversed(loops):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
