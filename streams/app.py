"""The Faust app, its topics and the ingest agent.

``faust -A streams.app worker`` works, and so does ``salespulse worker``.
Settings are read once from the environment when this module is imported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import EventT

from projections.events import Event
from projections.facts import LeadFact
from projections.store import connect
from projections.validation import Limits, Rejection, parse_event
from streams import metrics
from streams.ingest import Accepted, route
from streams.projection_consumer import ProjectionLoop
from streams.projector import LiveProjector, Positioned
from streams.rebuild import learn_directory
from streams.settings import Settings

log = logging.getLogger(__name__)

settings = Settings.from_env()
# Faust's data directory (it writes only an empty one with the memory store): under the
# stack directory, not in the working directory of whoever started the worker.
faust_dir = settings.stack_path / "faust"
faust_dir.mkdir(parents=True, exist_ok=True)

app = faust.App(
    f"{settings.topic_prefix}-ingest",
    broker=f"kafka://{settings.bootstrap}",
    store="memory://",
    datadir=str(faust_dir / f"{settings.topic_prefix}-ingest"),
    web_enabled=False,
    topic_partitions=settings.partitions,
    topic_allow_declare=False,  # streams.topics creates topics with our retention settings
    consumer_auto_offset_reset="earliest",
    # A killed worker's partitions move to a live one after this long (Faust's default is 60 s).
    broker_session_timeout=settings.session_timeout_seconds,
    broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
    producer_acks=-1,
    producer_max_request_size=2 * 1024 * 1024,  # above the broker's 1 MiB record limit
)

raw_topic = app.topic(settings.raw_topic, key_serializer="raw", value_serializer="raw")


@app.agent(raw_topic, concurrency=1)
async def ingest(stream: faust.StreamT[bytes]) -> None:
    """Validate raw records in batches; forward valid ones, dead-letter the rest."""
    metrics.AGENT_STARTS.inc()
    limits = settings.limits
    assert isinstance(stream, faust.Stream)  # StreamT's stubs lack take_events
    async for batch in stream.take_events(
        settings.ingest_batch_size, within=settings.ingest_batch_seconds
    ):
        await forward_batch(batch, limits)


async def forward_batch(batch: Sequence[EventT], limits: Limits) -> None:
    started = time.perf_counter()
    now_ms = time.time_ns() // 1_000_000
    producer = app.producer
    sends = []
    for event in batch:
        message = event.message
        outcome = route(
            message.value,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            now_ms=now_ms,
            limits=limits,
        )
        # Straight to the producer (no per-message Faust wrappers); the raw topic's offsets
        # are committed only after the producer has flushed, so nothing is acked early.
        if isinstance(outcome, Accepted):
            sends.append(
                await producer.send(
                    settings.events_topic, outcome.key, message.value, None, None, None
                )
            )
            metrics.EVENTS.labels(outcome.event.type).inc()
        else:
            sends.append(
                await producer.send(
                    settings.dlq_topic, message.key, outcome.value, None, None, outcome.headers
                )
            )
            metrics.DEAD_LETTERS.labels(outcome.rejection.reason.value).inc()
            log.info(
                "dead-lettered %s[%d]@%d: %s: %s",
                message.topic,
                message.partition,
                message.offset,
                outcome.rejection.reason.value,
                outcome.rejection.detail,
            )
    try:
        await asyncio.gather(*sends)
    except Exception as exc:
        # Faust acks a batch even when its body fails, so carrying on (or letting the agent
        # restart) could commit offsets of records that never reached Kafka. Exit without
        # committing instead; the restarted worker re-reads them.
        log.critical("publishing a batch failed, exiting without commit: %r", exc)
        os._exit(70)
    metrics.RECORDS.inc(len(batch))
    metrics.BATCH_SIZE.observe(len(batch))
    metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
    metrics.LAST_BATCH.set(time.time())


_newest_applied_ms = 0
FILL_CHUNK = 5_000  # records per commit while a gap is refilled from the log


@app.task
async def project() -> None:
    """Apply canonical events and lead facts to the Redis projections, one atomic commit per
    partition of each batch (streams.projection_consumer)."""
    projector = LiveProjector(
        connect(settings.redis),
        settings.topic_prefix,
        settings.partitions,
        settings.rules,
        publish_facts,
        fill=fill,
        learn_directory=lambda directory: learn_directory(settings, directory),
        outage_seconds=settings.redis_outage_seconds,
    )
    try:
        await ProjectionLoop(settings, projector, decode, project_batch).run()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # A Faust task that fails is only logged; a worker that no longer projects must stop.
        log.critical("the projection loop failed, exiting: %r", exc)
        os._exit(70)


def decode(
    topic: str, partition: int, offset: int, value: bytes | None, now_ms: int
) -> Positioned | None:
    """A record of the events or lead-facts topic as the projector takes it."""
    if topic == settings.facts_topic:
        return Positioned(topic, partition, offset, LeadFact.decode(value or b""))
    parsed = parse_event(value or b"", now_ms=now_ms, limits=settings.limits)
    if isinstance(parsed, Rejection):
        # Only the ingest agent writes this topic, so this means a writer bypassed it.
        metrics.PROJECTED.labels("invalid").inc()
        log.error("skipping invalid record %s[%d]@%d: %s", topic, partition, offset, parsed.detail)
        return None
    return Positioned(topic, partition, offset, parsed)


async def fill(topic: str, partition: int, start: int, end: int) -> AsyncIterator[list[Positioned]]:
    """Offsets ``start`` .. ``end - 1`` read again from the log (from its first offset if it
    starts later), in chunks, with a consumer of its own: the agent's consumer stays put."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        first = (await consumer.beginning_offsets([tp]))[tp]
        consumer.seek(tp, max(start, first))
        while await consumer.position(tp) < end:
            got = await consumer.getmany(tp, timeout_ms=1_000, max_records=FILL_CHUNK)
            now_ms = time.time_ns() // 1_000_000
            chunk = [
                d
                for m in got.get(tp, [])
                if m.offset < end and (d := decode(topic, partition, m.offset, m.value, now_ms))
            ]
            if chunk:
                yield chunk
    finally:
        await consumer.stop()


