"""The KPI change topic on the real stack: after a run whose late events arrive once their
windows have closed and been published, a consumer reading the compacted topic from the
beginning holds, for every key, what the API returns and the oracle computes; the late
changes are flagged as corrections."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from config.connections import redis_client
from config.settings import Settings
from examples.kpi_consumer import latest_values
from projections.catalogue import GAUGES
from projections.store import RedisStore, current_namespace
from projections.validation import parse_instant_ms
from simulator.log import VALID, SimConfig, simulate
from streams.producer import publish
from streams.worker_process import WorkerProcess
from tests.kafka_reader import read_topic
from tests.oracle import Oracle
from tests.support import (
    ROOT,
    directory_first,
    projections_settled,
    salespulse,
    wait_for,
    wait_for_exporter,
    write_valid_log,
)

pytestmark = pytest.mark.integration

# The API's window of each period unit of a KPI-topic key (docs/kpi-topic.md).
API_WINDOWS = {
    "day": "today",
    "week": "week",
    "month": "month",
    "quarter": "quarter",
    "year": "year",
}

SCHEMA = json.loads((ROOT / "schemas" / "kpi-change-v1.schema.json").read_text())
# Built once: jsonschema.validate checks the schema itself against its metaschema at every
# call, which took over 90 % of this test's time (thousands of records).
jsonschema.Draft202012Validator.check_schema(SCHEMA)
RECORD_SCHEMA = jsonschema.Draft202012Validator(SCHEMA)
LATE_MS = 12 * 3_600_000


def _occurred_ms(value: bytes) -> int:
    return parse_instant_ms(json.loads(value)["occurred_at"], "occurred_at")


async def _no_dirty_marks(settings: Settings) -> bool:
    client = redis_client(settings)
    try:
        store = RedisStore(client, await current_namespace(client, settings.topic_prefix))
        return not any(await store.dirty())
    finally:
        await client.aclose()


def _api(url: str, **params: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/api/v1/kpis?{urllib.parse.urlencode(params)}") as r:
        return json.load(r)["kpis"]  # type: ignore[no-any-return]


def _figure(result: dict[str, Any], label: str | None) -> dict[str, Any]:
    figure = result[label] if label is not None else result
    return {k: figure[k] for k in ("value", "numerator", "denominator")}


def test_the_topic_holds_what_the_api_and_the_oracle_say(
    any_stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **any_stack_env,
        "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "SALESPULSE_KPI_PUBLISH_INTERVAL_SECONDS": "0.5",
    }
    settings = Settings.from_env(env)
    now_ms = time.time_ns() // 1_000_000
    records, _ = simulate(
        SimConfig(
            seed=31,
            count=5_000,
            end_ms=now_ms,
            history_ms=4 * 86_400_000,
            late_share=0.08,
            duplicate_share=0.02,
        )
    )
    write_valid_log(records, tmp_path / "log.jsonl")
    oracle = Oracle(tmp_path / "log.jsonl")
    directory, rest = directory_first(records)
    late = {
        r.value for r in records if r.label == VALID and r.emit_ms - _occurred_ms(r.value) > LATE_MS
    }
    assert len(late) > 20, "the simulation should have events late by over 12 hours"
    on_time = [v for v in rest if v not in late]
    late_copies = [v for v in rest if v in late]  # with their duplicates

    worker = WorkerProcess(env, tmp_path / "worker.log")
    exporter_log = tmp_path / "exporter.log"
    with (
        salespulse(["publish-kpis"], env, tmp_path / "publisher.log") as publisher,
        salespulse(["exporter"], env, exporter_log) as exporter,
    ):
        try:
            worker.start()
            url = wait_for_exporter(exporter, settings.exporter_port, exporter_log)
            asyncio.run(publish(settings, settings.raw_topic, directory))
            wait_for(
                lambda: worker.metrics().projected["applied"] >= len(directory), 60, "directory"
            )

            def settled(expected: int) -> bool:
                return projections_settled(worker, expected) and asyncio.run(
                    _no_dirty_marks(settings)
                )

            # Phase 1: everything on time, published; phase 2: the late events, whose
            # windows closed (and were published) before they arrive.
            asyncio.run(publish(settings, settings.raw_topic, on_time))
            wait_for(lambda: settled(len(directory) + len(on_time)), 120, "phase 1 published")
            asyncio.run(publish(settings, settings.raw_topic, late_copies))
            wait_for(lambda: settled(len(directory) + len(rest)), 120, "phase 2 published")
            time.sleep(2 * settings.kpi_publish_interval_seconds)
            assert asyncio.run(_no_dirty_marks(settings))
            view = asyncio.run(latest_values(settings.bootstrap, settings.kpi_topic))
            every = asyncio.run(_every_record(settings))
            _check(url, oracle, now_ms, view, every)
        finally:
            worker.stop()
    assert publisher.returncode == 0, "the publisher stops cleanly on SIGTERM"


def _check(
    url: str,
    oracle: Oracle,
    now_ms: int,
    view: dict[str, dict[str, Any]],
    every: list[tuple[str, dict[str, Any] | None]],
) -> None:
    # Every record follows the published schema; revisions grow per key (compaction may have
    # dropped older ones).
    revisions: dict[str, list[int]] = defaultdict(list)
    for key, record in every:
        if record is None:
            continue  # a tombstone: the label is gone from that window
        RECORD_SCHEMA.validate(record)
        revisions[key].append(record["revision"])
    assert all(r == sorted(set(r)) for r in revisions.values())
    corrections = [record for _, record in every if record and record["correction"]]
    assert corrections, "late events changed closed windows: there must be corrections"
    assert all(c["revision"] > 1 and c["window_end"] <= c["as_of"] for c in corrections)

    groups: dict[tuple[str, str, str, str | None], list[tuple[str, dict[str, Any]]]] = defaultdict(
        list
    )
    for key, record in view.items():
        groups[(record["scope"], record["id"], record["window"], record["window_end"])].append(
            (key, record)
        )
    checked = 0
    for (scope, scope_id, unit, _), items in sorted(groups.items(), key=str):
        window = "all" if unit == "all" else API_WINDOWS[unit]  # the API's name for it
        # Read each window as of its last instant (now for current ones): a rep's calendar
        # follows the zone of the team the rep is in at that instant.
        end = items[0][1]["window_end"]
        as_of_ms = now_ms if end is None else min(now_ms, parse_instant_ms(end, "end") - 1)
        params = {"scope": scope, "window": window, "as_of": _iso(as_of_ms)}
        if scope_id:
            params["id"] = scope_id
        api = _api(url, **params)
        expected = oracle.kpis(scope, scope_id, window, as_of_ms)
        for key, record in items:
            kpi, label = record["kpi"], record["label"]
            assert window == "all" or kpi not in GAUGES, key
            got = {k: record[k] for k in ("value", "numerator", "denominator")}
            assert got == _figure(api[kpi], label), key
            assert got == _figure(expected[kpi], label), key
            checked += 1
    assert checked == len(view) > 1_000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


async def _every_record(settings: Settings) -> list[tuple[str, dict[str, Any] | None]]:
    found = await read_topic(settings, settings.kpi_topic, settings.partitions)
    found.sort(key=lambda r: (r.partition, r.offset))
    return [(r.key.decode(), json.loads(r.value) if r.value else None) for r in found if r.key]
