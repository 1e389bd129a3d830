"""The events ingest validated, kept for the projection loop of the same worker."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from projections.validation import Limits, parse_event
from streams.forwarder import route_batch
from streams.validated import Validated
from tests.unit.test_validation import NOW_MS, event

pytestmark = pytest.mark.unit


def _record(offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("raw", 0, offset, 0, 0, None, value, None, 0, len(value), ())


def _route(values: list[bytes], validated: Validated) -> None:
    fetched = {TopicPartition("raw", 0): [_record(i, v) for i, v in enumerate(values)]}
    route_batch(
        fetched,
        events_topic="events",
        dlq_topic="dlq",
        limits=Limits(),
        now_ms=NOW_MS,
        validated=validated,
    )


def test_ingest_keeps_each_valid_event_for_the_projection_once() -> None:
    valid = orjson.dumps(event("call.ended"))
    other = orjson.dumps(event("call.started"))
    invalid = b'{"schema_version": 1, "type": "call.ended"}'
    validated = Validated(capacity=10)
    _route([valid, invalid, other], validated)
    assert len(validated) == 2
    kept = validated.take(valid)
    # The event the projection would have parsed itself.
    assert kept is not None and kept == parse_event(valid, now_ms=NOW_MS)
    assert validated.take(valid) is None  # taken once: a second copy is parsed again
    assert validated.take(invalid) is None  # never kept: parsed, and refused, as before
    assert validated.take(b"bytes some other writer put on the events topic") is None
    assert validated.take(other) == parse_event(other, now_ms=NOW_MS)
    assert (validated.taken, validated.missed) == (2, 3)


def test_the_oldest_events_go_past_the_capacity() -> None:
    values = [orjson.dumps(event("call.ended", event_id=f"e{i}")) for i in range(5)]
    validated = Validated(capacity=3)
    _route(values, validated)
    assert len(validated) == 3
    assert [validated.take(v) is not None for v in values] == [False, False, True, True, True]
