"""Create the engine's topics with the partitioning and retention the design needs."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import NoError, TopicAlreadyExistsError, for_code

from config.connections import kafka_options
from config.settings import Settings
from projections.errors import UsageError

log = logging.getLogger(__name__)

THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000


class TopicsError(UsageError):
    """Kafka refused to create a topic: the message says why and what to check."""

    def __init__(self, settings: Settings, topic: str, error: str, detail: str) -> None:
        super().__init__(
            f"Kafka refused to create topic {topic}: {error}"
            + (f" ({detail})" if detail else "")
            + f"; check SALESPULSE_TOPIC_REPLICATION_FACTOR={settings.replication_factor} "
            f"and SALESPULSE_TOPIC_MIN_INSYNC_REPLICAS={settings.min_insync_replicas} "
            "against the brokers, and that the user may create topics"
        )


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Name -> config. The canonical log is kept forever: every projection is rebuilt from it."""
    return {
        settings.raw_topic: {"retention.ms": str(7 * 24 * 3600 * 1000)},
        settings.events_topic: {"retention.ms": "-1", "retention.bytes": "-1"},
        settings.dlq_topic: {"retention.ms": str(THIRTY_DAYS_MS)},
        # Derived from the events (rebuilt with them), but a lagging worker still needs them.
        settings.facts_topic: {"retention.ms": "-1"},
        # KPI changes: the latest record per key is what a consumer needs (docs/kpi-topic.md).
        settings.kpi_topic: {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
    }


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; returns the names created. Existing topics are left alone."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap, request_timeout_ms=15_000, **kafka_options(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name,
                settings.partitions,
                settings.replication_factor,
                topic_configs={
                    **config,
                    "min.insync.replicas": str(settings.min_insync_replicas),
                },
            )
            for name, config in topic_configs(settings).items()
            if name not in existing
        ]
        if wanted:
            response = await admin.create_topics(wanted, timeout_ms=15_000)
            for topic, code, *message in response.topic_errors:
                error = for_code(code)
                # Already there: another process won the race, which is as good.
                if error not in (NoError, TopicAlreadyExistsError):
                    raise TopicsError(settings, topic, error.__name__, "".join(map(str, message)))
            log.info("created topics %s", [t.name for t in wanted])
        return [t.name for t in wanted]
    finally:
        await admin.close()
