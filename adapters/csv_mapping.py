"""A generic CSV backfill: rows of any CRM export -> canonical events, as a mapping file says.

The mapping file is TOML, one ``[[event]]`` per canonical event a row can make::

    [[event]]
    type = "opportunity.closed"
    id = ["Opportunity ID"]                  # columns that identify the row: the event id
    occurred_at = { column = "Close Date", format = "%Y-%m-%d" }  # strptime; RFC 3339 if omitted
    when = { column = "Stage", in = ["Won", "Lost"] }             # optional: rows it applies to

    [event.fields]
    opportunity_id = { column = "Opportunity ID", prefix = "crm-" }  # text, after a prefix
    rep_id = { column = "Owner", map = "reps" }   # through the [maps.reps] table
    outcome = { column = "Stage", map = "outcomes" }
    amount_minor = { column = "Amount", money = true }  # decimal -> minor units (x 100)
    talk_ms = { column = "Talk seconds", seconds = true } # integer seconds -> ms
    new_customer = { value = true }               # a constant

    [maps.reps]
    "Ada Lovelace" = "rep-01"

What real exports need beyond that:

* ``format`` may list several formats, tried in order (``["%m/%d/%Y %I:%M %p", "%m/%d/%Y"]``);
* ``when`` may take a regular expression the whole cell must match instead of a list
  (``when = { column = "Opportunity ID", matches = "006[0-9A-Za-z]{12,15}" }``), e.g. to
  pass over the footer lines a report export ends with;
* ``money`` reads ``12500``, ``"12,500.00"``, ``"$12,500.00"`` and ``"USD 12,500.00"``
  (decimal point, comma thousands); with ``currency = "USD"`` a value marked with another
  ISO code is skipped, not added to the others;
* an empty cell skips the event, unless the field says ``optional = true`` (the field is
  left out) or ``default = ...`` (that value);
* ``case_safe_id = true`` turns a 15-character Salesforce id (as reports show it) into the
  18-character one the Salesforce APIs and the CDC adapter use.

Dates without an offset are read in the backfill's zone. Event ids derive from
the type and the ``id`` columns, so importing the same file twice changes
nothing. Every row that cannot be mapped (an empty cell, a value missing from
its map, an event the contract refuses) is counted with its reason, and rows no
``[[event]]`` applies to are counted too; none is dropped silently.
"""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from adapters.canonical import event, stable_id
from projections.errors import ProblemsError
from projections.events import EVENT_TYPES
from projections.validation import Rejection, parse_event

SOURCE = "csv"
FLAGS = ("money", "seconds", "optional", "case_safe_id")
TEXTS = ("column", "map", "currency", "prefix")
SPEC_KEYS = {*FLAGS, *TEXTS, "value", "default"}
# A currency symbol or ISO 4217 code before or after the number, as exports print amounts.
_MONEY = re.compile(
    r"(?P<code1>[A-Z]{3})?\s*[$€£¥]?\s*"
    r"(?P<number>-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|-?\.[0-9]+)"
    r"\s*[$€£¥]?\s*(?P<code2>[A-Z]{3})?"
)
_CASE_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


class CsvMappingError(ProblemsError, ValueError):
    """A CSV mapping file with problems (one line each)."""


@dataclass(frozen=True)
class FieldRule:
    """Where one field of an event comes from: a constant, or a column and what to do
    with its text."""

    column: str | None = None
    value: Any = None  # the constant, when there is no column
    map: str | None = None
    money: bool = False
    seconds: bool = False
    currency: str | None = None
    prefix: str = ""
    case_safe_id: bool = False
    optional: bool = False
    default: Any = None


@dataclass(frozen=True)
class EventRule:
    kind: str
    id_columns: tuple[str, ...]
    at_column: str
    at_formats: tuple[str, ...]  # none: RFC 3339
    when_column: str | None
    when_values: frozenset[str]
    when_pattern: re.Pattern[str] | None
    fields: Mapping[str, FieldRule]

    def applies_to(self, row: Mapping[str, str | None]) -> bool:
        if self.when_column is None:
            return True
        cell = (row.get(self.when_column) or "").strip()
        if self.when_pattern is not None:
            return self.when_pattern.fullmatch(cell) is not None
        return cell in self.when_values


@dataclass(frozen=True)
class CsvMapping:
    rules: tuple[EventRule, ...]
    maps: Mapping[str, Mapping[str, str]]

    def columns(self) -> set[str]:
        used = set()
        for rule in self.rules:
            used |= {*rule.id_columns, rule.at_column}
            used |= {rule.when_column} if rule.when_column else set()
            used |= {spec.column for spec in rule.fields.values() if spec.column}
        return used


