"""Decode raw Kafka record bytes into typed events, or say precisely why not.

``parse_event`` never raises: it returns an ``Event`` or a ``Rejection`` with
one of the ``Reason`` codes below and a human-readable detail. The checks run
in a fixed order (size, JSON, envelope, type-specific fields), so every bad
record gets exactly one, predictable reason.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from projections.events import (
    COUNT,
    COUNT_MAX,
    EVENT_TYPES,
    ID,
    ID_MAX_CHARS,
    INSTANT,
    SCHEMA_VERSION,
    TEXT,
    TEXT_MAX_CHARS,
    TIMEZONE,
    Event,
    FieldKind,
)


class Reason(StrEnum):
    """Why a record went to the dead-letter topic. Values are stable metric labels."""

    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    NEGATIVE_VALUE = "negative_value"
    TIMESTAMP_WITHOUT_OFFSET = "timestamp_without_offset"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    # Valid, but the projections cannot apply it (found by the projection loop, not here).
    UNPROCESSABLE = "unprocessable"
    # Valid, but beyond the lateness horizon of its partition (the projection loop;
    # projections/lateness.py).
    TOO_LATE = "too_late"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that are configuration, not contract."""

    max_event_bytes: int = 65_536
    # An occurred_at further than this ahead of the validator's clock is rejected:
    # it would sit in every future window and can only be a broken clock.
    max_future_ms: int = 24 * 3600 * 1000


DEFAULT_LIMITS = Limits()


class InvalidField(ValueError):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# RFC 3339 date-time; the offset group is optional here only so that a missing
# offset gets its own reason instead of a generic "invalid timestamp".
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})?"
)
_SUB_MICROSECOND = re.compile(r"(\.\d{6})\d+")


