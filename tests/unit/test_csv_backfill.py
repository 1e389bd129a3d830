"""The generic CSV backfill: a deals export and a mapping file -> canonical events."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from adapters.csv_mapping import CsvMappingError, CsvReport, map_rows, parse_csv_mapping
from streams.backfill import BackfillError, csv_export

pytestmark = pytest.mark.unit

EXPORT = "\n".join(
    [
        "Deal ID,Deal Name,Deal Owner,Deal Stage,Amount,Pipeline,Deal Type,Create Date,Close Date",
        'D-1,Acme renewal,Ada Lovelace,Closed Won,"1,250.50",Sales,Existing Business,'
        "2026-03-02 09:15,2026-04-10 16:00",
        "D-2,Globex,Alan Turing,Closed Lost,800,Sales,New Business,"
        "2026-03-05 11:00,2026-04-01 10:30",
        "D-3,Initech,Ada Lovelace,Negotiation,3000,Sales,New Business,2026-03-09 14:00,",
        "D-4,Umbrella,Grace Hopper,Closed Won,500,Sales,New Business,"
        "2026-03-10 08:00,2026-03-30 12:00",
        "D-5,Hooli,Alan Turing,Closed Won,,Sales,New Business,2026-03-11 08:00,2026-03-31 12:00",
    ]
)
MAPPING = """
[[event]]
type = "opportunity.created"
id = ["Deal ID"]
occurred_at = { column = "Create Date", format = "%Y-%m-%d %H:%M" }
[event.fields]
opportunity_id = { column = "Deal ID" }
rep_id = { column = "Deal Owner", map = "reps" }
amount_minor = { column = "Amount", money = true }
product = { column = "Pipeline" }
segment = { column = "Deal Type" }

[[event]]
type = "opportunity.closed"
id = ["Deal ID"]
occurred_at = { column = "Close Date", format = "%Y-%m-%d %H:%M" }
when = { column = "Deal Stage", in = ["Closed Won", "Closed Lost"] }
[event.fields]
opportunity_id = { column = "Deal ID" }
rep_id = { column = "Deal Owner", map = "reps" }
outcome = { column = "Deal Stage", map = "outcomes" }
amount_minor = { column = "Amount", money = true }

[maps.reps]
"Ada Lovelace" = "rep-01"
"Alan Turing" = "rep-02"

[maps.outcomes]
"Closed Won" = "won"
"Closed Lost" = "lost"
"""
NOW_MS = 1_795_000_000_000


def rows() -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(EXPORT)))


def test_a_deals_export_becomes_created_and_closed_opportunities() -> None:
    events, report = map_rows(rows(), parse_csv_mapping(MAPPING), "Europe/Berlin", NOW_MS)
    decoded = [orjson.loads(e) for e in events]
    assert report.rows == 5
    assert report.events == {"opportunity.created": 3, "opportunity.closed": 2}
    # D-4's owner is in no map; D-5 has no amount: reported per event, not dropped silently.
    assert report.skipped == {
        "opportunity.created: 'Grace Hopper' not in [maps.reps]": 1,
        "opportunity.closed: 'Grace Hopper' not in [maps.reps]": 1,
        "opportunity.created: empty Amount": 1,
        "opportunity.closed: empty Amount": 1,
    }
    won = next(e for e in decoded if e["type"] == "opportunity.closed" and e["outcome"] == "won")
    assert won["opportunity_id"] == "D-1" and won["amount_minor"] == 125_050
    assert won["occurred_at"] == "2026-04-10T14:00:00.000+00:00"  # 16:00 in Berlin (CEST)
    assert won["source"] == "csv"
    again, _ = map_rows(rows(), parse_csv_mapping(MAPPING), "Europe/Berlin", NOW_MS)
    assert again == events  # same ids on a second import: it deduplicates


def test_every_problem_of_a_csv_mapping_is_reported() -> None:
    with pytest.raises(CsvMappingError) as caught:
        parse_csv_mapping(
            """
