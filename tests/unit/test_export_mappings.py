"""The example mappings of deploy/csv/ on exports shaped like HubSpot's and Salesforce's.

Every expected event below is written out by hand from the sample rows of
tests/data/exports/ (times converted from the export's zone by hand), not
computed by the adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.csv_mapping import CsvReport, parse_csv_mapping
from projections.validation import Rejection, parse_event
from streams.backfill import csv_export

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXPORTS = ROOT / "tests" / "data" / "exports"
NOW_MS = 1_795_000_000_000  # 2026-11-18


def backfill(export: str, mapping: str, zone: str) -> tuple[list[dict[str, Any]], CsvReport]:
    parsed = parse_csv_mapping((ROOT / "deploy" / "csv" / mapping).read_text())
    values, report = csv_export(EXPORTS / export, parsed, zone, NOW_MS)
    for value in values:
        assert not isinstance(parse_event(value, now_ms=NOW_MS), Rejection), value
    return [orjson.loads(v) for v in values], report


def created(opp: str, rep: str, amount: int | None, at: str, product: str | None) -> dict[str, Any]:
    """Contract 1.1: amount and product are left out when the export has none."""
    fields = {"amount_minor": amount} if amount is not None else {}
    fields |= {"product": product} if product is not None else {}
    return {
        "type": "opportunity.created",
        "opportunity_id": opp,
        "rep_id": rep,
        **fields,
        "occurred_at": at,
    }


def closed(opp: str, rep: str, outcome: str, amount: int | None, at: str) -> dict[str, Any]:
    fields = {"amount_minor": amount} if amount is not None else {}
    return {
        "type": "opportunity.closed",
        "opportunity_id": opp,
        "rep_id": rep,
        "outcome": outcome,
        **fields,
        "occurred_at": at,
    }


def without_envelope(event: dict[str, Any]) -> dict[str, Any]:
    assert event["source"] == "csv" and event["schema_version"] == 1
    assert event["event_id"].startswith("csv:")
    return {k: v for k, v in event.items() if k not in ("event_id", "source", "schema_version")}


# America/New_York: EST (-05:00) until 2024-03-10, EDT (-04:00) from then on.
HS = "hubspot-deal-153382630"
HUBSPOT = [
    created(f"{HS}81", "rep-01", 1_250_000, "2024-01-08T14:14:00.000+00:00", "Sales Pipeline"),
    closed(f"{HS}81", "rep-01", "won", 1_250_000, "2024-02-14T21:30:00.000+00:00"),
    created(f"{HS}82", "rep-02", 800_000, "2024-01-10T19:30:00.000+00:00", "Sales Pipeline"),
    closed(f"{HS}82", "rep-02", "lost", 800_000, "2024-02-20T16:05:00.000+00:00"),
    created(f"{HS}83", "rep-01", 4_200_050, "2024-01-15T15:00:00.000+00:00", "Sales Pipeline"),
    # 84: lost without an amount. 85: owner not in [maps.reps]: nothing.
    created(f"{HS}84", "rep-03", None, "2024-01-22T13:20:00.000+00:00", "Sales Pipeline"),
    closed(f"{HS}84", "rep-03", "lost", None, "2024-03-01T14:45:00.000+00:00"),
    created(f"{HS}86", "rep-02", 500_000, "2024-02-05T18:10:00.000+00:00", "Sales Pipeline"),
    created(f"{HS}87", "rep-03", 1_500_000, "2024-02-12T16:45:00.000+00:00", "Sales Pipeline"),
    created(f"{HS}88", "rep-03", 749_999, "2024-02-19T15:30:00.000+00:00", "Sales Pipeline"),
    closed(f"{HS}88", "rep-03", "won", 749_999, "2024-03-28T19:20:00.000+00:00"),
    created(f"{HS}89", "rep-01", 2_200_000, "2024-03-04T21:00:00.000+00:00", "Sales Pipeline"),
    created(f"{HS}90", "rep-02", 1_800_000, "2024-03-05T14:30:00.000+00:00", "Renewals"),
    closed(f"{HS}90", "rep-02", "won", 1_800_000, "2024-03-29T14:00:00.000+00:00"),
    created(f"{HS}91", "rep-01", 6_400_000, "2024-03-11T12:15:00.000+00:00", "Sales Pipeline"),
    created(f"{HS}92", "rep-02", 320_000, "2024-03-12T17:00:00.000+00:00", "Sales Pipeline"),
    closed(f"{HS}92", "rep-02", "lost", 320_000, "2024-03-20T18:00:00.000+00:00"),
    # 93: won without an amount (EDT from 2024-03-10 on).
    created(f"{HS}93", "rep-03", None, "2024-03-14T14:00:00.000+00:00", "Sales Pipeline"),
    closed(f"{HS}93", "rep-03", "won", None, "2024-03-27T15:00:00.000+00:00"),
    created(f"{HS}94", "rep-01", 250_000, "2024-03-25T18:05:00.000+00:00", "Renewals"),
]


def test_the_hubspot_deals_mapping() -> None:
    events, report = backfill(
        "hubspot-crm-exports-all-deals-2024-04-01.csv", "hubspot-deals.toml", "America/New_York"
    )
    assert [without_envelope(e) for e in events] == HUBSPOT
    assert len({e["event_id"] for e in events}) == 20  # one id per event
    assert report.rows == 14 and report.unmatched == 0
    assert report.events == {"opportunity.created": 13, "opportunity.closed": 7}
    assert report.skipped == {
        "opportunity.created: 'Katherine Johnson' not in [maps.reps]": 1,
        "opportunity.closed: 'Katherine Johnson' not in [maps.reps]": 1,
    }


# America/Los_Angeles: PST (-08:00) until 2024-03-10, PDT (-07:00) from then on. Dates
# only: midnight there. Ids: the 15-character ids of the report with their case-safe
# suffix (capitals of each group of five -> A-Z0-5), worked out by hand.
SF = "salesforce-0065g0000"
NEW, UPGRADE, DOWNGRADE = (
    "New Customer",
    "Existing Customer - Upgrade",
    "Existing Customer - Downgrade",
)
SALESFORCE = [
    created(f"{SF}0AbC1DAAV", "rep-01", 1_250_000, "2024-01-08T08:00:00.000+00:00", UPGRADE),
    closed(f"{SF}0AbC1DAAV", "rep-01", "won", 1_250_000, "2024-02-14T08:00:00.000+00:00"),
    created(f"{SF}0AbC2EAAV", "rep-02", 800_000, "2024-01-10T08:00:00.000+00:00", NEW),
    closed(f"{SF}0AbC2EAAV", "rep-02", "lost", 800_000, "2024-02-20T08:00:00.000+00:00"),
    created(f"{SF}0AbC3FAAV", "rep-01", 4_200_050, "2024-01-15T08:00:00.000+00:00", NEW),
    created(f"{SF}0AbC4GAAV", "rep-03", None, "2024-01-22T08:00:00.000+00:00", NEW),
    closed(f"{SF}0AbC4GAAV", "rep-03", "lost", None, "2024-03-01T08:00:00.000+00:00"),
    created(f"{SF}0aBc6iAAC", "rep-02", 500_000, "2024-02-05T08:00:00.000+00:00", None),  # no Type
    created(f"{SF}0aBc7JAAS", "rep-03", 1_500_000, "2024-02-12T08:00:00.000+00:00", NEW),
    created(f"{SF}0QrS8tAAF", "rep-03", 749_999, "2024-02-19T08:00:00.000+00:00", NEW),
    closed(f"{SF}0QrS8tAAF", "rep-03", "won", 749_999, "2024-03-28T07:00:00.000+00:00"),
    created(f"{SF}0QrS9uAAF", "rep-01", 2_200_000, "2024-03-04T08:00:00.000+00:00", NEW),
    created(f"{SF}1ZzZ0aAAF", "rep-02", 121_800_000, "2024-03-05T08:00:00.000+00:00", UPGRADE),
    closed(f"{SF}1ZzZ0aAAF", "rep-02", "won", 121_800_000, "2024-03-29T07:00:00.000+00:00"),
    created(f"{SF}1zzz1BAAQ", "rep-01", 6_400_000, "2024-03-11T07:00:00.000+00:00", NEW),
    created(f"{SF}1MnO2pAAF", "rep-02", 320_000, "2024-03-12T07:00:00.000+00:00", DOWNGRADE),
    closed(f"{SF}1MnO2pAAF", "rep-02", "lost", 320_000, "2024-03-20T07:00:00.000+00:00"),
    created(f"{SF}1MnO3QAAV", "rep-03", 975_000, "2024-03-18T07:00:00.000+00:00", NEW),
    created(f"{SF}1XyZ4wAAF", "rep-01", 250_000, "2024-03-25T07:00:00.000+00:00", NEW),
]


def test_the_salesforce_opportunities_mapping() -> None:
    events, report = backfill(
        "salesforce-opportunities-report.csv",
        "salesforce-opportunities.toml",
        "America/Los_Angeles",
    )
    assert [without_envelope(e) for e in events] == SALESFORCE
    assert len({e["event_id"] for e in events}) == 19
    assert report.rows == 20
    assert report.unmatched == 6  # the export's footer: blank, "Generated By", copyright...
    assert report.events == {"opportunity.created": 13, "opportunity.closed": 6}
    assert report.skipped == {
        "opportunity.created: 'Katherine Johnson' not in [maps.reps]": 1,
        "opportunity.closed: 'Katherine Johnson' not in [maps.reps]": 1,
    }


def test_a_second_import_makes_the_same_ids() -> None:
    first, _ = backfill(
        "salesforce-opportunities-report.csv",
        "salesforce-opportunities.toml",
        "America/Los_Angeles",
    )
    again, _ = backfill(
        "salesforce-opportunities-report.csv",
        "salesforce-opportunities.toml",
        "America/Los_Angeles",
    )
    assert [e["event_id"] for e in again] == [e["event_id"] for e in first]
    # The created and the closed event of one deal are two events.
    won = [e["event_id"] for e in first if e["opportunity_id"].endswith("0AbC1DAAV")]
    assert len(set(won)) == 2
