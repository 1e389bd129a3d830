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

from projections.catalogue import BY_ID, Figure, Kpi, Unit
from projections.read import Answer
from projections.targets import Targets

SCOPE_LABELS = ("team", "rep", "queue", "campaign", "window")


def _help(kpi: Kpi) -> str:
    unit = f" ({kpi.unit})" if kpi.unit is Unit.MONEY else ""
    return f"salespulse KPI {kpi.id}: {kpi.title.lower()}{unit}"


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
        for kpi_id, result in answer.kpis.items():
            kpi = BY_ID[kpi_id]
            if kpi.histogram is not None:
                buckets = rep_histogram_buckets or answer.scope != "rep"
                _histogram(histograms, kpi, answer.sums, labels, buckets)
                continue
            extra = kpi.label
            name, doc = kpi.metric, _help(kpi)
            rows = [(None, result)] if isinstance(result, Figure) else list(result.items())
            parts = kpi.has_parts
            for label, figure in rows:
                sample_labels = (
                    {**scope_dict, extra: label} if extra and label is not None else scope_dict
                )
                if figure.value is not None:
                    gauge(name, doc, extra).add_sample(name, sample_labels, float(figure.value))
                if parts:
                    top, bottom = f"{name}_numerator", f"{name}_denominator"
                    gauge(top, f"numerator of {kpi.id}", extra).add_sample(
                        top, sample_labels, float(figure.numerator)
                    )
                    gauge(bottom, f"denominator of {kpi.id}", extra).add_sample(
                        bottom, sample_labels, float(figure.denominator or 0)
                    )
    return [*gauges.values(), *histograms.values()]


def _histogram(
    out: dict[str, HistogramMetricFamily],
    kpi: Kpi,
    sums: Mapping[str, int],
    labels: list[str],
    with_buckets: bool,
) -> None:
    assert kpi.histogram is not None
    prefix, bounds = kpi.histogram
    name = kpi.metric
    if name not in out:
        out[name] = HistogramMetricFamily(name, _help(kpi), labels=list(SCOPE_LABELS))
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
