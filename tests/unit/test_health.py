from __future__ import annotations

import pytest

from exporters.health import STALE_AFTER_SECONDS, health_families, summarise

pytestmark = pytest.mark.unit


def samples(families: list) -> dict[tuple[str, tuple[str, ...]], float]:  # type: ignore[type-arg]
    return {(s.name, tuple(s.labels.values())): s.value for f in families for s in f.samples}


def test_lag_offsets_and_freshness_from_checkpoints() -> None:
    progress = [
        {"ev": "9", "facts": "4", "!newest_ms": "1000", "!committed_ms": "5000"},
        {"ev": "2", "!newest_ms": "3000", "!committed_ms": "4000"},
    ]
    ends = {("ev", 0): 10, ("ev", 1): 7, ("facts", 0): 5, ("facts", 1): 2}
    got = samples(health_families(summarise(progress, ends, now_ms=13_000)))
    assert got[("salespulse_consumer_lag", ("ev", "0"))] == 0
    assert got[("salespulse_consumer_lag", ("ev", "1"))] == 4
    assert got[("salespulse_consumer_lag", ("facts", "1"))] == 2  # nothing applied yet
    assert got[("salespulse_projection_checkpoint_offset", ("ev", "1"))] == 2
    assert got[("salespulse_projection_newest_event_age_seconds", ())] == 10.0
    assert got[("salespulse_projection_last_commit_age_seconds", ())] == 8.0


def test_without_kafka_there_is_no_lag_series() -> None:
    names = {f.name for f in health_families(summarise([{}], None, now_ms=0))}
    assert names == {"salespulse_projection_checkpoint_offset"}


def test_status_is_stale_only_when_records_wait_and_nothing_was_committed_lately() -> None:
    progress = [{"ev": "9", "!committed_ms": "1000"}]
    late = 1000 + (STALE_AFTER_SECONDS + 1) * 1000
    assert summarise(progress, {("ev", 0): 10}, now_ms=late).status == "ok"  # caught up
    assert summarise(progress, {("ev", 0): 15}, now_ms=late).status == "stale"
    assert summarise(progress, {("ev", 0): 15}, now_ms=2000).status == "ok"  # busy, committing
    assert summarise(progress, None, now_ms=late).status == "unknown"
    assert summarise([{}], {("ev", 0): 3}, now_ms=late).status == "stale"  # never committed
