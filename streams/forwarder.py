"""The ingest loop's output: each raw batch forwarded exactly once, in one Kafka transaction.

Valid events go to the events topic (original bytes, keyed by subject), invalid records to
the dead-letter topic, and the batch's raw offsets to the ingest group, all in one
transaction (``send_offsets_to_transaction``). A worker killed mid-batch leaves an open
transaction that its restart (the same transactional id) aborts; readers use
read_committed, so they never see it, and the restart forwards the batch again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from config.connections import kafka_options
from config.settings import Settings
from projections.errors import described
from projections.events import Event
from projections.validation import Limits
from streams import metrics
from streams.batch_consumer import Fetched, Spans
from streams.batch_send import send_records
from streams.ingest import Accepted, route
from streams.validated import ValidatedEvents

log = logging.getLogger(__name__)


@dataclass
class Routed:
    """Where a batch's records go: (topic, key, value, headers), and counts for metrics."""

    records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]] = field(
        default_factory=list
    )
    events: Counter[str] = field(default_factory=Counter)  # by type
    dead: Counter[str] = field(default_factory=Counter)  # by reason
    valid: list[tuple[int, Event]] = field(default_factory=list)  # each one's record, event


def route_batch(
    fetched: Fetched, *, events_topic: str, dlq_topic: str, limits: Limits, now_ms: int
) -> Routed:
    """Decide where every record of a batch goes (pure)."""
    routed = Routed()
    for tp, messages in fetched.items():
        for m in messages:
            outcome = route(
                m.value or b"",
                topic=tp.topic,
                partition=tp.partition,
                offset=m.offset,
                now_ms=now_ms,
                limits=limits,
            )
            if isinstance(outcome, Accepted):
                routed.valid.append((len(routed.records), outcome.event))
                routed.records.append((events_topic, outcome.key, m.value or b"", None))
                routed.events[outcome.event.type] += 1
            else:
                routed.records.append((dlq_topic, m.key, outcome.value, outcome.headers))
                reason = outcome.rejection.reason.value
                routed.dead[reason] += 1
                log.info(
                    "dead-lettered %s[%d]@%d: %s: %r",
                    tp.topic,
                    tp.partition,
                    m.offset,
                    reason,
                    outcome.rejection.detail,
                )
    return routed


class Forwarder:
    def __init__(self, settings: Settings, validated: ValidatedEvents | None = None) -> None:
        self.settings = settings
        self.validated = validated  # the events forwarded, for this worker's projection loop
        self.group = f"{settings.topic_prefix}-ingest"
        self.transactional_id = f"{settings.topic_prefix}-ingest-{settings.worker_name}"
        self.consumer: AIOKafkaConsumer | None = None  # the loop's, for its committed offsets
        self.producer: AIOKafkaProducer | None = None

    def _producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            **kafka_options(self.settings),
            transactional_id=self.transactional_id,
            transaction_timeout_ms=int(self.settings.transaction_timeout_seconds * 1000),
            enable_idempotence=True,
            acks="all",
            max_batch_size=512 * 1024,  # a partition's share of a batch in one record batch
        )

    async def start(self) -> None:
        """A producer that fences a killed predecessor, aborting its open transaction."""
        producer = self._producer()
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(KafkaError):
                await producer.stop()
            raise
        self.producer = producer

    async def stop(self) -> None:
        if self.producer is not None:
            producer, self.producer = self.producer, None
            with contextlib.suppress(KafkaError):
                await producer.stop()

    async def forward(self, fetched: Fetched, spans: Spans) -> None:
        """Forward one batch. While Kafka fails (up to SALESPULSE_REDIS_OUTAGE_SECONDS, the
        engine's one outage budget), start over with a new producer, which aborts the open
        transaction, unless the group's committed offsets show that the batch did commit."""
        started = time.perf_counter()
        routed = route_batch(
            fetched,
            events_topic=self.settings.events_topic,
            dlq_topic=self.settings.dlq_topic,
            limits=self.settings.limits,
            now_ms=time.time_ns() // 1_000_000,
        )
        delay, give_up = 0.1, time.monotonic() + self.settings.redis_outage_seconds
        sent: list[int] = []  # each record's partition
        while True:
            try:
                if self.producer is None:
                    await self.start()
                    if await self._committed(spans):
                        log.info("the failed transaction had committed: the batch is done")
                        break
                sent = await self._transaction(routed, spans)
                break
            except KafkaError as exc:
                if time.monotonic() + delay > give_up:
                    raise
                metrics.INGEST_RETRIES.inc()
                log.warning(
                    "ingest transaction failed (%s); retrying in %.1fs", described(exc), delay
                )
                await self.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if self.validated is not None and sent:
            for place, event in routed.valid:
                self.validated.keep(routed.records[place][2], event, sent[place])
        for kind, n in routed.events.items():
            metrics.EVENTS.labels(kind).inc(n)
        for reason, n in routed.dead.items():
            metrics.DEAD_LETTERS.labels(reason).inc(n)
        metrics.RECORDS.inc(len(routed.records))
        metrics.BATCH_SIZE.observe(len(routed.records))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.LAST_BATCH.set(time.time())

    async def paced(self) -> None:
        """Before each fetch: wait while the events kept for this worker's projection leave no
        room for another batch and it is taking them (``ValidatedEvents.room``)."""
        if self.validated is not None:
            await self.validated.room(self.settings.ingest_batch_size)

    async def _committed(self, spans: Spans) -> bool:
        """Whether the group's committed offsets already cover the batch."""
        assert self.consumer is not None
        for tp, span in spans.items():
            if (await self.consumer.committed(tp) or 0) < span.end:
                return False
        return True

    async def _transaction(self, routed: Routed, spans: Spans) -> list[int]:
        """Send the batch and its offsets in one transaction; each record's partition."""
        producer = self.producer
        assert producer is not None
        async with producer.transaction():
            sent = await send_records(producer, routed.records)
            offsets = {tp: span.end for tp, span in spans.items()}
            await producer.send_offsets_to_transaction(offsets, self.group)
        return sent