[[event]]
type = "deal.won"
[[event]]
type = "lead.created"
id = "Lead"
[event.fields]
origin = { column = "Origin", map = "origins" }
lead_source = { constant = "web" }
"""
        )
    assert len(caught.value.problems) == 5, caught.value.problems
    with pytest.raises(CsvMappingError, match="nothing to map"):
        parse_csv_mapping("")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "backfill", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_csv_backfill_command(tmp_path: Path) -> None:
    export, mapping, out = tmp_path / "deals.csv", tmp_path / "map.toml", tmp_path / "out.jsonl"
    export.write_text(EXPORT)
    mapping.write_text(MAPPING)
    done = cli(
        "csv", str(export), "--mapping", str(mapping), "--zone", "Europe/Berlin", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "events opportunity.closed: 2" in done.stdout
    assert len(out.read_text().splitlines()) == 5
    for args, message in [
        (["csv", str(export)], "needs --mapping"),
        (["csv", str(tmp_path / "none.csv"), "--mapping", str(mapping)], "no such file"),
        (["csv", str(export), "--mapping", str(export)], "not TOML"),
    ]:
        failed = cli(*args)
        assert failed.returncode == 2 and message in failed.stderr, failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1
    other = tmp_path / "other.csv"
    other.write_text("Deal ID,Owner\nD-1,x\n")
    failed = cli("csv", str(other), "--mapping", str(mapping))
    assert failed.returncode == 2 and "no column" in failed.stderr


def one_field(spec: str, row: dict[str, str], when: str = "") -> tuple[object, CsvReport]:
    """Map one row with a mapping whose campaign.spend event takes amount_minor as ``spec``
    says; returns the amount (or None) and the report."""
    mapping = parse_csv_mapping(
        f"""
[[event]]
type = "campaign.spend"
id = ["id"]
occurred_at = {{ column = "at", format = ["%m/%d/%Y %I:%M %p", "%m/%d/%Y"] }}
{when}
[event.fields]
campaign_id = {{ column = "campaign", case_safe_id = true, prefix = "sf-" }}
amount_minor = {spec}
"""
    )
    events, report = map_rows(
        [{"id": "1", "at": "3/9/2024", "campaign": "a0D30000001n7Pi", **row}],
        mapping,
        "UTC",
        NOW_MS,
    )
    return (orjson.loads(events[0]).get("amount_minor") if events else None), report


@pytest.mark.parametrize(
    ("cell", "minor"),
    [
        ("12500", 1_250_000),
        ("42000.5", 4_200_050),
        ("$12,500.00", 1_250_000),
        ("USD 12,500.00", 1_250_000),
        ("12,500.00 USD", 1_250_000),
        ("€1,218,000.99", 121_800_099),
        ("£ 7.5", 750),
        (".5", 50),
    ],
)
def test_money_as_exports_print_it(cell: str, minor: int) -> None:
    amount, report = one_field('{ column = "Amount", money = true }', {"Amount": cell})
    assert amount == minor, report.skipped


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        # Decimal commas and other groupings are refused, not read as thousands.
        ("1,25", "Amount '1,25' is not an amount"),
        ("12.500,00", "Amount '12.500,00' is not an amount"),
        ("USD 5 EUR", "Amount 'USD 5 EUR' is not an amount"),
        ("EUR 9,000.00", "Amount 'EUR 9,000.00' is not in USD"),
        ("n/a", "Amount 'n/a' is not an amount"),
        ("", "empty Amount"),
    ],
)
def test_money_that_is_not_an_amount_is_reported(cell: str, reason: str) -> None:
    spec = '{ column = "Amount", money = true, currency = "USD" }'
    amount, report = one_field(spec, {"Amount": cell})
    assert amount is None
    assert report.skipped == {f"campaign.spend: {reason}": 1}


def test_an_empty_cell_can_be_optional_or_have_a_default() -> None:
    # amount_minor is required: left out, the contract refuses the event (and says why).
    spec = '{ column = "Amount", money = true, optional = true }'
    amount, report = one_field(spec, {"Amount": ""})
    assert amount is None and report.skipped == {"campaign.spend: missing_field": 1}
    amount, report = one_field('{ column = "Amount", money = true, default = 0 }', {"Amount": ""})
    assert amount == 0 and report.events == {"campaign.spend": 1}
    amount, _ = one_field('{ column = "Amount", money = true, default = 0 }', {"Amount": "2"})
    assert amount == 200


def test_dates_in_several_formats_and_salesforce_ids() -> None:
    _, report = one_field("{ value = 1 }", {"at": "3/9/2024 2:05 PM"})
    assert report.events == {"campaign.spend": 1}
    _, report = one_field("{ value = 1 }", {"at": "2024-03-09"})
    assert report.skipped == {"campaign.spend: at '2024-03-09' is not a date": 1}
    mapping = parse_csv_mapping(
        """
