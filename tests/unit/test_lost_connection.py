"""redis-py's asyncio client can raise an AttributeError or TypeError instead of a
ConnectionError when a connection is closed under a call (its writer gone): the projection
retries its batch on those (``store.lost_connection``), and on nothing else of the kind; the
readers (API, exporter, KPI publisher) take them as Redis being unreadable
(``store.redis_unreadable``)."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from exporters.api import Api
from projections.store import lost_connection, redis_unreadable

pytestmark = pytest.mark.unit


async def _lost() -> AttributeError:
    """The error redis-py's own write path raises on a connection closed under it."""
    connection = Connection(host="127.0.0.1", port=1, socket_timeout=1)
    assert connection._writer is None  # as after a disconnect from another task
    with pytest.raises(AttributeError, match="writelines") as raised:
        await connection._send_packed_command([b"PING\r\n"])
    return raised.value


def _ours() -> AttributeError:
    def bug() -> None:
        None.missing  # type: ignore[attr-defined]  # noqa: B018

    with pytest.raises(AttributeError) as raised:
        bug()
    return raised.value


async def test_a_write_on_a_connection_closed_under_it_is_a_lost_connection() -> None:
    lost = await _lost()
    assert lost_connection(lost)
    assert redis_unreadable(lost)


def test_other_errors_are_not() -> None:
    assert not lost_connection(_ours())  # a bug of ours stays a bug
    assert not redis_unreadable(_ours())
    assert redis_unreadable(RedisConnectionError("down")) and redis_unreadable(OSError("reset"))
    assert not lost_connection(TypeError("no traceback"))
    assert not lost_connection(RedisConnectionError("handled as unavailable anyway"))


async def test_the_api_answers_unavailable_for_a_lost_connection_and_500_for_a_bug() -> None:
    async def answers(error: Exception) -> tuple[int, str]:
        async def handler(_request: web.Request) -> web.Response:
            raise error

        guarded = Api._guard(Api.__new__(Api), handler)  # the guard reads nothing of the Api
        response = await guarded(make_mocked_request("GET", "/api/v1/kpis"))
        assert isinstance(response.body, bytes)
        return response.status, json.loads(response.body)["error"]["message"]

    assert await answers(await _lost()) == (503, "the projections cannot be read now")
    assert (await answers(_ours()))[0] == 500