@dataclass
class CsvReport:
    rows: int = 0
    events: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # "type: reason" -> rows
    unmatched: int = 0  # rows no [[event]] applies to

    def lines(self) -> list[str]:
        out = [f"rows read: {self.rows}"]
        out += [f"rows no [[event]] applies to: {self.unmatched}"] if self.unmatched else []
        out += [f"events {kind}: {n}" for kind, n in sorted(self.events.items())]
        out += [f"skipped ({reason}): {n}" for reason, n in sorted(self.skipped.items())]
        return out


def parse_csv_mapping(text: str) -> CsvMapping:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CsvMappingError([f"not TOML: {exc}"]) from None
    problems: list[str] = []
    maps = document.get("maps", {})
    if not isinstance(maps, dict) or not all(isinstance(m, dict) for m in maps.values()):
        problems.append('[maps] must hold tables of "their value" = "our value"')
        maps = {}
    rules = []
    events = document.get("event", [])
    for n, raw in enumerate(events if isinstance(events, list) else [events], 1):
        where = f"event {n}"
        if not isinstance(raw, dict):
            problems.append(f"{where}: events are [[event]] tables")
            continue
        kind = raw.get("type")
        if kind not in EVENT_TYPES:
            problems.append(f"{where}: type {kind!r} is not a canonical event type")
            continue
        where = f"event {n} ({kind})"
        ids = raw.get("id")
        if not isinstance(ids, list) or not ids or not all(isinstance(c, str) for c in ids):
            problems.append(f"{where}: id must list the columns that identify a row")
            ids = []
        at = raw.get("occurred_at")
        if not isinstance(at, dict) or not isinstance(at.get("column"), str):
            problems.append(f"{where}: occurred_at needs a column")
            at = {"column": ""}
        formats = at.get("format", [])
        formats = [formats] if isinstance(formats, str) else formats
        if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
            problems.append(f"{where}: occurred_at format must be a strptime format or a list")
            formats = []
        when_column, when_values, pattern = _when(raw.get("when") or {}, where, problems)
        fields = {}
        specs = raw.get("fields", {})
        if not isinstance(specs, dict):
            problems.append(f"{where}: [event.fields] must be a table")
            specs = {}
        for name, spec in specs.items():
            found = _field_rule(spec, f"{where}: field {name}", maps, problems)
            if found is not None:
                fields[name] = found
        rules.append(
            EventRule(
                kind,
                tuple(ids),
                at["column"],
                tuple(formats),
                when_column,
                when_values,
                pattern,
                fields,
            )
        )
    if not rules and not problems:
        problems.append("no [[event]] tables: nothing to map")
    if problems:
        raise CsvMappingError(problems)
    return CsvMapping(tuple(rules), maps)


def _when(
    when: Any, where: str, problems: list[str]
) -> tuple[str | None, frozenset[str], re.Pattern[str] | None]:
    if not when:
        return None, frozenset(), None
    if not isinstance(when, dict):
        when = {}
    column, values, matches = when.get("column"), when.get("in"), when.get("matches")
    if not isinstance(column, str) or (values is None) == (matches is None):
        problems.append(f"{where}: when needs a column and either an in list or matches")
    elif values is not None:
        if isinstance(values, list):
            return column, frozenset(str(v) for v in values), None
        problems.append(f"{where}: when's in must be a list")
    else:
        try:
            return column, frozenset(), re.compile(str(matches))
        except re.error as exc:
            problems.append(
                f"{where}: when's matches {matches!r} is not a regular expression: {exc}"
            )
    return None, frozenset(), None


def _field_rule(
    spec: Any, where: str, maps: Mapping[str, Any], problems: list[str]
) -> FieldRule | None:
    keys = ", ".join(sorted(SPEC_KEYS))
    if not isinstance(spec, dict) or set(spec) - SPEC_KEYS:
        problems.append(f"{where}: unknown keys (keys: {keys})")
        return None
    if ("column" in spec) == ("value" in spec):
        problems.append(f"{where} needs a column or a value (keys: {keys})")
        return None
    wrong = [k for k in FLAGS if k in spec and not isinstance(spec[k], bool)]
    wrong += [k for k in TEXTS if k in spec and not isinstance(spec[k], str)]
    if wrong:
        problems.append(f"{where}: {', '.join(wrong)} of the wrong type")
        return None
    rule = FieldRule(**spec)
    converters = [k for k in ("map", "money", "seconds", "case_safe_id") if spec.get(k)]
    if "value" in spec and set(spec) != {"value"}:
        problems.append(f"{where}: a value is a constant, without other keys")
    elif len(converters) > 1:
        problems.append(f"{where}: {' and '.join(converters)} do not combine")
    elif rule.map is not None and rule.map not in maps:
        problems.append(f"{where} names map {rule.map!r}, which [maps] lacks")
    elif rule.currency is not None and (
        not rule.money or re.fullmatch("[A-Z]{3}", rule.currency) is None
    ):
        problems.append(f"{where}: currency is an ISO 4217 code, for money")
    elif rule.prefix and (rule.map or rule.money or rule.seconds):
        problems.append(f"{where}: prefix is for text (ids), not maps or numbers")
    elif rule.optional and "default" in spec:
        problems.append(f"{where}: optional or default, not both")
    else:
        return rule
    return None


