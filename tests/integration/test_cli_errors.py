"""A missing topic or a server that does not answer: one line on stderr, exit code 2, at once.

Each command runs as a user runs it; "at once" is bounded loosely (the clients' own
retries took 30 s and more, with an error line every 100 ms and a traceback).
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from tests.support import cli, fails_in_one_line

pytestmark = pytest.mark.integration

DEAD_KAFKA = {"SALESPULSE_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
DEAD_REDIS = {"SALESPULSE_REDIS_URL": "redis://127.0.0.1:1/0"}


@pytest.fixture
def fresh(stack_env: dict[str, str]) -> dict[str, str]:
    """The test stack, with a topic prefix no topic has."""
    return {**stack_env, "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}"}


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "log.jsonl"
    path.write_text('{"type": "lead.created", "lead_id": "l1"}\n')
    return path


def test_produce_to_a_missing_topic(fresh: dict[str, str], log: Path) -> None:
    line = fails_in_one_line("produce", str(log), env=fresh)
    topic = f"{fresh['SALESPULSE_TOPIC_PREFIX']}.events.raw"
    assert f"topic {topic} does not exist" in line and "`salespulse topics`" in line


def test_simulate_to_a_missing_topic(fresh: dict[str, str]) -> None:
    line = fails_in_one_line("simulate", "--count", "100", env=fresh)
    assert f"topic {fresh['SALESPULSE_TOPIC_PREFIX']}.events.raw does not exist" in line


def test_rebuild_without_topics(fresh: dict[str, str]) -> None:
    line = fails_in_one_line("rebuild", env=fresh)
    assert f"topic {fresh['SALESPULSE_TOPIC_PREFIX']}.events does not exist" in line


def test_produce_with_kafka_unreachable(stack_env: dict[str, str], log: Path) -> None:
    line = fails_in_one_line("produce", str(log), env={**stack_env, **DEAD_KAFKA})
    assert "127.0.0.1:1" in line and "SALESPULSE_KAFKA_BOOTSTRAP" in line


def test_topics_with_kafka_unreachable(stack_env: dict[str, str]) -> None:
    line = fails_in_one_line("topics", env={**stack_env, **DEAD_KAFKA})
    assert "SALESPULSE_KAFKA_BOOTSTRAP" in line


def test_kpis_with_redis_unreachable(stack_env: dict[str, str]) -> None:
    line = fails_in_one_line("kpis", env={**stack_env, **DEAD_REDIS})
    assert "redis://127.0.0.1:1/0" in line and "SALESPULSE_REDIS_URL" in line


def test_rebuild_with_redis_unreachable(fresh: dict[str, str]) -> None:
    assert cli("topics", env=fresh).returncode == 0
    line = fails_in_one_line("rebuild", env={**fresh, **DEAD_REDIS})
    assert "SALESPULSE_REDIS_URL" in line


def test_publish_kpis_with_redis_unreachable(stack_env: dict[str, str]) -> None:
    line = fails_in_one_line("publish-kpis", env={**stack_env, **DEAD_REDIS})
    assert "SALESPULSE_REDIS_URL" in line


def test_watch_once_without_a_worker(stack_env: dict[str, str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**stack_env, "SALESPULSE_WORKER_METRICS_PORT": str(port)}
    line = fails_in_one_line("watch", "--once", env=env)
    assert f"127.0.0.1:{port}" in line and "SALESPULSE_WORKER_METRICS_PORT" in line


def test_worker_with_an_unreachable_broker(stack_env: dict[str, str]) -> None:
    line = fails_in_one_line("worker", env={**stack_env, **DEAD_KAFKA})
    assert "SALESPULSE_KAFKA_BOOTSTRAP" in line


def test_ingest_with_an_empty_secret_file_refuses_to_start(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    empty = tmp_path / "aircall-token"
    empty.write_text("\n")
    env = {**stack_env, "SALESPULSE_AIRCALL_TOKEN_FILE": str(empty)}
    line = fails_in_one_line("ingest", env=env)
    assert "SALESPULSE_AIRCALL_TOKEN_FILE" in line and "at least 16" in line


def test_topics_that_need_more_brokers_than_there_are(fresh: dict[str, str]) -> None:
    """Kafka answers a CreateTopics it cannot honour with an error code, not an exception:
    the command says so instead of reporting topics as created."""
    env = fresh | {
        "SALESPULSE_TOPIC_REPLICATION_FACTOR": "3",
        "SALESPULSE_TOPIC_MIN_INSYNC_REPLICAS": "2",
    }
    line = fails_in_one_line("topics", env=env)
    assert "Kafka refused to create topic" in line and "InvalidReplicationFactor" in line
    assert "SALESPULSE_TOPIC_REPLICATION_FACTOR=3" in line
    # With what one broker can hold, the same prefix works.
    done = cli("topics", env=fresh)
    assert done.returncode == 0, done.stderr
