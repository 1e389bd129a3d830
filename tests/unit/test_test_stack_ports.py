"""The test run's local stacks run side by side: no two may share a port.

A clash once failed CI: the cluster-stack test put its Redis nodes on the ports the
session's clustered stack uses for its cluster bus (Redis port + 1000), and a node
exited at start on a taken port.
"""

from __future__ import annotations

from itertools import combinations

import pytest

from config.settings import Settings
from tests.conftest import TEST_CLUSTER_ENV, TEST_ENV
from tests.integration.test_cluster_stack import CLUSTER_ENV
from tests.integration.test_secure_stack import SECURE_ENV

pytestmark = pytest.mark.unit

STACKS = {
    "the test stack": TEST_ENV,
    "the clustered test stack": TEST_CLUSTER_ENV,
    "the cluster-stack test's": {**CLUSTER_ENV, "SALESPULSE_STACK_CLUSTER": "1"},
    "the secure stack test's": SECURE_ENV,
}


def _ports(env: dict[str, str]) -> set[int]:
    settings = Settings.from_env(env)
    return {*settings.stack_ports, settings.worker_metrics_port, settings.exporter_port}


def test_a_clustered_stack_counts_its_cluster_bus_ports() -> None:
    settings = Settings.from_env(TEST_CLUSTER_ENV)
    assert 30379 + 1000 in settings.stack_ports
    assert len(settings.stack_ports) == 6 + 6 + 6 + 1  # brokers' 2 ports, nodes, buses, Prometheus


@pytest.mark.parametrize("first, second", list(combinations(STACKS, 2)))
def test_no_two_test_stacks_share_a_port(first: str, second: str) -> None:
    shared = _ports(STACKS[first]) & _ports(STACKS[second])
    assert not shared, f"{first} and {second} both use {sorted(shared)}"
