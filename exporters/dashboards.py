"""The Grafana dashboards, built as data and written to ``deploy/grafana/dashboards/``.

    python -m exporters.dashboards            # rewrite the JSON files
    python -m exporters.dashboards --check    # exit 1 if a file is out of date

The JSON files are what Grafana provisions (docker-compose mounts them); this module
is their single source, so that every panel uses the same data source, label
conventions and thresholds, and a unit test keeps the files current. Calendar
windows ("today") are the engine's own ``window`` label, which follows each
team's time zone; no panel uses Grafana's ``now/d``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "salespulse-prometheus"}
OUT_DIR = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards"

Panel = dict[str, Any]
Steps = list[tuple[str, float | None]]

TEAM = 'team="$team",rep=""'
REPS = 'team="$team",rep!=""'
GREEN_HIGH: Steps = [("red", None), ("orange", 0.7), ("green", 0.8)]  # higher is better
GREEN_LOW: Steps = [("green", None), ("orange", 0.05), ("red", 0.1)]  # lower is better
NEUTRAL: Steps = [("blue", None)]


def _target(expr: str, legend: str = "", ref: str = "A", instant: bool = True) -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "instant": instant,
        "range": not instant,
    }


def _field_config(unit: str, steps: Steps, decimals: int | None = None) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for color, value in steps],
        },
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"defaults": defaults, "overrides": []}


def _last_value(kind: str, title: str, expr: str, unit: str, steps: Steps, legend: str) -> Panel:
    """A panel showing each series' last value (stat or bar gauge)."""
    return {
        "type": kind,
        "title": title,
        "targets": [_target(expr, legend)],
        "fieldConfig": _field_config(unit, steps),
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
    }


def stat(title: str, expr: str, unit: str, steps: Steps, legend: str = "") -> Panel:
    panel = _last_value("stat", title, expr, unit, steps, legend)
    panel["options"] |= {
        "colorMode": "background",
        "graphMode": "none",
        "justifyMode": "center",
        "textMode": "value",
        "wideLayout": True,
    }
    return panel


def bars(title: str, expr: str, unit: str, steps: Steps, legend: str) -> Panel:
    panel = _last_value("bargauge", title, expr, unit, steps, legend)
    panel["options"] |= {
        "orientation": "horizontal",
        "displayMode": "gradient",
        "showUnfilled": True,
    }
    return panel


def target_status(title: str, expr: str) -> Panel:
    """Where each KPI stands against its target (docs/targets.md), as coloured words."""
    panel = stat(title, expr, "none", [("green", None)], legend="{{kpi}} {{label}} {{window}}")
    panel["options"]["textMode"] = "value_and_name"
    words = [("met", "green"), ("missed", "yellow"), ("warning", "orange"), ("critical", "red")]
    panel["fieldConfig"]["defaults"]["mappings"] = [
        {
            "type": "value",
            "options": {
                str(level): {"text": word, "color": color, "index": level}
                for level, (word, color) in enumerate(words)
            },
        }
    ]
    return panel


def series(title: str, targets: list[tuple[str, str]], unit: str) -> Panel:
    return {
        "type": "timeseries",
        "title": title,
        "targets": [
            _target(expr, legend, ref=chr(ord("A") + i), instant=False)
            for i, (expr, legend) in enumerate(targets)
        ],
        "fieldConfig": _field_config(unit, NEUTRAL),
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
    }


def team_variable() -> dict[str, Any]:
    query = 'label_values(salespulse_leads_created{team!="",rep="",window="today"}, team)'
    return {
        "name": "team",
        "label": "Team",
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": "team"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "includeAll": False,
        "multi": False,
    }


def window_variable(choices: tuple[str, ...], default: str) -> dict[str, Any]:
    return {
        "name": "window",
        "label": "Window",
        "type": "custom",
        "query": ",".join(choices),
        "current": {"text": default, "value": default},
        "options": [{"text": c, "value": c, "selected": c == default} for c in choices],
        "includeAll": False,
        "multi": False,
    }


def dashboard(
    uid: str, title: str, rows: list[list[Panel]], variables: list[dict[str, Any]], height: int
) -> dict[str, Any]:
    """Lay the panels out in rows of equal width on Grafana's 24-column grid."""
    panels: list[Panel] = []
    y = 0
    for row in rows:
        width = 24 // len(row)
        for column, panel in enumerate(row):
            panel = {
                "id": len(panels) + 1,
                "datasource": DATASOURCE,
                "gridPos": {"x": column * width, "y": y, "w": width, "h": height},
                **panel,
            }
            panels.append(panel)
        y += height
    return {
        "uid": uid,
        "title": title,
        "tags": ["salespulse"],
        "editable": False,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": panels,
    }


