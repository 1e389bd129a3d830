"""The fault suite's poison generator: every class it draws from is rejected by the contract."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from projections.validation import Limits, Rejection, parse_event
from streams.producer import subject_key
from tests.faults.poison import _event, poison_records, strategies

pytestmark = pytest.mark.unit


def test_every_poison_class_is_rejected_for_its_own_reason() -> None:
    limits = Limits()
    now_ms = time.time_ns() // 1_000_000
    # Every class breaks exactly one thing of a valid event.
    assert not isinstance(parse_event(_event(), now_ms=now_ms, limits=limits), Rejection)
    records = poison_records(3_000, max_event_bytes=limits.max_event_bytes, per_class=100)
    outcomes = [parse_event(r, now_ms=now_ms, limits=limits) for r in records]
    accepted = [
        r[:200] for r, o in zip(records, outcomes, strict=True) if not isinstance(o, Rejection)
    ]
    assert not accepted
    reasons = Counter(o.reason.value for o in outcomes if isinstance(o, Rejection))
    # The classes reach the validator's distinct checks, not one catch-all.
    for reason in (
        "invalid_json",
        "not_an_object",
        "wrong_type",
        "too_large",
        "unknown_schema_version",
        "timestamp_out_of_range",
    ):
        assert reasons[reason] > 0, reasons
    assert len(strategies(limits.max_event_bytes)) == 8


def test_the_producer_keys_any_poison_without_failing() -> None:
    """``salespulse produce`` publishes whatever it is given: keying must not choke on it
    (a ``type`` that was a JSON object once crashed it)."""
    records = poison_records(2_000, max_event_bytes=Limits().max_event_bytes, per_class=100)
    keys = [subject_key(r) for r in records]
    assert set(keys) == {None, b"lead-poison"}  # the template's lead, or no key
    assert subject_key(_event(type={"a": 1})) is None
    assert subject_key(_event()) == b"lead-poison"
