"""The simulator: deterministic, exact in size, complete in coverage, honest in its tally."""

from __future__ import annotations

import calendar
import itertools
from collections import Counter

import orjson
import pytest

from projections.events import EVENT_TYPES
from projections.validation import Rejection, parse_event
from simulator.log import DUPLICATE, INVALID_CLASSES, VALID, SimConfig, simulate
from simulator.org import build_org

pytestmark = pytest.mark.unit

END_MS = calendar.timegm((2026, 11, 20, 18, 0, 0)) * 1000


def config(**changes: object) -> SimConfig:
    base = dict(
        seed=3,
        count=20_000,
        end_ms=END_MS,
        invalid_share=0.05,
        duplicate_share=0.03,
        late_share=0.05,
        call_disorder_share=0.3,
    )
    base.update(changes)
    return SimConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def log() -> tuple[list, object]:  # type: ignore[type-arg]
    return simulate(config())


def test_same_config_same_bytes() -> None:
    first, _ = simulate(config(count=3_000))
    second, _ = simulate(config(count=3_000))
    assert [r.value for r in first] == [r.value for r in second]
    other, _ = simulate(config(count=3_000, seed=4))
    assert [r.value for r in first] != [r.value for r in other]


def test_exact_count_and_shares(log) -> None:  # type: ignore[no-untyped-def]
    records, tally = log
    assert len(records) == tally.records == 20_000
    labels = Counter(r.label for r in records)
    assert labels[DUPLICATE] == sum(tally.duplicates.values()) == 600
    assert sum(labels[c] for c in INVALID_CLASSES) == sum(tally.invalid.values()) == 1_000
    assert labels[VALID] == sum(tally.valid.values()) == 18_400
    assert set(tally.invalid) == set(INVALID_CLASSES)
    assert tally.late > 0 and tally.reordered_calls > 0


def test_whole_contract_is_covered(log) -> None:  # type: ignore[no-untyped-def]
    _, tally = log
    assert set(tally.valid) == set(EVENT_TYPES)


def test_valid_records_are_valid_and_invalid_ones_fail_for_the_stated_reason(log) -> None:  # type: ignore[no-untyped-def]
    records, _ = log
    now = END_MS + 60_000
    for record in records:
        outcome = parse_event(record.value, now_ms=now)
        if record.label in (VALID, DUPLICATE):
            assert not isinstance(outcome, Rejection), (record, outcome)
        else:
            assert isinstance(outcome, Rejection), record
            assert outcome.reason.value == record.label, (record, outcome)


def test_event_ids_are_unique_except_duplicates(log) -> None:  # type: ignore[no-untyped-def]
    records, _ = log
    ids = Counter(orjson.loads(r.value)["event_id"] for r in records if r.label == VALID)
    assert max(ids.values()) == 1


def test_nothing_happens_after_the_end_and_log_is_in_send_order(log) -> None:  # type: ignore[no-untyped-def]
    records, _ = log
    emits = [r.emit_ms for r in records]
    assert emits == sorted(emits)
    for record in records:
        if record.label == VALID:
            occurred = parse_event(record.value, now_ms=END_MS)
            assert not isinstance(occurred, Rejection)
            assert occurred.occurred_at_ms <= END_MS


def test_late_and_disordered_events_are_sent_out_of_event_time_order(log) -> None:  # type: ignore[no-untyped-def]
    records, _ = log
    occurred = [parse_event(r.value, now_ms=END_MS) for r in records if r.label == VALID]
    times = [o.occurred_at_ms for o in occurred if not isinstance(o, Rejection)]
    inversions = sum(1 for a, b in itertools.pairwise(times) if b < a)
    assert inversions > 100


def test_no_record_contains_a_newline(log) -> None:  # type: ignore[no-untyped-def]
    records, _ = log
    assert all(b"\n" not in r.value for r in records)


def test_org_spans_several_time_zones() -> None:
    org = build_org(teams=4, reps_per_team=3, campaigns=2)
    assert len({t.timezone for t in org.teams}) == 4
    assert len(org.reps) == 12 and len({r.rep_id for r in org.reps}) == 12
