"""The KPI catalogue: each KPI as a function of summed base fields. Pure.

Ratios are 0-1, money is in minor units, durations in seconds. A KPI whose
denominator is 0 has the value ``None``. KPIs with a label (``kind``,
``sentiment``, ``stage``, ``origin``) map each label value to its figure.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

from projections.contributions import SALES_CYCLE_BOUNDS, SPEED_TO_LEAD_BOUNDS


@dataclass(frozen=True, slots=True)
class Figure:
    value: float | int | None
    numerator: int
    denominator: int | None  # None for plain counts and sums


# The scopes a KPI is read for: the whole org, a team, a rep, a campaign, a queue.
SCOPES = ("org", "team", "rep", "campaign", "queue")

Sums = Mapping[str, int]
Result = Figure | dict[str, Figure]


def count(field: str) -> Callable[[Sums], Result]:
    return lambda s: Figure(s.get(field, 0), s.get(field, 0), None)


def ratio(numerator: str, *denominator: str, scale: float = 1.0) -> Callable[[Sums], Result]:
    def compute(s: Sums) -> Figure:
        top, bottom = s.get(numerator, 0), 0
        for name in denominator:  # a loop: a generator costs more than the sum of two
            bottom += s.get(name, 0)
        return Figure(top / bottom / scale if bottom else None, top, bottom)

    return compute


def ratio_of_difference(numerator: str, total: str, less: str) -> Callable[[Sums], Result]:
    """``numerator`` ÷ (``total`` - ``less``): e.g. revenue over the won deals whose amount is
    known."""

    def compute(s: Sums) -> Figure:
        top, bottom = s.get(numerator, 0), s.get(total, 0) - s.get(less, 0)
        return Figure(top / bottom if bottom else None, top, bottom)

    return compute


def labelled(prefix: str, denominator: str | None) -> Callable[[Sums], Result]:
    """One figure per label value of ``prefix<value>`` fields, as a share or a count."""

    def compute(s: Sums) -> dict[str, Figure]:
        out: dict[str, Figure] = {}
        for name, value in s.items():
            if name.startswith(prefix):
                label = name[len(prefix) :]
                if denominator is None:
                    out[label] = Figure(value, value, None)
                else:
                    bottom = s.get(denominator, 0)
                    out[label] = Figure(value / bottom if bottom else None, value, bottom)
        return dict(sorted(out.items()))

    return compute


def activities(s: Sums) -> dict[str, Figure]:
    kinds = {kind: s.get(f"activity|kind={kind}", 0) for kind in ("call", "email", "meeting")}
    out = {kind: Figure(n, n, None) for kind, n in kinds.items()}
    total = sum(kinds.values())
    out["total"] = Figure(total, total, None)
    return out


def histogram_mean(name: str, bounds: tuple[int, ...]) -> Callable[[Sums], Result]:
    """Mean seconds of a histogram kept as ``<name>_ms`` (sum) and ``<name>|le=<b>`` (counts)."""
    counts = tuple(f"{name}|le={label}" for label in (*map(str, bounds), "+Inf"))
    total = f"{name}_ms"

    def compute(s: Sums) -> Figure:
        n = sum([s.get(count, 0) for count in counts])
        total_ms = s.get(total, 0)
        return Figure(total_ms / 1000 / n if n else None, total_ms // 1000, n)

    return compute


class Kind(StrEnum):
    """How a KPI is computed and exported."""

    COUNT = "count"  # a count or a sum: no denominator
    RATIO = "ratio"  # a 0-1 share, with its numerator and denominator
    QUOTIENT = "quotient"  # any other division (an average, won per lost), with its parts
    HISTOGRAM = "histogram"  # a mean, exported as a histogram with fixed buckets


class Unit(StrEnum):
    COUNT = "count"
    RATIO = "ratio"
    SECONDS = "seconds"
    MONEY = "minor currency units"


@dataclass(frozen=True, slots=True)
class Kpi:
    """Everything that is known about one KPI: the one place it is described.

    ``compute`` turns a window's summed base fields into the KPI (None: computed by the read
    side from something else, see ``source``); ``by_scope`` overrides it for some scopes
    and, when given, limits the KPI to them.
    """

    id: str
    kind: Kind
    unit: Unit
    title: str  # for people: dashboards, help texts, the wallboard
    compute: Callable[[Sums], Result] | None
    label: str | None = None  # the name of the label of a labelled KPI (one figure per value)
    lower_is_better: bool = False
    current_state: bool = False  # read from the gauge bucket: every window is the same
    published: bool = True  # on the KPI change topic
    per_rep: bool = False  # exported per rep by default (SALESPULSE_EXPORT_REP_KPIS)
    histogram: tuple[str, tuple[int, ...]] | None = None  # base field prefix, bucket bounds
    by_scope: Mapping[str, Callable[[Sums], Result]] | None = None
    source: str = "sums"  # "sums", "oldest" (age of the oldest open lead), "target" (quota)

    @property
    def has_parts(self) -> bool:
        """Whether the KPI is a division, exported with its numerator and denominator."""
        return self.kind in (Kind.RATIO, Kind.QUOTIENT)

    @property
    def metric(self) -> str:
        """Its Prometheus name: ``salespulse_`` and the id, a 0-1 ratio ending in ``_ratio``."""
        suffix = "_ratio" if self.kind is Kind.RATIO and not self.id.endswith("_ratio") else ""
        return f"salespulse_{self.id}{suffix}"


def _histogram(prefix: str, bounds: tuple[int, ...]) -> dict[str, Any]:
    return {"compute": histogram_mean(prefix, bounds), "histogram": (prefix, bounds)}


C, R, Q, H = Kind.COUNT, Kind.RATIO, Kind.QUOTIENT, Kind.HISTOGRAM
N, SHARE, S, MONEY = Unit.COUNT, Unit.RATIO, Unit.SECONDS, Unit.MONEY

CATALOGUE: tuple[Kpi, ...] = (
    Kpi("leads_created", C, N, "Leads created", count("leads"), per_rep=True),
    Kpi(
        "speed_to_lead_seconds",
        H,
        S,
        "Speed to lead",
        lower_is_better=True,
        per_rep=True,
        **_histogram("stl", SPEED_TO_LEAD_BOUNDS),
    ),
    Kpi(
        "untouched_leads",
        C,
        N,
        "Untouched leads",
        count("untouched"),
        lower_is_better=True,
        current_state=True,
        per_rep=True,
    ),
    Kpi(
        "oldest_untouched_lead_age_seconds",
        C,
        S,
        "Oldest untouched lead",
        None,
        lower_is_better=True,
        current_state=True,
        published=False,  # it grows every second: a change record a second is noise
        source="oldest",
    ),
    Kpi("leads_followed_up_ratio", R, SHARE, "Leads followed up", ratio("followed_up", "leads")),
    Kpi(
        "lead_to_opportunity_ratio",
        R,
        SHARE,
        "Lead to opportunity",
        ratio("converted_leads", "leads"),
    ),
    Kpi(
        "lead_origin_share",
        R,
        SHARE,
        "Lead origin",
        labelled("leads|origin=", "leads"),
        label="origin",
    ),
    Kpi(
        "lead_source_share",
        R,
        SHARE,
        "Lead source",
        labelled("leads|source=", "leads"),
        label="source",
    ),
    Kpi(
        "lead_stage_share",
        R,
        SHARE,
        "Open leads by stage",
        labelled("stage|", "open_leads"),
        label="stage",
        current_state=True,
    ),
    Kpi(
        "response_sentiment_ratio",
        R,
        SHARE,
        "Response sentiment",
        labelled("responses|sentiment=", "responses"),
        label="sentiment",
    ),
    Kpi(
        "cost_per_lead",
        Q,
        MONEY,
        "Cost per lead",
        None,
        lower_is_better=True,
        # Spend is known per campaign only: the org divides all spend by leads with any
        # campaign.
        by_scope={"org": ratio("spend", "leads_campaign"), "campaign": ratio("spend", "leads")},
    ),
    Kpi("activities", C, N, "Activities", activities, label="kind", per_rep=True),
    Kpi("opportunities_created", C, N, "Opportunities created", count("opps_created")),
    Kpi("win_rate", R, SHARE, "Win rate", ratio("won", "won", "lost"), per_rep=True),
    Kpi("win_loss_ratio", Q, N, "Won per lost", ratio("won", "lost")),
    Kpi("revenue_won", C, MONEY, "Revenue won", count("revenue"), per_rep=True),
    Kpi(
        "deals_won_without_amount",
        C,
        N,
        "Won without amount",
        count("won_no_amount"),
        lower_is_better=True,
    ),
    Kpi(
        "average_deal_size",
        Q,
        MONEY,
        "Average deal size",
        ratio_of_difference("revenue", "won", "won_no_amount"),
    ),
    Kpi(
        "sales_cycle_seconds",
        H,
        S,
        "Sales cycle",
        lower_is_better=True,
        **_histogram("cycle", SALES_CYCLE_BOUNDS),
    ),
    Kpi(
        "quota_attainment_ratio", R, SHARE, "Quota attainment", None, per_rep=True, source="target"
    ),
    Kpi("email_open_rate", R, SHARE, "Email open rate", ratio("opened", "sent")),
    Kpi("email_click_rate", R, SHARE, "Email click rate", ratio("clicked", "sent")),
    Kpi("email_reply_rate", R, SHARE, "Email reply rate", ratio("replied", "sent")),
    Kpi(
        "meeting_attendance_ratio",
        R,
        SHARE,
        "Meeting attendance",
        ratio("meetings_held", "meetings_held", "no_shows"),
    ),
    Kpi("calls_offered", C, N, "Calls offered", count("offered")),
    Kpi("calls_answered", C, N, "Calls answered", count("answered"), per_rep=True),
    Kpi(
        "calls_abandoned",
        C,
        N,
        "Calls abandoned",
        count("abandoned"),
        lower_is_better=True,
    ),
    Kpi(
        "abandonment_rate",
        R,
        SHARE,
        "Abandonment rate",
        ratio("abandoned", "offered"),
        lower_is_better=True,
    ),
    Kpi(
        "average_speed_of_answer_seconds",
        Q,
        S,
        "Speed of answer",
        ratio("asa_ms", "asa_n", scale=1000.0),
        lower_is_better=True,
    ),
    Kpi(
        "average_handle_time_seconds",
        Q,
        S,
        "Handle time",
        ratio("aht_ms", "aht_n", scale=1000.0),
        lower_is_better=True,
        per_rep=True,
    ),
    Kpi("service_level_ratio", R, SHARE, "Service level", ratio("answered_in_sl", "offered")),
    Kpi("outbound_calls", C, N, "Outbound calls", count("outbound")),
    Kpi("connect_rate", R, SHARE, "Connect rate", ratio("connected", "outbound")),
)

BY_ID: Mapping[str, Kpi] = {kpi.id: kpi for kpi in CATALOGUE}

# Every KPI id the read side answers from the projections (not the quota: that needs a target).
KPI_IDS = tuple(kpi.id for kpi in CATALOGUE if kpi.source != "target")
# KPIs over current state: every window reads the same gauge bucket.
GAUGES = frozenset(kpi.id for kpi in CATALOGUE if kpi.current_state)


def evaluate(
    scope: str, windowed: Sums, gauges: Sums, only: Collection[str] | None = None
) -> dict[str, Result]:
    """The KPIs of the catalogue (or ``only`` these) for one scope, from one window's sums.
    (The age of the oldest untouched lead and quota attainment are added by their readers.)"""
    chosen = _computes(scope, None if only is None else frozenset(only))
    return {kpi_id: compute(gauges if gauge else windowed) for kpi_id, compute, gauge in chosen}


@cache
def _computes(
    scope: str, only: frozenset[str] | None
) -> tuple[tuple[str, Callable[[Sums], Result], bool], ...]:
    """The KPIs ``evaluate`` computes for a scope, in catalogue order: id, how, and whether
    from the gauges."""
    chosen = []
    for kpi in CATALOGUE:
        if only is not None and kpi.id not in only:
            continue
        compute = kpi.compute if kpi.by_scope is None else kpi.by_scope.get(scope)
        if compute is not None:
            chosen.append((kpi.id, compute, kpi.current_state))
    return tuple(chosen)