def format_instant_ms(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 in UTC with milliseconds (``...T09:00:00.000+00:00``)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def occurred_at_ms(value: bytes | None) -> int | None:
    """The ``occurred_at`` of a record's JSON in ms, without validating the rest; None if it
    has no readable one."""
    try:
        document = orjson.loads(value or b"")
        return parse_instant_ms(str(document["occurred_at"]), "occurred_at")
    except (orjson.JSONDecodeError, InvalidField, KeyError, TypeError):
        return None


def parse_instant_ms(value: str, name: str) -> int:
    """RFC 3339 with an offset -> integer epoch milliseconds (sub-ms digits are floored)."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise InvalidField(Reason.INVALID_TIMESTAMP, f"{name}: {value[:64]!r} is not RFC 3339")
    fraction, offset = match.groups()
    if offset is None:
        raise InvalidField(Reason.TIMESTAMP_WITHOUT_OFFSET, f"{name}: {value!r} has no UTC offset")
    # fromisoformat accepts at most 6 fractional digits; RFC 3339 allows more.
    text = _SUB_MICROSECOND.sub(r"\1", value) if fraction and len(fraction) > 6 else value
    try:
        instant = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidField(Reason.INVALID_TIMESTAMP, f"{name}: {value!r}: {exc}") from None
    return (instant - _EPOCH) // _ONE_MS


@cache
def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _json_type(value: object) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


Checker = Callable[[object, str], object]


# Ids may hold any character but a control character (C0, DEL, C1): nothing that can start
# a new line in a log or move a terminal's cursor. Every separator the engine uses is
# escaped where an id is stored (entities.pack, the KPI topic's keys), so it is allowed.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _check_string(max_chars: int, allow_empty: bool, is_id: bool = False) -> Checker:
    least = 0 if allow_empty else 1

    def check(value: object, name: str) -> object:
        # The common case first: a string of a fine length, for an id all printable ASCII
        # (no control character); anything else is looked at closely below.
        if (
            type(value) is str
            and least <= len(value) <= max_chars
            and (not is_id or (value.isascii() and value.isprintable()))
        ):
            return value
        if type(value) is not str:
            raise InvalidField(
                Reason.WRONG_TYPE, f"{name}: expected string, got {_json_type(value)}"
            )
        if not allow_empty and not value:
            raise InvalidField(Reason.INVALID_VALUE, f"{name}: must not be empty")
        if len(value) > max_chars:
            raise InvalidField(Reason.INVALID_VALUE, f"{name}: longer than {max_chars} characters")
        if is_id and (control := _CONTROL.search(value)) is not None:
            raise InvalidField(
                Reason.INVALID_VALUE,
                f"{name}: holds the control character U+{ord(control.group()):04X} "
                f"at position {control.start()}",
            )
        return value

    return check


def _check_count(value: object, name: str) -> object:
    if type(value) is not int:
        raise InvalidField(Reason.WRONG_TYPE, f"{name}: expected integer, got {_json_type(value)}")
    if value < 0:
        raise InvalidField(Reason.NEGATIVE_VALUE, f"{name}: {value} is negative")
    if value > COUNT_MAX:
        raise InvalidField(
            Reason.INVALID_VALUE, f"{name}: {value} is over the largest allowed, 2^53 - 1"
        )
    return value


def _check_bool(value: object, name: str) -> object:
    if type(value) is not bool:
        raise InvalidField(Reason.WRONG_TYPE, f"{name}: expected boolean, got {_json_type(value)}")
    return value


def _check_instant(value: object, name: str) -> object:
    if type(value) is not str:
        raise InvalidField(Reason.WRONG_TYPE, f"{name}: expected string, got {_json_type(value)}")
    return parse_instant_ms(value, name)


def _check_timezone(value: object, name: str) -> object:
    _check_string(64, allow_empty=False)(value, name)
    assert isinstance(value, str)
    if not _known_zone(value):
        raise InvalidField(Reason.INVALID_VALUE, f"{name}: {value!r} is not an IANA time zone")
    return value


def _check_choice(choices: tuple[str, ...]) -> Checker:
    def check(value: object, name: str) -> object:
        if type(value) is not str:
            raise InvalidField(
                Reason.WRONG_TYPE, f"{name}: expected string, got {_json_type(value)}"
            )
        if value not in choices:
            raise InvalidField(
                Reason.INVALID_VALUE, f"{name}: {value[:64]!r} is not one of {', '.join(choices)}"
            )
        return value

    return check


_KIND_CHECKERS: dict[FieldKind, Checker] = {
    ID: _check_string(ID_MAX_CHARS, allow_empty=False, is_id=True),
    TEXT: _check_string(TEXT_MAX_CHARS, allow_empty=True),
    COUNT: _check_count,
    INSTANT: _check_instant,
    TIMEZONE: _check_timezone,
}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one wire field maps onto one dataclass attribute."""

    wire_name: str
    attr_name: str
    required: bool
    check: Checker
    kind: FieldKind | None
    choices: tuple[str, ...]
    python_type: type


def field_specs(cls: type[Event]) -> tuple[FieldSpec, ...]:
    """The wire fields of an event class, derived from its annotations."""
    hints = typing.get_type_hints(cls, include_extras=True)
    specs = []
    for field in fields(cls):
        annotation = hints[field.name]
        required = True
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            (annotation,) = members
            required = False
        kind: FieldKind | None = None
        choices: tuple[str, ...] = ()
        if typing.get_origin(annotation) is typing.Annotated:
            base, *meta = typing.get_args(annotation)
            kind = next(m for m in meta if isinstance(m, FieldKind))
            check = _KIND_CHECKERS[kind]
            python_type = base
        elif typing.get_origin(annotation) is typing.Literal:
            choices = tuple(typing.get_args(annotation))
            check = _check_choice(choices)
            python_type = str
        elif annotation is bool:
            check, python_type = _check_bool, bool
        elif annotation is int:
            check, python_type = _check_count, int
        else:  # pragma: no cover - a contract author's mistake, caught at import
            raise TypeError(f"{cls.__name__}.{field.name}: unsupported annotation {annotation}")
        wire = field.name.removesuffix("_ms") if kind is INSTANT else field.name
        specs.append(FieldSpec(wire, field.name, required, check, kind, choices, python_type))
    return tuple(specs)


# Per type, a function that checks a document's fields in the order of ``field_specs`` and
# builds the event, written out from the specs when this module loads (as ``dataclasses``
# writes ``__init__``): each field's common case (a string of a fine length, an integer in
# range, a known choice) is tested inline, and anything else goes to its kind's checker,
# which raises the field's reason or returns the value. So the reasons are those of the
# checkers, and a field's check costs no call in the common case.
Builder = Callable[[dict[str, Any], int, "Limits"], Event]


def _out_of_range(document: dict[str, Any]) -> InvalidField:
    return InvalidField(
        Reason.TIMESTAMP_OUT_OF_RANGE,
        f"occurred_at {document['occurred_at']!r} is before 1970 or too far in the future",
    )


def _common_case(spec: FieldSpec, index: int) -> str | None:
    """A Python condition that holds for the common valid values of ``v`` (None: no shortcut,
    the checker runs)."""
    if spec.kind is ID:
        return (
            f"type(v) is str and 0 < len(v) <= {ID_MAX_CHARS} and v.isascii() and v.isprintable()"
        )
    if spec.kind is TEXT:
        return f"type(v) is str and len(v) <= {TEXT_MAX_CHARS}"
    if spec.kind is COUNT or (spec.python_type is int and spec.kind is None and not spec.choices):
        return f"type(v) is int and 0 <= v <= {COUNT_MAX}"
    if spec.choices:
        return f"type(v) is str and v in choices_{index}"
    if spec.python_type is bool:
        return "type(v) is bool"
    return None


def _slot_setter(cls: type[Event], attr: str) -> Callable[[Event, object], None]:
    """The ``__set__`` of the slot that holds ``attr`` (declared by ``cls`` or a base)."""
    owner = next(k for k in cls.__mro__ if attr in vars(k))
    setter: Callable[[Event, object], None] = vars(owner)[attr].__set__
    return setter


def _builder(cls: type[Event]) -> Builder:
    specs = [s for s in field_specs(cls) if s.attr_name != "schema_version"]
    # The event is made as its frozen dataclass's __init__ would make it, but each field set
    # through its slot: __init__ goes through object.__setattr__ per field, which costs about
    # as much as all the checks. So no event type may have a __post_init__.
    if hasattr(cls, "__post_init__"):  # pragma: no cover - a contract author's mistake
        raise TypeError(f"{cls.__name__}: the validator does not call __post_init__")
    namespace: dict[str, Any] = {
        "cls": cls,
        "new": object.__new__,
        "set_version": _slot_setter(cls, "schema_version"),
        "InvalidField": InvalidField,
        "MISSING": Reason.MISSING_FIELD,
        "out_of_range": _out_of_range,
        "SCHEMA_VERSION": SCHEMA_VERSION,
    }
    lines = ["def build(document, now_ms, limits):", "    get = document.get"]
    for i, spec in enumerate(specs):
        namespace[f"check_{i}"] = spec.check
        namespace[f"choices_{i}"] = frozenset(spec.choices)
        namespace[f"set_{i}"] = _slot_setter(cls, spec.attr_name)
        lines.append(f"    v = get({spec.wire_name!r})")
        if spec.required:
            lines.append("    if v is None:")
            lines.append(f"        raise InvalidField(MISSING, {spec.wire_name + ': required'!r})")
            guard = ""
        else:
            guard = "v is not None and "
        common = _common_case(spec, i)
        condition = f"not ({common})" if common else "True"
        lines.append(f"    if {guard}{condition}:")
        lines.append(f"        v = check_{i}(v, {spec.wire_name!r})")
        lines.append(f"    f_{i} = v")
    occurred = next(i for i, s in enumerate(specs) if s.attr_name == "occurred_at_ms")
    lines += [
        f"    if f_{occurred} < 0 or f_{occurred} > now_ms + limits.max_future_ms:",
        "        raise out_of_range(document)",
        "    event = new(cls)",
        "    set_version(event, SCHEMA_VERSION)",
        *(f"    set_{i}(event, f_{i})" for i in range(len(specs))),
        "    return event",
    ]
    exec("\n".join(lines), namespace)  # our own source, written from the contract
    build: Builder = namespace["build"]
    return build


_BUILDERS: dict[str, Builder] = {name: _builder(cls) for name, cls in EVENT_TYPES.items()}


def _decode(raw: bytes, limits: Limits) -> dict[str, Any]:
    if len(raw) > limits.max_event_bytes:
        raise InvalidField(
            Reason.TOO_LARGE, f"{len(raw)} bytes is over the limit of {limits.max_event_bytes}"
        )
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidField(Reason.INVALID_JSON, str(exc)[:200]) from None
    if not isinstance(document, dict):
        raise InvalidField(
            Reason.NOT_AN_OBJECT, f"expected a JSON object, got {_json_type(document)}"
        )
    return document


def _build(document: dict[str, Any], now_ms: int, limits: Limits) -> Event:
    version = document.get("schema_version")
    if version is None:
        raise InvalidField(Reason.MISSING_FIELD, "schema_version: required")
    if type(version) is not int:
        raise InvalidField(
            Reason.WRONG_TYPE, f"schema_version: expected integer, got {_json_type(version)}"
        )
    if version != SCHEMA_VERSION:
        raise InvalidField(
            Reason.UNKNOWN_SCHEMA_VERSION,
            f"schema_version {version} is not supported (supported: {SCHEMA_VERSION})",
        )
    type_name = document.get("type")
    if type_name is None:
        raise InvalidField(Reason.MISSING_FIELD, "type: required")
    if type(type_name) is not str:
        raise InvalidField(Reason.WRONG_TYPE, f"type: expected string, got {_json_type(type_name)}")
    build = _BUILDERS.get(type_name)
    if build is None:
        raise InvalidField(Reason.UNKNOWN_TYPE, f"type {type_name[:64]!r} is not in the contract")
    return build(document, now_ms, limits)


def parse_event(raw: bytes, *, now_ms: int, limits: Limits = DEFAULT_LIMITS) -> Event | Rejection:
    """Validate one record's bytes against the contract. Never raises."""
    try:
        return _build(_decode(raw, limits), now_ms, limits)
    except InvalidField as invalid:
        return Rejection(invalid.reason, invalid.detail)
    except RecursionError:
        return Rejection(Reason.INVALID_JSON, "nested too deeply")
