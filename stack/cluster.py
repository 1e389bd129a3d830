"""The clustered local stack of ``salespulse stack up --cluster``: 3 Kafka brokers, a Redis Cluster.

Each broker is a combined broker+controller (KRaft) and one of 3 static controller voters.
Each Redis node runs in cluster mode: the first 3 are made masters when the cluster is
formed, the others their replicas (failovers change that). Every node is a ``LocalServer``
of its own (home, pid file, log), so that a fault test can kill any one of them; Prometheus
is the single stack's. The functions after the classes tell who leads what (the fault tests
kill a leader) and whether the clusters are whole again.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest
from redis.backoff import NoBackoff
from redis.retry import Retry

from config.settings import CLUSTER_BROKERS, REDIS_BUS_OFFSET, Settings
from stack.install import kafka_libs, require_binary, require_java
from stack.servers import (
    REDIS_SETTINGS,
    TEMPLATES,
    Kafka,
    LocalServer,
    Prometheus,
    Redis,
    StackError,
)

LOCALHOST = "127.0.0.1"
SLOTS = 16_384
# A Redis node that does not answer for this long is failed, and its replica takes over.
REDIS_NODE_TIMEOUT_MS = 2_000
LAST_VOTER_GRACE_SECONDS = 2.0


class KafkaBroker(LocalServer):
    """One of the 3 brokers, each also one of the 3 controller voters."""

    ready_timeout = 90.0

    def __init__(self, settings: Settings, node_id: int) -> None:
        self.node_id = node_id
        self.port, self.controller_port = settings.kafka_node_ports[node_id - 1]
        self.name = f"kafka-{node_id}"
        super().__init__(settings)

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    @property
    def data(self) -> Path:
        return self.home / "data"

    def install(self) -> None:
        require_java(17)
        self.libs = kafka_libs(self.settings.kafka_version)

    def prepare(self) -> list[str]:
        self.data.mkdir(parents=True, exist_ok=True)
        properties = self.home / "server.properties"
        properties.write_text(kafka_properties(self.settings, self.node_id, self.data))
        log4j = self.home / "log4j2.properties"
        log4j.write_text((TEMPLATES / "kafka-log4j2.properties").read_text())
        java = [
            "java",
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{self.libs}/*",
        ]
        if not (self.data / "meta.properties").exists():
            self._format(java, properties)
        return [*java, "kafka.Kafka", str(properties)]

    def _format(self, java: list[str], properties: Path) -> None:
        """Format the storage with the id the other brokers have (voters of one quorum must
        share it); no --standalone: the voters are the static list in the properties."""
        formatted = subprocess.run(
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                kafka_cluster_id(self.settings),
                "-c",
                str(properties),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if formatted.returncode != 0:
            output = formatted.stdout + formatted.stderr
            raise StackError(f"{self.name}: storage format failed: {_last_line(output)}")

    def ready(self) -> bool:
        """The controller listens: alone, a broker never serves clients (no quorum to register
        with), so ``up`` returns once it can vote and waits for the brokers afterwards."""
        return _accepts(self.controller_port)

    def answering(self) -> bool:
        """It serves clients: asked on its own port, it lists itself as a live broker."""
        return self.node_id in _brokers_listed(self.port)

    def up(self) -> float:
        """Start this broker; once a majority of the voters runs, also wait until every
        running broker is registered, serves clients and is in sync (``wait_kafka_ok``)."""
        refuse_other_kind(self.settings)
        seconds = super().up()
        started = time.monotonic()
        running = [broker for broker in kafka_brokers(self.settings) if broker.pid() is not None]
        if len(running) > CLUSTER_BROKERS // 2:
            wait_kafka_ok(self.settings, self.ready_timeout)
        return seconds + time.monotonic() - started

    def down(self, timeout: float = 30.0) -> bool:
        """As ``LocalServer.down``, but the last broker running gets SIGKILL after a moment:
        its controlled shutdown waits for ever for a quorum of controllers that is gone."""
        others = [b for b in kafka_brokers(self.settings) if b.node_id != self.node_id]
        alone = all(broker.pid() is None for broker in others)
        return super().down(min(timeout, LAST_VOTER_GRACE_SECONDS) if alone else timeout)


class RedisNode(LocalServer):
    """One node of the Redis Cluster; the cluster decides whether it is a master or a replica
    (a replica is promoted when its master fails, which then rejoins as a replica)."""

    def __init__(self, settings: Settings, index: int) -> None:
        self.port = settings.redis_node_ports[index - 1]
        self.name = f"redis-{index}"
        super().__init__(settings)

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def install(self) -> None:
        require_binary("redis-server", "redis-server")
        require_binary("redis-cli", "redis-tools")

    def prepare(self) -> list[str]:
        return redis_node_command(
            shutil.which("redis-server") or "redis-server", self.port, self.home
        )

    def answering(self) -> bool:
        return _pings(self.port)

    def up(self) -> float:
        """Start this node; once all 6 run, form the cluster if it is new and wait until it
        serves every slot."""
        refuse_other_kind(self.settings)
        seconds = super().up()
        started = time.monotonic()
        if all(node.pid() is not None for node in redis_nodes(self.settings)):
            if not redis_cluster_formed(self.settings):
                create_redis_cluster(self.settings)
            wait_redis_cluster_ok(self.settings, self.ready_timeout)
        return seconds + time.monotonic() - started


def cluster_servers(settings: Settings) -> list[LocalServer]:
    """The clustered stack in start order: the Redis nodes, the brokers, Prometheus. A Kafka
    or Redis of one's own (SALESPULSE_KAFKA_BOOTSTRAP, SALESPULSE_REDIS_URL) takes the place
    of the local nodes, as in the single stack: ``up`` then only checks that it answers."""
    redis_part = [Redis(settings)] if settings.redis_url else redis_nodes(settings)
    kafka_part = [Kafka(settings)] if settings.kafka_bootstrap else kafka_brokers(settings)
    return [*redis_part, *kafka_part, Prometheus(settings)]


def kafka_brokers(settings: Settings) -> list[KafkaBroker]:
    return [KafkaBroker(settings, node_id) for node_id in range(1, CLUSTER_BROKERS + 1)]


def redis_nodes(settings: Settings) -> list[RedisNode]:
    count = len(settings.redis_node_ports)
    return [RedisNode(settings, index) for index in range(1, count + 1)]


def broker_with_id(settings: Settings, node_id: int) -> KafkaBroker:
    """The broker (to kill, stop or start) with this Kafka node id, as
    ``kafka_partition_leaders`` and ``kafka_controller`` name them."""
    if not 1 <= node_id <= CLUSTER_BROKERS:
        raise StackError(f"kafka: no broker {node_id} (the cluster has 1 to {CLUSTER_BROKERS})")
    return KafkaBroker(settings, node_id)


def redis_node_on(settings: Settings, port: int) -> RedisNode:
    """The node (to kill, stop or start) listening on this port, as ``redis_roles`` names it."""
    ports = settings.redis_node_ports
    if port not in ports:
        raise StackError(f"redis: no node on port {port} (the cluster has {ports[0]}-{ports[-1]})")
    return RedisNode(settings, ports.index(port) + 1)


def refuse_other_kind(settings: Settings) -> None:
    """Refuse to act on one kind of stack (single or clustered) while the other kind runs in
    the same folder: they share ports, so the one would pass for the other."""
    if settings.stack_cluster:
        others: list[LocalServer] = [Redis(settings), Kafka(settings)]
        kind, hint = "single-node", "`salespulse stack down` it first"
    else:
        clustered = dataclasses.replace(settings, stack_cluster=True)
        others = [*redis_nodes(clustered), *kafka_brokers(clustered)]
        kind, hint = "clustered", "add --cluster (SALESPULSE_STACK_CLUSTER=1)"
    running = next((server for server in others if server.pid() is not None), None)
    if running is not None:
        raise StackError(
            f"a {kind} stack runs in {settings.stack_path} ({running.name}): {hint}, "
            "or use another SALESPULSE_STACK_DIR"
        )


# Kafka ------------------------------------------------------------------------------------


def kafka_properties(settings: Settings, node_id: int, data: Path) -> str:
    """The server.properties of broker ``node_id`` (1 to 3)."""
    port, controller_port = settings.kafka_node_ports[node_id - 1]
    voters = ",".join(
        f"{voter}@{LOCALHOST}:{controller}"
        for voter, (_, controller) in enumerate(settings.kafka_node_ports, start=1)
    )
    return (
        (TEMPLATES / "kafka-cluster.properties")
        .read_text()
        .format(
            node_id=node_id,
            voters=voters,
            port=port,
            controller_port=controller_port,
            data=data,
            partitions=settings.partitions,
        )
    )


def kafka_cluster_id(settings: Settings) -> str:
    """The cluster id a formatted broker already has, or a new one for the first."""
    for broker in kafka_brokers(settings):
        meta = broker.data / "meta.properties"
        found = re.search(r"^cluster\.id=(\S+)$", meta.read_text(), re.M) if meta.exists() else None
        if found:
            return found.group(1)
    cluster_id = "-"
    while cluster_id.startswith("-"):  # would read as an option to the storage tool
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    return cluster_id


async def kafka_metadata(port: int, topics: list[str] | None = None) -> dict[str, Any]:
    """The Metadata answer of the one broker on ``port`` (every topic when ``topics`` is None):
    the brokers it knows to be registered and unfenced, and each partition's leader and ISR.
    One broker is asked, not the cluster, so that a broker is only checked by itself."""
    conn = await asyncio.wait_for(create_conn(LOCALHOST, port, request_timeout_ms=3_000), 5)
    try:
        response = await asyncio.wait_for(conn.send(MetadataRequest(topics)), 5)
    finally:
        conn.close()
    metadata: dict[str, Any] = response.to_object()
    return metadata


async def _first_metadata(settings: Settings, topics: list[str] | None) -> dict[str, Any]:
    """The Metadata answer of the first broker that gives one."""
    for port, _ in settings.kafka_node_ports:
        try:
            return await kafka_metadata(port, topics)
        except (KafkaError, OSError, TimeoutError):  # this broker does not answer: the next
            continue
    raise StackError(f"kafka: no broker answers at {settings.bootstrap}")


def _brokers_listed(port: int) -> set[int]:
    """The node ids the broker on ``port`` lists as live; none when it does not answer."""
    try:
        metadata = asyncio.run(kafka_metadata(port, []))
    except (KafkaError, OSError, TimeoutError):  # refused, timed out, not ready: none
        return set()
    return {broker["node_id"] for broker in metadata["brokers"]}


def kafka_problem(settings: Settings) -> str | None:
    """What keeps the running brokers from serving as a whole now, or None: one of them not
    seeing them all live (asked on its own port: registered and unfenced), or a partition
    whose ISR lacks one of them (its copy still catching up). Brokers not running are left
    out: their partitions stay under-replicated until they come back."""
    running = [broker for broker in kafka_brokers(settings) if broker.pid() is not None]
    node_ids = {broker.node_id for broker in running}
    if not node_ids:
        return "no broker runs"
    for broker in running:
        listed = _brokers_listed(broker.port)
        if not node_ids <= listed:
            return f"broker {broker.node_id} does not see brokers {sorted(node_ids - listed)} live"
    try:
        metadata = asyncio.run(_first_metadata(settings, None))
    except StackError as exc:
        return str(exc)
    for topic in metadata["topics"]:
        for partition in topic["partitions"]:
            behind = (set(partition["replicas"]) & node_ids) - set(partition["isr"])
            if behind:
                name = f"{topic['topic']}-{partition['partition']}"
                return f"broker {min(behind)} is not in sync on {name}"
    return None


def wait_kafka_ok(settings: Settings, timeout: float = 90.0) -> None:
    """Wait until every running broker is live and in sync (``kafka_problem``): then a topic
    with 3 replicas can be created, and any one broker may fail without losing a write.
    StackError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (problem := kafka_problem(settings)) is not None:
        if time.monotonic() > deadline:
            raise StackError(f"kafka cluster not ok within {timeout:.0f}s: {problem}")
        time.sleep(0.5)


