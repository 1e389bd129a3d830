"""The generic CSV backfill: a deals export and a mapping file -> canonical events."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from adapters.csv_mapping import CsvMappingError, map_rows, parse_csv_mapping

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
