"""KPI targets: what good looks like, per KPI, scope and window. Pure: text in, targets out.

A targets file is TOML, one ``[[target]]`` table per target::

    [[target]]
    kpi = "speed_to_lead_seconds"
    scope = "team"            # org, team, rep, campaign or queue
    id = "emea"               # "*" for every id of the scope; omitted for org
    window = "today"
    target = 300
    direction = "lower"       # which way is better: "higher" or "lower"
    warning = 600             # optional: past this the KPI is in warning
    critical = 900            # optional: past this, critical

A KPI's status against its target is ``met``, ``missed``, ``warning`` or ``critical``.

KPIs with a label (``activities``, the shares) name it: ``label = "total"``.
Every problem in a file is reported, one line each, naming the target and field.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass

from projections.catalogue import CATALOGUE, SCOPES, Figure, Result
from projections.errors import ProblemsError
from projections.windows import WINDOWS

LABELLED = frozenset(kpi.id for kpi in CATALOGUE if kpi.label)
# The revenue target a scope's quota attainment is measured against.
QUOTA_KPI = "revenue_won"
(QUOTA_ATTAINMENT,) = (kpi.id for kpi in CATALOGUE if kpi.source == "target")
TARGETABLE = tuple(kpi.id for kpi in CATALOGUE)
FIELDS = {"kpi", "scope", "id", "window", "label", "target", "direction", "warning", "critical"}
ANY_ID = "*"


class TargetsError(ProblemsError, ValueError):
    """A targets file with problems; ``problems`` has one line per problem."""


@dataclass(frozen=True)
class Target:
    kpi: str
    scope: str
    scope_id: str  # "" for org, ANY_ID for every id of the scope
    window: str
    label: str | None
    target: float
    direction: str  # "higher" or "lower"
    warning: float | None = None
    critical: float | None = None

    def status(self, value: float | None) -> str | None:
        """``met``, ``missed``, ``warning`` (past the warning threshold) or ``critical`` (past
        the critical one); None when there is no value."""
        if value is None:
            return None

        def past(threshold: float | None) -> bool:
            if threshold is None:
                return False
            return value < threshold if self.direction == "higher" else value > threshold

        if past(self.critical):
            return "critical"
        if past(self.warning):
            return "warning"
        return "missed" if past(self.target) else "met"


@dataclass(frozen=True)
class Targets:
    items: tuple[Target, ...] = ()

    def find(
        self, kpi: str, scope: str, scope_id: str, window: str, label: str | None = None
    ) -> Target | None:
        """The target for one KPI of one scope id and window: an exact id beats ``*``."""
        wildcard = None
        for item in self.items:
            if (item.kpi, item.scope, item.window, item.label) != (kpi, scope, window, label):
                continue
            if item.scope_id == scope_id:
                return item
            if item.scope_id == ANY_ID:
                wildcard = item
        return wildcard


def quota_attainment(revenue_won: Figure, target: Target) -> Figure:
    """Revenue won ÷ the revenue target of the same scope and window (can exceed 1)."""
    goal = round(target.target)
    return Figure(revenue_won.numerator / goal if goal else None, revenue_won.numerator, goal)


def with_targets(
    kpis: Mapping[str, Result], targets: Targets, scope: str, scope_id: str, window: str
) -> dict[str, Result]:
    """The KPIs plus quota attainment, when the scope has a revenue target for the window."""
    out = dict(kpis)
    revenue = kpis.get(QUOTA_KPI)
    target = targets.find(QUOTA_KPI, scope, scope_id, window)
    if isinstance(revenue, Figure) and target is not None:
        out[QUOTA_ATTAINMENT] = quota_attainment(revenue, target)
    return out


def parse_targets(text: str) -> Targets:
    """Targets from TOML text; raises TargetsError listing every problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TargetsError([f"not valid TOML: {exc}"]) from None
    unknown_tables = set(document) - {"target"}
    problems = [f"unknown table {name!r}: use [[target]]" for name in sorted(unknown_tables)]
    tables = document.get("target", [])
    if not isinstance(tables, list):
        raise TargetsError([*problems, "target must be an array of tables: use [[target]]"])
    items: list[Target] = []
    seen: dict[tuple[str, str, str, str, str | None], int] = {}
    for number, table in enumerate(tables, start=1):
        item = _target(number, table, problems)
        if item is None:
            continue
        key = (item.kpi, item.scope, item.scope_id, item.window, item.label)
        if key in seen:
            problems.append(
                f"target {number}: the same KPI, scope, id and window as target {seen[key]}"
            )
            continue
        seen[key] = number
        items.append(item)
    if problems:
        raise TargetsError(problems)
    return Targets(tuple(items))


def _target(number: int, table: Mapping[str, object], problems: list[str]) -> Target | None:
    before = len(problems)

    def problem(text: str) -> None:
        problems.append(f"target {number}: {text}")

    for name in sorted(set(table) - FIELDS):
        problem(f"unknown field {name!r}")

    def text(name: str, required: bool = True) -> str | None:
        value = table.get(name)
        if value is None:
            if required:
                problem(f"missing {name}")
            return None
        if not isinstance(value, str):
            problem(f"{name} must be a string, not {value!r}")
            return None
        return value

    def number_(name: str, required: bool = False) -> float | None:
        value = table.get(name)
        if value is None:
            if required:
                problem(f"missing {name}")
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            problem(f"{name} must be a number, not {value!r}")
            return None
        if value < 0:
            problem(f"{name} must not be negative, not {value!r}")
            return None
        return float(value)

    kpi = text("kpi")
    if kpi is not None and kpi not in TARGETABLE:
        problem(f"unknown KPI {kpi!r}")
    scope = text("scope")
    if scope is not None and scope not in SCOPES:
        problem(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
    scope_id = text("id", required=False)
    if scope == "org" and scope_id not in (None, ""):
        problem("the org scope has no id")
    elif scope in SCOPES and scope != "org" and not scope_id:
        problem(f'missing id: a {scope} id, or "*" for every {scope}')
    window = text("window")
    if window is not None and window not in WINDOWS:
        problem(f"unknown window {window!r}: use one of {', '.join(WINDOWS)}")
    label = text("label", required=False)
    if kpi in LABELLED and label is None:
        problem(f'{kpi} has labels: name one with label = "..."')
    elif kpi not in LABELLED and kpi in TARGETABLE and label is not None:
        problem(f"{kpi} has no labels: remove label")
    goal = number_("target", required=True)
    direction = text("direction")
    if direction is not None and direction not in ("higher", "lower"):
        problem(f'direction must be "higher" or "lower", not {direction!r}')
    warning, critical = number_("warning"), number_("critical")
    if goal is not None and direction in ("higher", "lower"):
        # Worse means lower when higher is better, and higher when lower is better.
        sign = 1 if direction == "higher" else -1
        ordered = [("target", goal), ("warning", warning), ("critical", critical)]
        present = [(name, value) for name, value in ordered if value is not None]
        for (better, a), (worse, b) in itertools.pairwise(present):
            if sign * a < sign * b:
                side = "above" if direction == "higher" else "below"
                problem(
                    f"{worse} ({b:g}) must not be {side} {better} ({a:g}) "
                    f"when {direction} is better"
                )
    if len(problems) > before:
        return None
    assert kpi and scope and window and goal is not None and direction
    return Target(
        kpi=kpi,
        scope=scope,
        scope_id="" if scope == "org" else str(scope_id),
        window=window,
        label=label,
        target=goal,
        direction=direction,
        warning=warning,
        critical=critical,
    )
