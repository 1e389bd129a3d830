"""The local stack: real servers, answering, configured as the design asks."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis

from config.settings import Settings
from stack.servers import RULES_DIR, StackError, servers
from streams.producer import read_jsonl, subject_key
from tests.kafka_reader import read_topic
from tests.support import cli

pytestmark = pytest.mark.integration


def test_status_reports_every_server_answering(stack_env: dict[str, str]) -> None:
    done = cli("stack", "status", env=stack_env)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("kafka", "redis", "prometheus"):
        assert any(
            line.startswith(name) and line.endswith(" answering")
            for line in done.stdout.splitlines()
        ), done.stdout


def test_up_is_idempotent(stack_env: dict[str, str]) -> None:
    settings = Settings.from_env(stack_env)
    before = {s.name: s.pid() for s in servers(settings)}
    started = time.monotonic()
    done = cli("stack", "up", env=stack_env)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    assert {s.name: s.pid() for s in servers(settings)} == before


def test_redis_persists_with_aof(stack_env: dict[str, str]) -> None:
    client = redis.Redis.from_url(Settings.from_env(stack_env).redis)
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        client.close()


def test_prometheus_loads_the_repository_rules(stack_env: dict[str, str]) -> None:
    settings = Settings.from_env(stack_env)
    url = f"http://127.0.0.1:{settings.prometheus_port}/api/v1/rules"
    with urllib.request.urlopen(url, timeout=5) as response:
        groups = json.load(response)["data"]["groups"]
    assert {
        "salespulse-ingest",
        "salespulse-kpi-aggregates",
        "salespulse-kpi-alerts",
        "salespulse-engine-alerts",
    } <= {g["name"] for g in groups}
    check = subprocess.run(
        ["promtool", "check", "rules", *map(str, RULES_DIR.glob("*.yml"))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # The alert rules' unit tests: each alert fires when it should and stays silent otherwise.
    tests = sorted(map(str, (RULES_DIR / "tests").glob("*.yml")))
    assert tests
    unit = subprocess.run(
        ["promtool", "test", "rules", *tests], capture_output=True, text=True, check=False
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_simulate_to_file_then_produce_lands_every_line(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**stack_env, "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}"}
    settings = Settings.from_env(env)
    log = tmp_path / "log.jsonl"
    made = cli(
        "simulate",
        "--count",
        "3000",
        "--invalid",
        "0.05",
        "--duplicates",
        "0.02",
        "--out",
        str(log),
        env=env,
    )
    assert made.returncode == 0, made.stderr
    assert cli("topics", env=env).returncode == 0
    sent = cli("produce", str(log), env=env)
    assert sent.returncode == 0, sent.stderr
    assert "produced 3000 records" in sent.stdout
    landed = asyncio.run(read_topic(settings, settings.raw_topic, settings.partitions, expect=3000))
    lines = list(read_jsonl(log))
    assert Counter(r.value for r in landed) == Counter(lines)
    assert all(r.key == subject_key(r.value) for r in landed if r.value is not None)


def test_servers_that_already_run_are_used_not_started(stack_env: dict[str, str]) -> None:
    settings = Settings.from_env(stack_env)
    external = {
        **stack_env,
        "SALESPULSE_KAFKA_BOOTSTRAP": settings.bootstrap,
        "SALESPULSE_REDIS_URL": settings.redis,
    }
    up = cli("stack", "up", env=external)
    assert up.returncode == 0, up.stderr
    status = cli("stack", "status", env=external)
    assert status.returncode == 0
    for name in ("kafka", "redis"):
        (line,) = [ln for ln in status.stdout.splitlines() if ln.startswith(name)]
        assert " external " in line and line.endswith(" answering"), line


def test_a_configured_server_that_does_not_answer_is_one_line(stack_env: dict[str, str]) -> None:
    dead = {**stack_env, "SALESPULSE_REDIS_URL": "redis://127.0.0.1:1/0"}
    up = cli("stack", "up", env=dead)
    assert up.returncode == 1
    assert up.stderr.strip() == (
        "salespulse: error: redis: the configured server redis://127.0.0.1:1/0 does not answer"
    )
    assert cli("stack", "status", env=dead).returncode == 1


def test_a_server_this_stack_did_not_start_is_not_adopted(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """A Redis left running by another run on our port: `up` says so instead of reporting
    it as its own (which left `down` and the fault tests unable to stop it)."""
    settings = Settings.from_env(stack_env)
    stranger = dataclasses.replace(settings, stack_dir=str(tmp_path / "other-stack"))
    redis_server = next(s for s in servers(stranger) if s.name == "redis")
    assert redis_server.pid() is None  # no pid file there, yet the port answers
    with pytest.raises(StackError, match=r"already answers at .*no pid file"):
        redis_server.up()
    assert redis_server.pid() is None  # nothing was started over it


def test_a_server_that_exits_at_start_quotes_its_reason(tmp_path: Path) -> None:
    """A port taken by something that does not answer as Redis: redis-server exits at once,
    and the one-line error carries its last log line (a CI log shows that, not the file)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings.from_env(
            {"SALESPULSE_STACK_DIR": str(tmp_path), "SALESPULSE_REDIS_PORT": str(port)}
        )
        redis_server = next(s for s in servers(settings) if s.name == "redis")
        with pytest.raises(StackError) as failed:
            redis_server.up()
    message = str(failed.value)
    assert message.startswith("redis exited with code 1 (")
    assert f"port {port}" in message and "\n" not in message
