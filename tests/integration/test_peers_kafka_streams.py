"""The Kafka Streams peer (benchmarks/peers/kafka_streams) builds, runs, and equals the oracle.

A smoke run: a few thousand simulated events preloaded on a topic of the test stack, the jar
built with Maven if it is missing or stale, its rows checked by benchmarks.peers.check. Needs
``mvn`` and a JDK 17+ on PATH, as the local stack does (stack/install.py). It took about 7 s
with the jar already built, about 30 s when Maven rebuilt it from a warm local repository; a
build from an empty one (downloading Kafka Streams and the plugins) took 20-30 s on its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from pathlib import Path

import pytest

from benchmarks.ingest import delete_topics
from benchmarks.peers import kafka_streams_peer as peer
from config.settings import Settings
from tests.peer_support import assert_rows_equal_the_oracle, preload

pytestmark = pytest.mark.integration

COUNT = 3_000


def test_kafka_streams_peer_equals_the_oracle(stack_env: dict[str, str], tmp_path: Path) -> None:
    settings = dataclasses.replace(
        Settings.from_env(stack_env), topic_prefix=f"ks{uuid.uuid4().hex[:8]}"
    )
    log = tmp_path / "events.jsonl"
    try:
        count = preload(settings, log, COUNT)
        peer.build()
        out = tmp_path / "rows.json"
        result = peer.run(settings.bootstrap, settings.events_topic, count, out, timeout=120)
    finally:
        asyncio.run(delete_topics(settings))
    assert result.events == count
    assert_rows_equal_the_oracle(log, json.loads(out.read_text()))
