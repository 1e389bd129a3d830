"""Shared fixtures. Integration tests get a real local stack of their own.

The test stack uses its own ports and folder, so it runs beside a developer's
`make demo` stack. SALESPULSE_KAFKA_BOOTSTRAP / SALESPULSE_REDIS_URL point the
tests at servers that already run instead.

Tests that must hold on clustered engines too take ``any_stack_env``: they run once on the
single-node stack and once on the clustered one (3 Kafka brokers, a Redis Cluster of 3
masters and 3 replicas; ``cluster_env``, marker ``cluster``).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TEST_ENV = {
    "SALESPULSE_STACK_DIR": str(Path(__file__).resolve().parent.parent / ".salespulse/test-stack"),
    "SALESPULSE_KAFKA_PORT": "29092",
    "SALESPULSE_KAFKA_CONTROLLER_PORT": "29093",
    "SALESPULSE_REDIS_PORT": "26379",
    "SALESPULSE_PROMETHEUS_PORT": "29090",
    "SALESPULSE_WORKER_METRICS_PORT": "29466",
    "SALESPULSE_EXPORTER_PORT": "29467",
    "SALESPULSE_PARTITIONS": "4",
}


# The clustered stack of the run: its own folder and ports (brokers on 30092, 30094, 30096,
# controllers one above each; Redis nodes on 30379 to 30384, their cluster bus 1000 above).
TEST_CLUSTER_ENV = {
    "SALESPULSE_STACK_DIR": str(
        Path(__file__).resolve().parent.parent / ".salespulse/test-cluster"
    ),
    "SALESPULSE_STACK_CLUSTER": "1",
    "SALESPULSE_KAFKA_PORT": "30092",
    "SALESPULSE_KAFKA_CONTROLLER_PORT": "30093",
    "SALESPULSE_REDIS_PORT": "30379",
    "SALESPULSE_PROMETHEUS_PORT": "30090",
    "SALESPULSE_WORKER_METRICS_PORT": "30466",
    "SALESPULSE_EXPORTER_PORT": "30467",
    "SALESPULSE_PARTITIONS": "4",
}


@contextmanager
def _local_stack(env: dict[str, str]) -> Iterator[None]:
    """Start every server of the stack ``env`` describes (fresh); stop them at the end."""
    from config.settings import Settings
    from stack.servers import servers

    started = []
    try:
        for server in servers(Settings.from_env(env)):
            if server.pid() is None and not server.external:
                shutil.rmtree(server.home, ignore_errors=True)  # a fresh server per session
                started.append(server)
            server.up()
        yield
    finally:
        # Also when one failed to start: a server left running would hold its port for the
        # next session (it once did, and every later run adopted a Redis it could not stop).
        for server in reversed(started):
            server.down()


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    """Start Redis, Kafka and Prometheus for the session; stop them at the end."""
    for name, value in TEST_ENV.items():
        os.environ.setdefault(name, value)
    env = {k: v for k, v in os.environ.items() if k.startswith("SALESPULSE_")}
    with _local_stack(env):
        yield env


@pytest.fixture(scope="session")
def cluster_env() -> Iterator[dict[str, str]]:
    """The clustered local stack (`salespulse stack up --cluster`) for the session."""
    env = dict(TEST_CLUSTER_ENV)
    with _local_stack(env):
        yield env


@pytest.fixture(params=["single", pytest.param("cluster", marks=pytest.mark.cluster)])
def any_stack_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The single-node stack, then the clustered one (asked for here, outside the event
    loop: starting the servers runs loops of its own)."""
    return dict(
        request.getfixturevalue("cluster_env" if request.param == "cluster" else "stack_env")
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault suite's table (tests/faults), when any of its scenarios ran."""
    harness = sys.modules.get("tests.faults.harness")
    if harness is not None and harness.REPORT:
        terminalreporter.section("fault injection")
        terminalreporter.write_line(harness.table(harness.REPORT))
