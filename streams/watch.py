"""``salespulse watch``: the worker's counters as a live table in the terminal."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from config.reader_access import reader_headers
from config.settings import Settings
from streams.preflight import PreflightError


@dataclass
class Snapshot:
    records: float = 0.0
    events: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    agent_starts: float = 0.0
    last_batch: float = 0.0
    batches: float = 0.0
    batched_records: float = 0.0
    batch_seconds: float = 0.0
    projected: Counter[str] = field(default_factory=Counter)  # by outcome
    lead_facts: Counter[str] = field(default_factory=Counter)  # by outcome
    rewinds: Counter[str] = field(default_factory=Counter)  # by reason
    largest_batch: float = 0.0  # records in the largest projection batch


def scrape(url: str | urllib.request.Request, timeout: float = 2.0) -> Snapshot:
    """The worker's counters from its /metrics (a Request to send headers with it)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    snap = Snapshot()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "salespulse_ingest_records_total":
                snap.records = sample.value
            elif sample.name == "salespulse_ingest_events_total":
                snap.events[sample.labels["type"]] = int(sample.value)
            elif sample.name == "salespulse_dlq_records_total":
                snap.dead_letters[sample.labels["reason"]] = int(sample.value)
            elif sample.name == "salespulse_ingest_agent_starts_total":
                snap.agent_starts = sample.value
            elif sample.name == "salespulse_ingest_last_batch_timestamp_seconds":
                snap.last_batch = sample.value
            elif sample.name == "salespulse_ingest_batch_size_count":
                snap.batches = sample.value
            elif sample.name == "salespulse_ingest_batch_size_sum":
                snap.batched_records = sample.value
            elif sample.name == "salespulse_ingest_batch_duration_seconds_sum":
                snap.batch_seconds = sample.value
            elif sample.name == "salespulse_projection_events_total":
                snap.projected[sample.labels["outcome"]] = int(sample.value)
            elif sample.name == "salespulse_projection_lead_facts_total":
                snap.lead_facts[sample.labels["outcome"]] = int(sample.value)
            elif sample.name == "salespulse_projection_rewinds_total":
                snap.rewinds[sample.labels["reason"]] = int(sample.value)
            elif sample.name == "salespulse_projection_largest_batch_records":
                snap.largest_batch = sample.value
    return snap


def render(snap: Snapshot, rate: float | None) -> str:
    lines = [
        f"records read {int(snap.records):>10,}"
        + (f"   {rate:>9,.0f} records/s" if rate is not None else ""),
        f"valid events {sum(snap.events.values()):>10,}   "
        f"dead letters {sum(snap.dead_letters.values()):,}",
        "",
        f"{'event type':<28}{'count':>10}    {'DLQ reason':<26}{'count':>8}",
    ]
    types = sorted(snap.events.items())
    reasons = sorted(snap.dead_letters.items())
    for i in range(max(len(types), len(reasons))):
        left = f"{types[i][0]:<28}{types[i][1]:>10,}" if i < len(types) else " " * 38
        right = f"    {reasons[i][0]:<26}{reasons[i][1]:>8,}" if i < len(reasons) else ""
        lines.append(left + right)
    return "\n".join(lines)


def watch(settings: Settings, *, interval: float, once: bool) -> int:
    url = f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
    headers = reader_headers(settings)
    request = urllib.request.Request(url, headers=headers)
    previous: tuple[float, float] | None = None
    while True:
        try:
            snap = scrape(request)
        except OSError as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code == 401:
                # The worker requires the reader token: waiting would not change its answer.
                raise PreflightError(
                    f"the worker metrics at {url} refused the reader token: check "
                    "SALESPULSE_READER_TOKEN_FILE" + ("" if headers else " (it is not set)")
                ) from None
            if once:
                raise PreflightError(
                    f"no worker metrics at {url}: is a worker running (`salespulse worker`)? "
                    "check SALESPULSE_WORKER_METRICS_PORT"
                ) from None
            print(f"worker metrics at {url} not reachable: {exc}", flush=True)
            time.sleep(interval)
            continue
        now = time.monotonic()
        rate = None
        if previous is not None and now > previous[0]:
            rate = (snap.records - previous[1]) / (now - previous[0])
        previous = (now, snap.records)
        print(("" if once else "\x1b[2J\x1b[H") + render(snap, rate), flush=True)
        if once:
            return 0
        time.sleep(interval)
