"""Start the Faust worker: topics first, then the metrics endpoint, then the agents."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.errors import KafkaError
from prometheus_client import start_http_server

from stack.servers import StackError
from streams.preflight import KafkaUnreachable, quiet_kafka
from streams.settings import Settings
from streams.topics import ensure_topics

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> int:
    # Kafka must answer (a one-line error otherwise); Redis may be away: the projection loop
    # rides out a Redis outage (SALESPULSE_REDIS_OUTAGE_SECONDS).
    try:
        with quiet_kafka():
            asyncio.run(ensure_topics(settings))
    except (KafkaError, OSError):
        raise KafkaUnreachable(settings.bootstrap) from None
    try:
        start_http_server(settings.worker_metrics_port, addr=settings.metrics_host)
    except OSError as exc:
        raise StackError(
            f"cannot serve worker metrics on {settings.metrics_host}:"
            f"{settings.worker_metrics_port}: {exc.strerror} "
            "(set SALESPULSE_WORKER_METRICS_PORT)"
        ) from None
    # Imported late: the app reads its settings from the environment at import time.
    from faust import Worker

    from streams.app import app

    worker = Worker(app, loglevel=settings.log_level)
    worker.execute_from_commandline()
    return 0
