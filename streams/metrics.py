"""The worker's own Prometheus metrics, served on SALESPULSE_WORKER_METRICS_PORT."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("salespulse_ingest_records_total", "Raw records read from the raw topic")
EVENTS = Counter(
    "salespulse_ingest_events_total", "Valid events forwarded to the events topic", ["type"]
)
DEAD_LETTERS = Counter(
    "salespulse_dlq_records_total", "Records sent to the dead-letter topic", ["reason"]
)
BATCH_SIZE = Histogram(
    "salespulse_ingest_batch_size",
    "Records per ingest batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
BATCH_SECONDS = Histogram(
    "salespulse_ingest_batch_duration_seconds",
    "Time to validate and forward one batch",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
INGEST_RETRIES = Counter(
    "salespulse_ingest_retries_total",
    "Ingest batches forwarded again because their Kafka transaction failed",
)
AGENT_STARTS = Counter(
    "salespulse_ingest_agent_starts_total",
    "Times the ingest agent started; more than 1 per process means it crashed and restarted",
)
LAST_BATCH = Gauge(
    "salespulse_ingest_last_batch_timestamp_seconds", "Wall time of the last ingest batch"
)

PROJECTED = Counter(
    "salespulse_projection_events_total", "Events applied to the projections", ["outcome"]
)
LEAD_FACTS = Counter(
    "salespulse_projection_lead_facts_total",
    "Lead facts (touches, opportunities) published and applied",
    ["outcome"],
)
PROJECTION_BATCH_SECONDS = Histogram(
    "salespulse_projection_batch_duration_seconds",
    "Time to load, plan and commit one projection batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LARGEST_BATCH = Gauge(
    "salespulse_projection_largest_batch_records",
    "Records in the largest projection batch since the worker started",
)
NEWEST_APPLIED = Gauge(
    "salespulse_projection_newest_event_timestamp_seconds",
    "occurred_at of the newest event applied so far",
)
LAST_PROJECTION = Gauge(
    "salespulse_projection_last_batch_timestamp_seconds", "Wall time of the last projection batch"
)
RECORDS_EXPIRED = Counter(
    "salespulse_projection_records_expired_total",
    "Entity records deleted because their latest event is beyond the lateness horizon "
    "(calls, emails, meetings, campaigns, closed deals; leads are compacted, not counted: "
    "docs/lateness.md)",
)
REWINDS = Counter(
    "salespulse_projection_rewinds_total",
    "Gaps between the projections in Redis and the records delivered, refilled from the log: "
    "projections_missing (Redis was emptied) or projections_behind (it lost its last writes)",
    ["reason"],
)
RETRIES = Counter(
    "salespulse_projection_retries_total",
    "Projection batches retried because Redis or Kafka did not answer",
    ["server"],
)
