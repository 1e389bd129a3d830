"""Targets files: each kind of mistake has its own message; lookups prefer the exact id."""

from __future__ import annotations

import pytest

from projections.targets import Target, TargetsError, parse_targets

pytestmark = pytest.mark.unit

GOOD = """
[[target]]
kpi = "speed_to_lead_seconds"
scope = "team"
id = "*"
window = "today"
target = 300
direction = "lower"
warning = 600
critical = 900

[[target]]
kpi = "speed_to_lead_seconds"
scope = "team"
id = "emea"
window = "today"
target = 120
direction = "lower"

[[target]]
kpi = "win_rate"
scope = "org"
window = "30d"
target = 0.3
direction = "higher"
warning = 0.25
critical = 0.2

[[target]]
kpi = "activities"
label = "total"
scope = "rep"
id = "*"
window = "today"
target = 40
direction = "higher"
"""


def test_a_good_file_parses_and_the_exact_id_beats_the_wildcard() -> None:
    targets = parse_targets(GOOD)
    assert len(targets.items) == 4
    emea = targets.find("speed_to_lead_seconds", "team", "emea", "today")
    assert emea is not None and emea.target == 120
    apac = targets.find("speed_to_lead_seconds", "team", "apac", "today")
    assert apac is not None and apac.target == 300 and apac.scope_id == "*"
    assert targets.find("speed_to_lead_seconds", "team", "apac", "week") is None
    org = targets.find("win_rate", "org", "", "30d")
    assert org is not None and org.scope_id == ""
    assert targets.find("activities", "rep", "r1", "today", "total") is not None
    assert targets.find("activities", "rep", "r1", "today", "call") is None


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (None, None),
        (0.35, "met"),
        (0.3, "met"),
        (0.29, "missed"),
        (0.25, "missed"),
        (0.24, "warning"),
        (0.19, "critical"),
    ],
)
def test_status_of_a_higher_is_better_kpi(value: float | None, status: str | None) -> None:
    target = Target("win_rate", "org", "", "30d", None, 0.3, "higher", 0.25, 0.2)
    assert target.status(value) == status


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (100, "met"),
        (300, "met"),
        (301, "missed"),
        (601, "warning"),
        (900, "warning"),
        (901, "critical"),
    ],
)
def test_status_of_a_lower_is_better_kpi(value: float, status: str) -> None:
    target = Target("speed_to_lead_seconds", "team", "*", "today", None, 300, "lower", 600, 900)
    assert target.status(value) == status


def _one(body: str) -> str:
    base = {
        "kpi": '"win_rate"',
        "scope": '"team"',
        "id": '"emea"',
        "window": '"today"',
        "target": "0.3",
        "direction": '"higher"',
    }
    for line in body.strip().splitlines():
        name, _, value = line.partition("=")
        if value.strip() == "DROP":
            base.pop(name.strip())
        else:
            base[name.strip()] = value.strip()
    return "[[target]]\n" + "\n".join(f"{k} = {v}" for k, v in base.items()) + "\n"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('kpi = "win_rates"', "target 1: unknown KPI 'win_rates'"),
        ('scope = "region"', "target 1: unknown scope 'region': use one of org, team"),
        ('window = "fortnight"', "target 1: unknown window 'fortnight': use one of 15m"),
        ('target = "high"', "target 1: target must be a number, not 'high'"),
        ("target = -1", "target 1: target must not be negative, not -1"),
        ("target = nan", "target 1: target must be a number, not nan"),
        ("target = true", "target 1: target must be a number, not True"),
        ("target = DROP", "target 1: missing target"),
        ("kpi = DROP", "target 1: missing kpi"),
        ('direction = "up"', 'target 1: direction must be "higher" or "lower", not \'up\''),
        ("id = DROP", 'target 1: missing id: a team id, or "*" for every team'),
        ('scope = "org"', "target 1: the org scope has no id"),
        ('colour = "red"', "target 1: unknown field 'colour'"),
        ('label = "total"', "target 1: win_rate has no labels: remove label"),
        ('kpi = "activities"', 'target 1: activities has labels: name one with label = "..."'),
        ("warning = 0.4", "target 1: warning (0.4) must not be above target (0.3)"),
        (
            "warning = 0.2\ncritical = 0.25",
            "target 1: critical (0.25) must not be above warning (0.2) when higher is better",
        ),
    ],
)
def test_each_mistake_has_its_own_message(change: str, message: str) -> None:
    with pytest.raises(TargetsError) as caught:
        parse_targets(_one(change))
    assert len(caught.value.problems) == 1, caught.value.problems
    assert caught.value.problems[0].startswith(message), caught.value.problems


def test_lower_is_better_thresholds_must_rise() -> None:
    text = _one('kpi = "speed_to_lead_seconds"\ndirection = "lower"\ntarget = 300\nwarning = 200')
    with pytest.raises(TargetsError, match=r"warning \(200\) must not be below target \(300\)"):
        parse_targets(text)


def test_every_problem_is_reported_and_duplicates_are_named() -> None:
    text = _one('kpi = "nope"') + _one('window = "never"') + _one("") + _one("")
    with pytest.raises(TargetsError) as caught:
        parse_targets(text)
    assert caught.value.problems == [
        "target 1: unknown KPI 'nope'",
        "target 2: unknown window 'never': use one of 15m, 1h, 24h, 7d, 30d, today, week, "
        "month, quarter, year, all",
        "target 4: the same KPI, scope, id and window as target 3",
    ]


def test_broken_toml_and_wrong_tables_are_one_line_each() -> None:
    with pytest.raises(TargetsError, match=r"^not valid TOML: .*line 1"):
        parse_targets("[[target]\nkpi = 1")
    with pytest.raises(TargetsError) as caught:
        parse_targets('[goal]\nkpi = "x"\n')
    assert caught.value.problems == ["unknown table 'goal': use [[target]]"]
    with pytest.raises(TargetsError, match="array of tables"):
        parse_targets('[target]\nkpi = "x"\n')


def test_an_empty_file_has_no_targets() -> None:
    assert parse_targets("").items == ()


def test_the_example_file_is_valid() -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "deploy" / "targets.example.toml"
    targets = parse_targets(example.read_text())
    assert targets.find("revenue_won", "rep", "any-rep", "month") is not None
