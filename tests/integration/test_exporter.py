"""The exporter on the real stack: a valid exposition, scraped by the real Prometheus,
holding the same numbers as `salespulse kpis --json`."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from config.settings import Settings
from simulator.log import DUPLICATE, VALID, Record, SimConfig, simulate
from streams.producer import publish
from streams.worker_process import WorkerProcess
from tests.support import cli, own_env, projections_settled, salespulse, wait_for, wait_for_exporter
from tools.dashboards import OUT_DIR

pytestmark = pytest.mark.integration

# Targets for every team and rep today, so that the dashboards' target panels have data.
TARGETS = """
[[target]]
kpi = "win_rate"
scope = "team"
id = "*"
window = "today"
target = 0.3
direction = "higher"
warning = 0.2

[[target]]
kpi = "activities"
label = "total"
scope = "team"
id = "*"
window = "today"
target = 50
direction = "higher"

[[target]]
kpi = "revenue_won"
scope = "rep"
id = "*"
window = "today"
target = 1000000
direction = "higher"
"""


@pytest.fixture
def exporter(stack_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    env = own_env(stack_env, tmp_path / "targets.toml", TARGETS)
    settings = Settings.from_env(env)
    log = tmp_path / "exporter.log"
    with salespulse(["exporter"], env, log) as process:
        yield env, wait_for_exporter(process, settings.exporter_port, log) + "/metrics"


def _prometheus(settings: Settings, query: str) -> list[dict]:  # type: ignore[type-arg]
    url = f"http://127.0.0.1:{settings.prometheus_port}/api/v1/query?" + urllib.parse.urlencode(
        {"query": query}
    )
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]["result"]  # type: ignore[no-any-return]


def _clear_of_midnight(zones: set[str], before: float = 200, after: float = 300) -> float:
    """Now, once no zone in ``zones`` is within ``before`` s past or ``after`` s short of
    its midnight: events "a minute ago" must land in the day that the checks a few
    minutes later still call "today" (a CI run at 00:01 UTC once failed on this).
    """
    while True:
        now = time.time()
        waits = []
        for name in zones:
            local = datetime.fromtimestamp(now, ZoneInfo(name))
            midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
            since = (local - midnight).total_seconds()
            until = (midnight + timedelta(days=1) - local).total_seconds()
            if since < before:
                waits.append(before - since)
            elif until < after:
                waits.append(until + before)
        if not waits:
            return now
        time.sleep(max(waits))


def _just_now(records: list[Record]) -> list[bytes]:
    """Per team, a deal won and a queue call handled by one of its reps, a minute ago.

    Simulated deals close days apart and simulated calls last minutes, so whether one
    closed or ended "today" depends on the hour the test runs (just after midnight, often
    none has): a wallboard test must not.
    """
    first_rep: dict[str, str] = {}
    for record in records:
        event = json.loads(record.value) if record.label == VALID else {}
        if event.get("type") == "rep.upserted":
            first_rep.setdefault(event["team_id"], event["rep_id"])
    assert first_rep, "the simulated log has reps"
    zones = {"UTC"} | {
        event["timezone"]
        for event in (json.loads(r.value) for r in records if r.label == VALID)
        if event.get("type") == "team.upserted"
    }
    now = _clear_of_midnight(zones)
    drafts: list[tuple[int, str, dict[str, object]]] = []
    for team, rep in sorted(first_rep.items()):
        deal = {"opportunity_id": f"opp-just-won-{team}", "rep_id": rep}
        call = {"call_id": f"call-just-now-{team}"}
        drafts += [
            (120, "opportunity.created", {**deal, "amount_minor": 500_000, "product": "core"}),
            (60, "opportunity.closed", {**deal, "outcome": "won", "amount_minor": 480_000}),
            (180, "call.started", {**call, "direction": "inbound", "queue_id": f"q-now-{team}"}),
            (170, "call.answered", {**call, "rep_id": rep}),
            (60, "call.ended", {**call, "rep_id": rep, "outcome": "completed", "talk_ms": 110_000}),
        ]
    return [
        json.dumps(
            {
                "event_id": f"{fields.get('opportunity_id') or fields['call_id']}-{type_name}",
                "type": type_name,
                "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - ago)),
                "schema_version": 1,
                **fields,
                **({"segment": "smb"} if type_name == "opportunity.created" else {}),
            }
        ).encode()
        for ago, type_name, fields in drafts
    ]


def _series_labels(settings: Settings, match: str, label: str) -> set[str]:
    url = f"http://127.0.0.1:{settings.prometheus_port}/api/v1/series?" + urllib.parse.urlencode(
        {"match[]": match}
    )
    with urllib.request.urlopen(url, timeout=5) as response:
        return {series[label] for series in json.load(response)["data"]}


def _every_panel_query_returns_data(settings: Settings) -> None:
    """Every panel query of every dashboard, its variables expanded as Grafana would, has data.

    ``$team`` takes, of the values its variable query lists, the team with the most
    activities today (a wallboard is looked at for a working team; a team whose day has
    just begun has no win rate today yet). Custom variables take their default.
    """
    for path in sorted(OUT_DIR.glob("*.json")):
        board = json.loads(path.read_text())
        values: dict[str, str] = {}
        for variable in board["templating"]["list"]:
            if variable["type"] == "custom":
                values[variable["name"]] = variable["current"]["value"]
                continue
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["definition"])
            assert match, variable["definition"]
            wait_for(
                lambda m=match: bool(_series_labels(settings, m[1], m[2])),
                30,
                f"{variable['name']} values",
            )
            choices = _series_labels(settings, match[1], match[2])
            busiest = _prometheus(
                settings,
                'topk(1, salespulse_activities{team!="",rep="",window="today",kind="total"})',
            )
            assert busiest and busiest[0]["metric"]["team"] in choices, (busiest, choices)
            values[variable["name"]] = busiest[0]["metric"]["team"]
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for name, value in values.items():
                    expr = expr.replace(f"${name}", value)
                wait_for(
                    lambda q=expr: bool(_prometheus(settings, q)),
                    60,
                    f"{path.name} / {panel['title']}: data for {expr}",
                )


async def test_prometheus_holds_what_kpis_says(
    exporter: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    env, url = exporter
    settings = Settings.from_env(env)
    records, _ = simulate(
        SimConfig(
            seed=5,
            count=8_000,
            end_ms=time.time_ns() // 1_000_000,
            history_ms=5 * 86_400_000,
            invalid_share=0.01,
        )
    )
    values = [r.value for r in records if r.label == VALID] + _just_now(records)
    invalid = [r.value for r in records if r.label not in (VALID, DUPLICATE)]
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.start()
        directory = [v for v in values if b'.upserted"' in v]
        await publish(settings, settings.raw_topic, directory)
        wait_for(
            lambda: worker.metrics().projected["applied"] >= len(directory), 60, "the directory"
        )
        await publish(
            settings,
            settings.raw_topic,
            [v for v in values if b'.upserted"' not in v] + invalid,
        )
        wait_for(lambda: projections_settled(worker, len(values)), 120, "the projections")
        _every_panel_query_returns_data(settings)
    finally:
        assert worker.stop() == 0

    exposition = urllib.request.urlopen(url, timeout=10).read()
    assert b"salespulse_exporter_up 1.0" in exposition
    # Engine health: caught up, so no lag on any partition of either topic.
    lags = [
        line for line in exposition.splitlines() if line.startswith(b"salespulse_consumer_lag{")
    ]
    assert len(lags) == 2 * settings.partitions
    assert all(line.endswith(b" 0.0") for line in lags), lags
    assert b"salespulse_projection_newest_event_age_seconds " in exposition
    assert b"salespulse_projection_last_commit_age_seconds " in exposition
    assert b"salespulse_speed_to_lead_seconds_bucket{" in exposition
    assert b"salespulse_events_too_late_total 0.0" in exposition  # none was that late
    # What state costs: Redis's own used_memory, per lead created and per event applied.
    used = _sample(exposition, b"salespulse_redis_used_memory_bytes")
    leads = sum(b'"lead.created"' in v for v in values)
    assert _sample(exposition, b"salespulse_redis_bytes_per_lead") == pytest.approx(
        used / leads, rel=0.05
    )
    assert 0 < _sample(exposition, b"salespulse_redis_bytes_per_event") < used
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr

    selector = 'team="{team}",rep="{rep}",queue="{queue}",campaign="",window="{window}"'
    samples = [
        ("salespulse_win_rate_ratio", "org", "", {}, "all", "win_rate"),
        ("salespulse_revenue_won", "team", "emea", {"team": "emea"}, "all", "revenue_won"),
        (
            "salespulse_calls_offered",
            "queue",
            "q-apac",
            {"queue": "q-apac"},
            "month",
            "calls_offered",
        ),
        (
            "salespulse_service_level_ratio",
            "team",
            "amer-east",
            {"team": "amer-east"},
            "all",
            "service_level_ratio",
        ),
        (
            "salespulse_leads_created",
            "rep",
            "rep-emea-001",
            {"team": "emea", "rep": "rep-emea-001"},
            "month",
            "leads_created",
        ),
    ]
    for metric, scope, scope_id, labels, window, kpi in samples:
        query = (
            metric
            + "{"
            + selector.format(
                team=labels.get("team", ""),
                rep=labels.get("rep", ""),
                queue=labels.get("queue", ""),
                window=window,
            )
            + "}"
        )
        done = cli(
            "kpis",
            "--scope",
            scope,
            *(["--id", scope_id] if scope_id else []),
            "--window",
            window,
            "--json",
            env=env,
        )
        assert done.returncode == 0, done.stderr
        expected = json.loads(done.stdout)["kpis"][kpi]["value"]

        def scraped(q: str = query, want: float = expected) -> bool:
            # Scrapes taken while events were still arriving hold older values; the first
            # scrape after the projections settled must hold exactly the CLI's value.
            found = _prometheus(settings, q)
            return len(found) == 1 and float(found[0]["value"][1]) == pytest.approx(want, rel=1e-12)

        wait_for(scraped, 30, f"Prometheus to hold {query} = {expected}")


def _sample(exposition: bytes, name: bytes) -> float:
    """The value of an unlabelled series of an exposition."""
    (line,) = [line for line in exposition.splitlines() if line.startswith(name + b" ")]
    return float(line.split()[1])
