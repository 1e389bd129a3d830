"""Lead facts out: the producer that publishes a batch's lead facts, and the function the
projector calls with them (``PublishFacts``).

The live worker and a rebuild's replay publish the same way: every fact of a batch is
sent with ``send_records`` (one record batch per partition, keyed by lead id) and awaited
before the batch's commit, so a committed batch's facts are on the broker.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from config.connections import kafka_options
from config.settings import Settings
from projections.facts import LeadFact
from streams.batch_send import send_records
from streams.projector import PublishFacts


def facts_producer(settings: Settings) -> AIOKafkaProducer:
    """A producer for lead facts (acks=all, idempotent); the caller starts and stops it."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=512 * 1024,
        **kafka_options(settings),
    )


def facts_publisher(settings: Settings, producer: AIOKafkaProducer) -> PublishFacts:
    """Publish lead facts keyed by lead id and wait until the broker has them."""

    async def publish_facts(facts: Sequence[LeadFact]) -> None:
        topic = settings.facts_topic
        await send_records(producer, [(topic, f.lead_id.encode(), f.encode(), None) for f in facts])

    return publish_facts
