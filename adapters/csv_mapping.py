"""A generic CSV backfill: rows of any CRM export -> canonical events, as a mapping file says.

The mapping file is TOML, one ``[[event]]`` per canonical event a row can make::

    [[event]]
    type = "opportunity.closed"
    id = ["Opportunity ID"]                  # columns that identify the row: the event id
    occurred_at = { column = "Close Date", format = "%Y-%m-%d" }  # strptime; RFC 3339 if omitted
    when = { column = "Stage", in = ["Won", "Lost"] }             # optional: rows it applies to

    [event.fields]
    opportunity_id = { column = "Opportunity ID" }
    rep_id = { column = "Owner", map = "reps" }   # through the [maps.reps] table
    outcome = { column = "Stage", map = "outcomes" }
    amount_minor = { column = "Amount", money = true }  # decimal -> minor units (x 100)
    talk_ms = { column = "Talk seconds", seconds = true } # integer seconds -> ms
    new_customer = { value = true }               # a constant

    [maps.reps]
    "Ada Lovelace" = "rep-01"

Dates without an offset are read in the backfill's zone. Event ids derive from
the type and the ``id`` columns, so importing the same file twice changes
nothing. Every row that cannot be mapped (an empty cell, a value missing from
its map, an event the contract refuses) is counted with its reason; none is
dropped silently.
"""

from __future__ import annotations

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
from projections.events import EVENT_TYPES
from projections.validation import Rejection, parse_event

SOURCE = "csv"
SPEC_KEYS = {"column", "map", "money", "seconds", "value"}


class CsvMappingError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class EventRule:
    kind: str
    id_columns: tuple[str, ...]
    at_column: str
    at_format: str | None
    when_column: str | None
    when_values: frozenset[str]
    fields: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class CsvMapping:
    rules: tuple[EventRule, ...]
    maps: Mapping[str, Mapping[str, str]]

    def columns(self) -> set[str]:
        used = set()
        for rule in self.rules:
            used |= {*rule.id_columns, rule.at_column}
            used |= {rule.when_column} if rule.when_column else set()
            used |= {spec["column"] for spec in rule.fields.values() if "column" in spec}
        return used


@dataclass
class CsvReport:
    rows: int = 0
    events: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # "type: reason" -> rows

    def lines(self) -> list[str]:
        out = [f"rows read: {self.rows}"]
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
    for n, raw in enumerate(document.get("event", []), 1):
        where = f"event {n}"
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
        when = raw.get("when") or {}
        if when and (
            not isinstance(when.get("column"), str) or not isinstance(when.get("in"), list)
        ):
            problems.append(f"{where}: when needs a column and an in list")
            when = {}
        fields = raw.get("fields", {})
        for name, spec in fields.items():
            if (
                not isinstance(spec, dict)
                or set(spec) - SPEC_KEYS
                or not ({"column", "value"} & set(spec))
            ):
                problems.append(
                    f"{where}: field {name} needs a column or a value "
                    f"(keys: {', '.join(sorted(SPEC_KEYS))})"
                )
            elif "map" in spec and spec["map"] not in maps:
                problems.append(
                    f"{where}: field {name} names map {spec['map']!r}, which [maps] lacks"
                )
        rules.append(
            EventRule(
                kind,
                tuple(ids),
                at["column"],
                at.get("format"),
                when.get("column"),
                frozenset(str(v) for v in when.get("in", [])),
                fields,
            )
        )
    if not rules and not problems:
        problems.append("no [[event]] tables: nothing to map")
    if problems:
        raise CsvMappingError(problems)
    return CsvMapping(tuple(rules), maps)


class _Skip(Exception):
    pass


def map_rows(
    rows: Iterable[Mapping[str, str]], mapping: CsvMapping, zone: str, now_ms: int
) -> tuple[list[bytes], CsvReport]:
    report = CsvReport()
    tz = ZoneInfo(zone)
    out = []
    for row in rows:
        report.rows += 1
        for rule in mapping.rules:
            if rule.when_column and row.get(rule.when_column, "") not in rule.when_values:
                continue
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
    return out, report


def _event(
    rule: EventRule, row: Mapping[str, str], mapping: CsvMapping, tz: ZoneInfo
) -> dict[str, Any]:
    ids = [_cell(row, c) for c in rule.id_columns]
    at_text = _cell(row, rule.at_column)
    try:
        if rule.at_format:
            moment = datetime.strptime(at_text, rule.at_format)
        else:
            moment = datetime.fromisoformat(at_text)
    except ValueError:
        raise _Skip(f"{rule.at_column} {at_text!r} is not a date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    fields = {name: _field(spec, row, mapping) for name, spec in rule.fields.items()}
    event_id = stable_id(SOURCE, rule.kind, *ids)
    return event(rule.kind, event_id, int(moment.timestamp() * 1000), SOURCE, **fields)


def _cell(row: Mapping[str, str], column: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise _Skip(f"empty {column}")
    return value


def _field(spec: Mapping[str, Any], row: Mapping[str, str], mapping: CsvMapping) -> Any:
    if "value" in spec:
        return spec["value"]
    text = _cell(row, spec["column"])
    if "map" in spec:
        found = mapping.maps[spec["map"]].get(text)
        if found is None:
            raise _Skip(f"{text!r} not in [maps.{spec['map']}]")
        return found
    if spec.get("money") or spec.get("seconds"):
        try:
            number = Decimal(text.replace(",", ""))
        except InvalidOperation:
            raise _Skip(f"{spec['column']} {text!r} is not a number") from None
        return int((number * (100 if spec.get("money") else 1000)).quantize(Decimal(1)))
    return text
