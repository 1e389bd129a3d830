"""The clustered local stack's pure parts: node lists, configs, and reading who leads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from config.settings import Settings
from stack.cluster import (
    KafkaBroker,
    NodeRole,
    RedisNode,
    active_controller,
    broker_with_id,
    kafka_cluster_id,
    kafka_properties,
    parse_cluster_nodes,
    parse_info,
    redis_node_command,
    redis_node_on,
    refuse_other_kind,
)
from stack.servers import Kafka, Redis, StackError, servers
from streams.cli import main

pytestmark = pytest.mark.unit

# Two masters, a replica, and a master that failed over to the replica (slots now its own);
# a slot being migrated is listed in brackets.
CLUSTER_NODES = """\
aaa 127.0.0.1:31379@51379 myself,master - 0 1700000000000 1 connected 0-5460 [5461->-bbb]
bbb 127.0.0.1:31380@51380 master - 0 1700000000000 2 connected 5461-10922
ccc 127.0.0.1:31381@51381 master,fail - 1700000000000 1700000000000 3 disconnected
ddd 127.0.0.1:31382@51382 slave aaa 0 1700000000000 1 connected
fff 127.0.0.1:31384@51384 master - 0 1700000000000 7 connected 10923 10924-16383
"""


def settings(
    tmp_path: Path, *, stack_cluster: bool = True, kafka_bootstrap: str = "", redis_url: str = ""
) -> Settings:
    return Settings(
        stack_dir=str(tmp_path / "stack"),
        kafka_port=31092,
        kafka_controller_port=31093,
        redis_port=31379,
        stack_cluster=stack_cluster,
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
    )


def test_cluster_nodes_give_each_node_its_role_master_and_slots() -> None:
    nodes = parse_cluster_nodes(CLUSTER_NODES, answering={31379, 31380, 31382, 31384})
    assert nodes == [
        NodeRole(31379, "aaa", "master", None, ((0, 5460),), True),
        NodeRole(31380, "bbb", "master", None, ((5461, 10922),), True),
        NodeRole(31381, "ccc", "master", None, (), False),
        NodeRole(31382, "ddd", "replica", 31379, (), True),
        NodeRole(31384, "fff", "master", None, ((10923, 10923), (10924, 16383)), True),
    ]
    assert [node.slots for node in nodes] == [5461, 5462, 0, 0, 5461]


def test_a_master_holds_the_slots_of_its_ranges() -> None:
    first, second, *_, last = parse_cluster_nodes(CLUSTER_NODES, answering=())
    assert first.holds(0) and first.holds(5460) and not first.holds(5461)
    assert second.holds(5461)
    assert last.holds(10923) and last.holds(16383)


def test_cluster_info_is_read_as_pairs() -> None:
    info = parse_info("cluster_state:ok\r\ncluster_slots_ok:16384\r\ncluster_known_nodes:6\r\n")
    assert info == {"cluster_state": "ok", "cluster_slots_ok": "16384", "cluster_known_nodes": "6"}


def quorum_state(leader: int, epoch: int) -> str:
    return json.dumps({"leaderId": leader, "leaderEpoch": epoch, "votedId": -1})


def test_the_controller_is_the_leader_of_the_latest_epoch() -> None:
    # The voter killed while it led still names itself; the others elected another since.
    assert active_controller([quorum_state(1, 4), quorum_state(3, 5), quorum_state(3, 5)]) == 3


def test_no_controller_while_an_election_runs_or_before_any() -> None:
    assert active_controller([quorum_state(1, 4), quorum_state(-1, 5)]) is None
    assert active_controller([]) is None
    assert active_controller(["{not json", quorum_state(2, 1)]) == 2


def test_each_broker_is_a_voter_of_the_same_static_quorum(tmp_path: Path) -> None:
    s = settings(tmp_path)
    second = kafka_properties(s, 2, tmp_path / "data")
    lines = dict(line.split("=", 1) for line in second.splitlines() if "=" in line)
    assert lines["node.id"] == "2"
    assert lines["process.roles"] == "broker,controller"
    assert lines["controller.quorum.voters"] == (
        "1@127.0.0.1:31093,2@127.0.0.1:31095,3@127.0.0.1:31097"
    )
    assert lines["listeners"] == "PLAINTEXT://127.0.0.1:31094,CONTROLLER://127.0.0.1:31095"
    assert lines["log.dirs"] == str(tmp_path / "data")
    for key, value in {
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "unclean.leader.election.enable": "false",
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
    }.items():
        assert lines[key] == value, key
    assert "{" not in second


def test_a_redis_node_runs_in_cluster_mode_with_aof_compact_hashes_and_its_own_nodes_conf(
    tmp_path: Path,
) -> None:
    command = redis_node_command("redis-server", 31380, tmp_path)
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--port"] == "31380"
    assert options["--cluster-enabled"] == "yes"
    assert options["--cluster-port"] == "32380"  # the node port + 1000
    assert options["--cluster-config-file"] == str(tmp_path / "nodes.conf")
    assert options["--cluster-node-timeout"] == "2000"
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--save"] == ""
    # Lead records with a response's marker (about 75 bytes) stay compact listpacks.
    assert options["--hash-max-listpack-value"] == "128"


def test_the_clustered_stack_lists_every_node_in_start_order(tmp_path: Path) -> None:
    s = settings(tmp_path)
    listed = servers(s)
    names = [server.name for server in listed]
    redis_names = [f"redis-{i}" for i in range(1, 7)]
    assert names == [*redis_names, "kafka-1", "kafka-2", "kafka-3", "prometheus"]
    assert [server.home for server in listed] == [s.stack_path / name for name in names]
    brokers = [server for server in listed if isinstance(server, KafkaBroker)]
    assert [(b.port, b.controller_port) for b in brokers] == [
        (31092, 31093),
        (31094, 31095),
        (31096, 31097),
    ]


def test_the_single_stack_is_unchanged(tmp_path: Path) -> None:
    names = [server.name for server in servers(settings(tmp_path, stack_cluster=False))]
    assert names == ["redis", "kafka", "prometheus"]


def test_a_kafka_or_redis_of_ones_own_replaces_the_local_nodes(tmp_path: Path) -> None:
    s = settings(tmp_path, kafka_bootstrap="10.0.0.1:9092", redis_url="redis://10.0.0.1:6379")
    listed = servers(s)
    assert [server.name for server in listed] == ["redis", "kafka", "prometheus"]
    assert isinstance(listed[0], Redis) and isinstance(listed[1], Kafka)
    assert listed[0].external and listed[1].external


def test_nodes_are_found_by_kafka_node_id_and_redis_port(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert broker_with_id(s, 3).name == "kafka-3"
    assert redis_node_on(s, 31383).name == "redis-5"
    with pytest.raises(StackError, match="no broker 4"):
        broker_with_id(s, 4)
    with pytest.raises(StackError, match="no node on port 31385"):
        redis_node_on(s, 31385)


def test_every_broker_is_formatted_with_the_first_ones_cluster_id(tmp_path: Path) -> None:
    s = settings(tmp_path)
    fresh = kafka_cluster_id(s)
    assert len(fresh) == 22 and not fresh.startswith("-")
    meta = KafkaBroker(s, 2).data / "meta.properties"
    meta.parent.mkdir(parents=True)
    meta.write_text("version=1\ncluster.id=Xy3_abcdefghijklmnopqr\nnode.id=2\n")
    assert kafka_cluster_id(s) == "Xy3_abcdefghijklmnopqr"


def running(server: RedisNode | Redis) -> None:
    """A pid file naming a live process (this one), as a started server leaves."""
    server.home.mkdir(parents=True)
    server.pid_file.write_text(str(os.getpid()))


def test_one_kind_of_stack_is_refused_while_the_other_runs_in_the_folder(
    tmp_path: Path,
) -> None:
    clustered = settings(tmp_path)
    single = settings(tmp_path, stack_cluster=False)
    refuse_other_kind(clustered)
    refuse_other_kind(single)
    running(RedisNode(clustered, 1))
    with pytest.raises(StackError, match=r"a clustered stack runs in .*: add --cluster"):
        refuse_other_kind(single)
    refuse_other_kind(clustered)


def test_a_cluster_is_refused_beside_a_running_single_stack(tmp_path: Path) -> None:
    running(Redis(settings(tmp_path, stack_cluster=False)))
    with pytest.raises(StackError, match=r"a single-node stack runs in .*stack down"):
        refuse_other_kind(settings(tmp_path))


def test_cluster_and_secure_together_are_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["stack", "up", "--cluster", "--secure"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "salespulse: error: --secure and --cluster: the local stack is one or the other\n"
    )
