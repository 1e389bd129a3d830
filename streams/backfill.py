"""Backfills of CRM exports: the Maven Analytics "CRM + Sales Opportunities" files, and any
CSV export with a mapping file (``csv_export``, ``adapters/csv_mapping.py``).

The "CRM + Sales Opportunities" files become:

* ``team.upserted`` per regional office and ``rep.upserted`` per agent, dated
  a day before the first engagement, so the directory precedes every deal;
* ``opportunity.created`` at ``engage_date`` (amount: the product's list price);
* ``opportunity.closed`` at ``close_date`` for Won / Lost rows (amount:
  ``close_value``).

Dates carry no time and no zone: they are read as midnight in ``zone``.
Money is converted to minor units (x100). Every row that cannot be mapped
(a Prospecting deal has no dates; an unknown agent has no team) is reported
with its reason, never dropped silently. Event ids derive from the
opportunity id, so a second backfill of the same files deduplicates.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from adapters.csv_mapping import CsvMapping, CsvReport, map_rows
from projections.errors import UsageError
from projections.validation import occurred_at_ms
from streams.progress import NoProgress, Progress, reporting

FILES = ("sales_pipeline.csv", "sales_teams.csv", "accounts.csv", "products.csv")


class BackfillError(UsageError, ValueError):
    """The export cannot be read at all (missing file or column)."""


@dataclass
class Report:
    rows: int = 0
    events: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> rows
    warnings: Counter[str] = field(default_factory=Counter)  # mapped, with a caveat

    def lines(self) -> list[str]:
        out = [f"rows read: {self.rows}"]
        out += [f"events {kind}: {n}" for kind, n in sorted(self.events.items())]
        out += [f"skipped ({reason}): {n}" for reason, n in sorted(self.skipped.items())]
        out += [f"warning ({reason}): {n}" for reason, n in sorted(self.warnings.items())]
        return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.strip().lower()).strip("-")


def _rows(folder: Path, name: str, columns: set[str]) -> list[dict[str, str]]:
    path = folder / name
    if not path.is_file():
        raise BackfillError(f"{path}: no such file (expected {', '.join(FILES)})")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = columns - set(reader.fieldnames or ())
        if missing:
            raise BackfillError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        return list(reader)


def _instant(day: date, zone: ZoneInfo) -> str:
    return datetime.combine(day, time(0), tzinfo=zone).isoformat()


def _event(event_id: str, type_name: str, at: str, **fields: object) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "type": type_name,
            "occurred_at": at,
            "schema_version": 1,
            "source": "csv",
            **fields,
        }
    )


def crm_opportunities(
    folder: Path, zone_name: str, progress: Progress | None = None
) -> tuple[list[bytes], Report]:
    """Read the four files; return canonical events (directory first) and a report.
    ``progress`` counts the deals mapped, of the pipeline's rows."""
    progress = progress or NoProgress()
    with reporting(progress):
        zone = ZoneInfo(zone_name)
        pipeline = _rows(
            folder,
            "sales_pipeline.csv",
            {
                "opportunity_id",
                "sales_agent",
                "product",
                "account",
                "deal_stage",
                "engage_date",
                "close_date",
                "close_value",
            },
        )
        teams = _rows(folder, "sales_teams.csv", {"sales_agent", "manager", "regional_office"})
        accounts = _rows(folder, "accounts.csv", {"account", "sector"})
        products = _rows(folder, "products.csv", {"product", "sales_price"})
        # The export spells "GTX Pro" as "GTXPro" in the pipeline: match names without spaces.
        price = {p["product"].replace(" ", ""): p["sales_price"] for p in products}
        sector = {a["account"]: a["sector"] for a in accounts}
        team_of = {t["sales_agent"]: _slug(t["regional_office"]) for t in teams}
        report = Report(rows=len(pipeline))

        dates = [date.fromisoformat(r["engage_date"]) for r in pipeline if r["engage_date"]]
        if not dates:
            raise BackfillError("sales_pipeline.csv has no engage_date at all")
        directory_at = _instant(min(dates) - timedelta(days=1), zone)
        events: list[bytes] = []
        for office in sorted({t["regional_office"] for t in teams}):
            events.append(
                _event(
                    f"crm:team:{_slug(office)}",
                    "team.upserted",
                    directory_at,
                    team_id=_slug(office),
                    name=office,
                    timezone=zone_name,
                )
            )
        for agent in sorted(team_of):
            events.append(
                _event(
                    f"crm:rep:{_slug(agent)}",
                    "rep.upserted",
                    directory_at,
                    rep_id=_slug(agent),
                    name=agent,
                    team_id=team_of[agent],
                    active=True,
                )
            )
        report.events["directory"] = len(events)

        for n, row in enumerate(pipeline, 1):
            progress.update(n, n, len(pipeline))
            opp, agent, stage = row["opportunity_id"], row["sales_agent"], row["deal_stage"]
            if agent not in team_of:
                report.skipped["agent not in sales_teams.csv"] += 1
                continue
            if not row["engage_date"]:
                report.skipped[f"no engage_date ({stage})"] += 1
                continue
            rep = _slug(agent)
            list_price = price.get(row["product"].replace(" ", ""))
            if list_price is None:
                report.warnings["unknown product, expected amount 0"] += 1
            if not row["account"]:
                report.warnings["no account, empty segment"] += 1
            events.append(
                _event(
                    f"crm:{opp}:created",
                    "opportunity.created",
                    _instant(date.fromisoformat(row["engage_date"]), zone),
                    opportunity_id=opp,
                    rep_id=rep,
                    amount_minor=round(float(list_price or 0) * 100),
                    product=row["product"],
                    segment=sector.get(row["account"], ""),
                )
            )
            report.events["opportunity.created"] += 1
            if stage not in ("Won", "Lost"):
                continue
            if not row["close_date"]:
                report.skipped[f"{stage} without close_date"] += 1
                continue
            closed: dict[str, object] = {"outcome": stage.lower()}
            if stage == "Won":
                closed["amount_minor"] = round(float(row["close_value"] or 0) * 100)
            events.append(
                _event(
                    f"crm:{opp}:closed",
                    "opportunity.closed",
                    _instant(date.fromisoformat(row["close_date"]), zone),
                    opportunity_id=opp,
                    rep_id=rep,
                    **closed,
                )
            )
            report.events["opportunity.closed"] += 1
    return events, report


