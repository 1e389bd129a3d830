"""benchmarks.stages needs no server: a tiny run prints every stage, and its planning carries
records and lead facts from batch to batch as the worker does."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from benchmarks import org_month
from benchmarks.stages import decode_all, plan_all
from tests.support import ROOT

pytestmark = pytest.mark.unit


def test_a_tiny_run_prints_every_stage() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.stages", "--count", "1500", "--batch", "400"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    stages = (
        "decode and validate",
        "plan (batches of 400)",
        "commit payload",
        "commit packed (redis-py)",
        "commit packed (hiredis)",
    )
    for stage in stages:
        match = re.search(rf"^{re.escape(stage)}\s+([\d.]+) µs/event$", done.stdout, re.MULTILINE)
        assert match and float(match[1]) > 0, done.stdout


def test_a_bad_argument_is_refused_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.stages", "--repeat", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "--repeat must be at least 1" in done.stderr.splitlines()[-1]


def test_planning_in_batches_applies_every_event_once() -> None:
    """Batches of one partition or of many, small or large: the same events applied (a
    record lost between batches would count an event's duplicate as applied again)."""
    values, _ = org_month(1_200, call_disorder_share=0.3)
    now_ms = time.time_ns() // 1_000_000
    events = decode_all(values + values[:300], now_ms)  # 300 duplicates
    counted = [
        plan_all(events, partitions, batch, now_ms)[1]
        for partitions, batch in ((1, 1_500), (5, 97))
    ]
    assert counted == [1_200, 1_200]
