"""The Grafana dashboards, built with Grafana's SDK and written to ``deploy/grafana/dashboards/``.

    python -m tools.dashboards            # rewrite the JSON files
    python -m tools.dashboards --check    # exit 1 if a file is out of date

The JSON files are what Grafana provisions (docker-compose mounts them); this tool is their
single source, so that every panel uses the same data source, label conventions and
thresholds, and a unit test keeps the files current. A panel that shows a KPI takes its
metric, title, unit and which way is better from the registry (``projections.catalogue``);
only its thresholds are written here. Calendar windows ("today") are the engine's own
``window`` label, which follows each team's time zone; no panel uses Grafana's ``now/d``.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from projections.catalogue import BY_ID, Kind, Kpi, Unit

# The SDK deprecates the classic dashboard schema in favour of its v2 resources, which the
# Grafana of docker-compose (11.3) cannot provision; the classic builders warn on import.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, timeseries
    from grafana_foundation_sdk.builders.common import (
        ReduceDataOptions,
        VizLegendOptions,
        VizTooltipOptions,
    )
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import units
    from grafana_foundation_sdk.models.common import (
        BarGaugeDisplayMode,
        BigValueColorMode,
        BigValueGraphMode,
        BigValueJustifyMode,
        BigValueTextMode,
        DataSourceRef,
        LegendDisplayMode,
        LegendPlacement,
        SortOrder,
        TooltipDisplayMode,
        VizOrientation,
    )
    from grafana_foundation_sdk.models.dashboard import (
        FieldColorModeId,
        GridPos,
        Threshold,
        ThresholdsMode,
        ValueMap,
        ValueMappingResult,
        VariableOption,
        VariableRefresh,
        VariableSort,
    )

DATASOURCE = DataSourceRef(type_val="prometheus", uid="salespulse-prometheus")
OUT_DIR = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards"

# The Grafana unit of each registry unit. Money is in minor units of no named currency.
UNITS: dict[Unit, str] = {
    Unit.COUNT: units.NoUnit,
    Unit.RATIO: units.PercentUnit,
    Unit.SECONDS: units.Seconds,
    Unit.MONEY: units.Short,
}

Panel = stat.Panel | bargauge.Panel | timeseries.Panel
Steps = list[tuple[str, float | None]]
# Where a KPI's colour turns orange, and then red or green (whichever is its bad or good end).
Limits = tuple[float, float] | None

TEAM = 'team="$team",rep=""'
REPS = 'team="$team",rep!=""'
NEUTRAL: Steps = [("blue", None)]
TOP = 25  # bars in a leaderboard


def _target(
    expr: str, legend: str = "", ref: str = "A", instant: bool = True
) -> prometheus.Dataquery:
    query = (
        prometheus.Dataquery()
        .ref_id(ref)
        .datasource(DATASOURCE)
        .expr(expr)
        .legend_format(legend or "__auto")
    )
    return query.instant() if instant else query.range()


def _thresholds(steps: Steps) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for color, value in steps])
    )


def _by_threshold() -> dashboard.FieldColor:
    return dashboard.FieldColor().mode(FieldColorModeId.THRESHOLDS)


def _last_value() -> ReduceDataOptions:
    return ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def stat_panel(title: str, expr: str, unit: str, steps: Steps, legend: str = "") -> stat.Panel:
    """Each series' last value as a big number on its threshold colour."""
    return (
        stat.Panel()
        .title(title)
        .with_target(_target(expr, legend))
        .unit(unit)
        .color_scheme(_by_threshold())
        .thresholds(_thresholds(steps))
        .reduce_options(_last_value())
        .color_mode(BigValueColorMode.BACKGROUND)
        .graph_mode(BigValueGraphMode.NONE)
        .justify_mode(BigValueJustifyMode.CENTER)
        .text_mode(BigValueTextMode.VALUE)
        .wide_layout(True)
    )


def bars(title: str, expr: str, unit: str, steps: Steps, legend: str) -> bargauge.Panel:
    """Each series' last value as a horizontal bar."""
    return (
        bargauge.Panel()
        .title(title)
        .with_target(_target(expr, legend))
        .unit(unit)
        .color_scheme(_by_threshold())
        .thresholds(_thresholds(steps))
        .reduce_options(_last_value())
        .orientation(VizOrientation.HORIZONTAL)
        .display_mode(BarGaugeDisplayMode.GRADIENT)
        .show_unfilled(True)
    )


