"""The projection loop takes the event ingest made from the same bytes (streams/validated.py)
instead of parsing them again. That is right only if a later parse of bytes ingest accepted
gives the same event: checked here over hostile worlds and simulated events, at later
instants, beside the store's own behaviour."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.validation import Limits, Rejection, parse_event
from simulator.log import VALID, SimConfig, simulate
from streams import validated as validated_module
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
    validated.own([3])
    value = b'{"an": "event"}'
    event = object()
    validated.keep(value, event, 3)  # type: ignore[arg-type]
    assert validated.take(value) is event
    assert validated.take(value) is None
    assert validated.take(b"never kept") is None


def test_only_events_of_the_partitions_projected_here_are_kept() -> None:
    validated = ValidatedEvents(capacity=10)
    validated.keep(b"before any assignment", object(), 0)  # type: ignore[arg-type]
    validated.own([0, 2])
    validated.keep(b"another worker's", object(), 1)  # type: ignore[arg-type]
    validated.keep(b"ours", object(), 2)  # type: ignore[arg-type]
    assert len(validated) == 1
    assert validated.take(b"ours") is not None
    assert validated.take(b"another worker's") is None


def test_the_newest_events_stay_within_the_capacity() -> None:
    validated = ValidatedEvents(capacity=100)
    validated.own([0])
    for n in range(1_000):
        validated.keep(str(n).encode(), n, 0)  # type: ignore[arg-type]
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
    forwarded = [routed.records[place] for place, _ in routed.valid]
    assert [value for _, _, value, _ in forwarded] == [v for v in values if v in good]
    assert {topic for topic, _, _, _ in forwarded} == {"ev"}
    for (_, _, value, _), (_, event) in zip(forwarded, routed.valid, strict=True):
        assert parse_event(value, now_ms=NOW_MS, limits=LIMITS) == event


async def test_ingest_waits_for_room_while_the_projection_takes() -> None:
    """Ingest goes on once its next batch fits: the projection's takes wake it."""
    validated = ValidatedEvents(capacity=100)
    validated.own([0])
    for n in range(90):
        validated.keep(b"%d" % n, n, 0)  # type: ignore[arg-type]
    waiting = asyncio.ensure_future(validated.room(batch=20))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # 90 kept: 20 more would drop some
    for n in range(9):
        validated.take(b"%d" % n)
    await asyncio.sleep(0.05)
    assert not waiting.done()  # 81
    validated.take(b"9")
    await asyncio.wait_for(waiting, 1)  # 80: the batch fits
    await asyncio.wait_for(validated.room(batch=20), 0.01)  # and at once while it does


async def test_ingest_stops_waiting_for_a_projection_that_takes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A projection that takes nothing (Redis away) holds ingest back once, for
    STALL_SECONDS, and not again until it takes an event."""
    monkeypatch.setattr(validated_module, "STALL_SECONDS", 0.1)
    validated = ValidatedEvents(capacity=100)
    validated.own([0])
    for n in range(100):
        validated.keep(b"%d" % n, n, 0)  # type: ignore[arg-type]
    started = time.monotonic()
    await validated.room(batch=10)
    assert time.monotonic() - started >= 0.1
    await asyncio.wait_for(validated.room(batch=10), 0.01)  # stalled: at once
    validated.take(b"0")  # it takes again: ingest waits for it again
    waiting = asyncio.ensure_future(validated.room(batch=10))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    for n in range(1, 10):
        validated.take(b"%d" % n)
    await asyncio.wait_for(waiting, 1)
