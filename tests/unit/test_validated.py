"""The projection loop takes the event ingest made from the same bytes (streams/validated.py)
instead of parsing them again. That is right only if a later parse of bytes ingest accepted
gives the same event: checked here over hostile worlds and simulated events, at later
instants, beside the store's own behaviour."""

from __future__ import annotations

import random

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.validation import Limits, Rejection, parse_event
from simulator.log import VALID, SimConfig, simulate
from streams.forwarder import route_batch
from streams.validated import ValidatedEvents
from tests.hostile import hostile_world, numbered

pytestmark = pytest.mark.unit

NOW_MS = 1_795_420_800_000  # 2026-11-23
LIMITS = Limits(max_event_bytes=4_096, max_future_ms=3_600_000)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(hostile_world(NOW_MS + 3_000_000), min_size=1, max_size=3),
    st.integers(0, 10 * 86_400_000),
)
def test_bytes_accepted_once_parse_to_the_same_event_later(
    worlds: list[list[dict[str, object]]], later_ms: int
) -> None:
    """Events up to 50 minutes ahead of ingest's clock (under the 1-hour limit), and some
    records the contract refuses: whatever ingest accepted, a parse any time later gives."""
    for value in numbered(worlds):
        first = parse_event(value, now_ms=NOW_MS, limits=LIMITS)
        if isinstance(first, Rejection):
            continue
        assert parse_event(value, now_ms=NOW_MS + later_ms, limits=LIMITS) == first


def _simulated(count: int, seed: int) -> list[bytes]:
    records, _ = simulate(SimConfig(seed=seed, count=count, end_ms=NOW_MS))
    return [r.value for r in records if r.label == VALID]


def test_simulated_events_accepted_once_parse_to_the_same_event_later() -> None:
    values = _simulated(2_000, 11)
    assert len(values) == 2_000
    for value in values:
        first = parse_event(value, now_ms=NOW_MS, limits=LIMITS)
        assert not isinstance(first, Rejection), first
        assert parse_event(value, now_ms=NOW_MS + 1, limits=LIMITS) == first


def test_a_kept_event_is_taken_once() -> None:
    validated = ValidatedEvents(capacity=10)
    value = b'{"an": "event"}'
    event = object()
    validated.keep(value, event)  # type: ignore[arg-type]
    assert validated.take(value) is event
    assert validated.take(value) is None
    assert validated.take(b"never kept") is None


def test_the_newest_events_stay_within_the_capacity() -> None:
    validated = ValidatedEvents(capacity=100)
    for n in range(1_000):
        validated.keep(str(n).encode(), n)  # type: ignore[arg-type]
        assert len(validated) <= 100
    assert validated.take(b"999") == 999
    assert validated.take(b"949") == 949  # the newest half survives the last trim
    assert validated.take(b"0") is None
    with pytest.raises(ValueError, match="at least 1"):
        ValidatedEvents(capacity=0)


def test_ingest_keeps_only_what_it_forwards_to_the_events_topic() -> None:
    """route_batch lists each valid record's bytes with its event, and nothing it
    dead-letters."""
    good = _simulated(50, 3)
    bad = [b"{oops", b"", b'{"type": "lead.created"}']
    values = good + bad
    random.Random(5).shuffle(values)
    tp = TopicPartition("raw", 0)
    records = [
        ConsumerRecord("raw", 0, n, 0, 0, None, v, None, 0, len(v), [])
        for n, v in enumerate(values)
    ]
    routed = route_batch(
        {tp: records}, events_topic="ev", dlq_topic="dlq", limits=LIMITS, now_ms=NOW_MS
    )
    assert [v for v, _ in routed.valid] == [v for v in values if v in good]
    for value, event in routed.valid:
        assert parse_event(value, now_ms=NOW_MS, limits=LIMITS) == event