async def publish_facts(facts: Sequence[LeadFact]) -> None:
    """Publish lead facts keyed by lead id and wait until the broker has them."""
    producer = app.producer
    sends = [
        await producer.send(settings.facts_topic, f.lead_id.encode(), f.encode(), None, None, None)
        for f in facts
    ]
    await asyncio.gather(*sends)


async def project_batch(projector: LiveProjector, positioned: Sequence[Positioned]) -> None:
    started = time.perf_counter()
    newest = max(
        (p.item.occurred_at_ms for p in positioned if isinstance(p.item, Event)), default=0
    )
    try:
        outcome = await projector.apply(positioned)
    except Exception as exc:
        # Exit before anything could move the group's offsets past the batch. The stored
        # checkpoints make the restarted worker skip what was already committed.
        log.critical("projecting a batch failed, exiting without commit: %r", exc)
        os._exit(70)
    metrics.PROJECTED.labels("applied").inc(outcome.applied)
    metrics.PROJECTED.labels("duplicate").inc(outcome.duplicates)
    metrics.PROJECTED.labels("redelivered").inc(outcome.redelivered)
    metrics.PROJECTED.labels("refilled").inc(outcome.filled)
    for gap in outcome.gaps:
        metrics.REWINDS.labels("projections_behind" if gap.stored else "projections_missing").inc()
    metrics.LEAD_FACTS.labels("published").inc(outcome.facts_published)
    metrics.LEAD_FACTS.labels("applied").inc(outcome.facts_applied)
    metrics.LEAD_FACTS.labels("duplicate").inc(outcome.facts_duplicate)
    metrics.PROJECTION_BATCH_SECONDS.observe(time.perf_counter() - started)
    global _newest_applied_ms
    if newest > _newest_applied_ms:
        _newest_applied_ms = newest
        metrics.NEWEST_APPLIED.set(newest / 1000)
    metrics.LAST_PROJECTION.set(time.time())