def series(title: str, targets: list[tuple[str, str]], unit: str) -> timeseries.Panel:
    """Range queries (expression, legend) drawn over the dashboard's time range."""
    return (
        timeseries.Panel()
        .title(title)
        .targets(
            [
                _target(expr, legend, ref=chr(ord("A") + i), instant=False)
                for i, (expr, legend) in enumerate(targets)
            ]
        )
        .unit(unit)
        .color_scheme(_by_threshold())
        .thresholds(_thresholds(NEUTRAL))
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        # The SDK's zero value would sort the tooltip; Grafana's default does not.
        .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.SINGLE).sort(SortOrder.NONE))
    )


def target_status(title: str, expr: str) -> stat.Panel:
    """Where each KPI stands against its target (docs/targets.md), as coloured words."""
    words = [("met", "green"), ("missed", "yellow"), ("warning", "orange"), ("critical", "red")]
    mapping = ValueMap(
        options={
            str(level): ValueMappingResult(text=word, color=color, index=level)
            for level, (word, color) in enumerate(words)
        }
    )
    return (
        stat_panel(
            title, expr, units.NoUnit, [("green", None)], legend="{{kpi}} {{label}} {{window}}"
        )
        .text_mode(BigValueTextMode.VALUE_AND_NAME)
        .mappings([mapping])
    )


# Panels of one KPI: what they show and how, from the registry.


def kpi_title(kpi: Kpi, where: str = "", ranked: bool = False) -> str:
    """The registry's title, where the panel looks (" today", ", all queues") and notes: a
    mean, which end of a ranking comes first, money's minor units."""
    notes = []
    if kpi.unit is Unit.SECONDS and kpi.kind in (Kind.HISTOGRAM, Kind.QUOTIENT):
        notes.append("mean")
    if ranked and kpi.lower_is_better:
        notes.append("fastest first" if kpi.unit is Unit.SECONDS else "lowest first")
    if kpi.unit is Unit.MONEY:
        notes.append("minor units")
    return f"{kpi.title}{where}" + (f" ({', '.join(notes)})" if notes else "")


def kpi_steps(kpi: Kpi, limits: Limits) -> Steps:
    """Blue without limits; else orange from the first, and from the second red when lower
    is better, green when higher is."""
    if limits is None:
        return NEUTRAL
    warn, last = limits
    low, high = ("green", "red") if kpi.lower_is_better else ("red", "green")
    return [(low, None), ("orange", warn), (high, last)]


def kpi_query(kpi: Kpi, selector: str, metric: str | None = None) -> str:
    """The KPI's series matching ``selector``; a histogram's is its mean, sum over count.
    ``metric``: a recording rule of the KPI instead of the KPI itself."""
    if metric is not None:
        return f"{metric}{{{selector}}}"
    if kpi.histogram is not None:
        return f"{kpi.metric}_sum{{{selector}}} / {kpi.metric}_count{{{selector}}}"
    return f"{kpi.metric}{{{selector}}}"


def kpi_stat(
    kpi_id: str,
    selector: str,
    where: str = "",
    limits: Limits = None,
    metric: str | None = None,
) -> stat.Panel:
    kpi = BY_ID[kpi_id]
    expr = kpi_query(kpi, selector, metric)
    return stat_panel(kpi_title(kpi, where), expr, UNITS[kpi.unit], kpi_steps(kpi, limits))


def kpi_bars(
    kpi_id: str, selector: str, legend: str, where: str = "", limits: Limits = None
) -> bargauge.Panel:
    kpi = BY_ID[kpi_id]
    expr = kpi_query(kpi, selector)
    return bars(kpi_title(kpi, where), expr, UNITS[kpi.unit], kpi_steps(kpi, limits), legend)


def leaderboard(kpi_id: str, selector: str, limits: Limits = None) -> bargauge.Panel:
    """The best reps first: the highest, or the lowest when lower is better."""
    kpi = BY_ID[kpi_id]
    best = "bottomk" if kpi.lower_is_better else "topk"
    expr = f"{best}({TOP}, {kpi_query(kpi, selector)})"
    title = kpi_title(kpi, ranked=True)
    return bars(title, expr, UNITS[kpi.unit], kpi_steps(kpi, limits), "{{rep}}")


# Variables and the dashboard.


