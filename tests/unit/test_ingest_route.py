from __future__ import annotations

import orjson
import pytest

from projections.validation import Limits, Reason
from streams.ingest import (
    DLQ_MAX_VALUE_BYTES,
    HEADER_OFFSET,
    HEADER_ORIGINAL_BYTES,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
    Accepted,
    DeadLetter,
    route,
)
from tests.unit.test_validation import NOW_MS, event

pytestmark = pytest.mark.unit


def test_valid_event_is_keyed_by_its_subject() -> None:
    raw = orjson.dumps(event("call.ended"))
    outcome = route(raw, topic="raw", partition=3, offset=17, now_ms=NOW_MS, limits=Limits())
    assert isinstance(outcome, Accepted)
    assert outcome.key == b"c1"


@pytest.mark.parametrize("value", [None, b""])
def test_empty_records_are_dead_letters(value: bytes | None) -> None:
    outcome = route(value, topic="raw", partition=0, offset=0, now_ms=NOW_MS, limits=Limits())
    assert isinstance(outcome, DeadLetter)
    assert outcome.rejection.reason is Reason.INVALID_JSON


def test_dead_letter_headers_say_why_and_where_from() -> None:
    outcome = route(
        b"{oops", topic="acme.events.raw", partition=3, offset=17, now_ms=NOW_MS, limits=Limits()
    )
    assert isinstance(outcome, DeadLetter)
    headers = dict(outcome.headers)
    assert headers[HEADER_REASON] == b"invalid_json"
    assert headers[HEADER_TOPIC] == b"acme.events.raw"
    assert (headers[HEADER_PARTITION], headers[HEADER_OFFSET]) == (b"3", b"17")


def test_dead_letters_keep_the_original_bytes_up_to_a_cap() -> None:
    small = b'{"type": "x"}'
    outcome = route(small, topic="t", partition=0, offset=0, now_ms=NOW_MS, limits=Limits())
    assert isinstance(outcome, DeadLetter)
    assert outcome.value == small
    huge = b"{" + b" " * (DLQ_MAX_VALUE_BYTES * 2)
    outcome = route(huge, topic="t", partition=0, offset=1, now_ms=NOW_MS, limits=Limits())
    assert isinstance(outcome, DeadLetter)
    assert outcome.rejection.reason is Reason.TOO_LARGE
    assert outcome.value == huge[:DLQ_MAX_VALUE_BYTES]
    assert dict(outcome.headers)[HEADER_ORIGINAL_BYTES] == str(len(huge)).encode()
