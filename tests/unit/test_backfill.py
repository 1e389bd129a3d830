"""The CRM export mapping, on the real files and on a broken copy."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from projections.validation import Rejection, parse_event
from streams.backfill import BackfillError, crm_opportunities
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