async def kafka_partition_leaders(settings: Settings, topic: str) -> dict[int, int]:
    """Partition -> node id of its leader (-1: none) for ``topic``, as the first broker that
    answers knows it. Pair with ``broker_with_id`` to kill a partition's leader."""
    metadata = await _first_metadata(settings, [topic])
    (found,) = metadata["topics"]
    if found["error_code"]:
        raise StackError(f"kafka: topic {topic}: error code {found['error_code']}")
    return {partition["partition"]: partition["leader"] for partition in found["partitions"]}


def kafka_controller(settings: Settings) -> int | None:
    """The node id of the active controller (the quorum's leader); None while one is elected.

    Read from the quorum state each voter writes in its metadata log folder, because a
    Metadata answer cannot tell: in KRaft its controller id is any live broker."""
    states = []
    for broker in kafka_brokers(settings):
        try:
            states.append((broker.data / "__cluster_metadata-0" / "quorum-state").read_text())
        except FileNotFoundError:
            continue
    return active_controller(states)


def active_controller(quorum_states: Iterable[str]) -> int | None:
    """The leader in the quorum state of the highest epoch: the latest election any voter saw
    (a stopped voter's state is older). A candidate raises the epoch without a leader, so
    None means an election is under way."""
    latest: dict[str, Any] | None = None
    for text in quorum_states:
        try:
            state = json.loads(text)
        except ValueError:  # a state file being replaced: the others tell
            continue
        if latest is None or state["leaderEpoch"] > latest["leaderEpoch"]:
            latest = state
    if latest is None or latest["leaderId"] < 0:
        return None
    leader: int = latest["leaderId"]
    return leader


