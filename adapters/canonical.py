"""What every adapter returns: canonical events, and the parts it could not map, with why."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, DecimalException
from enum import StrEnum
from typing import Any

from adapters.config import Unmapped
from projections.events import COUNT_MAX
from projections.validation import format_instant_ms


class Reason(StrEnum):
    """Why part of a delivery went to the dead-letter topic. Values are stable metric labels."""

    UNMAPPED_VALUE = "unmapped_value"  # a vendor id or value the mappings file does not name
    INCOMPLETE = "incomplete"  # the payload lacks what the canonical event requires
    MALFORMED = "malformed"  # a field is missing or of the wrong type
    GAP = "gap"  # Salesforce lost change events: the records must be re-fetched


@dataclass(frozen=True, slots=True)
class Problem:
    reason: str  # a Reason here, or the event contract's own (projections.validation.Reason)
    detail: str
    part: bytes  # the piece of the delivery it concerns, as received


@dataclass
class Mapped:
    events: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    ignored: int = 0  # parts that carry nothing the engine uses (e.g. other properties)


def stable_id(source: str, *parts: object) -> str:
    """An event id derived from the vendor's own ids: a redelivery gets the same one."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return f"{source}:{digest[:40]}"


def event(kind: str, event_id: str, at_ms: int, source: str, **fields: Any) -> dict[str, Any]:
    """A canonical event; fields that are None are left out. A time no calendar holds (a
    vendor stamp far outside years 1-9999) is ``Malformed``."""
    try:
        occurred_at = format_instant_ms(at_ms)
    except (ValueError, OverflowError, OSError):
        raise Malformed(f"time {at_ms} ms is not a date") from None
    return {
        "event_id": event_id,
        "type": kind,
        "occurred_at": occurred_at,
        "schema_version": 1,
        "source": source,
        **{name: value for name, value in fields.items() if value is not None},
    }


class Unusable(Exception):
    """A part of a delivery that cannot become canonical events, and why."""

    reason = Reason.MALFORMED


class Malformed(Unusable):
    """A required vendor field is missing or has the wrong type."""


class Incomplete(Unusable):
    """The payload lacks what the canonical event requires."""

    reason = Reason.INCOMPLETE


class Gap(Unusable):
    """The vendor lost changes: the records must be re-fetched."""

    reason = Reason.GAP


def map_parts(
    parts: Iterable[Any], map_one: Callable[[Any, Mapped], None], raw: Callable[[Any], bytes]
) -> Mapped:
    """Map each part of a delivery; a part that cannot be mapped becomes a Problem (with the
    part as received, ``raw(part)``) and does not stop the others."""
    out = Mapped()
    for part in parts:
        try:
            map_one(part, out)
        except Unusable as exc:
            out.problems.append(Problem(exc.reason, str(exc), raw(part)))
        except Unmapped as exc:
            out.problems.append(Problem(Reason.UNMAPPED_VALUE, str(exc), raw(part)))
    return out


def need(document: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(document, dict):
        raise Malformed("expected a JSON object")
    value = document.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise Malformed(f"{name}: missing or not {getattr(kind, '__name__', kind)}")
    return value


def minor_units(value: object, name: str) -> int:
    """A money amount in the reporting currency's major units (a JSON number, or a decimal
    string as HubSpot sends it) as integer minor units (x 100, half-even to the cent)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Malformed(f"{name}: not a number")
    try:
        amount = Decimal(str(value).strip())
        if not amount.is_finite():
            raise Malformed(f"{name}: not a finite number")
        minor = (amount * 100).quantize(Decimal(1))
    except DecimalException:  # not a number, or too large to hold exactly
        raise Malformed(f"{name}: not a number in range") from None
    if minor < 0:
        raise Malformed(f"{name}: negative")
    if minor > COUNT_MAX:
        raise Malformed(f"{name}: over {COUNT_MAX} minor units")
    return int(minor)
