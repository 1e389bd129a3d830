"""The reader token on the real stack: an exporter started with SALESPULSE_READER_TOKEN_FILE
answers its metrics, API and wallboard only with the token (bearer, or basic auth's
password), refuses to start with an unusable token file, is scraped by the stack's
Prometheus with the token, and its wallboard works in a real browser with basic auth."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, HttpCredentials, Response, sync_playwright

from config.reader_access import CHALLENGE
from config.settings import Settings
from stack.install import require_binary
from stack.servers import Prometheus
from streams.worker_process import WorkerProcess
from tests.support import ROOT, salespulse, wait_for

pytestmark = pytest.mark.integration

# Ports of this file's own, offset from the session stack's (29467 and 29090 in CI: 29567,
# 29568 and 29590), so that stacks on other ports (make test beside a dev run) get theirs.
EXPORTER_OFFSET = 100
PROMETHEUS_OFFSET = 500


def _port(stack_env: dict[str, str], name: str, offset: int) -> int:
    return int(stack_env[f"SALESPULSE_{name}_PORT"]) + offset


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "reader-token"
    path.write_text(secrets.token_urlsafe(24) + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def secured(
    stack_env: dict[str, str], tmp_path: Path, token_file: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """A `salespulse exporter` that requires the token: its base URL and its environment."""
    port = _port(stack_env, "EXPORTER", EXPORTER_OFFSET)
    env = {
        **stack_env,
        "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "SALESPULSE_EXPORTER_PORT": str(port),
        "SALESPULSE_READER_TOKEN_FILE": str(token_file),
    }
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "exporter.log"
    with salespulse(["exporter"], env, log) as process:

        def answers() -> bool:
            assert process.poll() is None, log.read_text()
            return _get(f"{url}/api/v1/health", _bearer(token_file))[0] == 200

        wait_for(answers, 30, "the exporter to answer with the token")
        yield url, env


def _bearer(token_file: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_file.read_text().strip()}"}


def _basic(password: str, user: str = "wallboard") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _get(url: str, headers: dict[str, str]) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


PATHS = ["/metrics", "/api/v1/kpis?scope=org&window=today", "/api/v1/teams", "/", "/openapi.json"]


def test_metrics_api_and_wallboard_answer_only_with_the_token(
    secured: tuple[str, dict[str, str]], token_file: Path
) -> None:
    url, _ = secured
    token = token_file.read_text().strip()
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    for path in [*PATHS, "/wallboard/wallboard.js"]:
        for refused in ({}, {"Authorization": f"Bearer {wrong}"}, _basic(wrong), _basic("")):
            status, headers, body = _get(url + path, refused)
            assert status == 401, (path, refused)
            assert headers["WWW-Authenticate"] == CHALLENGE
            assert token.encode() not in body and wrong.encode() not in body
        for accepted in (_bearer(token_file), _basic(token), _basic(token, user="")):
            status, _, body = _get(url + path, accepted)
            assert status == 200, (path, accepted, body[:200])
    _, _, metrics = _get(f"{url}/metrics", _bearer(token_file))
    # What this test was refused, as the exporter counted it.
    assert b'salespulse_exporter_refused_requests_total{reason="missing"} 6.0' in metrics
    assert b'salespulse_exporter_refused_requests_total{reason="wrong"} 18.0' in metrics
    _, _, spec = _get(f"{url}/openapi.json", _basic(token))
    assert json.loads(spec)["security"] == [{"readerToken": []}, {"readerBasic": []}]


@pytest.mark.parametrize("content", ["", None, "too-short"], ids=["empty", "missing", "short"])
def test_the_exporter_refuses_to_start_with_an_unusable_token_file(
    stack_env: dict[str, str], tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "reader-token"
    if content is not None:
        path.write_text(content)
    port = _port(stack_env, "EXPORTER", EXPORTER_OFFSET)
    env = {**stack_env, "SALESPULSE_EXPORTER_PORT": str(port)}
    env["SALESPULSE_READER_TOKEN_FILE"] = str(path)
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "exporter"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"salespulse: error: SALESPULSE_READER_TOKEN_FILE={path}: "), line
    if content:
        assert content not in line
    with socket.socket() as probe:  # it never served
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def _exporter_target(prometheus: Prometheus) -> dict[str, Any]:
    """The exporter's scrape target: its ``health`` is ``unknown`` until the first scrape."""
    with urllib.request.urlopen(f"{prometheus.address}/api/v1/targets", timeout=5) as response:
        targets = json.load(response)["data"]["activeTargets"]
    found = [t for t in targets if t["labels"]["job"] == "salespulse-exporter"]
    return found[0] if found else {"health": "unknown"}  # the targets are not loaded yet


