"""Shared fixtures. Integration tests get a real local stack of their own.

The test stack uses its own ports and folder, so it runs beside a developer's
`make demo` stack. SALESPULSE_KAFKA_BOOTSTRAP / SALESPULSE_REDIS_URL point the
tests at servers that already run instead.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    """Start Redis, Kafka and Prometheus for the session; stop them at the end."""
    from config.settings import Settings
    from stack.servers import servers

    for name, value in TEST_ENV.items():
        os.environ.setdefault(name, value)
    settings = Settings.from_env()
    started = []
    try:
        for server in servers(settings):
            if server.pid() is None and not server.external:
                shutil.rmtree(server.home, ignore_errors=True)  # a fresh server per session
                started.append(server)
            server.up()
        yield {k: v for k, v in os.environ.items() if k.startswith("SALESPULSE_")}
    finally:
        # Also when one failed to start: a server left running would hold its port for the
        # next session (it once did, and every later run adopted a Redis it could not stop).
        for server in reversed(started):
            server.down()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault suite's table (tests/faults), when any of its scenarios ran."""
    harness = sys.modules.get("tests.faults.harness")
    if harness is not None and harness.REPORT:
        terminalreporter.section("fault injection")
        terminalreporter.write_line(harness.table(harness.REPORT))
