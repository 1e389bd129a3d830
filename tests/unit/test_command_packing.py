"""Commands packed by hiredis are byte for byte what redis-py packs, and every client
``connect`` makes (single node, TLS, Unix socket, cluster) packs them so. The integration
tiers run every store command through these connections against a real Redis and a real
Redis Cluster."""

from __future__ import annotations

from array import array
from enum import IntEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import (
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import DataError

from projections.command_packing import (
    OWN_CHUNK_BYTES,
    FastConnection,
    FastPacking,
    use_fast_packing,
)
from projections.store import connect

pytestmark = pytest.mark.unit

plain, fast = Connection(), FastConnection()


class Level(IntEnum):  # an int subclass: hiredis refuses it, redis-py packs it
    LOW = 0
    MID = 1
    HIGH = 2
    TOP = 3


def written(chunks: list[Any]) -> bytes:
    return b"".join(bytes(chunk) for chunk in chunks)  # a chunk may be a memoryview


def both(*args: Any) -> tuple[bytes, bytes]:
    return written(plain.pack_command(*args)), written(fast.pack_command(*args))


word = st.one_of(st.sampled_from(["EVALSHA", "HSET", "ZADD", b"GET"]), st.text(min_size=1))
plain_argument = st.one_of(
    st.text(),
    st.binary(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
)
argument = st.one_of(
    plain_argument,
    st.binary().map(bytearray),
    st.binary().map(memoryview),
    st.integers(min_value=0, max_value=3).map(lambda n: Level(n)),
)
large = st.one_of(
    st.text(min_size=OWN_CHUNK_BYTES - 2, max_size=OWN_CHUNK_BYTES + 2),
    st.binary(min_size=OWN_CHUNK_BYTES - 2, max_size=OWN_CHUNK_BYTES + 2),
)


@settings(max_examples=300)
@given(word, st.lists(argument, max_size=30))
def test_same_bytes_as_redis_py(first: str, rest: list[Any]) -> None:
    old, new = both(first, *rest)
    assert new == old


@settings(max_examples=100)
@given(st.lists(plain_argument, max_size=5), large)
def test_a_large_last_argument_is_a_chunk_of_its_own(rest: list[Any], last: Any) -> None:
    old, new = both("EVALSHA", *rest, last)
    assert new == old
    chunks = fast.pack_command("EVALSHA", *rest, last)
    encoded = last.encode() if isinstance(last, str) else last
    assert (encoded in chunks) == (len(encoded) > OWN_CHUNK_BYTES)


def test_a_commit_sized_call() -> None:
    keys = [f"{{ns:p3}}:e:lead:{n:08d}-ü" for n in range(3_000)]
    old, new = both("EVALSHA", "f" * 40, len(keys), *keys, "[" + "1," * 300_000 + "1]")
    assert new == old


def test_a_command_of_several_words_goes_to_redis_py() -> None:
    for args in [("SCRIPT LOAD", "return 1"), (b"CONFIG GET", b"maxmemory"), ("\r", "k")]:
        old, new = both(*args)
        assert new == old


def test_memoryviews_as_redis_py_packs_them() -> None:
    strided = memoryview(b"abcdef")[::2]  # hiredis would send its first three bytes
    wide = memoryview(array("i", [1, 2, 3]))  # items of four bytes
    large = memoryview(b"x" * (OWN_CHUNK_BYTES + 1))
    for view in (strided, wide, large):
        old, new = both("SET", "k", view)
        assert new == old


def test_a_str_subclass_is_encoded_as_redis_py_encodes_it() -> None:
    class Shouting(str):
        def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
            return str.encode(self.upper(), encoding, errors)

    old, new = both("SET", "k", Shouting("quiet"))
    assert new == old and b"QUIET" in new


def test_an_int_past_the_digit_limit_fails_as_in_redis_py() -> None:
    # hiredis would crash the process on it (repr fails and it does not check).
    with pytest.raises(ValueError) as old:
        plain.pack_command("SET", "k", 10**5_000)
    with pytest.raises(ValueError) as new:
        fast.pack_command("SET", "k", 10**5_000)
    assert str(new.value) == str(old.value)
    assert both("SET", "k", -(10**700))[1] == both("SET", "k", -(10**700))[0]


def test_another_encoding_goes_to_redis_py() -> None:
    old = written(Connection(encoding="latin-1").pack_command("SET", "k", "é"))
    new = written(FastConnection(encoding="latin-1").pack_command("SET", "k", "é"))
    assert new == old == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n\xe9\r\n"


@pytest.mark.parametrize("refused", [None, True, {"a": 1}, [1]])
def test_what_redis_py_refuses_it_refuses_alike(refused: Any) -> None:
    with pytest.raises(DataError) as old:
        plain.pack_command("SET", "k", refused)
    with pytest.raises(DataError) as new:
        fast.pack_command("SET", "k", refused)
    assert str(new.value) == str(old.value)


def test_a_lone_surrogate_fails_as_in_redis_py() -> None:
    with pytest.raises(UnicodeEncodeError):
        plain.pack_command("SET", "k", "\ud800")
    with pytest.raises(UnicodeEncodeError):
        fast.pack_command("SET", "k", "\ud800")


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:1/0", Connection),
        ("rediss://127.0.0.1:1/0", SSLConnection),
        ("unix:///tmp/none.sock", UnixDomainSocketConnection),
    ],
)
def test_every_client_connect_makes_packs_fast(url: str, kind: type) -> None:
    client = connect(url)
    assert isinstance(client, Redis)
    made = client.connection_pool.connection_class
    assert issubclass(made, kind) and made is not kind
    assert made.pack_command is FastConnection.pack_command


@pytest.mark.parametrize("tls", [False, True])
def test_a_cluster_client_packs_fast_on_every_node(tls: bool) -> None:
    client = connect(f"{'rediss' if tls else 'redis'}://127.0.0.1:1,127.0.0.1:2", cluster=True)
    assert isinstance(client, RedisCluster)
    kind = SSLConnection if tls else Connection
    manager = client.nodes_manager
    for made in [
        manager.connection_kwargs["connection_class"],
        *(node.connection_class for node in manager.startup_nodes.values()),
        # a node the cluster names later (a MOVED, a refresh of the slots)
        ClusterNode("127.0.0.1", 3, **manager.connection_kwargs).connection_class,
    ]:
        assert issubclass(made, kind) and made is not kind
        assert made.pack_command is FastConnection.pack_command
    for node in manager.startup_nodes.values():  # what a node opens (no network yet)
        assert isinstance(node.acquire_connection(), kind)
        assert isinstance(node.acquire_connection(), FastPacking)


def test_an_unknown_connection_class_is_left_alone() -> None:
    class Own(Connection):
        pass

    client = Redis(connection_pool=ConnectionPool(connection_class=Own))
    use_fast_packing(client)
    assert client.connection_pool.connection_class is Own
