"""The Quix Streams peer (benchmarks/peers/quix_peer.py) runs and equals the oracle.

A smoke run: a few thousand simulated events preloaded on a two-partition topic of the test
stack (each partition costs the peer about half a second per state store to open), the peer
run as a process of its own, its rows checked by benchmarks.peers.check. About 20 s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from benchmarks.ingest import delete_topics
from config.settings import Settings
from tests.peer_support import assert_rows_equal_the_oracle, preload
from tests.support import ROOT

pytestmark = pytest.mark.integration

COUNT = 3_000


def test_quix_peer_equals_the_oracle(stack_env: dict[str, str], tmp_path: Path) -> None:
    settings = dataclasses.replace(
        Settings.from_env(stack_env), topic_prefix=f"qx{uuid.uuid4().hex[:8]}", partitions=2
    )
    log, out = tmp_path / "events.jsonl", tmp_path / "rows.json"
    try:
        count = preload(settings, log, COUNT)
        done = subprocess.run(
            [
                *(sys.executable, "-m", "benchmarks.peers.quix_peer"),
                *("--bootstrap", settings.bootstrap, "--topic", settings.events_topic),
                *("--expect", str(count), "--out", str(out), "--log", str(log)),
            ],
            env={**os.environ, **stack_env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        asyncio.run(delete_topics(settings))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"quix peer: {count} events" in done.stdout, done.stdout
    assert "0 window updates skipped as late" in done.stdout, done.stdout
    assert "oracle check: equal" in done.stdout, done.stdout

    assert_rows_equal_the_oracle(log, json.loads(out.read_text()))
