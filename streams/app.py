"""The Faust worker's app and its two loops: ingest and projection (streams.batch_consumer).

``faust -A streams.app worker`` works, and so does ``salespulse worker``.
Settings are read once from the environment when this module is imported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from config.connections import faust_credentials, kafka_options, redis_client
from config.settings import Settings
from projections.errors import described
from projections.events import Event
from projections.store import redis_unavailable
from projections.validation import Limits, Rejection
from streams import metrics
from streams.batch_consumer import BatchLoop, Fetched, Spans
from streams.facts_publisher import facts_producer, facts_publisher
from streams.forwarder import Forwarder
from streams.ingest import projection_letter
from streams.live_projector import LiveProjector
from streams.projector import Positioned, Span, read_record
from streams.rebuild import learn_directory
from streams.validated import ValidatedEvents

log = logging.getLogger(__name__)

settings = Settings.from_env()
FACTS_TOPIC = settings.facts_topic
# What ingest validated, so that the projection does not parse the same bytes again.
VALIDATED = ValidatedEvents()
# Faust's data directory (it writes only an empty one with the memory store): under the
# stack directory, not in the working directory of whoever started the worker.
faust_dir = settings.stack_path / "faust"
faust_dir.mkdir(parents=True, exist_ok=True)

# The app hosts the loops, and its producer writes their output; the loops join
# <prefix>-ingest and <prefix>-projection with consumers of their own. Faust's own consumer
# has nothing to read, so the app starts as producer only: no consumer group of its own to
# join, and no table manager (which waits a fixed second before the loops may start).
app = faust.App(
    f"{settings.topic_prefix}-worker",
    broker=f"kafka://{settings.bootstrap}",
    broker_credentials=faust_credentials(settings),
    store="memory://",
    datadir=str(faust_dir / f"{settings.topic_prefix}-worker"),
    web_enabled=False,
    topic_partitions=settings.partitions,
    topic_allow_declare=False,  # streams.topics creates topics with our retention settings
    producer_acks=-1,
    producer_max_request_size=2 * 1024 * 1024,  # above the broker's 1 MiB record limit
)
app.producer_only = True


async def _or_exit(name: str, loop: Coroutine[Any, Any, None]) -> None:
    """Run a loop; if it fails, stop the worker (a Faust task that fails is only logged, and
    a worker that no longer ingests or projects must not look alive). Nothing of the batch
    in hand was committed, so the restarted worker handles it again."""
    try:
        await loop
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.critical("the %s loop failed, exiting without commit: %s", name, described(exc))
        os._exit(70)


@app.task
async def ingest() -> None:
    """Validate raw records in batches; forward valid ones, dead-letter the rest, each batch
    in one transaction with its raw offsets."""
    metrics.AGENT_STARTS.inc()
    forwarder = Forwarder(settings, VALIDATED)
    loop = BatchLoop(
        settings,
        forwarder.group,
        [settings.raw_topic],
        forwarder.forward,
        commit_seconds=None,  # the transactions commit the offsets
        max_records=settings.ingest_batch_size,
        idle_seconds=settings.ingest_batch_seconds,
        linger_seconds=settings.ingest_linger_seconds,
        paced=forwarder.paced,  # not far ahead of this worker's projection
    )
    forwarder.consumer = loop.consumer
    await _or_exit("ingest", _forwarding(forwarder, loop))


async def _forwarding(forwarder: Forwarder, loop: BatchLoop) -> None:
    await forwarder.start()
    try:
        await loop.run()
    finally:
        await forwarder.stop()


_newest_applied_ms = 0
_largest_batch = 0
FILL_CHUNK = 5_000  # records per commit while a gap is refilled from the log


@app.task
async def project() -> None:
    """Apply canonical events and lead facts to the Redis projections, one atomic commit per
    partition of each batch."""
    await _or_exit("projection", _projecting())


async def _projecting() -> None:
    facts = facts_producer(settings)  # the batches' lead facts, sent before their commits
    await facts.start()
    projector = LiveProjector(
        redis_client(settings),
        settings.topic_prefix,
        settings.partitions,
        settings.rules,
        facts_publisher(settings, facts),
        fill=fill,
        learn_directory=lambda directory: learn_directory(settings, directory),
        outage_seconds=settings.redis_outage_seconds,
        dead_letter=dead_letter,
    )
    topics = (settings.events_topic, settings.facts_topic)

    async def handle(fetched: Fetched, spans: Spans) -> None:
        now_ms = time.time_ns() // 1_000_000
        limits = settings.limits  # made by the property: once a batch, not once a record
        batch = [
            item
            for tp, messages in fetched.items()
            for m in messages
            if (item := decode(tp.topic, tp.partition, m.offset, m.value, now_ms, limits))
        ]
        await project_batch(
            projector, batch, {(tp.partition, tp.topic): span for tp, span in spans.items()}
        )

    async def resume(assigned: set[TopicPartition]) -> None:
        """Check the assignment is co-partitioned, then continue each partition after its
        Redis checkpoint (a partition Redis knows nothing of starts at the group's committed
        offset, or the beginning; the projector refills any gap)."""
        by_topic = {t: sorted(tp.partition for tp in assigned if tp.topic == t) for t in topics}
        if by_topic[topics[0]] != by_topic[topics[1]]:
            # aiokafka only logs what a listener raises: stop here, before writing anything.
            log.critical("not co-partitioned, stopping: assigned %s", by_topic)
            os._exit(78)
        partitions = by_topic[topics[0]]
        VALIDATED.own(partitions)  # ingest keeps what this loop will take
        if partitions:
            stored = await projector.checkpoints_of(partitions)
            for partition, done in zip(partitions, stored, strict=True):
                for topic in topics:
                    tp = TopicPartition(topic, partition)
                    if topic in done:
                        loop.seek(tp, done[topic] + 1)
                    else:  # where the group left it, or the beginning: the span starts there
                        loop.positions[tp] = await loop.consumer.position(tp)
            await projector.fold_missing(partitions, assigned=True)

    def revoked(partitions: set[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        projector.forget(gone)
        VALIDATED.disown(gone)  # their events would never be taken here

    async def recheck() -> None:
        """Every few seconds, busy or not: refill the partitions whose checkpoints went back in
        Redis (emptied, or its last writes lost) from where the consumer stands, so that a
        quiet partition does not wait for its next record to notice; and fold what the
        rollups miss (a failed fold, a shard's master that lost writes)."""
        assigned = sorted({tp.partition for tp in loop.consumer.assignment()})
        try:
            behind = await projector.behind(assigned)
            await projector.fold_missing(assigned)
        except Exception as exc:  # a failover, a restart: the next round looks again
            if not redis_unavailable(exc):
                raise
            log.warning(
                "Redis unavailable (%s); checkpoints not rechecked this round", described(exc)
            )
            return
        if behind:
            projector.forget(behind)
            spans = {
                (tp.partition, tp.topic): Span(offset, offset)
                for tp, offset in loop.positions.items()
                if tp.partition in behind
            }
            await project_batch(projector, [], spans)

    loop = BatchLoop(
        settings,
        f"{settings.topic_prefix}-projection",
        topics,
        handle,
        commit_seconds=1.0,
        max_records=settings.projection_batch_size,
        idle_seconds=settings.projection_batch_seconds,
        linger_seconds=settings.projection_linger_seconds,
        on_assigned=resume,
        on_revoked=revoked,
        periodic=recheck,
    )
    try:
        await loop.run()
    finally:
        try:  # the last batch's fold, else the next worker redoes it (fold_missing)
            await projector.settle_folds()
        except Exception as exc:
            log.warning(
                "the last fold did not finish (%s): it is redone on assignment", described(exc)
            )
        await facts.stop()


def decode(
    topic: str, partition: int, offset: int, value: bytes | None, now_ms: int, limits: Limits
) -> Positioned | None:
    """A record of the events or lead-facts topic as the projector takes it (None, counted,
    for an invalid event); an event this worker's ingest validated is not parsed again."""
    if value and topic != FACTS_TOPIC:
        event = VALIDATED.take(value)
        if event is not None:
            return Positioned(topic, partition, offset, event, value)
    item = read_record(
        topic, partition, offset, value, facts_topic=FACTS_TOPIC, limits=limits, now_ms=now_ms
    )
    if item is None:
        metrics.PROJECTED.labels("invalid").inc()
    return item


async def fill(topic: str, partition: int, start: int, end: int) -> AsyncIterator[list[Positioned]]:
    """Offsets ``start`` .. ``end - 1`` read again from the log (from its first offset if it
    starts later), in chunks, with a consumer of its own: the agent's consumer stays put."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        **kafka_options(settings),
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        first = (await consumer.beginning_offsets([tp]))[tp]
        consumer.seek(tp, max(start, first))
        while await consumer.position(tp) < end:
            got = await consumer.getmany(tp, timeout_ms=1_000, max_records=FILL_CHUNK)
            now_ms, limits = time.time_ns() // 1_000_000, settings.limits
            chunk = [
                d
                for m in got.get(tp, [])
                if m.offset < end
                and (d := decode(topic, partition, m.offset, m.value, now_ms, limits))
            ]
            if chunk:
                yield chunk
    finally:
        await consumer.stop()


async def dead_letter(record: Positioned, rejection: Rejection) -> None:
    """Send a record the projections do not apply (unprocessable, too late) to the
    dead-letter topic, and wait until the broker has it (before its offset is passed)."""
    key, letter = projection_letter(
        record.item,
        record.value,
        rejection,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )
    sent = await app.producer.send(
        settings.dlq_topic, key, letter.value, None, None, letter.headers
    )
    await sent
    metrics.DEAD_LETTERS.labels(rejection.reason.value).inc()


async def project_batch(
    projector: LiveProjector, positioned: Sequence[Positioned], spans: dict[tuple[int, str], Span]
) -> None:
    started = time.perf_counter()
    newest = max(
        (p.item.occurred_at_ms for p in positioned if isinstance(p.item, Event)), default=0
    )
    outcome = await projector.apply(positioned, spans)  # if it fails, _or_exit stops the worker
    metrics.PROJECTED.labels("applied").inc(outcome.applied)
    metrics.PROJECTED.labels("duplicate").inc(outcome.duplicates)
    metrics.PROJECTED.labels("redelivered").inc(outcome.redelivered)
    metrics.PROJECTED.labels("refilled").inc(outcome.filled)
    metrics.PROJECTED.labels("unprocessable").inc(outcome.unprocessable)
    metrics.PROJECTED.labels("too_late").inc(outcome.too_late)
    metrics.RECORDS_EXPIRED.inc(outcome.expired)
    for gap in outcome.gaps:
        metrics.REWINDS.labels("projections_behind" if gap.stored else "projections_missing").inc()
    metrics.LEAD_FACTS.labels("published").inc(outcome.facts_published)
    metrics.LEAD_FACTS.labels("applied").inc(outcome.facts_applied)
    metrics.LEAD_FACTS.labels("duplicate").inc(outcome.facts_duplicate)
    metrics.PROJECTION_BATCH_SECONDS.observe(time.perf_counter() - started)
    global _newest_applied_ms, _largest_batch
    if len(positioned) > _largest_batch:
        _largest_batch = len(positioned)
        metrics.LARGEST_BATCH.set(_largest_batch)
    if newest > _newest_applied_ms:
        _newest_applied_ms = newest
        metrics.NEWEST_APPLIED.set(newest / 1000)
    metrics.LAST_PROJECTION.set(time.time())
