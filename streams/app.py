"""The Faust app, its topics and the ingest agent.

``faust -A streams.app worker`` works, and so does ``salespulse worker``.
Settings are read once from the environment when this module is imported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import faust
from faust.types import EventT

from projections.validation import Limits
from streams import metrics
from streams.ingest import Accepted, route
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
    producer_acks=-1,
    producer_max_request_size=2 * settings.max_event_bytes + 65_536,
)

raw_topic = app.topic(settings.raw_topic, key_serializer="raw", value_serializer="raw")
events_topic = app.topic(settings.events_topic, key_serializer="raw", value_serializer="raw")
dlq_topic = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw")


@app.agent(raw_topic, concurrency=1)
async def ingest(stream: faust.StreamT[bytes]) -> None:
    """Validate raw records in batches; forward valid ones, dead-letter the rest."""
    metrics.AGENT_STARTS.inc()
    limits = settings.limits
    async for batch in stream.take_events(
        settings.ingest_batch_size, within=settings.ingest_batch_seconds
    ):
        await forward_batch(batch, limits)


async def forward_batch(batch: Sequence[EventT], limits: Limits) -> None:
    started = time.perf_counter()
    now_ms = time.time_ns() // 1_000_000
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
        # force=True publishes now instead of attaching to the source event: commits of
        # the raw topic wait for the producer to flush, so nothing is acknowledged early.
        if isinstance(outcome, Accepted):
            await events_topic.send(key=outcome.key, value=message.value, force=True)
            metrics.EVENTS.labels(outcome.event.type).inc()
        else:
            await dlq_topic.send(
                key=message.key, value=message.value, headers=outcome.headers, force=True
            )
            metrics.DEAD_LETTERS.labels(outcome.rejection.reason.value).inc()
            log.warning(
                "dead-lettered %s[%d]@%d: %s: %s",
                message.topic,
                message.partition,
                message.offset,
                outcome.rejection.reason.value,
                outcome.rejection.detail,
            )
    metrics.RECORDS.inc(len(batch))
    metrics.BATCH_SIZE.observe(len(batch))
    metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
    metrics.LAST_BATCH.set(time.time())
