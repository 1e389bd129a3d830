"""The Kafka Streams peer (benchmarks/peers/kafka_streams) builds, runs, and equals the oracle.

A smoke run: a few thousand simulated events preloaded on a topic of the test stack, the jar
built with Maven if it is missing or stale, its rows checked by benchmarks.peers.check. Needs
``mvn`` and a JDK 17+ on PATH, as the local stack does (stack/install.py). It took about 7 s
with the jar already built, about 30 s when Maven rebuilt it from a warm local repository; a
build from an empty one (downloading Kafka Streams and the plugins) took 20-30 s on its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from pathlib import Path

import pytest

from benchmarks.ingest import delete_topics
from benchmarks.peers import kafka_streams_peer as peer
from benchmarks.peers.check import mismatches
from config.settings import Settings
from simulator.log import VALID, SimConfig, simulate
from streams.producer import publish
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

COUNT = 3_000


def test_kafka_streams_peer_equals_the_oracle(stack_env: dict[str, str], tmp_path: Path) -> None:
    settings = dataclasses.replace(
        Settings.from_env(stack_env), topic_prefix=f"ks{uuid.uuid4().hex[:8]}"
    )
    records, _ = simulate(
        SimConfig(
            seed=21,
            count=COUNT,
            end_ms=time.time_ns() // 1_000_000,
            history_ms=3 * 86_400_000,
            call_disorder_share=0.3,  # a call's events in any order
        )
    )
    values = [r.value for r in records if r.label == VALID]
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"".join(v + b"\n" for v in values))
    asyncio.run(ensure_topics(settings))
    try:
        asyncio.run(publish(settings, settings.events_topic, values))
        peer.build()
        out = tmp_path / "rows.json"
        result = peer.run(settings.bootstrap, settings.events_topic, len(values), out, timeout=120)
    finally:
        asyncio.run(delete_topics(settings))
    assert result.events == len(values)
    rows = json.loads(out.read_text())
    assert {row["kpi"] for row in rows} == {
        "activities",
        "calls_offered",
        "calls_answered",
        "calls_abandoned",
        "asa",
    }
    assert mismatches(log, rows) == []
    # The check can fail: one count off, and one row left out, are both caught.
    bumped = [dict(row) for row in rows]
    bumped[0]["value"] += 1
    assert mismatches(log, bumped)
    nonzero = next(i for i, row in enumerate(rows) if row["value"])
    assert any("missing" in line for line in mismatches(log, rows[:nonzero] + rows[nonzero + 1 :]))
