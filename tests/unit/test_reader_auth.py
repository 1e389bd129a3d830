"""The exporter's reader token: bearer or basic auth on every route, 401 with a challenge
otherwise, open when no token is configured; Prometheus' scrape config to match."""

from __future__ import annotations

import base64
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config.reader_access import CHALLENGE, presented_token, reader_headers
from config.secret_files import SecretError
from config.settings import Settings
from exporters.auth import ReaderAuth
from exporters.server import build_app
from stack.servers import Prometheus
from streams import watch
from streams.preflight import PreflightError

pytestmark = pytest.mark.unit

TOKEN = "r3ader-t0ken-0123456789abcdef"
WRONG = "r3ader-t0ken-0123456789abcdeX"
# Nothing listens on port 1: a scrape answers at once with salespulse_exporter_up 0.
NO_REDIS = "redis://127.0.0.1:1/0"


def basic(password: str, user: str = "wallboard") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def bearer(token: str) -> str:
    return f"Bearer {token}"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "reader-token"
    path.write_text(TOKEN + "\n")
    return path


Client = Callable[[Settings], Coroutine[Any, Any, TestClient[web.Request, web.Application]]]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(settings: Settings) -> TestClient[web.Request, web.Application]:
        test_client = TestClient(TestServer(build_app(settings)))
        await test_client.start_server()
        clients.append(test_client)
        return test_client

    yield start
    for test_client in clients:
        await test_client.close()


def every_route(app: web.Application) -> list[str]:
    """A request path for each route of the app (the wallboard's files by one of them)."""
    paths = []
    for resource in app.router.resources():
        info = resource.get_info()
        if "prefix" in info:  # static files
            paths.append(f"{info['prefix']}/wallboard.js")
        else:
            paths.append(str(info.get("path") or info["formatter"]).replace("{kpi}", "win_rate"))
    return paths


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (bearer(TOKEN), TOKEN.encode()),
        ("bearer " + TOKEN, TOKEN.encode()),
        (basic(TOKEN), TOKEN.encode()),
        (basic(TOKEN, user=""), TOKEN.encode()),
        (basic("pass:with:colons"), b"pass:with:colons"),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic not*base64", None),
        ("Digest username=x", None),
        (TOKEN, None),
    ],
)
def test_the_token_is_read_from_bearer_or_basic_credentials(
    header: str, token: bytes | None
) -> None:
    assert presented_token(header) == token


@pytest.mark.parametrize(
    ("header", "refusal"),
    [
        (bearer(TOKEN), None),
        (basic(TOKEN), None),
        (basic(TOKEN, user="anyone at all"), None),
        (None, "missing"),
        ("", "missing"),
        (bearer(WRONG), "wrong"),
        (bearer(TOKEN[:-1]), "wrong"),
        (bearer(TOKEN + "x"), "wrong"),
        (bearer(""), "wrong"),
        (basic(WRONG), "wrong"),
        (basic(TOKEN[:8], user=TOKEN[8:]), "wrong"),
        ("Basic " + base64.b64encode(TOKEN.encode()).decode(), "wrong"),
        ("Token " + TOKEN, "wrong"),
    ],
)
def test_only_the_exact_token_is_accepted(header: str | None, refusal: str | None) -> None:
    assert ReaderAuth(TOKEN).refusal(header) == refusal


async def test_without_the_token_every_route_is_a_401_with_a_basic_challenge(
    client: Client, token_file: Path
) -> None:
    settings = Settings(reader_token_file=str(token_file), redis_url=NO_REDIS)
    test_client = await client(settings)
    paths = every_route(test_client.app)
    assert {"/", "/metrics", "/openapi.json", "/api/v1/kpis", "/api/v1/health"} <= set(paths)
    assert "/wallboard/wallboard.js" in paths
    for path in [*paths, "/no-such-page", "/wallboard/index.html"]:
        for headers in ({}, {"Authorization": bearer(WRONG)}, {"Authorization": basic(WRONG)}):
            response = await test_client.get(path, headers=headers)
            assert response.status == 401, (path, headers)
            assert response.headers["WWW-Authenticate"] == CHALLENGE
            assert response.headers["WWW-Authenticate"].startswith('Basic realm="salespulse"')
            body = await response.text()
            assert "reader token is required" in (await response.json())["error"]["message"]
            assert TOKEN not in body and WRONG not in body  # nothing presented is echoed
            assert basic(WRONG).split()[1] not in body


async def test_the_token_opens_every_route_as_bearer_or_as_basic_password(
    client: Client, token_file: Path
) -> None:
    test_client = await client(Settings(reader_token_file=str(token_file), redis_url=NO_REDIS))
    for header in (bearer(TOKEN), basic(TOKEN), basic(TOKEN, user="tv-room-3")):
        auth = {"Authorization": header}
        page = await test_client.get("/", headers=auth)
        assert page.status == 200 and "wallboard.js" in await page.text()
        for path in ("/wallboard/wallboard.js", "/wallboard/wallboard.css"):
            assert (await test_client.get(path, headers=auth)).status == 200, path
        spec = await (await test_client.get("/openapi.json", headers=auth)).json()
        assert set(spec["components"]["securitySchemes"]) == {"readerToken", "readerBasic"}
        assert spec["security"] == [{"readerToken": []}, {"readerBasic": []}]
        assert "401" in spec["paths"]["/api/v1/kpis"]["get"]["responses"]
        metrics = await test_client.get("/metrics", headers=auth)
        assert metrics.status == 200
        assert "salespulse_exporter_up 0.0" in await metrics.text()  # it got past the check


