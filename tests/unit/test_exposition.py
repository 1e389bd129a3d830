"""The exporter's text renderer against prometheus_client's own, and the rep histogram bound."""

from __future__ import annotations

import math

import pytest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporters.exposition import TextFamily, render
from exporters.families import families
from projections.catalogue import evaluate
from projections.contributions import SPEED_TO_LEAD_BOUNDS
from projections.read import Answer
from projections.windows import window_span

pytestmark = pytest.mark.unit


class _Registry:
    def __init__(self, built: list[Metric]) -> None:
        self.built = built

    def collect(self) -> list[Metric]:
        return self.built


def _parsed(text: bytes) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]:
    out = []
    for family in text_string_to_metric_families(text.decode()):
        samples = [
            (s.name, dict(s.labels), s.value if not math.isnan(s.value) else -0.5)
            for s in family.samples
        ]
        out.append((family.name, family.type, family.documentation, samples))
    return out


def _awkward_families() -> list[Metric]:
    gauge = GaugeMetricFamily("g", "help with \\ and\nnewline", labels=["team", "origin"])
    gauge.add_metric(["emea", 'quote " back \\ slash\nnewline'], 1.5)
    gauge.add_metric(["apac", "plain"], 1234567890123.0)
    gauge.add_metric(["amer", ""], math.inf)
    gauge.add_metric(["latam", "x"], -math.inf)
    gauge.add_metric(["anz", "y"], math.nan)
    gauge.add_metric(["mea", "z"], 1e-7)
    bare = GaugeMetricFamily("leads_created", "no labels, and a name that ends in _created")
    bare.add_metric([], 0.0)
    counter = CounterMetricFamily("c", "a counter", labels=["reason"])
    counter.add_metric(["invalid_json"], 7)
    histogram = HistogramMetricFamily("h_seconds", "a histogram", labels=["window"])
    histogram.add_metric(["today"], [("1.0", 2.0), ("10.0", 5.0), ("+Inf", 6.0)], 33.25)
    return [gauge, bare, counter, histogram]


def test_render_parses_to_what_prometheus_client_renders() -> None:
    built = _awkward_families()
    ours = render(built)
    theirs = generate_latest(_Registry(built))
    assert _parsed(ours) == _parsed(theirs)
    assert b'origin="quote \\" back \\\\ slash\\nnewline"' in ours


def test_render_refuses_types_it_does_not_write() -> None:
    summary = Metric("s", "a summary", "summary")
    with pytest.raises(ValueError, match="summary"):
        render([summary])


def _answer(scope: str, scope_id: str) -> Answer:
    span = window_span("today", 1_790_000_000_000, "UTC")
    sums = {f"stl|le={SPEED_TO_LEAD_BOUNDS[0]}": 2, "stl|le=+Inf": 1, "stl_ms": 9_000_000}
    return Answer(scope, scope_id, span, "UTC", evaluate(scope, sums, {}), sums)


def _histogram_samples(built: list[TextFamily], rep: str) -> dict[str, float]:
    parsed = text_string_to_metric_families(render(built).decode())
    (family,) = [f for f in parsed if f.name == "salespulse_speed_to_lead_seconds"]
    return {
        s.name + s.labels.get("le", ""): s.value for s in family.samples if s.labels["rep"] == rep
    }


def test_kpi_families_parse_with_hostile_ids_and_labels_as_they_were() -> None:
    """Scope ids and KPI labels come from events: quotes, backslashes and newlines in them
    must reach Prometheus escaped and parse back to the same strings."""
    hostile = 'r "1" \\ x\ny'
    sums = {"activity|kind=call": 2, "won": 1, "lost": 3, 'leads|source=we"b\\': 4, "leads": 4}
    span = window_span("today", 1_790_000_000_000, "UTC")
    answer = Answer("rep", hostile, span, "UTC", evaluate("rep", sums, {}), sums)
    parsed = {
        f.name: f
        for f in text_string_to_metric_families(render(families([(answer, "t\n")])).decode())
    }
    (calls,) = [s for s in parsed["salespulse_activities"].samples if s.labels["kind"] == "call"]
    assert calls.labels["rep"] == hostile and calls.labels["team"] == "t\n"
    assert calls.value == 2.0
    win = {
        name: parsed[name].samples[0].value
        for name in parsed
        if name.startswith("salespulse_win_rate_ratio")
    }
    assert win == {
        "salespulse_win_rate_ratio": 0.25,
        "salespulse_win_rate_ratio_numerator": 1.0,
        "salespulse_win_rate_ratio_denominator": 4.0,
    }


def test_rep_histograms_keep_only_inf_sum_and_count_unless_asked() -> None:
    answers = [(_answer("team", "emea"), ""), (_answer("rep", "r1"), "emea")]
    slim = list(families(answers, rep_histogram_buckets=False))
    assert _histogram_samples(slim, "r1") == {
        "salespulse_speed_to_lead_seconds_bucket+Inf": 3.0,
        "salespulse_speed_to_lead_seconds_count": 3.0,
        "salespulse_speed_to_lead_seconds_sum": 9000.0,
    }
    team = _histogram_samples(slim, "")
    assert team[f"salespulse_speed_to_lead_seconds_bucket{float(SPEED_TO_LEAD_BOUNDS[0])}"] == 2.0
    assert len(team) == len(SPEED_TO_LEAD_BOUNDS) + 3
    full = list(families(answers, rep_histogram_buckets=True))
    assert _histogram_samples(full, "r1") == team
