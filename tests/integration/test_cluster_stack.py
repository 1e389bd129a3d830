"""`salespulse stack up --cluster`: 3 Kafka brokers and a Redis Cluster, as a user starts them.

On ports and in a folder of its own, beside the session's single-node test stack: `up`
through the CLI, `status` shows every broker and 3 masters with a replica each serving all
16384 slots, `salespulse topics` creates topics with 3 replicas and min ISR 2, a second `up`
leaves every node alone, and `down` leaves no process behind.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from config.settings import Settings
from stack.cluster import kafka_controller, redis_roles
from stack.servers import servers
from tests.support import cli

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CLUSTER_ENV = {
    "SALESPULSE_STACK_DIR": str(ROOT / ".salespulse/test-cluster-stack"),
    "SALESPULSE_KAFKA_PORT": "31092",
    "SALESPULSE_KAFKA_CONTROLLER_PORT": "31093",
    "SALESPULSE_REDIS_PORT": "31579",
    "SALESPULSE_PROMETHEUS_PORT": "31090",
    "SALESPULSE_WORKER_METRICS_PORT": "31466",
    "SALESPULSE_EXPORTER_PORT": "31467",
    "SALESPULSE_PARTITIONS": "3",
}


class Cluster(NamedTuple):
    env: dict[str, str]  # what every other command runs with (SALESPULSE_STACK_CLUSTER=1)
    up: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """`stack up --cluster` in a fresh folder; `stack down --cluster` at the end."""
    shutil.rmtree(CLUSTER_ENV["SALESPULSE_STACK_DIR"], ignore_errors=True)
    done = cli("stack", "up", "--cluster", env=CLUSTER_ENV)
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        yield Cluster({**CLUSTER_ENV, "SALESPULSE_STACK_CLUSTER": "1"}, done)
    finally:
        cli("stack", "down", "--cluster", env=CLUSTER_ENV)


def test_up_names_each_node_and_how_to_use_the_cluster(cluster: Cluster) -> None:
    names = [line.split()[0] for line in cluster.up.stdout.splitlines()[:-1]]
    redis_nodes = [f"redis-{i}" for i in range(1, 7)]
    assert names == [*redis_nodes, "kafka-1", "kafka-2", "kafka-3", "prometheus"]
    assert "run every salespulse command with SALESPULSE_STACK_CLUSTER=1" in cluster.up.stdout


def test_status_shows_3_brokers_and_3_masters_with_a_replica_each(cluster: Cluster) -> None:
    done = cli("stack", "status", "--cluster", env=CLUSTER_ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert all(" answering" in lines[name] for name in lines if name[-1].isdigit()), done.stdout
    masters = {
        f"redis-{i}": re.search(r"master, (\d+) slots", lines[f"redis-{i}"]) for i in (1, 2, 3)
    }
    assert all(masters.values()), done.stdout  # the first 3 ports given become the masters
    assert sum(int(found.group(1)) for found in masters.values() if found) == 16_384
    replicated = {re.search(r"replica of (redis-\d)", lines[f"redis-{i}"]) for i in (4, 5, 6)}
    assert {found.group(1) for found in replicated if found} == set(masters), done.stdout
    controllers = [
        name for name in ("kafka-1", "kafka-2", "kafka-3") if "active controller" in lines[name]
    ]
    assert controllers == [f"kafka-{kafka_controller(Settings.from_env(cluster.env))}"]
    assert "redis cluster: ok;" in done.stdout
    assert "kafka cluster: ok; 3/3 brokers live" in done.stdout


def test_redis_roles_match_what_redis_cli_was_asked_for(cluster: Cluster) -> None:
    settings = Settings.from_env(cluster.env)
    ports = settings.redis_node_ports
    roles = redis_roles(settings)
    assert [(node.port, node.role, node.answering) for node in roles] == [
        *((port, "master", True) for port in ports[:3]),
        *((port, "replica", True) for port in ports[3:]),
    ]
    assert sorted(node.master_port or 0 for node in roles[3:]) == ports[:3]


async def test_topics_get_3_replicas_and_a_min_isr_of_2(cluster: Cluster) -> None:
    done = cli("topics", env=cluster.env)
    assert done.returncode == 0, done.stdout + done.stderr
    settings = Settings.from_env(cluster.env)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        # The broker asked answers from its own copy of the cluster's metadata, which takes
        # a moment to learn a new topic's configs (one CI run read none): ask until it has.
        deadline = time.monotonic() + 20
        while True:
            (described,) = await admin.describe_topics([settings.raw_topic])
            configs = await admin.describe_configs(
                [
                    ConfigResource(
                        ConfigResourceType.TOPIC, settings.raw_topic, {"min.insync.replicas": None}
                    )
                ]
            )
            entries = configs[0].to_object()["resources"][0]["config_entries"]
            if entries or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
    partitions = described["partitions"]
    assert len(partitions) == 3
    assert all(sorted(p["replicas"]) == [1, 2, 3] == sorted(p["isr"]) for p in partitions)
    (entry,) = entries
    assert entry["config_value"] == "2"


def test_up_again_leaves_every_node_alone(cluster: Cluster) -> None:
    settings = Settings.from_env(cluster.env)
    before = {server.name: server.pid() for server in servers(settings)}
    done = cli("stack", "up", "--cluster", env=CLUSTER_ENV)
    assert done.returncode == 0, done.stderr
    assert {server.name: server.pid() for server in servers(settings)} == before


def test_down_leaves_no_process_and_no_port_taken(cluster: Cluster) -> None:
    settings = Settings.from_env(cluster.env)
    pids = [server.pid() for server in servers(settings)]
    assert all(pids)
    done = cli("stack", "down", "--cluster", env=CLUSTER_ENV)
    assert done.returncode == 0, done.stderr
    assert [server.pid() for server in servers(settings)] == [None] * len(pids)
    assert not [pid for pid in pids if pid and _alive(pid)]
    assert not [port for port in settings.stack_ports if _listening(port)]


def _alive(pid: int) -> bool:
    """A process that exited may linger as a zombie: this machine's init reaps slowly."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