async def test_refusals_are_counted_by_reason_in_the_exporters_metrics(
    client: Client, token_file: Path
) -> None:
    test_client = await client(Settings(reader_token_file=str(token_file), redis_url=NO_REDIS))
    for _ in range(3):
        await test_client.get("/api/v1/kpis")
    await test_client.get("/metrics", headers={"Authorization": bearer(WRONG)})
    metrics = await test_client.get("/metrics", headers={"Authorization": bearer(TOKEN)})
    text = await metrics.text()
    assert "# TYPE salespulse_exporter_refused_requests_total counter" in text
    assert 'salespulse_exporter_refused_requests_total{reason="missing"} 3.0' in text
    assert 'salespulse_exporter_refused_requests_total{reason="wrong"} 1.0' in text


async def test_without_a_token_file_the_exporter_is_open(client: Client) -> None:
    test_client = await client(Settings(redis_url=NO_REDIS))
    assert (await test_client.get("/")).status == 200
    assert (await test_client.get("/wallboard/wallboard.js")).status == 200
    spec = await (await test_client.get("/openapi.json")).json()
    assert "security" not in spec and "securitySchemes" not in spec["components"]
    metrics = await (await test_client.get("/metrics")).text()
    assert "salespulse_exporter_refused_requests" not in metrics


@pytest.mark.parametrize("content", ["", "   \n", "short-token", None])
def test_an_unusable_token_file_stops_the_exporter_before_it_serves(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "reader-token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SecretError) as refused:
        build_app(Settings(reader_token_file=str(path), redis_url=NO_REDIS))
    message = str(refused.value)
    assert message.startswith(f"SALESPULSE_READER_TOKEN_FILE={path}: ")
    assert "\n" not in message and "short-token" not in message


def test_cli_readers_send_the_token_as_bearer(
    token_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reader_headers(Settings(reader_token_file=str(token_file))) == {
        "Authorization": f"Bearer {TOKEN}"
    }
    assert reader_headers(Settings()) == {}
    sent: list[urllib.request.Request | str] = []

    def scrape(url: urllib.request.Request | str, timeout: float = 2.0) -> watch.Snapshot:
        sent.append(url)
        return watch.Snapshot()

    monkeypatch.setattr(watch, "scrape", scrape)
    settings = Settings(reader_token_file=str(token_file), worker_metrics_port=1)
    assert watch.watch(settings, interval=1.0, once=True) == 0
    (request,) = sent
    assert isinstance(request, urllib.request.Request)
    assert request.get_header("Authorization") == f"Bearer {TOKEN}"
    assert TOKEN not in capsys.readouterr().out


def test_watch_says_when_the_metrics_refuse_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(url: urllib.request.Request | str, timeout: float = 2.0) -> watch.Snapshot:
        raise urllib.error.HTTPError(
            "http://127.0.0.1:1/metrics", 401, "Unauthorized", Message(), None
        )

    monkeypatch.setattr(watch, "scrape", refused)
    with pytest.raises(PreflightError, match=r"refused the reader token.*READER_TOKEN_FILE"):
        watch.watch(Settings(worker_metrics_port=1), interval=1.0, once=False)


def _prometheus_config(settings: Settings) -> tuple[list[str], str]:
    server = Prometheus(settings)
    server.home.mkdir(parents=True)
    command = server.prepare()
    return command, (server.home / "prometheus.yml").read_text()


def test_prometheus_scrapes_with_the_token_file_when_one_is_set(
    tmp_path: Path, token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = token_file.relative_to(tmp_path)
    settings = Settings(stack_dir=str(tmp_path / "stack"), reader_token_file=str(relative))
    command, config = _prometheus_config(settings)
    # An absolute path: Prometheus would resolve a relative one against its config's folder.
    line = f'    authorization: {{type: Bearer, credentials_file: "{token_file.resolve()}"}}'
    assert config.count(line) == 2  # the worker's and the exporter's jobs
    assert TOKEN not in config
    assert not any("lifecycle" in part for part in command)
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run(
            [promtool, "check", "config", str(Prometheus(settings).home / "prometheus.yml")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_without_authorization_when_no_token_is_set(tmp_path: Path) -> None:
    command, config = _prometheus_config(Settings(stack_dir=str(tmp_path / "stack")))
    assert "authorization" not in config
    assert not any("lifecycle" in part for part in command)


def test_prometheus_refuses_to_start_with_an_empty_token_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    settings = Settings(stack_dir=str(tmp_path / "stack"), reader_token_file=str(empty))
    with pytest.raises(SecretError, match="SALESPULSE_READER_TOKEN_FILE="):
        _prometheus_config(settings)