def test_the_stacks_prometheus_scrapes_an_exporter_that_requires_the_token(
    secured: tuple[str, dict[str, str]], tmp_path: Path, token_file: Path
) -> None:
    """A Prometheus of this test's own (the session's was started without a token), written
    by the stack's Prometheus.prepare: refused without the token file, up with it."""
    _, env = secured
    own = {
        **env,
        "SALESPULSE_STACK_DIR": str(tmp_path / "stack"),
        "SALESPULSE_PROMETHEUS_PORT": str(_port(env, "PROMETHEUS", PROMETHEUS_OFFSET)),
        # Nothing listens there: the worker job is down, and this test reads only the exporter.
        "SALESPULSE_WORKER_METRICS_PORT": str(int(env["SALESPULSE_EXPORTER_PORT"]) + 1),
    }
    without = Settings.from_env({**own, "SALESPULSE_READER_TOKEN_FILE": ""})
    prometheus = Prometheus(without)
    prometheus.up()
    try:
        wait_for(lambda: _exporter_target(prometheus)["health"] == "down", 60, "a 401 scrape")
        assert "401" in _exporter_target(prometheus)["lastError"]
    finally:
        prometheus.down()

    prometheus = Prometheus(Settings.from_env(own))
    prometheus.up()
    try:
        wait_for(lambda: _exporter_target(prometheus)["health"] == "up", 60, "a scrape")
        assert _exporter_target(prometheus)["lastError"] == ""
        query = 'salespulse_exporter_up{job="salespulse-exporter"}'
        url = f"{prometheus.address}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(url, timeout=5) as response:
            (sample,) = json.load(response)["data"]["result"]
        assert sample["value"][1] == "1"  # the exporter's own metrics, scraped with the token
    finally:
        prometheus.down()


def _wallboard_statuses(
    browser: Browser, address: str, credentials: HttpCredentials | None
) -> dict[str, int]:
    """Open the wallboard; the status of each request it made (page, files, API reads)."""
    context = browser.new_context(http_credentials=credentials)
    try:
        page = context.new_page()
        seen: list[Response] = []
        page.on("response", lambda response: seen.append(response))
        with page.expect_response(lambda r: r.url.endswith("/api/v1/teams")) as teams:
            page.goto(address)
        assert teams.value.status == 200, address
        page.wait_for_load_state("networkidle")
        # The script read the teams (none: no data in this prefix) and shows no error.
        assert page.eval_on_selector("#banner", "b => b.hidden"), page.inner_text("#banner")
        return {r.url: r.status for r in seen if "favicon" not in r.url}
    finally:
        context.close()


def test_the_wallboard_works_in_a_browser_with_basic_auth(
    secured: tuple[str, dict[str, str]], token_file: Path
) -> None:
    """The browser's answer to the basic challenge (or credentials in the address, as a TV
    would be set up) goes with the page's files and the API reads its script makes."""
    chromium = require_binary("chromium", "chromium")
    url, _ = secured
    token = token_file.read_text().strip()
    host = urllib.parse.urlsplit(url).netloc
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            answer: HttpCredentials = {"username": "tv-room", "password": token}
            for address, credentials in (
                (f"{url}/", answer),  # what a person types at the browser's prompt
                (f"http://tv-room:{token}@{host}/", None),
            ):
                statuses = _wallboard_statuses(browser, address, credentials)
                # The page, its CSS and script, and the script's fetch of /api/v1/teams.
                assert len(statuses) >= 4 and set(statuses.values()) == {200}, statuses
        finally:
            browser.close()


def test_the_worker_metrics_answer_only_with_the_token(
    stack_env: dict[str, str], tmp_path: Path, token_file: Path
) -> None:
    port = _port(stack_env, "WORKER_METRICS", 103)
    env = {
        **stack_env,
        "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "SALESPULSE_WORKER_METRICS_PORT": str(port),
        "SALESPULSE_READER_TOKEN_FILE": str(token_file),
    }
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.start()  # its readiness is read with the token (WorkerProcess.metrics)
        url = f"http://127.0.0.1:{port}/metrics"
        for refused in ({}, _basic("not-the-token")):
            status, headers, body = _get(url, refused)
            assert status == 401 and headers["WWW-Authenticate"] == CHALLENGE
            assert b"salespulse_" not in body
        status, _, body = _get(url, _bearer(token_file))
        assert status == 200 and b"salespulse_ingest_agent_starts_total" in body
        # `salespulse watch --once` reads them with the same setting.
        done = subprocess.run(
            [sys.executable, "-m", "streams.cli", "watch", "--once"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        assert "records read" in done.stdout
    finally:
        assert worker.stop() == 0
