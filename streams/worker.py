"""Start the Faust worker: topics first, then the metrics endpoint, then the agents."""

from __future__ import annotations

import asyncio
import gc
import logging

from aiokafka.errors import KafkaError

from config.reader_access import reader_token
from config.settings import Settings
from projections.errors import SalespulseError
from streams.metrics_server import serve_metrics
from streams.preflight import kafka_failure, quiet_kafka
from streams.topics import ensure_topics

log = logging.getLogger(__name__)

# Allocations between two collections of the youngest generation (CPython's default: 700).
# A batch allocates events, records and deltas by the hundred thousand, nearly all freed by
# their reference counts, so the default collects many times a batch for little: with this,
# benchmarks.stages spent about 10 % less CPU decoding and planning.
GC_THRESHOLD = 50_000


def tune_gc() -> None:
    """Collect garbage less often, and never look again at what exists now (modules, the
    app: start-up's objects are never garbage)."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


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
