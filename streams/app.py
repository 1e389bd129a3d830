"""The Faust app, its topics and the ingest agent.

``faust -A streams.app worker`` works, and so does ``salespulse worker``.
Settings are read once from the environment when this module is imported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence

import faust
from faust.types import TP, EventT

from projections.facts import LeadFact
from projections.store import connect
from projections.validation import Limits, Rejection, parse_event
from streams import metrics
from streams.ingest import Accepted, route
from streams.projector import LiveProjector, Positioned, Rewind
from streams.rebuild import learn_directory
from streams.settings import Settings

log = logging.getLogger(__name__)

settings = Settings.from_env()

app = faust.App(
    f"{settings.topic_prefix}-ingest",
    broker=f"kafka://{settings.bootstrap}",
    store="memory://",
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
# The projection agent reads the canonical events and the lead facts it derives from them.
projection_topics = app.topic(
    settings.events_topic, settings.facts_topic, key_serializer="raw", value_serializer="raw"
)


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


@app.agent(projection_topics, concurrency=1)
async def project(stream: faust.StreamT[bytes]) -> None:
    """Apply canonical events to the Redis projections, one atomic commit per partition batch."""
    projector = LiveProjector(
        connect(settings.redis),
        settings.topic_prefix,
        settings.partitions,
        settings.rules,
        publish_facts,
        log_start=log_start,
        learn_directory=lambda directory: learn_directory(settings, directory),
        outage_seconds=settings.redis_outage_seconds,
    )
    assert isinstance(stream, faust.Stream)  # StreamT's stubs lack take_events
    async for batch in stream.take_events(
        settings.projection_batch_size, within=settings.projection_batch_seconds
    ):
        await project_batch(projector, batch)


_log_starts: dict[TP, tuple[int, float]] = {}


async def log_start(topic: str, partition: int) -> int:
    """The partition's first offset, asked of the broker at most once a minute: while
    records past a gap drain, every batch asks for it."""
    tp = TP(topic, partition)
    known = _log_starts.get(tp)
    if known is None or time.monotonic() - known[1] > 60:
        start = (await app.consumer.earliest_offsets(tp)).get(tp, 0)
        known = _log_starts[tp] = (start, time.monotonic())
    return known[0]


async def rewind(rewinds: Sequence[Rewind]) -> None:
    """Read partitions again from where the projections in Redis stop (projector.py)."""
    for r in rewinds:
        await app.consumer.seek(TP(r.topic, r.partition), r.offset)
        if r.again:
            log.debug(
                "%s[%d]: still past the gap, seeking to %d again", r.topic, r.partition, r.offset
            )
            continue
        reason = "projections_behind" if r.stored else "projections_missing"
        metrics.REWINDS.labels(reason).inc()
        log.warning(
            "%s[%d]: the projections in Redis %s, but the next record is at offset %d; "
            "reading the partition again from offset %d to rebuild them from the log",
            r.topic,
            r.partition,
            f"end at offset {r.offset - 1}" if r.stored else "hold nothing of it (emptied?)",
            r.found,
            r.offset,
        )


async def publish_facts(facts: Sequence[LeadFact]) -> None:
    """Publish lead facts keyed by lead id and wait until the broker has them."""
    producer = app.producer
    sends = [
        await producer.send(settings.facts_topic, f.lead_id.encode(), f.encode(), None, None, None)
        for f in facts
    ]
    await asyncio.gather(*sends)


async def project_batch(projector: LiveProjector, batch: Sequence[EventT]) -> None:
    started = time.perf_counter()
    now_ms = time.time_ns() // 1_000_000
    positioned = []
    newest = 0
    for event in batch:
        message = event.message
        if message.topic == settings.facts_topic:
            fact = LeadFact.decode(message.value or b"")
            positioned.append(Positioned(message.topic, message.partition, message.offset, fact))
            continue
        parsed = parse_event(message.value or b"", now_ms=now_ms, limits=settings.limits)
        if isinstance(parsed, Rejection):
            # Only the ingest agent writes this topic, so this means a writer bypassed it.
            metrics.PROJECTED.labels("invalid").inc()
            log.error(
                "skipping invalid record %s[%d]@%d on the events topic: %s",
                message.topic,
                message.partition,
                message.offset,
                parsed.detail,
            )
            continue
        positioned.append(Positioned(message.topic, message.partition, message.offset, parsed))
        newest = max(newest, parsed.occurred_at_ms)
    try:
        outcome = await projector.apply(positioned)
    except Exception as exc:
        # Same reasoning as in forward_batch: exit before Faust can ack the batch. The stored
        # checkpoints make the restarted worker skip what was already committed.
        log.critical("projecting a batch failed, exiting without commit: %r", exc)
        os._exit(70)
    metrics.PROJECTED.labels("applied").inc(outcome.applied)
    metrics.PROJECTED.labels("duplicate").inc(outcome.duplicates)
    metrics.PROJECTED.labels("redelivered").inc(outcome.redelivered)
    metrics.PROJECTED.labels("past_gap").inc(outcome.past_gap)
    metrics.LEAD_FACTS.labels("published").inc(outcome.facts_published)
    metrics.LEAD_FACTS.labels("applied").inc(outcome.facts_applied)
    metrics.LEAD_FACTS.labels("duplicate").inc(outcome.facts_duplicate)
    metrics.PROJECTION_BATCH_SECONDS.observe(time.perf_counter() - started)
    if outcome.rewinds:
        await rewind(outcome.rewinds)
    global _newest_applied_ms
    if newest > _newest_applied_ms:
        _newest_applied_ms = newest
        metrics.NEWEST_APPLIED.set(newest / 1000)
    metrics.LAST_PROJECTION.set(time.time())