# Redis ------------------------------------------------------------------------------------


def redis_node_command(binary: str, port: int, home: Path) -> list[str]:
    """The command line of the Redis node on ``port`` keeping its files in ``home``."""
    return [
        binary,
        "--bind",
        LOCALHOST,
        "--port",
        str(port),
        "--dir",
        str(home),
        *REDIS_SETTINGS,
        "--cluster-enabled",
        "yes",
        "--cluster-port",
        str(port + REDIS_BUS_OFFSET),
        # The node's view of the cluster (its id, peers, epoch): a restarted node rejoins.
        "--cluster-config-file",
        str(home / "nodes.conf"),
        "--cluster-node-timeout",
        str(REDIS_NODE_TIMEOUT_MS),
    ]


def _node(port: int) -> redis.Redis:
    """A plain client of the one node on ``port`` (a cluster client would follow redirects)."""
    return redis.Redis(
        LOCALHOST,
        port,
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),  # no answer now is the answer: no retries with back-off
    )


def _pings(port: int) -> bool:
    try:
        with _node(port) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _text(port: int, *command: str) -> str:
    """The raw text answer of one node to a CLUSTER subcommand (redis-py parses none of
    them when named as two words)."""
    with _node(port) as client:
        answer: bytes = client.execute_command(*command)
    return answer.decode()


