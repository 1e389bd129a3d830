"""How the projection loop and the rebuild read a record of the events or lead-facts topic."""

from __future__ import annotations

import logging

import orjson
import pytest

from projections.events import CallEnded
from projections.facts import LeadFact
from projections.validation import Limits
from streams.projector import Positioned, read_record
from tests.unit.test_validation import NOW_MS, event

pytestmark = pytest.mark.unit


def _read(topic: str, value: bytes | None) -> Positioned | None:
    return read_record(topic, 4, 99, value, facts_topic="facts", limits=Limits(), now_ms=NOW_MS)


def test_an_event_record_is_validated_into_its_event() -> None:
    item = _read("events", orjson.dumps(event("call.ended")))
    assert item is not None
    assert (item.topic, item.partition, item.offset) == ("events", 4, 99)
    assert isinstance(item.item, CallEnded)


def test_a_facts_record_is_a_lead_fact() -> None:
    fact = LeadFact("f1", "lead-1", "touch", 1_700_000_000_000)
    assert _read("facts", fact.encode()) == Positioned("facts", 4, 99, fact, fact.encode())


@pytest.mark.parametrize("value", [None, b"", b"{", b"[]", b'{"fact_id": "f1"}'])
def test_an_invalid_facts_record_is_skipped_and_logged(
    value: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="streams.projector"):
        assert _read("facts", value) is None
    assert "skipping invalid lead fact facts[4]@99" in caplog.text


@pytest.mark.parametrize("value", [None, b"", b"{", orjson.dumps({"type": "lead.nope"})])
def test_an_invalid_event_record_is_skipped_and_logged(
    value: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="streams.projector"):
        assert _read("events", value) is None
    assert "skipping invalid record events[4]@99" in caplog.text
