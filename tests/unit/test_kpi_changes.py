"""KPI change records: only changes, revisions per key, corrections, tombstones for labels."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from projections.catalogue import evaluate
from projections.kpi_changes import Change, LastState, changes, instance, record_key

pytestmark = pytest.mark.unit

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "kpi-change-v1.schema.json").read_text()
)
DAY = instance("D2026-11-20", 1_763_593_200_000, 1_763_679_600_000)  # Berlin day, in ms
ALL = instance("A", None, None)


def _apply(
    changed: list[Change],
    last: dict[str, LastState],
    labels: dict[str, frozenset[str]],
    sets: dict[str, frozenset[str]],
) -> None:
    for change in changed:
        last[change.key] = change.state
    labels.update(sets)


def test_keys_name_the_window_instance_and_the_label() -> None:
    assert DAY.token == "day@2026-11-20" and DAY.unit == "day"
    assert instance("W2026-W47", 0, 1).token == "week@2026-W47"
    assert record_key("activities", "rep", "r1", DAY.token, "call") == (
        "activities/rep/r1/day@2026-11-20/call"
    )
    assert record_key("win_rate", "org", "", "all", None) == "win_rate/org//all"


def test_first_publication_then_only_changes_with_growing_revisions() -> None:
    last: dict[str, LastState] = {}
    labels: dict[str, frozenset[str]] = {}
    kpis = evaluate("team", {"won": 1, "lost": 1, "revenue": 500}, {})
    first, sets = changes("team", "emea", DAY, kpis, last, labels, 0)
    by_key = {c.key: c for c in first}
    win = by_key["win_rate/team/emea/day@2026-11-20"]
    assert win.value is not None and (win.value["value"], win.value["revision"]) == (0.5, 1)
    assert win.value["correction"] is False
    jsonschema.validate(win.value, SCHEMA)
    # Nothing to say yet: no record for a KPI with no data (no calls, no leads).
    assert "abandonment_rate/team/emea/day@2026-11-20" not in by_key
    # Gauges are published under "all" only.
    assert not any(k.startswith("untouched_leads/") for k in by_key)
    _apply(first, last, labels, sets)

    again, _ = changes("team", "emea", DAY, kpis, last, labels, 0)
    assert again == []
    more = evaluate("team", {"won": 2, "lost": 1, "revenue": 900}, {})
    later, _ = changes("team", "emea", DAY, more, last, labels, 0)
    keys = {c.key: c.value for c in later}
    assert set(keys) == {
        "win_rate/team/emea/day@2026-11-20",
        "revenue_won/team/emea/day@2026-11-20",
        "win_loss_ratio/team/emea/day@2026-11-20",
        "average_deal_size/team/emea/day@2026-11-20",
    }
    assert all(v is not None and v["revision"] == 2 for v in keys.values())


def test_a_change_to_a_closed_window_already_published_is_a_correction() -> None:
    last: dict[str, LastState] = {}
    kpis = evaluate("team", {"won": 1, "lost": 1}, {})
    after_close = DAY.end_ms + 1  # type: ignore[operator]
    first, _ = changes("team", "emea", DAY, kpis, last, {}, after_close)
    assert all(c.value and c.value["correction"] is False for c in first)  # first publication
    for c in first:
        last[c.key] = c.state
    late = evaluate("team", {"won": 1, "lost": 2}, {})
    fixed, _ = changes("team", "emea", DAY, late, last, {}, after_close)
    assert fixed and all(c.value and c.value["correction"] for c in fixed)
    open_day, _ = changes("team", "emea", DAY, late, last, {}, DAY.end_ms - 1)  # type: ignore[operator]
    assert open_day and not any(c.value and c.value["correction"] for c in open_day)


def test_a_label_that_is_gone_gets_a_tombstone_and_comes_back_with_the_next_revision() -> None:
    last: dict[str, LastState] = {}
    labels: dict[str, frozenset[str]] = {}
    key = "lead_stage_share/team/emea/all/new"
    both = evaluate("team", {}, {"open_leads": 2, "stage|new": 1, "stage|contacted": 1})
    first, sets = changes("team", "emea", ALL, both, last, labels, 0)
    assert sets["lead_stage_share/team/emea/all"] == frozenset({"new", "contacted"})
    assert sets["activities/team/emea/all"] == frozenset({"call", "email", "meeting", "total"})
    _apply(first, last, labels, sets)
    one = evaluate("team", {}, {"open_leads": 1, "stage|contacted": 1})
    gone, sets = changes("team", "emea", ALL, one, last, labels, 0)
    tombstones = [c for c in gone if c.value is None]
    assert [c.key for c in tombstones] == [key]
    assert tombstones[0].state.revision == 1
    _apply(gone, last, labels, sets)
    back, sets = changes("team", "emea", ALL, both, last, labels, 0)
    returned = {c.key: c.value for c in back}
    assert returned[key] is not None and returned[key]["revision"] == 2
