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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from prometheus_client.core import GaugeMetricFamily, Metric

from exporters.exposition import TextFamily, escape, label_text, number
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


@dataclass(frozen=True)
class _Names:
    """What a KPI's samples are written with, worked out once per process."""

    metric: str
    help: str
    label: str | None  # the KPI's own label
    parts: tuple[str, str] | None  # a division's _numerator and _denominator metrics
    numerator_help: str
    denominator_help: str
    # A histogram's buckets: (the field of its count, its ``le``), from the lowest to +Inf;
    # and the field of its sum (ms). Empty for any other KPI.
    buckets: tuple[tuple[str, str], ...]
    sum_field: str


@cache
def _names(kpi_id: str) -> _Names:
    kpi = BY_ID[kpi_id]
    buckets: tuple[tuple[str, str], ...] = ()
    sum_field = ""
    if kpi.histogram is not None:
        prefix, bounds = kpi.histogram
        les = [(str(b), str(float(b))) for b in bounds] + [("+Inf", "+Inf")]
        buckets = tuple((f"{prefix}|le={bound}", le) for bound, le in les)
        sum_field = f"{prefix}_ms"
    name = kpi.metric
    parts = (f"{name}_numerator", f"{name}_denominator") if kpi.has_parts else None
    return _Names(
        name,
        _help(kpi),
        kpi.label,
        parts,
        f"numerator of {kpi_id}",
        f"denominator of {kpi_id}",
        buckets,
        sum_field,
    )


def families(
    answers: Sequence[tuple[Answer, str]], rep_histogram_buckets: bool = True
) -> list[TextFamily]:
    """Families for every KPI over all answers; each answer comes with its rep's team.

    Without ``rep_histogram_buckets``, a rep's histograms carry only the ``+Inf`` bucket,
    ``_sum`` and ``_count``: the mean and count, at a sixth of the series.
    """
    out: dict[str, TextFamily] = {}

    def lines(name: str, doc: str, kind: str = "gauge") -> list[str]:
        family = out.get(name)
        if family is None:
            family = out[name] = TextFamily(name, kind, doc)
        return family.lines

    for answer, rep_team in answers:
        # Each answer's labels are formatted once, for all its samples.
        scope = label_text(SCOPE_LABELS, scope_labels(answer, rep_team))
        for kpi_id, result in answer.kpis.items():
            names = _names(kpi_id)
            name = names.metric
            if names.buckets:
                with_buckets = rep_histogram_buckets or answer.scope != "rep"
                family = lines(name, names.help, "histogram")
                _histogram(family, names, answer.sums, scope, with_buckets)
                continue
            rows = [(None, result)] if isinstance(result, Figure) else list(result.items())
            for label, figure in rows:
                labels = (
                    f'{scope},{names.label}="{escape(label)}"'
                    if names.label and label is not None
                    else scope
                )
                if figure.value is not None:
                    lines(name, names.help).append(f"{name}{{{labels}}} {number(figure.value)}\n")
                if names.parts:
                    top, bottom = names.parts
                    lines(top, names.numerator_help).append(
                        f"{top}{{{labels}}} {number(figure.numerator)}\n"
                    )
                    lines(bottom, names.denominator_help).append(
                        f"{bottom}{{{labels}}} {number(figure.denominator or 0)}\n"
                    )
    gauges = [f for f in out.values() if f.type == "gauge"]
    return [*gauges, *(f for f in out.values() if f.type == "histogram")]


def _histogram(
    lines: list[str], names: _Names, sums: Mapping[str, int], labels: str, with_buckets: bool
) -> None:
    name = names.metric
    cumulative = 0
    for count, le in names.buckets:
        cumulative += sums.get(count, 0)
        if with_buckets or le == "+Inf":
            lines.append(f'{name}_bucket{{{labels},le="{le}"}} {number(cumulative)}\n')
    lines.append(f"{name}_count{{{labels}}} {number(cumulative)}\n")
    lines.append(f"{name}_sum{{{labels}}} {number(sums.get(names.sum_field, 0) / 1000)}\n")


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
