"""What the peers' smoke tests share: the log they run on, and the oracle check of their rows
(which must also be able to fail)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.peers.check import mismatches
from config.settings import Settings
from simulator.log import VALID, SimConfig, simulate
from streams.producer import publish
from streams.topics import ensure_topics

KPIS = {"activities", "calls_offered", "calls_answered", "calls_abandoned", "asa"}


def preload(settings: Settings, log: Path, count: int) -> int:
    """Simulate three days of valid events (a call's events in any order) onto the events
    topic and into ``log``; returns how many."""
    records, _ = simulate(
        SimConfig(
            seed=21,
            count=count,
            end_ms=time.time_ns() // 1_000_000,
            history_ms=3 * 86_400_000,
            call_disorder_share=0.3,
        )
    )
    values = [r.value for r in records if r.label == VALID]
    log.write_bytes(b"".join(v + b"\n" for v in values))
    asyncio.run(ensure_topics(settings))
    asyncio.run(publish(settings, settings.events_topic, values))
    return len(values)


def assert_rows_equal_the_oracle(log: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Every KPI present and equal to the oracle; and the check catches one count off, one
    row left out, and no rows at all."""
    assert {row["kpi"] for row in rows} == KPIS
    assert mismatches(log, rows) == []
    bumped = [dict(row) for row in rows]
    bumped[0]["value"] += 1
    assert mismatches(log, bumped)
    nonzero = next(i for i, row in enumerate(rows) if row["value"])
    assert any(
        "missing" in line for line in mismatches(log, [*rows[:nonzero], *rows[nonzero + 1 :]])
    )
    assert any("missing" in line for line in mismatches(log, []))
