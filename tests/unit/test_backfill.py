"""The CRM export mapping, on the real files and on a broken copy."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from projections.lateness import DAY_MS, judge
from projections.validation import Rejection, parse_event
from streams.backfill import BackfillError, crm_opportunities, in_time_order
from tests.oracle import kafka_partition
from tests.support import RecordedProgress

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "crm-sales-opportunities"
NOW_MS = 1_795_420_800_000


@pytest.mark.skipif(not DATA.is_dir(), reason="the shared data set is not beside the checkout")
def test_real_export_maps_to_valid_events_and_reports_the_rest() -> None:
    events, report = crm_opportunities(DATA, "America/New_York")
    assert report.rows == 8_800
    assert report.skipped == {"no engage_date (Prospecting)": 500}
    assert report.events["opportunity.created"] == 8_300
    assert report.events["opportunity.closed"] == 4_238 + 2_473
    assert "unknown product, expected amount 0" not in report.warnings  # GTXPro = GTX Pro
    for value in events:
        assert not isinstance(parse_event(value, now_ms=NOW_MS), Rejection), value
    first = orjson.loads(events[0])
    assert first["type"] == "team.upserted" and first["timezone"] == "America/New_York"
    won = next(orjson.loads(v) for v in events if b'"1C1I7A6R"' in v and b"closed" in v)
    assert won["amount_minor"] == 105_400
    assert won["occurred_at"] == "2017-03-01T00:00:00-05:00"


def test_a_missing_file_or_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(BackfillError, match=r"sales_pipeline\.csv: no such file"):
        crm_opportunities(tmp_path, "UTC")
    (tmp_path / "sales_pipeline.csv").write_text("opportunity_id,sales_agent\nX,Y\n")
    with pytest.raises(BackfillError, match="missing column"):
        crm_opportunities(tmp_path, "UTC")


def test_progress_counts_the_deals_of_the_pipeline(tmp_path: Path) -> None:
    (tmp_path / "sales_pipeline.csv").write_text(
        "opportunity_id,sales_agent,product,account,deal_stage,engage_date,close_date,close_value\n"
        "A1,Ada Lovelace,GTX Basic,Acme,Won,2017-01-02,2017-02-03,550\n"
        "A2,Ada Lovelace,GTX Basic,Acme,Prospecting,,,\n"
        "A3,Alan Turing,GTX Basic,Acme,Engaging,2017-01-05,,\n"
    )
    (tmp_path / "sales_teams.csv").write_text(
        "sales_agent,manager,regional_office\nAda Lovelace,M,West\nAlan Turing,M,East\n"
    )
    (tmp_path / "accounts.csv").write_text("account,sector\nAcme,retail\n")
    (tmp_path / "products.csv").write_text("product,sales_price\nGTX Basic,550\n")
    progress = RecordedProgress()
    events, report = crm_opportunities(tmp_path, "UTC", progress)
    assert progress.updates == [(1, 1, 3), (2, 2, 3), (3, 3, 3)]
    assert progress.finished == [False]
    # two teams, two reps, two deals created, one closed
    assert report.events["opportunity.created"] == 2 and len(events) == 2 + 2 + 2 + 1


def _late_events(events: list[bytes], partitions: int) -> int:
    """Events the lateness rule (35 days) would dead-letter, were ``events`` produced in
    this order, keyed by subject, to ``partitions`` partitions."""
    streams: dict[int, list[tuple[int, int]]] = {}
    for offset, value in enumerate(events):
        event = parse_event(value, now_ms=NOW_MS)
        assert not isinstance(event, Rejection)
        p = kafka_partition(event.subject_id, partitions)
        streams.setdefault(p, []).append((offset, event.occurred_at_ms))
    return sum(len(judge(0, s, 35 * DAY_MS).late) for s in streams.values())


def test_a_backfill_goes_out_in_time_order_so_no_event_of_it_is_too_late(tmp_path: Path) -> None:
    """A pipeline export lists deals by id: engage and close dates a year apart, mixed. As
    read, many of its events would be too late behind one before them on their partition;
    the command sends them in time order (directory first), where none is."""
    rows = [
        f"D{n:03d},Ada Lovelace,GTX Basic,Acme,Won,"
        f"2016-{1 + (n * 7) % 12:02d}-{1 + n % 27:02d},2017-{1 + (n * 5) % 12:02d}-15,550"
        for n in range(120)
    ]
    (tmp_path / "sales_pipeline.csv").write_text(
        "opportunity_id,sales_agent,product,account,deal_stage,engage_date,close_date,close_value\n"
        + "\n".join(rows)
        + "\n"
    )
    (tmp_path / "sales_teams.csv").write_text(
        "sales_agent,manager,regional_office\nAda Lovelace,M,West\n"
    )
    (tmp_path / "accounts.csv").write_text("account,sector\nAcme,retail\n")
    (tmp_path / "products.csv").write_text("product,sales_price\nGTX Basic,550\n")
    events, _ = crm_opportunities(tmp_path, "UTC")
    assert _late_events(events, 1) > 50 and _late_events(events, 3) > 30
    ordered = in_time_order(events)
    assert sorted(ordered) == sorted(events)
    assert [orjson.loads(v)["type"] for v in ordered[:2]] == ["team.upserted", "rep.upserted"]
    assert _late_events(ordered, 1) == 0 and _late_events(ordered, 3) == 0
    times = [parse_event(v, now_ms=NOW_MS).occurred_at_ms for v in ordered[2:]]  # type: ignore[union-attr]
    assert times == sorted(times)
