"""The wallboard page in a real browser (Debian's chromium, driven by Playwright) against the
real stack: the tiles show what /api/v1/kpis says, in the units it names (money with its
currency), reps by name, values on one line from a phone to a wall screen, "no queue mapped"
for a team without a queue; they change without a reload, and the stale banner appears when
the worker stops. Screenshots go to .salespulse/artefacts/."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from playwright.sync_api import Page, sync_playwright

from config.settings import Settings
from simulator.log import SimConfig, simulate
from stack.install import require_binary
from streams.producer import publish
from streams.worker_process import WorkerProcess
from tests.support import ROOT, directory_first, own_env, salespulse, wait_for, wait_for_exporter

pytestmark = pytest.mark.integration

ARTEFACTS = ROOT / ".salespulse" / "artefacts"
# Every simulated team has its queue mapped; LATAM, published by the test, has no queue.
QUEUE_TEAMS = "q-emea=emea,q-amer-east=amer-east,q-amer-west=amer-west,q-apac=apac"
NO_QUEUE_TEAM = "latam"
LONG_NAME = "Maria Fernanda de Albuquerque e Silva Cavalcanti"
# Values that wrap onto a second line, or (fits=true) do not fit their box even shrunk.
WRAPPED = """([selector, fits]) => [...document.querySelectorAll(selector)].filter((e) => {
  const range = document.createRange();
  range.selectNodeContents(e);
  const rects = [...range.getClientRects()].filter((r) => r.width > 0);
  rects.sort((a, b) => a.top - b.top);
  let lines = 0, bottom = -Infinity;
  for (const r of rects) if (r.top >= bottom - 1) { lines += 1; bottom = r.bottom; }
  return lines > 1 || (fits && e.scrollWidth > e.clientWidth + 1);
}).map((e) => {
  const tile = e.closest("[data-kpi]");
  return `${tile ? tile.dataset.kpi : e.className}: ${e.innerText}`;
})"""
TARGETS = """
[[target]]
kpi = "speed_to_lead_seconds"
scope = "team"
id = "*"
window = "today"
target = 600
direction = "lower"
warning = 1800
critical = 3600

[[target]]
kpi = "win_rate"
scope = "team"
id = "*"
window = "today"
target = 0.3
direction = "higher"
warning = 0.2
critical = 0.1

[[target]]
kpi = "activities"
label = "total"
scope = "team"
id = "*"
window = "today"
target = 1000
direction = "higher"
warning = 10

[[target]]
kpi = "revenue_won"
scope = "team"
id = "*"
window = "today"
target = 10000000
direction = "higher"
"""


def _publish(settings: Settings, topic: str, values: list[bytes]) -> None:
    """Publish from another thread: Playwright's sync API owns this thread's event loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, publish(settings, topic, values)).result()


def _api(url: str, path: str, **params: str) -> Any:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(params)}") as response:
        return json.load(response)


def _tiles(page: Page) -> dict[str, str]:
    return page.eval_on_selector_all(  # type: ignore[no-any-return]
        ".tile",
        "tiles => Object.fromEntries(tiles.map(t => [t.dataset.kpi, t.dataset.value]))",
    )


def _wrapped(page: Page, selector: str, fits: bool = False) -> list[str]:
    return page.evaluate(WRAPPED, [selector, fits])


def _team_without_queue() -> tuple[list[bytes], list[bytes]]:
    """A team with a rep (named at length) who sends emails, and no calls and no queue."""
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    common = {"occurred_at": at, "schema_version": 1}
    rep = "rep-latam-001"
    directory: list[dict[str, object]] = [
        {"event_id": "latam-team", "type": "team.upserted", "team_id": NO_QUEUE_TEAM,
         "name": "LATAM", "timezone": "America/Sao_Paulo"},
        {"event_id": "latam-rep", "type": "rep.upserted", "rep_id": rep,
         "team_id": NO_QUEUE_TEAM, "active": True, "name": LONG_NAME},
    ]  # fmt: skip
    emails = [
        {"event_id": f"latam-{n}", "type": "email.sent", "message_id": f"latam-m{n}", "rep_id": rep}
        for n in range(7)
    ]
    return (
        [orjson.dumps({**event, **common}) for event in directory],
        [orjson.dumps({**event, **common}) for event in emails],
    )