class _Skip(Exception):
    pass


def map_rows(
    rows: Iterable[Mapping[str, str | None]], mapping: CsvMapping, zone: str, now_ms: int
) -> tuple[list[bytes], CsvReport]:
    report = CsvReport()
    tz = ZoneInfo(zone)
    out = []
    for row in rows:
        report.rows += 1
        applied = False
        for rule in mapping.rules:
            if not rule.applies_to(row):
                continue
            applied = True
            try:
                value = orjson.dumps(_event(rule, row, mapping, tz))
            except _Skip as skip:
                report.skipped[f"{rule.kind}: {skip}"] += 1
                continue
            checked = parse_event(value, now_ms=now_ms)
            if isinstance(checked, Rejection):
                report.skipped[f"{rule.kind}: {checked.reason.value}"] += 1
                continue
            report.events[rule.kind] += 1
            out.append(value)
        report.unmatched += not applied
    return out, report


def _event(
    rule: EventRule, row: Mapping[str, str | None], mapping: CsvMapping, tz: ZoneInfo
) -> dict[str, Any]:
    ids = [_cell(row, c) for c in rule.id_columns]
    moment = _moment(_cell(row, rule.at_column), rule)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    fields = {name: _field(spec, row, mapping) for name, spec in rule.fields.items()}
    event_id = stable_id(SOURCE, rule.kind, *ids)
    return event(rule.kind, event_id, int(moment.timestamp() * 1000), SOURCE, **fields)


def _moment(text: str, rule: EventRule) -> datetime:
    if not rule.at_formats:
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    for form in rule.at_formats:
        try:
            return datetime.strptime(text, form)
        except ValueError:
            continue
    raise _Skip(f"{rule.at_column} {text!r} is not a date")


def _cell(row: Mapping[str, str | None], column: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise _Skip(f"empty {column}")
    return value


def _field(spec: FieldRule, row: Mapping[str, str | None], mapping: CsvMapping) -> Any:
    if spec.column is None:
        return spec.value
    text = (row.get(spec.column) or "").strip()
    if not text:
        if spec.default is not None:
            return spec.default
        if spec.optional:
            return None  # left out of the event
        raise _Skip(f"empty {spec.column}")
    if spec.map is not None:
        found = mapping.maps[spec.map].get(text)
        if found is None:
            raise _Skip(f"{text!r} not in [maps.{spec.map}]")
        return found
    if spec.money:
        return money_minor(text, spec.column, spec.currency)
    if spec.seconds:
        try:
            return int((Decimal(text.replace(",", "")) * 1000).quantize(Decimal(1)))
        except InvalidOperation:
            raise _Skip(f"{spec.column} {text!r} is not a number") from None
    if spec.case_safe_id:
        text = case_safe_id(text, spec.column)
    return spec.prefix + text


def money_minor(text: str, column: str, currency: str | None = None) -> int:
    """``"$12,500.00"``, ``"USD 12,500.00"``, ``"12500"`` -> minor units (x 100)."""
    found = _MONEY.fullmatch(text.strip())
    codes = {c for c in (found.group("code1"), found.group("code2")) if c} if found else set()
    if found is None or len(codes) > 1:
        raise _Skip(f"{column} {text!r} is not an amount")
    if currency is not None and codes and codes != {currency}:
        raise _Skip(f"{column} {text!r} is not in {currency}")
    try:
        number = Decimal(found.group("number").replace(",", ""))
    except InvalidOperation:
        raise _Skip(f"{column} {text!r} is not an amount") from None
    return int((number * 100).quantize(Decimal(1)))


def case_safe_id(text: str, column: str) -> str:
    """A Salesforce record id in its 18-character form: 15 characters get the suffix that
    encodes which of them are capitals (in three groups of five)."""
    if len(text) == 18 and text.isalnum() and text.isascii():
        return text
    if len(text) != 15 or not text.isalnum() or not text.isascii():
        raise _Skip(f"{column} {text!r} is not a Salesforce id")
    suffix = ""
    for start in (0, 5, 10):
        chunk = text[start : start + 5]
        suffix += _CASE_SAFE[sum(1 << i for i, c in enumerate(chunk) if "A" <= c <= "Z")]
    return text + suffix