def csv_export(
    path: Path, mapping: CsvMapping, zone: str, now_ms: int, progress: Progress | None = None
) -> tuple[list[bytes], CsvReport]:
    """Map a CSV export's rows as ``mapping`` says, reading the file as a stream.

    ``progress`` counts rows, and tells the time left from the bytes read of the
    file's size. A missing column, a file that is not UTF-8 or not CSV is a
    ``BackfillError``.
    """
    with (
        reporting(progress or NoProgress()) as shown,
        path.open("rb") as raw,
        io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text,
    ):
        size = os.fstat(raw.fileno()).st_size or None  # none: a pipe, no time left to tell
        reader = csv.DictReader(text)

        def rows() -> Iterator[dict[str, str | None]]:
            for n, row in enumerate(reader, 1):
                yield row
                shown.update(n, raw.tell(), size)

        try:
            missing = mapping.columns() - set(reader.fieldnames or ())
            if missing:
                raise BackfillError(
                    f"{path}: no column {sorted(missing)[0]!r} (the mapping uses it)"
                )
            found = map_rows(rows(), mapping, zone, now_ms)
        except UnicodeDecodeError:
            raise BackfillError(
                f"{path}, near line {reader.line_num + 1}: not UTF-8 text (export it as UTF-8)"
            ) from None
        except csv.Error as exc:
            raise BackfillError(f"{path}, line {reader.line_num}: not CSV: {exc}") from None
    return found


def in_time_order(events: list[bytes]) -> list[bytes]:
    """The directory first, then every other event by ``occurred_at`` (ties keep the
    export's order). An export is rarely in time order (the CRM set goes by opportunity, a
    year of engage and close dates mixed), and an event more than the lateness horizon older
    than one before it on its partition would be dead-lettered as too late
    (docs/lateness.md); in time order none is. A record without a readable time goes first:
    ingest dead-letters it whatever its place."""

    def key(value: bytes) -> tuple[int, int]:
        if orjson.loads(value).get("type") in ("team.upserted", "rep.upserted"):
            return (0, 0)
        at = occurred_at_ms(value)
        return (1, -1 if at is None else at)

    return sorted(events, key=key)


def directory_ids(events: list[bytes]) -> set[str]:
    """The rep ids a backfill's directory events define."""
    out = set()
    for value in events:
        document = orjson.loads(value)
        if document["type"] == "rep.upserted":
            out.add(document["rep_id"])
    return out
