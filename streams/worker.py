"""Start the Faust worker: topics first, then the metrics endpoint, then the agents."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.errors import KafkaError

from config.reader_access import reader_token
from config.settings import Settings
from projections.errors import SalespulseError
from streams.garbage import tune_gc
from streams.metrics_server import serve_metrics
from streams.preflight import kafka_failure, quiet_kafka
from streams.topics import ensure_topics

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> int:
    # Kafka must answer (a one-line error otherwise); Redis may be away: the projection loop
    # rides out a Redis outage (SALESPULSE_REDIS_OUTAGE_SECONDS).
    try:
        with quiet_kafka():
            asyncio.run(ensure_topics(settings))
    except (KafkaError, OSError, ValueError):  # ssl.SSLError is both OSError and ValueError
        raise asyncio.run(kafka_failure(settings)) from None
    try:
        serve_metrics(settings.metrics_host, settings.worker_metrics_port, reader_token(settings))
    except OSError as exc:
        raise SalespulseError(
            f"cannot serve worker metrics on {settings.metrics_host}:"
            f"{settings.worker_metrics_port}: {exc.strerror} "
            "(set SALESPULSE_WORKER_METRICS_PORT)"
        ) from None
    # Imported late: the app reads its settings from the environment at import time.
    from faust import Worker

    from streams.app import app

    tune_gc()

    # Faust sets up its own (text) logging unless told not to; JSON logs keep the root's.
    worker = Worker(
        app, loglevel=settings.log_level, override_logging=settings.log_format != "json"
    )
    worker.execute_from_commandline()
    return 0