def parse_info(text: str) -> dict[str, str]:
    """The ``key:value`` lines of CLUSTER INFO, as a dict."""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


def redis_cluster_formed(settings: Settings) -> bool:
    """Whether the nodes already form a cluster: a new node knows only itself. Some nodes
    in a cluster and some alone means a node lost its nodes.conf: refused, not mended."""
    try:
        alone = [
            port
            for port in settings.redis_node_ports
            if parse_info(_text(port, "CLUSTER", "INFO"))["cluster_known_nodes"] == "1"
        ]
    except redis.RedisError as exc:
        raise StackError(f"redis: a node does not answer CLUSTER INFO ({exc})") from None
    if alone and len(alone) < len(settings.redis_node_ports):
        raise StackError(
            f"redis: the node on port {alone[0]} is not in the cluster the others form (its "
            f"nodes.conf lost?): `salespulse stack down --cluster`, remove {settings.stack_path}"
        )
    return not alone


def create_redis_cluster(settings: Settings) -> None:
    """Join the new nodes into one cluster with ``redis-cli --cluster create``: it makes the
    first half of the nodes given masters (16384 slots split evenly) and gives each of them
    one of the others as replica."""
    nodes = [f"{LOCALHOST}:{port}" for port in settings.redis_node_ports]
    done = subprocess.run(
        [
            shutil.which("redis-cli") or "redis-cli",
            "--cluster",
            "create",
            *nodes,
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise StackError(
            f"redis-cli --cluster create failed: {_last_line(done.stdout + done.stderr)}"
        )


def redis_cluster_problem(settings: Settings) -> str | None:
    """What keeps the cluster from serving every slot now, or None. Nodes that do not answer
    are left out (a killed master's slots are its promoted replica's); a replica whose copy
    is not in sync with its master is a problem: it could not take over."""
    answering = [port for port in settings.redis_node_ports if _pings(port)]
    if not answering:
        return "no node answers"
    try:
        for port in answering:
            info = parse_info(_text(port, "CLUSTER", "INFO"))
            if info["cluster_state"] != "ok" or info["cluster_slots_ok"] != str(SLOTS):
                return (
                    f"node {port}: cluster_state:{info['cluster_state']}, "
                    f"{info['cluster_slots_ok']}/{SLOTS} slots ok"
                )
            with _node(port) as client:
                replication = client.info("replication")
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                return f"node {port}: its link to master {replication['master_port']} is down"
    except redis.RedisError as exc:
        return f"a node stopped answering ({exc})"
    return None


def wait_redis_cluster_ok(settings: Settings, timeout: float = 60.0) -> None:
    """Wait until every node that answers reports cluster_state:ok with all 16384 slots
    served, and every replica is in sync with its master; StackError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (problem := redis_cluster_problem(settings)) is not None:
        if time.monotonic() > deadline:
            raise StackError(f"redis cluster not ok within {timeout:.0f}s: {problem}")
        time.sleep(0.25)


@dataclass(frozen=True)
class NodeRole:
    """A Redis node as the cluster sees it, and whether it answers itself."""

    port: int
    node_id: str
    role: str  # "master" or "replica"
    master_port: int | None  # a replica's master
    ranges: tuple[tuple[int, int], ...]  # the slots a master serves: (first, last) of each run
    answering: bool

    @property
    def slots(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)

    def holds(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.ranges)


def parse_cluster_nodes(text: str, answering: Collection[int]) -> list[NodeRole]:
    """The nodes of a CLUSTER NODES answer, by port; ``answering``: the ports that answer
    a PING (the cluster only notices a dead node after its node timeout)."""
    # <id> <ip:port@bus> <flags> <master id or -> <ping> <pong> <epoch> <link> <slots>...
    rows = [line.split() for line in text.splitlines() if line.strip()]
    port_of = {row[0]: int(row[1].split("@")[0].rsplit(":", 1)[1]) for row in rows}
    nodes = [
        NodeRole(
            port=port_of[row[0]],
            node_id=row[0],
            role="master" if "master" in row[2].split(",") else "replica",
            master_port=port_of.get(row[3]),
            # [slot->-id] and [slot-<-id]: a slot on its way out or in, in its range already
            ranges=tuple(_slot_range(item) for item in row[8:] if not item.startswith("[")),
            answering=port_of[row[0]] in answering,
        )
        for row in rows
    ]
    return sorted(nodes, key=lambda node: node.port)


def _slot_range(item: str) -> tuple[int, int]:
    """One slot entry of a CLUSTER NODES line: ``5461`` or ``0-5460``."""
    first, _, last = item.partition("-")
    return int(first), int(last or first)


def redis_roles(settings: Settings) -> list[NodeRole]:
    """Every node of the cluster, by port, as CLUSTER NODES of the first answering node tells
    (empty when none answers). A replica's ``master_port`` names its master."""
    answering = [port for port in settings.redis_node_ports if _pings(port)]
    for port in answering:
        try:
            return parse_cluster_nodes(_text(port, "CLUSTER", "NODES"), answering)
        except redis.RedisError:  # it stopped answering: ask the next
            continue
    return []


# Status -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterReport:
    """What ``salespulse stack status --cluster`` adds to each server's line, and after them."""

    roles: dict[str, str]  # server name -> its role now
    lines: list[str]  # one summary per cluster
    healthy: bool


def cluster_report(settings: Settings) -> ClusterReport:
    """The roles of the local nodes and the health of each cluster (external ones skipped)."""
    roles: dict[str, str] = {}
    lines: list[str] = []
    healthy = True
    if not settings.redis_url:
        healthy &= _redis_report(settings, roles, lines)
    if not settings.kafka_bootstrap:
        healthy &= _kafka_report(settings, roles, lines)
    return ClusterReport(roles, lines, healthy)


def _redis_report(settings: Settings, roles: dict[str, str], lines: list[str]) -> bool:
    nodes = redis_roles(settings)
    names = {node.port: node.name for node in redis_nodes(settings)}
    for node in nodes:
        master = names.get(node.master_port or 0, "an unknown master")
        role = f"master, {node.slots} slots" if node.role == "master" else f"replica of {master}"
        roles[names.get(node.port, str(node.port))] = role
    problem = redis_cluster_problem(settings)
    masters = sum(node.role == "master" and node.slots > 0 and node.answering for node in nodes)
    replicas = sum(node.role == "replica" and node.answering for node in nodes)
    state = "ok" if problem is None else f"NOT OK ({problem})"
    lines.append(f"redis cluster: {state}; {masters} masters, {replicas} replicas answering")
    return problem is None


def _kafka_report(settings: Settings, roles: dict[str, str], lines: list[str]) -> bool:
    try:
        metadata = asyncio.run(_first_metadata(settings, None))
    except StackError as exc:
        lines.append(f"kafka cluster: NOT OK ({exc})")
        return False
    live = {broker["node_id"] for broker in metadata["brokers"]}
    partitions = [p for topic in metadata["topics"] for p in topic["partitions"]]
    controller = kafka_controller(settings)
    for broker in kafka_brokers(settings):
        led = sum(p["leader"] == broker.node_id for p in partitions)
        role = f"{led} partition leaders" if broker.node_id in live else "not live"
        if broker.node_id == controller:
            role = f"active controller, {role}"
        roles[broker.name] = role
    offline = sum(p["leader"] < 0 for p in partitions)
    under = sum(len(p["isr"]) < len(p["replicas"]) for p in partitions)
    healthy = len(live) == CLUSTER_BROKERS and controller is not None and not offline
    lines.append(
        f"kafka cluster: {'ok' if healthy else 'NOT OK'}; {len(live)}/{CLUSTER_BROKERS} brokers "
        f"live, active controller: {f'kafka-{controller}' if controller else 'none (electing)'}, "
        f"{len(partitions)} partitions, {offline} offline, {under} under-replicated"
    )
    return healthy


def _accepts(port: int) -> bool:
    """Something listens on ``port``."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=1):
            return True
    except OSError:
        return False


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"
