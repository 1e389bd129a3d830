"""Fault injection on the clustered local stack: 3 Kafka brokers (replication 3, min ISR 2) and a
Redis Cluster of 3 masters with a replica each (`salespulse stack up --cluster`).

Each scenario streams a known simulated log through real workers while a node fails, and ends
with the harness's verdict (tests/faults/harness.py): projections equal the oracle exactly,
every distinct valid event is projected once, the DLQ holds exactly the invalid records.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from config.settings import Settings
from projections.store import current_namespace
from stack.cluster import (
    NodeRole,
    broker_with_id,
    kafka_partition_leaders,
    redis_node_on,
    redis_roles,
    wait_redis_cluster_ok,
)
from stack.servers import LocalServer
from tests.faults.harness import Scenario

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.cluster]

# Ports of the extra workers of the scale-out scenario (the cluster stack's worker uses 30466).
MORE_WORKER_PORTS = (30476, 30486, 30496)
CLUSTER_OK_SECONDS = 60.0


async def test_cluster_broker_leading_most_partitions_killed(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    s = Scenario("cluster: leading broker SIGKILL", cluster_env, tmp_path, count=50_000, seed=901)
    worker = s.worker()
    broker = None
    try:
        worker.start()
        await s.load_directory()
        producing = s.produce()
        await asyncio.sleep(4)
        leaders: Counter[int] = Counter()
        for topic in (s.settings.raw_topic, s.settings.events_topic, s.settings.facts_topic):
            leaders.update((await kafka_partition_leaders(s.settings, topic)).values())
        leader, led = leaders.most_common(1)[0]
        print(f"\nbroker {leader} leads {led} of {sum(leaders.values())} partitions: killed")
        broker = broker_with_id(s.settings, leader)
        assert not producing.done(), "the log ran out before the fault"
        await asyncio.to_thread(broker.kill)
        # Two brokers of three hold every partition (min ISR 2): the engine goes on without
        # the third; the first recovery is the time it takes to catch up while it is away.
        await s.recovered(await s.fault_ends())
        assert worker.alive(), "the worker gave up while a broker was away"
        await asyncio.sleep(3)
        restarted = time.monotonic()
        await asyncio.to_thread(broker.up)
        await s.recovered(await s.fault_ends(at=restarted))
        await producing
        await s.verify()
    finally:
        if broker is not None:
            await asyncio.to_thread(broker.up)
        await s.close()


async def test_cluster_redis_master_killed_and_its_replica_lacks_the_last_commits(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    """Redis replicates asynchronously: a master that dies takes the writes its replica had
    not received with it, so the promoted replica's checkpoints (and the data beside them,
    in the same slot) are older than what the worker committed. The replica is held
    (SIGSTOP) while commits flow so that it surely lags, the master is killed, and the
    replica, let go, is promoted with the older state: the test reads both states and
    requires them to differ, then requires the engine to apply the lost events again."""
    s = Scenario(
        "cluster: Redis master SIGKILL, lagging replica promoted",
        cluster_env,
        tmp_path,
        count=60_000,
        seed=902,
        rate=3_000.0,
    )
    worker = s.worker()
    master: NodeRole | None = None
    try:
        worker.start()
        await s.load_directory()
        producing = s.produce()
        await asyncio.sleep(3)
        master, replica, partitions = await _busiest_master(s)
        replica_server = redis_node_on(s.settings, replica.port)
        master_server = redis_node_on(s.settings, master.port)
        replica_pid = _pid(replica_server)
        os.kill(replica_pid, signal.SIGSTOP)  # it stops taking the stream
        try:
            # A held replica still gets what its socket buffers take (megabytes on loopback)
            # once it runs again: cut its link on the master's side, so that the commits
            # from here on surely reach only the master.
            _cut_replicas(master.port)
            namespace = await _namespace(s)
            cut = _applied(s.settings, master.port, partitions, namespace)
            await asyncio.sleep(8)
            assert not producing.done(), "the log ran out before the fault"
            before = _applied(s.settings, master.port, partitions, namespace)
            assert before > cut, "no commit landed on the master after its replica was cut"
            await asyncio.to_thread(master_server.kill)
        finally:
            os.kill(replica_pid, signal.SIGCONT)
        ended = await s.fault_ends()
        await asyncio.to_thread(_wait_master, s.settings, replica.port)
        after = _applied(s.settings, replica.port, partitions, await _namespace(s))
        print(
            f"\npartitions {partitions}: {before:,} events applied on the killed master, "
            f"{after:,} on its promoted replica"
        )
        assert after < before, "the promoted replica had every commit: nothing was lost"
        await s.recovered(ended)
        assert worker.alive(), "the worker gave up during the failover"
        assert worker.metrics().rewinds.get("projections_behind", 0) >= 1
        await asyncio.to_thread(master_server.up)  # comes back as the replica of its replica
        await asyncio.to_thread(wait_redis_cluster_ok, s.settings, CLUSTER_OK_SECONDS)
        await producing
        await s.verify()
    finally:
        await _all_nodes_up(s.settings)
        await s.close()


async def test_cluster_redis_master_stalled_past_the_node_timeout(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    s = Scenario("cluster: Redis master SIGSTOP 8 s", cluster_env, tmp_path, count=50_000, seed=903)
    worker = s.worker()
    stopped: int | None = None
    try:
        worker.start()
        await s.load_directory()
        producing = s.produce()
        await asyncio.sleep(4)
        master, replica, _ = await _busiest_master(s)
        stopped = _pid(redis_node_on(s.settings, master.port))
        assert not producing.done(), "the log ran out before the fault"
        os.kill(stopped, signal.SIGSTOP)
        try:
            await asyncio.to_thread(_wait_master, s.settings, replica.port)
            await asyncio.sleep(8 - 2)  # past the 2 s node timeout, whatever the election took
        finally:
            os.kill(stopped, signal.SIGCONT)
        ended = await s.fault_ends()
        await asyncio.to_thread(wait_redis_cluster_ok, s.settings, CLUSTER_OK_SECONDS)
        roles = {node.port: node for node in redis_roles(s.settings)}
        assert roles[master.port].role == "replica", "the stalled master came back as master"
        await s.recovered(ended)
        assert worker.alive(), "the worker gave up during the failover"
        await producing
        await s.verify()
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        await _all_nodes_up(s.settings)
        await s.close()


async def test_cluster_three_workers_one_killed_one_added(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    s = Scenario(
        "cluster: 3 workers x 12 partitions, 1 killed, 1 added",
        cluster_env,
        tmp_path,
        count=60_000,
        seed=904,
        extra_env={"SALESPULSE_PARTITIONS": "12"},
    )
    workers = [s.worker(), s.worker(MORE_WORKER_PORTS[0]), s.worker(MORE_WORKER_PORTS[1])]
    try:
        for worker in workers:
            worker.start()
        await s.load_directory()
        producing = s.produce()
        await asyncio.sleep(5)
        workers[0].kill()  # its partitions move to the other two after the session timeout
        await s.recovered(await s.fault_ends())
        assert workers[1].alive() and workers[2].alive()
        assert not producing.done(), "the log ran out before the fourth worker came"
        ended = await s.fault_ends()
        s.worker(MORE_WORKER_PORTS[2]).start(timeout=120)  # a rebalance gives it partitions
        await s.recovered(ended)
        await producing
        await s.verify()
    finally:
        await s.close()


def _pid(server: LocalServer) -> int:
    """The server's process id; never 0 or None, which ``os.kill`` takes for this process's
    own group."""
    pid = server.pid()
    assert pid, f"{server.name} does not run"
    return pid


async def _namespace(s: Scenario) -> str:
    return await current_namespace(s.client, s.settings.topic_prefix, create=False)


async def _busiest_master(s: Scenario) -> tuple[NodeRole, NodeRole, list[int]]:
    """The master holding the checkpoints of most of the scenario's partitions, its replica,
    and those partitions."""
    namespace = await _namespace(s)
    roles = redis_roles(s.settings)
    masters = [node for node in roles if node.role == "master"]
    held: dict[int, list[int]] = {node.port: [] for node in masters}
    for partition in range(s.settings.partitions):
        slot = key_slot(f"{namespace}:p{partition}".encode())
        owner = next(node for node in masters if node.holds(slot))
        held[owner.port].append(partition)
    master = max(masters, key=lambda node: len(held[node.port]))
    replica = next(node for node in roles if node.master_port == master.port)
    return master, replica, held[master.port]


def _cut_replicas(port: int) -> None:
    """Close the replication links of the master on ``port`` (its replicas reconnect)."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        client.client_kill_filter(_type="replica")
    finally:
        client.close()


def _applied(settings: Settings, port: int, partitions: list[int], namespace: str) -> int:
    """Distinct events applied to some partitions, as one node holds them (no redirection)."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        return sum(
            int(client.hget(f"{{{namespace}:p{p}}}:ckpt", "!applied") or 0) for p in partitions
        )
    finally:
        client.close()


def _wait_master(settings: Settings, port: int) -> None:
    deadline = time.monotonic() + CLUSTER_OK_SECONDS
    while time.monotonic() < deadline:
        roles = {node.port: node for node in redis_roles(settings)}
        if port in roles and roles[port].role == "master":
            return
        time.sleep(0.2)
    raise AssertionError(f"the Redis node on {port} was not promoted")


async def _all_nodes_up(settings: Settings) -> None:
    """Leave the cluster whole for the next test: every node running, every slot served."""
    for port in settings.redis_node_ports:
        await asyncio.to_thread(redis_node_on(settings, port).up)
    await asyncio.to_thread(wait_redis_cluster_ok, settings, CLUSTER_OK_SECONDS)
