"""The projection loop takes the event ingest made from the same bytes (streams/validated.py)
instead of parsing them again. That is right only if a later parse of bytes ingest accepted
gives the same event: checked here over hostile worlds and simulated events, at later
instants, beside the store's own behaviour."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import Settings
from projections.validation import Limits, Rejection, parse_event
from simulator.log import VALID, SimConfig, simulate
from streams import validated as validated_module
from streams.forwarder import Forwarder, route_batch
from streams.projector import Span
from streams.validated import ValidatedEvents
from tests.hostile import hostile_world, numbered
from tests.unit.test_batch_send import Producer

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
    STALL_SECONDS: then the oldest events go to make room, and ingest does not wait again
    until the projection takes an event."""
    monkeypatch.setattr(validated_module, "STALL_SECONDS", 0.1)
    validated = ValidatedEvents(capacity=100)
    validated.own([0])
    for n in range(100):
        validated.keep(b"%d" % n, n, 0)  # type: ignore[arg-type]
    started = time.monotonic()
    await validated.room(batch=10)
    assert time.monotonic() - started >= 0.1
    assert len(validated) == 90 and validated.take(b"9") is None  # the oldest ten went
    for n in range(100, 110):
        validated.keep(b"%d" % n, n, 0)  # type: ignore[arg-type]
    await asyncio.wait_for(validated.room(batch=10), 0.01)  # stalled: at once
    assert validated.take(b"10") == 10  # it takes again: ingest waits for it again
    waiting = asyncio.ensure_future(validated.room(batch=10))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    for n in range(11, 20):
        assert validated.take(b"%d" % n) == n
    await asyncio.wait_for(waiting, 1)  # 90: the next batch fits


async def test_events_never_taken_do_not_hold_ingest_back_for_good(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Events of a partition the projection gave up go with the revocation (or with the
    next assignment); events it never reads leave room after one stall, oldest first: ingest
    then waits only while the projection takes."""
    monkeypatch.setattr(validated_module, "STALL_SECONDS", 0.1)
    validated = ValidatedEvents(capacity=100)
    validated.own([0, 1, 2])
    for n in range(40):
        validated.keep(b"a%d" % n, n, 1)  # type: ignore[arg-type]
        validated.keep(b"b%d" % n, n, 2)  # type: ignore[arg-type]
    validated.disown([1])  # a rebalance: partition 1 is projected elsewhere now
    assert len(validated) == 40 and validated.take(b"a39") is None
    validated.own([0, 3])  # the next assignment, without partition 2
    assert len(validated) == 0
    for n in range(85):
        validated.keep(b"c%d" % n, n, 0)  # type: ignore[arg-type]  # never read here
    for batch in range(3):  # the projection takes each batch; the 85 stay unread
        for n in range(15):
            validated.keep(b"d%d-%d" % (batch, n), n, 3)  # type: ignore[arg-type]
        for n in range(15):
            assert validated.take(b"d%d-%d" % (batch, n)) == n
        started = time.monotonic()
        await validated.room(batch=20)
        waited = time.monotonic() - started
        # The first waits out one stall, which drops the oldest 5; none waits after it.
        assert (waited >= 0.1) == (batch == 0), (batch, waited)
        assert len(validated) == 80
    assert validated.take(b"c4") is None and validated.take(b"c5") == 5


class TransactionalProducer(Producer):
    """The fake producer of test_batch_send, with the transaction calls ingest makes."""

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    async def send_offsets_to_transaction(self, offsets: object, group: str) -> None:
        pass


async def test_ingest_keeps_each_forwarded_event_under_its_partition() -> None:
    """Forwarder.forward keeps a valid record's event under the partition the send put it
    in (dead letters among them shift no place), for the partitions projected here only."""
    good = _simulated(40, 7)
    values = [b"{oops", *good[:20], b"", *good[20:]]
    tp = TopicPartition("raw", 0)
    records = [
        ConsumerRecord("raw", 0, n, 0, 0, None, v, None, 0, len(v), [])
        for n, v in enumerate(values)
    ]
    validated = ValidatedEvents(capacity=1_000)
    validated.own([1])
    forwarder = Forwarder(Settings.from_env({}), validated)
    producer = TransactionalProducer(refused=set())
    forwarder.producer = producer  # type: ignore[assignment]
    await forwarder.forward({tp: records}, {tp: Span(0, len(values))})
    partition_of = {
        r["value"]: partition for _, partition, batch in producer.sent for r in batch.records
    }
    mine = [v for v in good if partition_of[v] == 1]
    assert 0 < len(mine) < len(good) and len(validated) == len(mine)
    for value in good:
        event = validated.take(value)
        if value in mine:
            assert event == parse_event(value, now_ms=time.time_ns() // 1_000_000)
        else:
            assert event is None