def _events_now(team_reps: list[str], count: int, tag: str) -> list[bytes]:
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return [
        orjson.dumps(
            {
                "event_id": f"{tag}-{n}",
                "type": "email.sent",
                "occurred_at": at,
                "schema_version": 1,
                "message_id": f"{tag}-m{n}",
                "rep_id": team_reps[n % len(team_reps)],
            }
        )
        for n in range(count)
    ]


def test_the_wallboard_shows_the_api_live_and_says_when_it_is_stale(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    chromium = require_binary("chromium", "chromium")
    env = own_env(
        stack_env,
        tmp_path / "targets.toml",
        TARGETS,
        SALESPULSE_STALE_AFTER_SECONDS="5",
        SALESPULSE_CURRENCY="EUR",
        SALESPULSE_QUEUE_TEAMS=QUEUE_TEAMS,
    )
    settings = Settings.from_env(env)
    records, _ = simulate(
        SimConfig(seed=41, count=6_000, end_ms=time.time_ns() // 1_000_000, history_ms=86_400_000)
    )
    directory, rest = directory_first(records)
    reps: dict[str, list[str]] = {}
    for value in directory:
        event = json.loads(value)
        if event["type"] == "rep.upserted":
            reps.setdefault(event["team_id"], []).append(event["rep_id"])
    worker = WorkerProcess(env, tmp_path / "worker.log")
    exporter_log = tmp_path / "exporter.log"
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with salespulse(["exporter"], env, exporter_log) as exporter:
        try:
            worker.start()
            url = wait_for_exporter(exporter, settings.exporter_port, exporter_log)
            _drive_the_page(url, settings, worker, chromium, directory, rest, reps)
        finally:
            worker.stop()


def _drive_the_page(
    url: str,
    settings: Settings,
    worker: WorkerProcess,
    chromium: str,
    directory: list[bytes],
    rest: list[bytes],
    reps: dict[str, list[str]],
) -> None:
    latam_directory, latam_emails = _team_without_queue()
    directory, rest = directory + latam_directory, rest + latam_emails
    asyncio.run(publish(settings, settings.raw_topic, directory))
    wait_for(lambda: worker.metrics().projected["applied"] >= len(directory), 60, "directory")
    asyncio.run(publish(settings, settings.raw_topic, rest))
    wait_for(lambda: worker.metrics().records >= len(directory) + len(rest), 60, "ingest")
    wait_for(lambda: _api(url, "/api/v1/health")["consumer_lag"] == 0, 60, "projections")
    teams = [t["id"] for t in _api(url, "/api/v1/teams")["teams"]]
    team = max(teams, key=lambda t: len(reps.get(t, [])))

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        page.goto(f"{url}/?team={team}&window=today")
        page.wait_for_function("document.getElementById('updated').dataset.at")
        loaded_at = page.evaluate("window.salespulseLoadedAt")

        # Settled: the tiles hold exactly what the API says.
        api = _api(url, "/api/v1/kpis", scope="team", id=team, window="today")["kpis"]
        page.wait_for_timeout(1_500)  # one more poll after the API read above
        for kpi, shown in _tiles(page).items():
            figure = api[kpi]["total"] if kpi == "activities" else api[kpi]
            expected = "" if figure["value"] is None else figure["value"]
            assert (float(shown) if shown else "") == expected, kpi
        assert page.locator("#team").input_value() == team
        assert page.locator("#banner").is_hidden()
        assert page.locator("#leaderboard tbody tr").count() > 0
        _units_and_names(page, url, team)
        assert _wrapped(page, ".tile .value", fits=True) == []
        page.screenshot(path=str(ARTEFACTS / "wallboard-1920x1080.png"), full_page=False)

        # Live: new activity shows up without a reload.
        before = float(_tiles(page)["activities"])
        _publish(settings, settings.raw_topic, _events_now(reps[team], 25, "live"))
        page.wait_for_function(
            f"Number(document.querySelector('.tile[data-kpi=activities]').dataset.value)"
            f" >= {before + 25}",
            timeout=30_000,
        )
        assert page.evaluate("window.salespulseLoadedAt") == loaded_at

        page.set_viewport_size({"width": 1366, "height": 768})
        page.wait_for_timeout(1_500)
        page.screenshot(path=str(ARTEFACTS / "wallboard-1366x768.png"), full_page=False)

        # Narrow: values shrink to their tile, names and cells ellipsize; nothing wraps.
        page.set_viewport_size({"width": 360, "height": 780})
        page.wait_for_timeout(1_500)
        assert _wrapped(page, ".tile .value", fits=True) == []
        assert _wrapped(page, "#leaderboard td") == []
        page.screenshot(path=str(ARTEFACTS / "wallboard-360.png"), full_page=True)
        _no_queue_mapped(browser.new_page(viewport={"width": 360, "height": 780}), url)
        page.set_viewport_size({"width": 1366, "height": 768})

        # Stale: the worker stops while events keep arriving on the log.
        assert worker.stop() == 0
        _publish(settings, settings.events_topic, _events_now(reps[team], 50, "stale"))
        page.wait_for_selector("#banner:not([hidden])", timeout=30_000)
        assert "Engine stale: 50 events waiting" in page.locator("#banner").inner_text()
        page.screenshot(path=str(ARTEFACTS / "wallboard-stale-1366x768.png"), full_page=False)

        # Partial: Redis lost the projections (as after FLUSHALL) while records are on the log.
        _forget_projections(settings)
        page.wait_for_function(
            "document.getElementById('banner').innerText.startsWith('Refilling')", timeout=30_000
        )
        assert "Numbers are partial, not live." in page.locator("#banner").inner_text()
        page.screenshot(path=str(ARTEFACTS / "wallboard-refilling-1366x768.png"), full_page=False)
        browser.close()


def _units_and_names(page: Page, url: str, team: str) -> None:
    """Money with the currency the API names (EUR here, in major units), reps by name."""
    answer = _api(url, "/api/v1/kpis", scope="team", id=team, window="today")
    assert answer["currency"] == {"code": "EUR", "exponent": 2}
    assert answer["units"]["revenue_won"] == "money"
    revenue = page.locator(".tile[data-kpi=revenue_won] .value").inner_text()
    assert revenue.startswith("EUR"), revenue
    minor = float(page.locator(".tile[data-kpi=revenue_won]").get_attribute("data-value") or 0)
    amount = float(revenue.removeprefix("EUR").replace(",", "").strip())
    assert amount == pytest.approx(minor / 100, abs=0.5), (revenue, minor)
    board = _api(url, "/api/v1/leaderboard", kpi="activities", team=team, window="today")
    shown = page.eval_on_selector_all(
        "#leaderboard tbody tr", "rows => rows.map(r => [r.dataset.rep, r.cells[1].innerText])"
    )
    expected = [[row["rep"], row["name"] or row["rep"]] for row in board["rows"]]
    assert shown == expected
    assert all(name.startswith("Rep ") for _, name in shown), shown  # the simulator's names


def _no_queue_mapped(page: Page, url: str) -> None:
    """A team whose calls no queue brings (none offered, none mapped): its contact-centre
    tiles say so rather than show 0.0 % abandoned."""
    (latam,) = [t for t in _api(url, "/api/v1/teams")["teams"] if t["id"] == NO_QUEUE_TEAM]
    assert latam["queues"] == []
    page.goto(f"{url}/?team={NO_QUEUE_TEAM}&window=today")
    page.wait_for_function("document.getElementById('updated').dataset.at")
    for kpi in ("service_level_ratio", "abandonment_rate"):
        assert page.locator(f".tile[data-kpi={kpi}] .value").inner_text() == "no queue mapped"
    assert page.locator(".tile[data-kpi=activities] .value").inner_text() == "7"
    assert page.locator("#leaderboard tbody td.name").inner_text() == LONG_NAME
    assert _wrapped(page, ".tile .value", fits=True) == []
    assert _wrapped(page, "#leaderboard td") == []
    page.screenshot(path=str(ARTEFACTS / "wallboard-no-queue-360.png"), full_page=True)
    page.close()


def _forget_projections(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis)
    try:
        # One DEL, so the worker never sees half of the loss (as after FLUSHALL).
        client.delete(*client.scan_iter(match=f"*{settings.topic_prefix}:*", count=1_000))
    finally:
        client.close()
