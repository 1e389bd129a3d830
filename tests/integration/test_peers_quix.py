"""The Quix Streams peer (benchmarks/peers/quix_peer.py) runs and equals the oracle.

A smoke run: a few thousand simulated events preloaded on a two-partition topic of the test
stack (each partition costs the peer about half a second per state store to open), the peer
run as a process of its own, its rows checked by benchmarks.peers.check. About 20 s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from benchmarks.ingest import delete_topics
from benchmarks.peers.check import mismatches
from config.settings import Settings
from simulator.log import VALID, SimConfig, simulate
from streams.producer import publish
from streams.topics import ensure_topics
from tests.support import ROOT

pytestmark = pytest.mark.integration

COUNT = 3_000
KPIS = {"activities", "calls_offered", "calls_answered", "calls_abandoned", "asa"}


def preload(settings: Settings, log: Path) -> int:
    """Simulate three days of valid events onto the events topic and into ``log``."""
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
    log.write_bytes(b"".join(v + b"\n" for v in values))
    asyncio.run(ensure_topics(settings))
    asyncio.run(publish(settings, settings.events_topic, values))
    return len(values)


def test_quix_peer_equals_the_oracle(stack_env: dict[str, str], tmp_path: Path) -> None:
    settings = dataclasses.replace(
        Settings.from_env(stack_env), topic_prefix=f"qx{uuid.uuid4().hex[:8]}", partitions=2
    )
    log, out = tmp_path / "events.jsonl", tmp_path / "rows.json"
    try:
        count = preload(settings, log)
        done = subprocess.run(
            [
                *(sys.executable, "-m", "benchmarks.peers.quix_peer"),
                *("--bootstrap", settings.bootstrap, "--topic", settings.events_topic),
                *("--expect", str(count), "--out", str(out), "--log", str(log)),
            ],
            env={**os.environ, **stack_env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        asyncio.run(delete_topics(settings))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"quix peer: {count} events" in done.stdout, done.stdout
    assert "0 window updates skipped as late" in done.stdout, done.stdout
    assert "oracle check: equal" in done.stdout, done.stdout

    rows = json.loads(out.read_text())
    assert {row["kpi"] for row in rows} == KPIS
    assert mismatches(log, rows) == []
    # The check can fail: one count off, and one row left out, are both caught.
    bumped = [dict(row) for row in rows]
    bumped[0]["value"] += 1
    assert mismatches(log, bumped)
    nonzero = next(i for i, row in enumerate(rows) if row["value"])
    assert any("missing" in line for line in mismatches(log, rows[:nonzero] + rows[nonzero + 1 :]))
    assert any("missing" in line for line in mismatches(log, []))