def team_variable() -> dashboard.QueryVariable:
    query = 'label_values(salespulse_leads_created{team!="",rep="",window="today"}, team)'
    return (
        dashboard.QueryVariable("team")
        .label("Team")
        .datasource(DATASOURCE)
        .query({"query": query, "refId": "team"})
        .definition(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .include_all(False)
        .multi(False)
    )


def window_variable(choices: tuple[str, ...], default: str) -> dashboard.CustomVariable:
    return (
        dashboard.CustomVariable("window")
        .label("Window")
        .values(",".join(choices))
        .current(VariableOption(text=default, value=default))
        .options([VariableOption(text=c, value=c, selected=c == default) for c in choices])
        .include_all(False)
        .multi(False)
    )


def board(
    uid: str,
    title: str,
    rows: list[list[Panel]],
    variables: list[dashboard.QueryVariable | dashboard.CustomVariable],
    height: int,
) -> dashboard.Dashboard:
    """Lay the panels out in rows of equal width on Grafana's 24-column grid."""
    built = (
        dashboard.Dashboard(title)
        .uid(uid)
        .tags(["salespulse"])
        .readonly()
        .version(1)
        .refresh("10s")
        .time("now-6h", "now")
        .timezone("browser")
        .variables(list(variables))
        .annotations([])
    )
    number = 0
    for y, row in enumerate(rows):
        width = 24 // len(row)
        for column, panel in enumerate(row):
            number += 1
            place = GridPos(h=height, w=width, x=column * width, y=y * height)
            built.with_panel(panel.id(number).datasource(DATASOURCE).grid_pos(place))
    return built


def team_wallboard() -> dashboard.Dashboard:
    today = f'{TEAM},window="today"'
    return board(
        "salespulse-team-wallboard",
        "salespulse · Team wallboard",
        [
            [
                kpi_stat("speed_to_lead_seconds", today, " today", (300, 900)),
                kpi_stat("untouched_leads", today, limits=(5, 20)),
                kpi_stat("oldest_untouched_lead_age_seconds", today, limits=(3600, 4 * 3600)),
                kpi_stat("activities", f'{today},kind="total"', " today"),
            ],
            [
                kpi_stat("service_level_ratio", today, " today", (0.7, 0.8)),
                kpi_stat("abandonment_rate", today, " today", (0.05, 0.1)),
                kpi_stat("win_rate", today, " today", (0.2, 0.3)),
                kpi_stat("revenue_won", today, " today"),
            ],
            [
                target_status(
                    "Against target (team, today)", f"salespulse_kpi_target_status{{{today}}}"
                ),
            ],
        ],
        [team_variable()],
        height=7,
    )


def rep_leaderboard() -> dashboard.Dashboard:
    reps = f'{REPS},window="$window"'
    return board(
        "salespulse-rep-leaderboard",
        "salespulse · Rep leaderboard",
        [
            [
                leaderboard("activities", f'{reps},kind="total"'),
                leaderboard("speed_to_lead_seconds", reps, (300, 900)),
            ],
            [
                leaderboard("win_rate", reps, (0.2, 0.3)),
                leaderboard("revenue_won", reps),
            ],
            [
                leaderboard("quota_attainment_ratio", reps, (0.5, 1)),
            ],
        ],
        [team_variable(), window_variable(("today", "week", "month"), "today")],
        height=12,
    )


def funnel() -> dashboard.Dashboard:
    team = f'{TEAM},window="$window"'
    org = 'team="",rep="",queue="",campaign="",window="$window"'
    return board(
        "salespulse-funnel",
        "salespulse · Funnel",
        [
            [
                kpi_bars("lead_stage_share", team, "{{stage}}"),
                kpi_bars("lead_origin_share", team, "{{origin}}"),
            ],
            [
                kpi_stat("lead_to_opportunity_ratio", team, limits=(0.1, 0.2)),
                kpi_stat("leads_followed_up_ratio", team, limits=(0.7, 0.9)),
                kpi_stat("cost_per_lead", org, ", all campaigns"),
            ],
            [
                kpi_bars(
                    "cost_per_lead", 'campaign!="",window="$window"', "{{campaign}}", " by campaign"
                ),
            ],
        ],
        [team_variable(), window_variable(("today", "week", "month", "30d", "quarter"), "month")],
        height=9,
    )


def contact_centre() -> dashboard.Dashboard:
    queue = 'queue!="",window="$window"'
    every = 'window="$window"'
    return board(
        "salespulse-contact-centre",
        "salespulse · Contact centre",
        [
            [
                kpi_stat(
                    "service_level_ratio",
                    every,
                    ", all queues",
                    (0.7, 0.8),
                    metric="salespulse:service_level:ratio_all_queues",
                ),
                kpi_stat(
                    "abandonment_rate",
                    every,
                    ", all queues",
                    (0.05, 0.1),
                    metric="salespulse:abandonment:ratio_all_queues",
                ),
            ],
            [
                kpi_bars("calls_offered", queue, "{{queue}}"),
                kpi_bars("calls_answered", queue, "{{queue}}"),
                kpi_bars("calls_abandoned", queue, "{{queue}}"),
            ],
            [
                kpi_bars("service_level_ratio", queue, "{{queue}}", limits=(0.7, 0.8)),
                kpi_bars("average_speed_of_answer_seconds", queue, "{{queue}}", limits=(20, 60)),
                kpi_bars("average_handle_time_seconds", queue, "{{queue}}"),
            ],
        ],
        [window_variable(("15m", "1h", "today", "week", "month"), "today")],
        height=8,
    )


def engine_health() -> dashboard.Dashboard:
    """The engine's own metrics, not KPIs: their units and thresholds are written here."""
    fresh: Steps = [("green", None), ("orange", 60), ("red", 300)]
    return board(
        "salespulse-engine-health",
        "salespulse · Engine health",
        [
            [
                stat_panel(
                    "Consumer lag (records)",
                    "sum(salespulse_consumer_lag)",
                    units.NoUnit,
                    [("green", None), ("orange", 1000), ("red", 10000)],
                ),
                stat_panel(
                    "Newest applied event age",
                    "max(salespulse_projection_newest_event_age_seconds)",
                    units.Seconds,
                    fresh,
                ),
                stat_panel(
                    "Last projection commit",
                    "max(salespulse_projection_last_commit_age_seconds)",
                    units.Seconds,
                    fresh,
                ),
                stat_panel(
                    "Exporter reads Redis",
                    "min(salespulse_exporter_up)",
                    units.BoolYesNo,
                    [("red", None), ("green", 1)],
                ),
            ],
            [
                series(
                    "Throughput (records/s)",
                    [
                        ("sum(rate(salespulse_ingest_records_total[1m]))", "ingested"),
                        (
                            "sum by (outcome) (rate(salespulse_projection_events_total[1m]))",
                            "projected {{outcome}}",
                        ),
                    ],
                    units.OpsPerSecond,
                ),
                series(
                    "Consumer lag by topic",
                    [("sum by (topic) (salespulse_consumer_lag)", "{{topic}}")],
                    units.NoUnit,
                ),
            ],
            [
                series(
                    "Dead-letter records by reason (records/s)",
                    [("salespulse:dlq_records:rate5m", "{{reason}}")],
                    units.OpsPerSecond,
                ),
                series(
                    "Batch and scrape durations",
                    [
                        (
                            "histogram_quantile(0.99, sum by (le) "
                            "(rate(salespulse_projection_batch_duration_seconds_bucket[5m])))",
                            "projection batch p99",
                        ),
                        (
                            "histogram_quantile(0.99, sum by (le) "
                            "(rate(salespulse_ingest_batch_duration_seconds_bucket[5m])))",
                            "ingest batch p99",
                        ),
                        ("max(salespulse_exporter_scrape_duration_seconds)", "exporter scrape"),
                    ],
                    units.Seconds,
                ),
            ],
        ],
        [],
        height=8,
    )


DASHBOARDS = {
    "team-wallboard": team_wallboard,
    "rep-leaderboard": rep_leaderboard,
    "funnel": funnel,
    "contact-centre": contact_centre,
    "engine-health": engine_health,
}


# The SDK writes schema 42; the Grafana that docker-compose.yml runs (11.3) knows up to 39 and
# these dashboards use nothing newer, so they say 39 and that Grafana loads them as they are.
GRAFANA_SCHEMA_VERSION = 39


def _board(build: Callable[[], Any]) -> Any:
    board = build().build()
    board.schema_version = GRAFANA_SCHEMA_VERSION
    return board


def rendered() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        f"{name}.json": json.dumps(_board(build), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print("usage: python -m tools.dashboards [--check]", file=sys.stderr)
        return 2
    texts = rendered()
    if argv == ["--check"]:
        stale = [
            name
            for name, text in texts.items()
            if not (OUT_DIR / name).is_file() or (OUT_DIR / name).read_text() != text
        ]
        if stale:
            print(
                f"out of date: {', '.join(stale)}; run python -m tools.dashboards", file=sys.stderr
            )
            return 1
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (OUT_DIR / name).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
