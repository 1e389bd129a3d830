from __future__ import annotations

from dataclasses import replace

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
    assert names == {
        "salespulse_projection_checkpoint_offset",
        "salespulse_projections_status",
        "salespulse_projections_live",
        "salespulse_events_too_late",
    }


def test_status_is_stale_only_when_records_wait_and_nothing_was_committed_lately() -> None:
    progress = [{"ev": "9", "!committed_ms": "1000"}]
    late = 1000 + (STALE_AFTER_SECONDS + 1) * 1000
    assert summarise(progress, {("ev", 0): 10}, now_ms=late).status == "ok"  # caught up
    assert summarise(progress, {("ev", 0): 15}, now_ms=late).status == "stale"
    assert summarise(progress, {("ev", 0): 15}, now_ms=2000).status == "ok"  # busy, committing
    assert summarise(progress, None, now_ms=late).status == "unknown"


def test_records_that_redis_holds_nothing_of_are_refilling() -> None:
    """A partition with records and no checkpoint (Redis was emptied, or the engine is on
    its first records): the numbers are partial, not live."""
    health = summarise([{}], {("ev", 0): 3}, now_ms=5_000)
    assert (health.status, health.live, health.refilling) == ("refilling", False, [("ev", 0)])
    assert summarise([{}], {("ev", 0): 0}, now_ms=5_000).status == "ok"  # nothing to hold


def test_a_partition_refilling_a_gap_says_so_even_without_kafka() -> None:
    progress = [{"ev": "9", "!refill:ev": "40", "!committed_ms": "1000"}, {"ev": "3"}]
    health = summarise(progress, None, now_ms=2_000)
    assert (health.status, health.refilling) == ("refilling", [("ev", 0)])
    got = samples(health_families(health))
    assert got[("salespulse_projections_status", ("refilling",))] == 1
    assert got[("salespulse_projections_status", ("ok",))] == 0
    assert got[("salespulse_projections_live", ())] == 0
    assert health.offsets == {("ev", 0): 9, ("ev", 1): 3}  # the flag is not an offset


def test_commits_missing_from_the_rollups_are_folding_and_not_live() -> None:
    health = replace(summarise([{"ev": "9"}], {("ev", 0): 10}, now_ms=2_000), unfolded=2)
    assert (health.status, health.live) == ("folding", False)
    got = samples(health_families(health))
    assert got[("salespulse_projections_status", ("folding",))] == 1
    assert got[("salespulse_projections_live", ())] == 0
    assert replace(health, unfolded=0).status == "ok"


def test_a_running_rebuild_is_reported_and_the_numbers_stay_live() -> None:
    rebuild = {"from": "p:g1", "to": "p:g2", "started_ms": 1}
    health = summarise([{"ev": "9"}], {("ev", 0): 10}, now_ms=2_000, rebuild=rebuild)
    assert (health.status, health.live) == ("rebuilding", True)


def test_events_too_late_are_summed_over_partitions_and_exported_as_a_counter() -> None:
    progress = [{"events": "9", "!too_late": "2"}, {"events": "4"}, {"!too_late": "5"}]
    health = summarise(progress, None, 0)
    assert health.too_late == 7
    (late,) = [f for f in health_families(health) if f.name == "salespulse_events_too_late"]
    assert late.type == "counter"
    assert [(s.name, s.value) for s in late.samples] == [("salespulse_events_too_late_total", 7)]


def test_redis_memory_is_reported_per_lead_and_per_event_when_redis_says_it() -> None:
    progress = [{"!applied": "300"}, {"!applied": "100"}]
    health = replace(summarise(progress, None, 0), leads=50, redis_used_bytes=80_000)
    values = {f.name: f.samples[0].value for f in health_families(health) if f.samples}
    assert values["salespulse_redis_used_memory_bytes"] == 80_000
    assert values["salespulse_redis_bytes_per_lead"] == 1_600
    assert values["salespulse_redis_bytes_per_event"] == 200
    unknown = {f.name for f in health_families(replace(health, redis_used_bytes=None))}
    assert not {n for n in unknown if n.startswith("salespulse_redis_")}
    no_leads = {f.name for f in health_families(replace(health, leads=0))}
    assert "salespulse_redis_bytes_per_lead" not in no_leads
