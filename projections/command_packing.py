"""Redis commands packed by hiredis, in C, instead of redis-py's Python loop.

A commit, a load and a fold each name every key they touch in KEYS (Redis Cluster routes
and guards a script by them), so a batch's script calls carry thousands of arguments, and
redis-py's asyncio connection packs each with an encode, a join and a length in Python:
about 2.5 % of a worker's CPU end to end (benchmarks/RESULTS.md, issue 21). hiredis, already
the reply parser, packs the same bytes in C. A large last argument (a commit's JSON) is
appended as a chunk of its own, as redis-py does, rather than copied into the packed bytes.

``use_fast_packing`` gives a client's connections (single node or cluster; TCP, TLS or a
Unix socket) a class that packs this way. Only plain arguments go to hiredis: ``str``,
``bytes``, ``float`` and ``int`` below ``PLAIN_INT`` (hiredis writes an int with ``repr`` and
does not check that it worked: past Python's limit of digits for that, 4,300 by default and
at least 640, the process would crash). Anything else (a memoryview, a subclass, a huge int,
a command name of several words, another encoding) is packed by redis-py, as before, which
raises its own error for what it refuses.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)

# A last argument longer than this is sent as a chunk of its own (redis-py's cutoff).
OWN_CHUNK_BYTES = 6_000
# Ints hiredis is given are below this in size (see above).
PLAIN_INT = 10**600
_PLAIN = frozenset({str, bytes, float})


def packed(args: tuple[Any, ...]) -> list[bytes]:
    """The RESP array of plain ``args`` (the command's words first) as chunks to write in
    order."""
    last = args[-1]
    if isinstance(last, str):
        last = last.encode()
    if type(last) is not bytes or len(last) <= OWN_CHUNK_BYTES or len(args) < 2:
        return [hiredis.pack_command(args)]
    head = hiredis.pack_command(args[:-1])
    body = head[head.index(b"\r\n") + 2 :]  # the count changes: the last is added here
    return [b"*%d\r\n%b$%d\r\n" % (len(args), body, len(last)), last, b"\r\n"]


class FastPacking(AbstractConnection):
    """A connection whose commands hiredis packs (``packed``)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0] if args else None
        # A command's name (redis-py splits a first argument with whitespace in it, "SCRIPT
        # LOAD", into words: those it packs itself).
        one_word = isinstance(first, str | bytes) and first.isascii() and first.isalpha()
        encoder = self.encoder
        if (
            one_word
            and encoder.encoding == "utf-8"
            and encoder.encoding_errors == "strict"
            and not [
                a
                for a in args
                if type(a) not in _PLAIN and not (type(a) is int and -PLAIN_INT < a < PLAIN_INT)
            ]
        ):
            return packed(args)
        return super().pack_command(*args)


class FastConnection(FastPacking, Connection):
    pass


class FastSSLConnection(FastPacking, SSLConnection):
    pass


class FastUnixConnection(FastPacking, UnixDomainSocketConnection):
    pass


FAST: dict[type, type] = {
    Connection: FastConnection,
    SSLConnection: FastSSLConnection,
    UnixDomainSocketConnection: FastUnixConnection,
}


def use_fast_packing(client: Redis | RedisCluster) -> None:
    """Have ``client`` open its connections (none opened yet) with a ``FAST`` class; a
    connection class it does not know is left as it is."""
    if isinstance(client, RedisCluster):
        manager = client.nodes_manager
        kind = manager.connection_kwargs.get("connection_class", Connection)
        manager.connection_kwargs["connection_class"] = FAST.get(kind, kind)
        for node in manager.startup_nodes.values():
            node.connection_class = FAST.get(node.connection_class, node.connection_class)
    else:
        pool = client.connection_pool
        pool.connection_class = FAST.get(pool.connection_class, pool.connection_class)
