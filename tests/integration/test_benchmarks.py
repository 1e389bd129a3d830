"""Smoke runs of the benchmarks at tiny sizes, so they cannot rot (the numbers mean nothing)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from config.settings import Settings
from tests.support import ROOT

pytestmark = pytest.mark.integration


def _run(stack_env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        env={**os.environ, **stack_env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _number(line_start: str, out: str) -> float:
    match = re.search(rf"^{re.escape(line_start)}\s+([\d,.]+)", out, re.MULTILINE)
    assert match, out
    return float(match[1].replace(",", ""))


def _numbers(line_start: str, out: str) -> list[float]:
    """Every number on the line that starts with ``line_start``."""
    match = re.search(rf"^{re.escape(line_start)}(.*)$", out, re.MULTILINE)
    assert match, out
    return [float(x.replace(",", "")) for x in re.findall(r"[\d,.]*\d", match[1])]


def test_ingest_benchmark(stack_env: dict[str, str]) -> None:
    out = _run(stack_env, "benchmarks.ingest", "--count", "2000", "--timeout", "300")
    assert _number("records", out) == 2000
    assert _number("worker ingest", out) > 0


def test_throughput_benchmark(stack_env: dict[str, str]) -> None:
    out = _run(
        stack_env,
        "benchmarks.throughput",
        *("--count", "3000", "--workers", "1,2", "--rebuild-processes", "1,2"),
        *("--baseline-seconds", "3", "--timeout", "300"),
    )
    assert _number("events", out) == 3000
    for row in (
        "ceiling: raw aiokafka consumer + orjson",
        "baseline: naive Faust agent, 1 Redis RTT/ev",
        "Faust stream alone: take_events(10000)",
        "salespulse, 1 worker, whole catalogue",
        "salespulse, 2 workers, whole catalogue",
        "salespulse end to end from raw, 1 worker",
        "salespulse rebuild, 1 process, whole",
        "salespulse rebuild, 2 processes, whole",
    ):
        assert _number(row, out) > 0, row
    for row in (
        "salespulse, 1 worker, whole catalogue",
        "salespulse, 2 workers, whole catalogue",
        "salespulse end to end from raw, 1 worker",
    ):  # events/s, x ceiling, x baseline, then worker and Redis CPU µs per event
        figures = _numbers(row, out)
        assert len(figures) == 5, (row, out)
        assert figures[0] > 0 and figures[3] > 0 and figures[4] > 0, (row, out)
    assert _number("worker peak RSS (2 workers)", out) > 0
    assert _number("worker peak RSS (end to end)", out) > 0


def test_freshness_benchmark(stack_env: dict[str, str]) -> None:
    out = _run(stack_env, "benchmarks.freshness", "--rates", "200", "--seconds", "2")
    (row,) = [line.split() for line in out.splitlines() if line.split()[:1] == ["200"]]
    assert int(row[2].replace(",", "")) == 400, out
    visible_p50, committed_p50 = float(row[3].replace(",", "")), float(row[6].replace(",", ""))
    assert visible_p50 >= committed_p50 > 0, out  # folded into the rollups after the commit
    forwarded_p50, worker_us = float(row[9].replace(",", "")), float(row[11].replace(",", ""))
    assert forwarded_p50 > 0 and worker_us > 0, out


def test_scrape_benchmark(stack_env: dict[str, str]) -> None:
    out = _run(stack_env, "benchmarks.scrape", "--reps", "30", "--partitions", "2,5")
    rows = [line.split() for line in out.strip().splitlines()[-2:]]
    assert [row[:3] for row in rows] == [["2", "30", "30"], ["5", "30", "30"]], out
    assert all(int(row[3].replace(",", "")) > 0 for row in rows), out


def test_api_latency_benchmark(stack_env: dict[str, str]) -> None:
    out = _run(
        stack_env,
        "benchmarks.api_latency",
        *("--partitions", "3", "--reps", "40", "--clients", "3", "--seconds", "1"),
    )
    row = out.strip().splitlines()[-1].split()
    assert row[0] == "3" and int(row[1].replace(",", "")) > 0, out
    p50, p99 = float(row[3]), float(row[5])
    assert 0 < p50 <= p99, out


def test_footprint_benchmark(stack_env: dict[str, str]) -> None:
    out = _run(
        stack_env, "benchmarks.footprint", *("--per-day", "300", "--at", "3,6", "--settle", "0")
    )
    lines = out.splitlines()
    first, last = (
        next(line.split() for line in lines if line.split()[:1] == [day]) for day in ("3", "6")
    )
    assert int(first[1].replace(",", "")) < int(last[1].replace(",", "")), out  # events
    assert 0 < int(first[2].replace(",", "")) < int(last[2].replace(",", "")), out  # leads
    assert last[-1].endswith("%") and "record lead" in out, out


def test_compare_benchmark(stack_env: dict[str, str]) -> None:
    """Two versions (here the same commit twice), their runs in turn and the medians."""
    out = _run(stack_env, "benchmarks.compare", "--base", "HEAD", "--runs", "1", "--count", "3000")
    row = r"^run (\d): (base|this) \S+\s+([\d,]+)\s+([\d.,]+)\s+([-\d.,]+)$"
    runs = re.findall(row, out, re.M)
    assert [(n, who) for n, who, *_ in runs] == [("1", "base"), ("2", "this")], out
    for *_, rate, worker, _ in runs:
        assert float(rate.replace(",", "")) > 0 and float(worker.replace(",", "")) > 0, out
    assert re.search(r"^this - base\s+worker µs/ev\s+median\s+[-+][\d.,]+", out, re.M), out


def test_redis_scripts_benchmark(stack_env: dict[str, str]) -> None:
    out = _run(stack_env, "benchmarks.redis_scripts", "--count", "2000", "--batch", "500")
    assert _number("events", out) == 2000
    for script in ("load", "commit", "fold"):
        calls, cpu = _numbers(script, out)
        assert calls > 0 and cpu >= 0, out
    assert _numbers("all", out)[0] > 0, out
    folded, share = _numbers("buckets folded", out)
    assert folded > 0 and 0 <= share <= 100, out
    assert _numbers("hset", out)[0] > 0, out  # the commits wrote buckets and records
    client = redis.Redis.from_url(Settings.from_env(stack_env).redis)
    assert not list(client.scan_iter(match="{redisbench*", count=1000))  # its keys are gone


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("benchmarks.scrape", "--reps", "10,x"), "'10,x' is not a list of numbers"),
        (("benchmarks.throughput", "--workers", "1,0"), "'1,0': every number must be at least 1"),
        (("benchmarks.freshness", "--seconds", "0"), "--seconds must be positive, not 0.0"),
        (("benchmarks.soak", "--minutes", "0"), "--minutes: must be positive, not 0.0"),
        (("benchmarks.footprint", "--at", "60,30,120"), "--at must be increasing day counts"),
        (("benchmarks.redis_scripts", "--batch", "0"), "--batch must be at least 1"),
        (("benchmarks.api_latency", "--seconds", "0"), "--seconds: must be positive, not 0.0"),
        (("benchmarks.compare", "--base", "no-such-rev"), "'no-such-rev' is not a revision"),
    ],
)
def test_a_bad_argument_is_refused(
    stack_env: dict[str, str], args: tuple[str, ...], error: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        env={**os.environ, **stack_env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert error in done.stderr


def test_webhooks_benchmark(stack_env: dict[str, str]) -> None:
    env = {**stack_env, "SALESPULSE_INGEST_PORT": "29469"}
    out = _run(env, "benchmarks.webhooks", "--count", "300", "--concurrency", "4")
    assert _number("deliveries", out) == 300
    assert _number("latency p99", out) > 0


def test_soak_benchmark(stack_env: dict[str, str], tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    out = _run(
        stack_env,
        "benchmarks.soak",
        *("--minutes", "0.25", "--rate", "100", "--sample-seconds", "5", "--out", str(report)),
    )
    assert _number("produced", out) == 1500
    for goal in ("worker RSS growth", "exporter RSS growth", "publisher RSS growth", "lag never"):
        assert re.search(rf"^{goal}.*(PASS|FAIL)$", out, re.MULTILINE), goal
    results = json.loads(report.read_text())
    assert results["produced"] == 1500 and not results["aborted"]
    assert [round(s["elapsed"] / 5) for s in results["samples"]] == [1, 2, 3]
    last = results["samples"][-1]
    assert last["ingested"] >= 1500 and last["scrapes"] >= 1
    assert min(last["rss"].values()) > 0 and last["redis_keys"] > 0


def test_scale_benchmark(stack_env: dict[str, str], tmp_path: Path) -> None:
    costs = tmp_path / "costs.json"
    out = _run(
        stack_env,
        "benchmarks.scale",
        *("--count", "20000", "--workers", "1", "--partitions", "12", "--stacks", "single"),
        *("--json", str(costs)),
    )
    row = next(line for line in out.splitlines() if line.startswith("| single | 12 | 1 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert float(cells[3].replace(",", "")) > 0, row  # events/s
    assert float(cells[8]) > 0, row  # total CPU s per 1,000 events
    results = json.loads(costs.read_text())
    assert [(r["partitions"], r["workers"]) for r in results["runs"]] == [(12, 1)]
    single = results["costs"]["single"]
    assert single["worker_cpu_us_per_event"] > 0 and single["redis_bytes_per_event"] > 0
    assert single["kafka_bytes_per_event"] > 0 and single["replication"] == 1
    # The capacity model reads the file, and a bad argument is one line.
    assert "| binds first |" in _run(stack_env, "benchmarks.capacity", "--costs", str(costs))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--stacks", "single,nowhere"],
        env={**os.environ, **stack_env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "use single, cluster" in done.stderr


def test_peers_comparison_benchmark(stack_env: dict[str, str]) -> None:
    out = _run(stack_env, "benchmarks.peers.compare", "--count", "6000", "--partitions", "2")
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"salespulse, 1 worker", "Quix Streams 3.28.1", "Kafka Streams 4.1.1"} <= set(rows)
    for name in ("salespulse, 1 worker", "Quix Streams 3.28.1", "Kafka Streams 4.1.1"):
        cells = [cell.strip() for cell in rows[name].strip("|").split("|")]
        assert float(cells[2].replace(",", "")) > 0, rows[name]  # events/s
        assert float(cells[-1].replace(",", "")) > 0, rows[name]  # events per CPU second
    assert "salespulse per CPU second against Kafka Streams" in out
