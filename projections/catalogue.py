"""The KPI catalogue: each KPI as a function of summed base fields. Pure.

Ratios are 0-1, money is in minor units, durations in seconds. A KPI whose
denominator is 0 has the value ``None``. KPIs with a label (``kind``,
``sentiment``, ``stage``, ``origin``) map each label value to its figure.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

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
        top = s.get(numerator, 0)
        bottom = sum(s.get(name, 0) for name in denominator)
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
    labels = (*map(str, bounds), "+Inf")

    def compute(s: Sums) -> Figure:
        n = sum(s.get(f"{name}|le={label}", 0) for label in labels)
        total_ms = s.get(f"{name}_ms", 0)
        return Figure(total_ms / 1000 / n if n else None, total_ms // 1000, n)

    return compute


KPIS: dict[str, Callable[[Sums], Result]] = {
    "leads_created": count("leads"),
    "speed_to_lead_seconds": histogram_mean("stl", SPEED_TO_LEAD_BOUNDS),
    "untouched_leads": count("untouched"),
    "leads_followed_up_ratio": ratio("followed_up", "leads"),
    "lead_to_opportunity_ratio": ratio("converted_leads", "leads"),
    "lead_origin_share": labelled("leads|origin=", "leads"),
    "lead_source_share": labelled("leads|source=", "leads"),
    "lead_stage_share": labelled("stage|", "open_leads"),
    "response_sentiment_ratio": labelled("responses|sentiment=", "responses"),
    "activities": activities,
    "opportunities_created": count("opps_created"),
    "win_rate": ratio("won", "won", "lost"),
    "win_loss_ratio": ratio("won", "lost"),
    "revenue_won": count("revenue"),
    "deals_won_without_amount": count("won_no_amount"),
    "average_deal_size": ratio_of_difference("revenue", "won", "won_no_amount"),
    "sales_cycle_seconds": histogram_mean("cycle", SALES_CYCLE_BOUNDS),
    "email_open_rate": ratio("opened", "sent"),
    "email_click_rate": ratio("clicked", "sent"),
    "email_reply_rate": ratio("replied", "sent"),
    "meeting_attendance_ratio": ratio("meetings_held", "meetings_held", "no_shows"),
    "calls_offered": count("offered"),
    "calls_answered": count("answered"),
    "calls_abandoned": count("abandoned"),
    "abandonment_rate": ratio("abandoned", "offered"),
    "average_speed_of_answer_seconds": ratio("asa_ms", "asa_n", scale=1000.0),
    "average_handle_time_seconds": ratio("aht_ms", "aht_n", scale=1000.0),
    "service_level_ratio": ratio("answered_in_sl", "offered"),
    "outbound_calls": count("outbound"),
    "connect_rate": ratio("connected", "outbound"),
}

# Every KPI id the read side answers (cost_per_lead for the org and campaigns only).
KPI_IDS = (*KPIS, "cost_per_lead", "oldest_untouched_lead_age_seconds")

# KPIs over current state: every window reads the same gauge bucket.
GAUGES = frozenset({"lead_stage_share", "untouched_leads"})


# Spend is known per campaign only: the org divides all spend by leads with any campaign.
COST_PER_LEAD = {"org": ratio("spend", "leads_campaign"), "campaign": ratio("spend", "leads")}


def evaluate(
    scope: str, windowed: Sums, gauges: Sums, only: Collection[str] | None = None
) -> dict[str, Result]:
    """The KPIs of the catalogue (or ``only`` these) for one scope, from one window's sums."""
    out = {
        kpi: compute(gauges if kpi in GAUGES else windowed)
        for kpi, compute in KPIS.items()
        if only is None or kpi in only
    }
    if scope in COST_PER_LEAD and (only is None or "cost_per_lead" in only):
        out["cost_per_lead"] = COST_PER_LEAD[scope](windowed)
    return out
