"""A loop whose batches commit their offsets in a Kafka transaction (ingest) lets a revoked
partition go only once the group shows those offsets (``BatchLoop.committed_shown``): the
next owner reads the offsets from the group, and an older one makes it forward a batch a
second time. On the real broker: the offsets a transaction committed show; a revocation
waits while they do not, and gives up after its bound with a warning instead of hanging."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from config.connections import kafka_options
from config.settings import Settings
from streams import batch_consumer
from streams.batch_consumer import BatchLoop, Fetched, Spans
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration


async def test_a_revocation_waits_for_the_transactions_offsets_to_show(
    stack_env: dict[str, str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dataclasses.replace(
        Settings.from_env(stack_env), topic_prefix=f"ro{uuid.uuid4().hex[:8]}", partitions=1
    )
    await ensure_topics(settings)
    group = f"{settings.topic_prefix}-test"
    tp = TopicPartition(settings.raw_topic, 0)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        **kafka_options(settings),
        transactional_id=f"{settings.topic_prefix}-tx",
        enable_idempotence=True,
    )
    handled: list[int] = []

    async def handle(fetched: Fetched, spans: Spans) -> None:
        async with producer.transaction():
            offsets = {tp: span.end for tp, span in spans.items()}
            await producer.send_offsets_to_transaction(offsets, group)
        handled.append(sum(len(m) for m in fetched.values()))

    loop = BatchLoop(
        settings,
        group,
        [settings.raw_topic],
        handle,
        commit_seconds=None,
        max_records=1_000,
        idle_seconds=0.1,
    )
    await producer.start()
    running = asyncio.create_task(loop.run())
    try:
        while not loop.consumer.assignment():
            await asyncio.sleep(0.05)
        plain = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, **kafka_options(settings))
        await plain.start()
        try:
            for n in range(100):
                await plain.send(settings.raw_topic, b"%d" % n)
            await plain.flush()
        finally:
            await plain.stop()
        for _ in range(200):
            if sum(handled) >= 100:
                break
            await asyncio.sleep(0.05)
        assert sum(handled) == 100
        async with loop.busy:  # as a revocation: no batch meanwhile
            end = loop.positions[tp]
            assert end >= 100
            await loop.committed_shown({tp})
            assert await loop.consumer.committed(tp) == end

            # Offsets that never show (a batch the group never saw committed): it waits
            # for its bound, then lets the partition go with a warning.
            monkeypatch.setattr(batch_consumer, "SHOWN_SECONDS", 1.0)
            loop.positions[tp] = end + 1_000
            started = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="streams.batch_consumer"):
                await asyncio.wait_for(loop.committed_shown({tp}), 10)
            waited = time.monotonic() - started
            assert 1.0 <= waited < 5.0
            assert "does not show the committed offsets" in caplog.text
            loop.positions[tp] = end
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await producer.stop()
