"""Prometheus metric families from KPI answers. Pure: built fresh for every scrape.

Names follow Prometheus conventions: ``salespulse_`` prefix, ``_ratio`` for
0-1 ratios, ``_seconds`` for durations, money in minor units. Ratios and
averages also export ``_numerator`` and ``_denominator`` series so that
Prometheus can aggregate them correctly (sum the parts, then divide). Speed to
lead and sales cycle are real histograms. Labels: ``team``, ``rep``,
``queue``, ``campaign`` (empty where they do not apply), ``window``, and the
KPI's own label.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from projections.catalogue import Figure
from projections.contributions import SALES_CYCLE_BOUNDS, SPEED_TO_LEAD_BOUNDS
from projections.read import Answer
from projections.targets import TARGETABLE, Targets

SCOPE_LABELS = ("team", "rep", "queue", "campaign", "window")
KPI_LABEL = {
    "lead_origin_share": "origin",
    "lead_source_share": "source",
    "lead_stage_share": "stage",
    "response_sentiment_ratio": "sentiment",
    "activities": "kind",
}
RATIOS = {
    "lead_origin_share",
    "lead_source_share",
    "lead_stage_share",
    "response_sentiment_ratio",
    "leads_followed_up_ratio",
    "lead_to_opportunity_ratio",
    "win_rate",
    "email_open_rate",
    "email_click_rate",
    "email_reply_rate",
    "meeting_attendance_ratio",
    "abandonment_rate",
    "service_level_ratio",
    "connect_rate",
    "quota_attainment_ratio",
}
# Quotients that are not 0-1 shares: exported as they are, with their parts.
QUOTIENTS = {
    "win_loss_ratio",
    "average_deal_size",
    "cost_per_lead",
    "average_speed_of_answer_seconds",
    "average_handle_time_seconds",
}
HISTOGRAMS = {
    "speed_to_lead_seconds": ("stl", SPEED_TO_LEAD_BOUNDS),
    "sales_cycle_seconds": ("cycle", SALES_CYCLE_BOUNDS),
}
UNITS = {
    "revenue_won": "minor currency units",
    "average_deal_size": "minor currency units",
    "cost_per_lead": "minor currency units",
}


def metric_name(kpi: str) -> str:
    if kpi in RATIOS and not kpi.endswith("_ratio"):
        return f"salespulse_{kpi}_ratio"
    return f"salespulse_{kpi}"


# Metric name and help text of every KPI.
_NAMES = {
    kpi: (metric_name(kpi), f"salespulse KPI {kpi}" + (f" ({UNITS[kpi]})" if kpi in UNITS else ""))
    for kpi in TARGETABLE
}


def scope_labels(answer: Answer, rep_team: str) -> list[str]:
    values = {"team": "", "rep": "", "queue": "", "campaign": "", "window": answer.span.window}
    if answer.scope == "team":
        values["team"] = answer.scope_id
    elif answer.scope == "rep":
        values["team"], values["rep"] = rep_team, answer.scope_id
    elif answer.scope in ("queue", "campaign"):
        values[answer.scope] = answer.scope_id
    return [values[name] for name in SCOPE_LABELS]


def families(
    answers: Sequence[tuple[Answer, str]], rep_histogram_buckets: bool = True
) -> Iterable[Metric]:
    """Families for every KPI over all answers; each answer comes with its rep's team.

    Without ``rep_histogram_buckets``, a rep's histograms carry only the ``+Inf`` bucket,
    ``_sum`` and ``_count``: the mean and count, at a sixth of the series.
    """
    gauges: dict[str, GaugeMetricFamily] = {}
    histograms: dict[str, HistogramMetricFamily] = {}

    def gauge(name: str, doc: str, extra: str | None) -> GaugeMetricFamily:
        if name not in gauges:
            labels = [*SCOPE_LABELS, *([extra] if extra else [])]
            gauges[name] = GaugeMetricFamily(name, doc, labels=labels)
        return gauges[name]

    for answer, rep_team in answers:
        labels = scope_labels(answer, rep_team)
        # One label dict per (answer, KPI label), shared by its samples: building a dict per
        # sample was a third of a large scrape, and the renderer formats each dict once.
        scope_dict = dict(zip(SCOPE_LABELS, labels, strict=True))
        for kpi, result in answer.kpis.items():
            if kpi in HISTOGRAMS:
                buckets = rep_histogram_buckets or answer.scope != "rep"
                _histogram(histograms, kpi, answer.sums, labels, buckets)
                continue
            extra = KPI_LABEL.get(kpi)
            name, doc = _NAMES[kpi]
            rows = [(None, result)] if isinstance(result, Figure) else list(result.items())
            parts = kpi in RATIOS or kpi in QUOTIENTS
            for label, figure in rows:
                sample_labels = (
                    {**scope_dict, extra: label} if extra and label is not None else scope_dict
                )
                if figure.value is not None:
                    gauge(name, doc, extra).add_sample(name, sample_labels, float(figure.value))
                if parts:
                    top, bottom = f"{name}_numerator", f"{name}_denominator"
                    gauge(top, f"numerator of {kpi}", extra).add_sample(
                        top, sample_labels, float(figure.numerator)
                    )
                    gauge(bottom, f"denominator of {kpi}", extra).add_sample(
                        bottom, sample_labels, float(figure.denominator or 0)
                    )
    return [*gauges.values(), *histograms.values()]


def _histogram(
    out: dict[str, HistogramMetricFamily],
    kpi: str,
    sums: Mapping[str, int],
    labels: list[str],
    with_buckets: bool,
) -> None:
    prefix, bounds = HISTOGRAMS[kpi]
    name = f"salespulse_{kpi}"
    if name not in out:
        out[name] = HistogramMetricFamily(name, f"salespulse KPI {kpi}", labels=list(SCOPE_LABELS))
    cumulative = 0
    buckets = []
    for bound in (*map(str, bounds), "+Inf"):
        cumulative += sums.get(f"{prefix}|le={bound}", 0)
        if with_buckets or bound == "+Inf":
            buckets.append((bound if bound == "+Inf" else str(float(bound)), float(cumulative)))
    out[name].add_metric(labels, buckets, sums.get(f"{prefix}_ms", 0) / 1000)


TARGET_LABELS = (*SCOPE_LABELS, "kpi", "label", "direction")
STATUS_LEVELS = {"met": 0, "missed": 1, "warning": 2, "critical": 3}


def target_families(answers: Sequence[tuple[Answer, str]], targets: Targets) -> list[Metric]:
    """``salespulse_kpi_target`` (and its warning and critical thresholds) beside each
    exported scope and window that has a target; ``direction`` says which way is better."""
    if not targets.items:
        return []
    doc = "Target of a KPI for a scope and window (docs/targets.md)"
    goal = GaugeMetricFamily("salespulse_kpi_target", doc, labels=TARGET_LABELS)
    warning = GaugeMetricFamily(
        "salespulse_kpi_target_warning", "Warning threshold of a KPI target", labels=TARGET_LABELS
    )
    critical = GaugeMetricFamily(
        "salespulse_kpi_target_critical", "Critical threshold of a KPI target", labels=TARGET_LABELS
    )
    status = GaugeMetricFamily(
        "salespulse_kpi_target_status",
        "Where the KPI stands: 0 target met, 1 missed, 2 past warning, 3 past critical",
        labels=TARGET_LABELS,
    )
    kpis = sorted({(t.kpi, t.label or "") for t in targets.items})
    targeted = {(t.scope, t.window) for t in targets.items}
    for answer, rep_team in answers:
        if (answer.scope, answer.span.window) not in targeted:
            continue
        labels = scope_labels(answer, rep_team)
        for kpi, label in kpis:
            found = targets.find(
                kpi, answer.scope, answer.scope_id, answer.span.window, label or None
            )
            if found is None:
                continue
            row = [*labels, kpi, label, found.direction]
            goal.add_metric(row, found.target)
            if found.warning is not None:
                warning.add_metric(row, found.warning)
            if found.critical is not None:
                critical.add_metric(row, found.critical)
            result = answer.kpis.get(kpi)
            figure = result.get(label) if isinstance(result, dict) else result
            state = found.status(figure.value) if figure is not None else None
            if state is not None:
                status.add_metric(row, float(STATUS_LEVELS[state]))
    return [goal, warning, critical, status]
