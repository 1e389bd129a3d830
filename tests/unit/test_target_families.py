"""Target metrics beside the exported KPIs: value, thresholds and where the KPI stands."""

from __future__ import annotations

import pytest

from exporters.families import target_families
from projections.catalogue import evaluate
from projections.read import Answer
from projections.targets import parse_targets, with_targets
from projections.windows import window_span

pytestmark = pytest.mark.unit

TARGETS = parse_targets(
    """
[[target]]
kpi = "win_rate"
scope = "team"
id = "*"
window = "today"
target = 0.3
direction = "higher"
warning = 0.25
critical = 0.2

[[target]]
kpi = "win_rate"
scope = "team"
id = "apac"
window = "today"
target = 0.1
direction = "higher"

[[target]]
kpi = "activities"
label = "total"
scope = "rep"
id = "*"
window = "today"
target = 10
direction = "higher"
warning = 5

[[target]]
kpi = "revenue_won"
scope = "team"
id = "emea"
window = "today"
target = 5000
direction = "higher"
"""
)


def _answer(scope: str, scope_id: str, sums: dict[str, int], window: str = "today") -> Answer:
    span = window_span(window, 1_790_000_000_000, "UTC")
    kpis = with_targets(evaluate(scope, sums, {}), TARGETS, scope, scope_id, window)
    return Answer(scope, scope_id, span, "UTC", kpis, sums)


def _samples(answers: list[tuple[Answer, str]]) -> dict[tuple[str, str, str, str], float]:
    out = {}
    for family in target_families(answers, TARGETS):
        for s in family.samples:
            out[(s.name, s.labels["team"] or "-", s.labels["rep"] or "-", s.labels["kpi"])] = (
                s.value
            )
    return out


def test_targets_thresholds_and_status_beside_each_scope() -> None:
    answers = [
        (_answer("team", "emea", {"won": 1, "lost": 4, "revenue": 4000}), ""),  # 20%
        (_answer("team", "apac", {"won": 1, "lost": 9}), ""),  # 10%: its own target, met
        (_answer("team", "amer", {"won": 1, "lost": 9}), ""),  # 10%: wildcard, critical
        (_answer("team", "anz", {}), ""),  # no closed deals: no status
        (_answer("rep", "r1", {"activity|kind=call": 7}), "emea"),  # 7 < 10, > 5: missed
        (_answer("team", "emea", {"won": 1}, window="week"), ""),  # no target for the week
    ]
    got = _samples(answers)
    assert got[("salespulse_kpi_target", "emea", "-", "win_rate")] == 0.3
    assert got[("salespulse_kpi_target_warning", "emea", "-", "win_rate")] == 0.25
    assert got[("salespulse_kpi_target_critical", "emea", "-", "win_rate")] == 0.2
    assert got[("salespulse_kpi_target_status", "emea", "-", "win_rate")] == 2  # at critical
    assert got[("salespulse_kpi_target", "apac", "-", "win_rate")] == 0.1
    assert ("salespulse_kpi_target_warning", "apac", "-", "win_rate") not in got
    assert got[("salespulse_kpi_target_status", "apac", "-", "win_rate")] == 0
    assert got[("salespulse_kpi_target_status", "amer", "-", "win_rate")] == 3
    assert ("salespulse_kpi_target_status", "anz", "-", "win_rate") not in got
    assert got[("salespulse_kpi_target", "anz", "-", "win_rate")] == 0.3
    assert got[("salespulse_kpi_target_status", "emea", "r1", "activities")] == 1
    assert got[("salespulse_kpi_target_status", "emea", "-", "revenue_won")] == 1  # 4000 < 5000
    assert len([k for k in got if k[1] == "emea" and k[3] == "win_rate"]) == 4  # only today


def test_quota_attainment_only_where_a_revenue_target_exists() -> None:
    emea = _answer("team", "emea", {"revenue": 4000})
    quota = emea.kpis["quota_attainment_ratio"]
    assert (quota.value, quota.numerator, quota.denominator) == (0.8, 4000, 5000)
    assert "quota_attainment_ratio" not in _answer("team", "apac", {"revenue": 4000}).kpis


def test_no_targets_no_families() -> None:
    assert target_families([(_answer("team", "emea", {}), "")], parse_targets("")) == []