[[event]]
type = "campaign.spend"
id = ["id"]
occurred_at = { column = "at" }
[event.fields]
campaign_id = { column = "campaign", case_safe_id = true, prefix = "sf-" }
amount_minor = { value = 1 }
"""
    )
    rows = [
        {"id": "1", "at": "2024-03-09T10:00:00+01:00", "campaign": "a0D30000001n7Pi"},
        {"id": "2", "at": "2024-03-09T10:00:00", "campaign": "a0D30000001n7PiEAI"},
        {"id": "3", "at": "2024-03-09T10:00:00", "campaign": "a0D30000001n7"},
    ]
    events, report = map_rows(rows, mapping, "UTC", NOW_MS)
    decoded = [orjson.loads(e) for e in events]
    # The 18-character form Salesforce documents for a0D30000001n7Pi.
    assert [e["campaign_id"] for e in decoded] == ["sf-a0D30000001n7PiEAI"] * 2
    assert decoded[0]["occurred_at"] == "2024-03-09T09:00:00.000+00:00"
    assert report.skipped == {"campaign.spend: campaign 'a0D30000001n7' is not a Salesforce id": 1}


def test_when_a_pattern_and_rows_no_event_applies_to() -> None:
    when = 'when = { column = "id", matches = "[0-9]+" }'
    _, report = one_field("{ value = 1 }", {"id": "Generated By: Ada"}, when)
    assert report.rows == 1 and report.unmatched == 1 and not report.events
    assert "rows no [[event]] applies to: 1" in report.lines()
    _, report = one_field("{ value = 1 }", {"id": "42"}, when)
    assert report.unmatched == 0 and report.events == {"campaign.spend": 1}
    assert not any("applies to" in line for line in report.lines())


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ('amount_minor = { column = "A", currency = "USD" }', "currency is an ISO 4217 code"),
        ('amount_minor = { column = "A", money = true, currency = "usd" }', "ISO 4217"),
        ('amount_minor = { column = "A", money = "yes" }', "money of the wrong type"),
        ('amount_minor = { column = "A", money = true, seconds = true }', "do not combine"),
        ('campaign_id = { column = "A", map = "m", prefix = "x-" }', "prefix is for text"),
        ('campaign_id = { column = "A", optional = true, default = "" }', "not both"),
        ('campaign_id = { value = "c", prefix = "x-" }', "a value is a constant"),
        ('campaign_id = { column = "A", value = "c" }', "needs a column or a value"),
    ],
)
def test_field_keys_that_do_not_fit_are_reported(fields: str, problem: str) -> None:
    text = f"""
[[event]]
type = "campaign.spend"
id = ["id"]
occurred_at = {{ column = "at" }}
[event.fields]
{fields}
[maps.m]
a = "b"
"""
    with pytest.raises(CsvMappingError) as caught:
        parse_csv_mapping(text)
    assert len(caught.value.problems) == 1 and problem in caught.value.problems[0]


@pytest.mark.parametrize(
    ("when", "problem"),
    [
        ('{ column = "S", in = ["a"], matches = "a" }', "either an in list or matches"),
        ('{ column = "S" }', "either an in list or matches"),
        ('{ column = "S", matches = "(" }', "is not a regular expression"),
        ('{ column = "S", in = "a" }', "must be a list"),
    ],
)
def test_a_when_that_does_not_fit_is_reported(when: str, problem: str) -> None:
    text = f"""
[[event]]
type = "campaign.spend"
id = ["id"]
occurred_at = {{ column = "at", format = 5 }}
when = {when}
"""
    with pytest.raises(CsvMappingError) as caught:
        parse_csv_mapping(text)
    assert [p for p in caught.value.problems if problem in p], caught.value.problems
    assert any("format must be" in p for p in caught.value.problems)


def test_an_export_that_is_not_utf8_or_lacks_a_column(tmp_path: Path) -> None:
    mapping = parse_csv_mapping(MAPPING)
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(EXPORT.replace("Ada Lovelace", "Zoë Lovelace").encode("latin-1"))
    with pytest.raises(BackfillError, match="not UTF-8 text"):
        csv_export(latin, mapping, "UTC", NOW_MS)
    short = tmp_path / "short.csv"
    short.write_text("Deal ID,Owner\nD-1,x\n")
    with pytest.raises(BackfillError, match="no column 'Amount'"):
        csv_export(short, mapping, "UTC", NOW_MS)
    (tmp_path / "map.toml").write_text(MAPPING)
    done = cli("csv", str(latin), "--mapping", str(tmp_path / "map.toml"))
    assert done.returncode == 2 and "not UTF-8 text" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("event = 5", "events are [[event]] tables"),
        (
            '[[event]]\ntype = "campaign.spend"\nid = ["a"]\noccurred_at = { column = "t" }\n'
            'when = "x"\nfields = 3\n',
            "[event.fields] must be a table",
        ),
    ],
)
def test_a_mapping_of_the_wrong_shape_is_reported(text: str, problem: str) -> None:
    with pytest.raises(CsvMappingError) as caught:
        parse_csv_mapping(text)
    assert problem in caught.value.problems[-1], caught.value.problems
