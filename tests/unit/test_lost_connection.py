"""redis-py's asyncio client can raise an AttributeError or TypeError instead of a
ConnectionError when a connection is closed under a call (its writer gone): the projection
retries its batch on those (``store.lost_connection``), and on nothing else of the kind."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from projections.store import lost_connection

pytestmark = pytest.mark.unit


async def test_a_write_on_a_connection_closed_under_it_is_a_lost_connection() -> None:
    connection = Connection(host="127.0.0.1", port=1, socket_timeout=1)
    assert connection._writer is None  # as after a disconnect from another task
    with pytest.raises(AttributeError, match="writelines") as raised:
        await connection._send_packed_command([b"PING\r\n"])  # redis-py's own write path
    assert lost_connection(raised.value)


def test_other_errors_are_not() -> None:
    def ours() -> None:
        None.missing  # type: ignore[attr-defined]  # noqa: B018

    with pytest.raises(AttributeError) as raised:
        ours()
    assert not lost_connection(raised.value)  # a bug of ours stays a bug
    assert not lost_connection(TypeError("no traceback"))
    assert not lost_connection(RedisConnectionError("handled as unavailable anyway"))