def team_wallboard() -> dict[str, Any]:
    today = f'{TEAM},window="today"'
    return dashboard(
        "salespulse-team-wallboard",
        "salespulse · Team wallboard",
        [
            [
                stat(
                    "Speed to lead (mean, today)",
                    f"salespulse_speed_to_lead_seconds_sum{{{today}}}"
                    f" / salespulse_speed_to_lead_seconds_count{{{today}}}",
                    "s",
                    [("green", None), ("orange", 300), ("red", 900)],
                ),
                stat(
                    "Untouched leads",
                    f"salespulse_untouched_leads{{{today}}}",
                    "none",
                    [("green", None), ("orange", 5), ("red", 20)],
                ),
                stat(
                    "Oldest untouched lead",
                    f"salespulse_oldest_untouched_lead_age_seconds{{{today}}}",
                    "s",
                    [("green", None), ("orange", 3600), ("red", 4 * 3600)],
                ),
                stat(
                    "Activities today",
                    f'salespulse_activities{{{today},kind="total"}}',
                    "none",
                    NEUTRAL,
                ),
            ],
            [
                stat(
                    "Service level today",
                    f"salespulse_service_level_ratio{{{today}}}",
                    "percentunit",
                    GREEN_HIGH,
                ),
                stat(
                    "Abandoned calls today",
                    f"salespulse_abandonment_rate_ratio{{{today}}}",
                    "percentunit",
                    GREEN_LOW,
                ),
                stat(
                    "Win rate today",
                    f"salespulse_win_rate_ratio{{{today}}}",
                    "percentunit",
                    [("red", None), ("orange", 0.2), ("green", 0.3)],
                ),
                stat(
                    "Revenue won today (minor units)",
                    f"salespulse_revenue_won{{{today}}}",
                    "short",
                    NEUTRAL,
                ),
            ],
            [
                target_status(
                    "Against target (team, today)",
                    f"salespulse_kpi_target_status{{{today}}}",
                ),
            ],
        ],
        [team_variable()],
        height=7,
    )


def rep_leaderboard() -> dict[str, Any]:
    reps = f'{REPS},window="$window"'
    return dashboard(
        "salespulse-rep-leaderboard",
        "salespulse · Rep leaderboard",
        [
            [
                bars(
                    "Activities",
                    f'topk(25, salespulse_activities{{{reps},kind="total"}})',
                    "none",
                    NEUTRAL,
                    "{{rep}}",
                ),
                bars(
                    "Speed to lead (mean, fastest first)",
                    f"bottomk(25, salespulse_speed_to_lead_seconds_sum{{{reps}}}"
                    f" / salespulse_speed_to_lead_seconds_count{{{reps}}})",
                    "s",
                    [("green", None), ("orange", 300), ("red", 900)],
                    "{{rep}}",
                ),
            ],
            [
                bars(
                    "Win rate",
                    f"topk(25, salespulse_win_rate_ratio{{{reps}}})",
                    "percentunit",
                    [("red", None), ("orange", 0.2), ("green", 0.3)],
                    "{{rep}}",
                ),
                bars(
                    "Revenue won (minor units)",
                    f"topk(25, salespulse_revenue_won{{{reps}}})",
                    "short",
                    NEUTRAL,
                    "{{rep}}",
                ),
            ],
            [
                bars(
                    "Quota attainment",
                    f"topk(25, salespulse_quota_attainment_ratio{{{reps}}})",
                    "percentunit",
                    [("red", None), ("orange", 0.5), ("green", 1)],
                    "{{rep}}",
                ),
            ],
        ],
        [team_variable(), window_variable(("today", "week", "month"), "today")],
        height=12,
    )


