"""The footprint benchmark's model of what a live run's Redis holds: what it has expired, and
the history it never writes."""

from __future__ import annotations

import orjson
import pytest

from benchmarks.footprint import bucket_start, expired, live_written, replay_only
from projections.windows import stored_ttl_seconds
from simulator.log import VALID, Record

pytestmark = pytest.mark.unit


def test_a_bucket_begins_when_its_period_does() -> None:
    assert bucket_start("m29400000") == 29_400_000 * 60_000
    assert bucket_start("h20000") == 20_000 * 3_600_000
    assert bucket_start("d20500") == 20_500 * 86_400_000
    assert bucket_start("D2026-11-23") == 1_795_392_000_000  # 2026-11-23T00:00Z
    assert bucket_start("W2026-W48") == 1_795_392_000_000  # the Monday it begins
    assert bucket_start("M2026-11") == 1_793_491_200_000
    assert bucket_start("Q2026-Q4") == 1_790_812_800_000


def test_buckets_kept_for_ever_never_expire() -> None:
    assert bucket_start("Y2026") is None
    assert bucket_start("A") is None
    assert bucket_start("G") is None


def _record(occurred_at: str, emit_ms: int) -> Record:
    return Record(emit_ms, orjson.dumps({"occurred_at": occurred_at}), VALID)


def test_a_live_run_writes_each_event_as_of_when_it_came() -> None:
    at = 1_795_392_000_000 + 3_600_000  # 2026-11-23T01:00Z
    on_time = _record("2026-11-23T01:00:00Z", at + 1_000)
    hours_late = _record("2026-11-23T01:00:00Z", at + 5 * 3_600_000)
    months_late = _record("2026-11-23T01:00:00Z", at + 60 * 86_400_000)  # (a backfill)
    minute, hour, day = f"m{at // 60_000}", f"h{at // 3_600_000}", "D2026-11-23"
    assert live_written([on_time], ["UTC"]) == {minute, day}
    assert live_written([hours_late], ["UTC"]) == {hour, day}
    assert "W2026-W48" in live_written([months_late], ["UTC"])
    # In each zone given: the same instant is the 22nd in Los Angeles.
    assert live_written([on_time], ["UTC", "America/Los_Angeles"]) == {minute, day, "D2026-11-22"}


def test_only_partitions_buckets_and_shares_no_live_event_names_are_the_replays() -> None:
    written = {"m29400000", "D2026-11-23"}
    for bucket in ("W2026-W48", "M2026-11", "Q2026-Q4", "Y2026", "A", "h490000", "d20500"):
        assert replay_only("a", bucket, written) and replay_only("s", bucket, written), bucket
        assert not replay_only("t", bucket, written), bucket  # the totals a live run has too
    for bucket in ("m29400000", "D2026-11-23", "G"):
        assert not replay_only("a", bucket, written) and not replay_only("s", bucket, written)


def test_a_key_expires_its_tiers_ttl_after_its_period_began() -> None:
    day = bucket_start("D2026-11-23")
    assert day is not None
    kept = stored_ttl_seconds("D2026-11-23", day) * 1000
    assert not expired("D2026-11-23", day + kept - 1)
    assert expired("D2026-11-23", day + kept)
    assert not expired("Y2026", 2**62)  # kept for ever
