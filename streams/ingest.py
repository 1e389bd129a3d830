"""Route one raw record: a valid event goes on, keyed by its subject; anything else to the DLQ.

Pure functions; the Faust agent in streams.app does the I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from projections.events import Event
from projections.facts import LeadFact
from projections.validation import Limits, Reason, Rejection, parse_event

# Header names on dead-letter records, following Kafka Connect's DLQ convention of
# keeping the original bytes as the value and the diagnosis in headers.
HEADER_REASON = "salespulse.dlq.reason"
HEADER_DETAIL = "salespulse.dlq.detail"
HEADER_TOPIC = "salespulse.dlq.topic"
HEADER_PARTITION = "salespulse.dlq.partition"
HEADER_OFFSET = "salespulse.dlq.offset"
HEADER_FAILED_AT = "salespulse.dlq.failed_at_ms"


@dataclass(frozen=True, slots=True)
class Accepted:
    key: bytes
    event: Event


HEADER_ORIGINAL_BYTES = "salespulse.dlq.original_bytes"

# A dead letter keeps the original bytes, up to this many: a record near the broker's own
# limit plus headers could otherwise be refused by the DLQ and block the partition.
DLQ_MAX_VALUE_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    rejection: Rejection
    value: bytes  # the original bytes, cut at DLQ_MAX_VALUE_BYTES
    headers: list[tuple[str, bytes]]


def route(
    value: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    now_ms: int,
    limits: Limits,
) -> Accepted | DeadLetter:
    """Decide where one record goes. Never raises."""
    outcome = (
        Rejection(Reason.INVALID_JSON, "empty record")
        if not value
        else parse_event(value, now_ms=now_ms, limits=limits)
    )
    if isinstance(outcome, Rejection):
        return dead_letter(
            outcome, value, topic=topic, partition=partition, offset=offset, now_ms=now_ms
        )
    return Accepted(outcome.subject_id.encode(), outcome)


def dead_letter(
    rejection: Rejection,
    value: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    now_ms: int,
) -> DeadLetter:
    """The dead letter of one record: its bytes (cut at DLQ_MAX_VALUE_BYTES), why, and where
    it was read."""
    original = value or b""
    return DeadLetter(
        rejection,
        original[:DLQ_MAX_VALUE_BYTES],
        [
            (HEADER_REASON, rejection.reason.value.encode()),
            (HEADER_DETAIL, rejection.detail.encode("utf-8", "replace")),
            (HEADER_TOPIC, topic.encode()),
            (HEADER_PARTITION, str(partition).encode()),
            (HEADER_OFFSET, str(offset).encode()),
            (HEADER_FAILED_AT, str(now_ms).encode()),
            (HEADER_ORIGINAL_BYTES, str(len(original)).encode()),
        ],
    )


def subject_key(item: Event | LeadFact) -> bytes:
    """The key of a record about ``item``: its subject's id (a fact's lead)."""
    return (item.lead_id if isinstance(item, LeadFact) else item.subject_id).encode()


def projection_letter(
    item: Event | LeadFact,
    value: bytes | None,
    rejection: Rejection,
    *,
    topic: str,
    partition: int,
    offset: int,
) -> tuple[bytes, DeadLetter]:
    """The key and dead letter of a record the projections do not apply (unprocessable, too
    late), read at ``topic``, ``partition``, ``offset``."""
    letter = dead_letter(
        rejection,
        value,
        topic=topic,
        partition=partition,
        offset=offset,
        now_ms=time.time_ns() // 1_000_000,
    )
    return subject_key(item), letter