def funnel() -> dict[str, Any]:
    team = f'{TEAM},window="$window"'
    org = 'team="",rep="",queue="",campaign="",window="$window"'
    return dashboard(
        "salespulse-funnel",
        "salespulse · Funnel",
        [
            [
                bars(
                    "Leads by stage (share)",
                    f"salespulse_lead_stage_share_ratio{{{team}}}",
                    "percentunit",
                    NEUTRAL,
                    "{{stage}}",
                ),
                bars(
                    "Leads by origin (share)",
                    f"salespulse_lead_origin_share_ratio{{{team}}}",
                    "percentunit",
                    NEUTRAL,
                    "{{origin}}",
                ),
            ],
            [
                stat(
                    "Lead to opportunity",
                    f"salespulse_lead_to_opportunity_ratio{{{team}}}",
                    "percentunit",
                    [("red", None), ("orange", 0.1), ("green", 0.2)],
                ),
                stat(
                    "Followed up within the follow-up time",
                    f"salespulse_leads_followed_up_ratio{{{team}}}",
                    "percentunit",
                    [("red", None), ("orange", 0.7), ("green", 0.9)],
                ),
                stat(
                    "Cost per lead, all campaigns (minor units)",
                    f"salespulse_cost_per_lead{{{org}}}",
                    "short",
                    NEUTRAL,
                ),
            ],
            [
                bars(
                    "Cost per lead by campaign (minor units)",
                    'salespulse_cost_per_lead{campaign!="",window="$window"}',
                    "short",
                    NEUTRAL,
                    "{{campaign}}",
                ),
            ],
        ],
        [team_variable(), window_variable(("today", "week", "month", "30d", "quarter"), "month")],
        height=9,
    )


def contact_centre() -> dict[str, Any]:
    queue = 'queue!="",window="$window"'
    return dashboard(
        "salespulse-contact-centre",
        "salespulse · Contact centre",
        [
            [
                stat(
                    "Service level, all queues",
                    'salespulse:service_level:ratio_all_queues{window="$window"}',
                    "percentunit",
                    GREEN_HIGH,
                ),
                stat(
                    "Abandoned, all queues",
                    'salespulse:abandonment:ratio_all_queues{window="$window"}',
                    "percentunit",
                    GREEN_LOW,
                ),
            ],
            [
                bars(
                    "Offered", f"salespulse_calls_offered{{{queue}}}", "none", NEUTRAL, "{{queue}}"
                ),
                bars(
                    "Answered",
                    f"salespulse_calls_answered{{{queue}}}",
                    "none",
                    NEUTRAL,
                    "{{queue}}",
                ),
                bars(
                    "Abandoned",
                    f"salespulse_calls_abandoned{{{queue}}}",
                    "none",
                    NEUTRAL,
                    "{{queue}}",
                ),
            ],
            [
                bars(
                    "Service level",
                    f"salespulse_service_level_ratio{{{queue}}}",
                    "percentunit",
                    GREEN_HIGH,
                    "{{queue}}",
                ),
                bars(
                    "Average speed of answer",
                    f"salespulse_average_speed_of_answer_seconds{{{queue}}}",
                    "s",
                    [("green", None), ("orange", 20), ("red", 60)],
                    "{{queue}}",
                ),
                bars(
                    "Average handle time",
                    f"salespulse_average_handle_time_seconds{{{queue}}}",
                    "s",
                    NEUTRAL,
                    "{{queue}}",
                ),
            ],
        ],
        [window_variable(("15m", "1h", "today", "week", "month"), "today")],
        height=8,
    )


def engine_health() -> dict[str, Any]:
    return dashboard(
        "salespulse-engine-health",
        "salespulse · Engine health",
        [
            [
                stat(
                    "Consumer lag (records)",
                    "sum(salespulse_consumer_lag)",
                    "none",
                    [("green", None), ("orange", 1000), ("red", 10000)],
                ),
                stat(
                    "Newest applied event age",
                    "max(salespulse_projection_newest_event_age_seconds)",
                    "s",
                    [("green", None), ("orange", 60), ("red", 300)],
                ),
                stat(
                    "Last projection commit",
                    "max(salespulse_projection_last_commit_age_seconds)",
                    "s",
                    [("green", None), ("orange", 60), ("red", 300)],
                ),
                stat(
                    "Exporter reads Redis",
                    "min(salespulse_exporter_up)",
                    "bool_yes_no",
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
                    "ops",
                ),
                series(
                    "Consumer lag by topic",
                    [("sum by (topic) (salespulse_consumer_lag)", "{{topic}}")],
                    "none",
                ),
            ],
            [
                series(
                    "Dead-letter records by reason (records/s)",
                    [("salespulse:dlq_records:rate5m", "{{reason}}")],
                    "ops",
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
                    "s",
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


def rendered() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        f"{name}.json": json.dumps(build(), indent=2, sort_keys=True) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print("usage: python -m exporters.dashboards [--check]", file=sys.stderr)
        return 2
    stale = []
    for name, text in rendered().items():
        path = OUT_DIR / name
        if argv == ["--check"]:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python -m exporters.dashboards")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
