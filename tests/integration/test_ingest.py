"""Ingest on the real broker: each valid copy forwarded once, each invalid record dead-lettered."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest

from config.settings import Settings
from simulator.log import DUPLICATE, VALID, SimConfig, simulate
from streams.ingest import HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON, HEADER_TOPIC
from streams.producer import publish
from streams.worker_process import WorkerProcess
from tests.kafka_reader import read_topic
from tests.oracle import SUBJECT_OF
from tests.support import wait_for

pytestmark = pytest.mark.integration


def _prometheus_value(settings: Settings, query: str) -> float | None:
    url = f"http://127.0.0.1:{settings.prometheus_port}/api/v1/query?" + urllib.parse.urlencode(
        {"query": query}
    )
    with urllib.request.urlopen(url, timeout=5) as response:
        result = json.load(response)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def test_20k_records_with_every_bad_input_class(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**stack_env, "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}"}
    settings = Settings.from_env(env)
    records, tally = simulate(
        SimConfig(
            seed=2026,
            count=20_000,
            end_ms=time.time_ns() // 1_000_000,
            invalid_share=0.05,
            duplicate_share=0.03,
            late_share=0.02,
            call_disorder_share=0.2,
            max_event_bytes=settings.max_event_bytes,
        )
    )
    assert set(tally.invalid) >= {
        "too_large",
        "invalid_json",
        "not_an_object",
        "unknown_schema_version",
        "unknown_type",
        "missing_field",
        "wrong_type",
        "invalid_value",
        "negative_value",
        "timestamp_without_offset",
        "invalid_timestamp",
        "timestamp_out_of_range",
    }
    valid_copies = [r.value for r in records if r.label in (VALID, DUPLICATE)]
    invalid = [(r.value, r.label) for r in records if r.label not in (VALID, DUPLICATE)]
    assert len(invalid) == 1_000 and sum(tally.duplicates.values()) == 600

    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.start()
        pid = worker.pid
        started = time.monotonic()
        sent = await publish(settings, settings.raw_topic, [r.value for r in records])
        assert sent == 20_000
        wait_for(lambda: worker.metrics().records >= 20_000, 120, "the worker to read 20,000")
        elapsed = time.monotonic() - started
        print(
            f"\ningest: 20,000 records produced and routed in {elapsed:.1f}s "
            f"({20_000 / elapsed:,.0f} records/s)"
        )

        forwarded = await read_topic(
            settings, settings.events_topic, settings.partitions, expect=len(valid_copies)
        )
        dead = await read_topic(
            settings, settings.dlq_topic, settings.partitions, expect=len(invalid)
        )
        raw = await read_topic(settings, settings.raw_topic, settings.partitions, expect=20_000)
        time.sleep(2)  # anything extra would have arrived by now
        assert len(await read_topic(settings, settings.events_topic, settings.partitions)) == len(
            forwarded
        )

        # Every valid copy exactly once per copy produced, byte for byte.
        assert Counter(r.value for r in forwarded) == Counter(valid_copies)
        by_type = Counter(orjson.loads(r.value)["type"] for r in forwarded)  # type: ignore[arg-type]
        assert by_type == tally.valid + tally.duplicates

        # Keyed by the subject id, so one entity's events share a partition.
        partition_of: dict[bytes, int] = {}
        for record in forwarded:
            event = orjson.loads(record.value)  # type: ignore[arg-type]
            subject = event[SUBJECT_OF[event["type"].split(".")[0]]]
            assert record.key == subject.encode()
            assert partition_of.setdefault(record.key, record.partition) == record.partition

        # Every invalid record on the DLQ, original bytes, the generator's reason.
        assert Counter((r.value, r.headers[HEADER_REASON].decode()) for r in dead) == Counter(
            invalid
        )
        raw_at = {(r.partition, r.offset): r.value for r in raw}
        for record in dead:
            assert record.headers[HEADER_TOPIC].decode() == settings.raw_topic
            where = (int(record.headers[HEADER_PARTITION]), int(record.headers[HEADER_OFFSET]))
            assert raw_at[where] == record.value

        # The worker's own counters agree with the generator's tally, and it never restarted.
        snap = worker.metrics()
        assert snap.records == 20_000
        assert snap.events == tally.valid + tally.duplicates
        assert snap.dead_letters == tally.invalid
        assert snap.agent_starts == 1
        assert worker.alive() and worker.pid == pid
        log = worker.log()
        assert b"Traceback" not in log and b"crashed" not in log.lower()

        # The real Prometheus scrapes the worker and sees the same totals.
        wait_for(
            lambda: _prometheus_value(settings, "sum(salespulse_ingest_records_total)") == 20_000,
            30,
            "Prometheus to scrape 20,000 records",
        )
        assert _prometheus_value(settings, "sum(salespulse_dlq_records_total)") == 1_000
    finally:
        assert worker.stop() == 0
