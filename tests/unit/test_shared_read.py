"""SharedRead (projections/stores.py): concurrent callers share reads, and none gets a read
that started before it asked."""

from __future__ import annotations

import asyncio

import pytest

from projections.stores import SharedRead

pytestmark = pytest.mark.unit


class Source:
    """A value that moves; each read records when it started and returns the value then."""

    def __init__(self) -> None:
        self.value = 0
        self.reads = 0

    async def read(self) -> int:
        self.reads += 1
        seen = self.value
        await asyncio.sleep(0.01)
        return seen


async def test_twenty_callers_at_once_share_one_read() -> None:
    source, shared = Source(), SharedRead[int]()
    answers = await asyncio.gather(*(shared.get(source.read) for _ in range(20)))
    assert answers == [0] * 20
    assert source.reads == 1
    await asyncio.sleep(0)
    more = await asyncio.gather(*(shared.get(source.read) for _ in range(20)))
    assert more == [0] * 20 and source.reads == 2


async def test_a_caller_never_gets_a_read_older_than_its_call() -> None:
    source, shared = Source(), SharedRead[int]()
    first = asyncio.ensure_future(shared.get(source.read))
    await asyncio.sleep(0.005)  # the first read is in flight, and saw 0
    source.value = 1
    second = await shared.get(source.read)
    assert await first == 0
    assert second == 1  # a read queued after the one in flight
    assert source.reads == 2


async def test_a_failed_read_fails_its_callers_and_the_next_one_reads_again() -> None:
    shared, calls = SharedRead[int](), []

    async def failing() -> int:
        calls.append(1)
        raise ConnectionError("away")

    with pytest.raises(ConnectionError):
        await asyncio.gather(shared.get(failing), shared.get(failing))
    assert len(calls) == 1
    assert await shared.get(Source().read) == 0


async def test_a_read_younger_than_max_age_is_taken_as_it_is() -> None:
    source, shared = Source(), SharedRead[int](max_age=0.2)
    assert await shared.get(source.read) == 0
    source.value = 1
    assert await shared.get(source.read) == 0  # started less than 0.2 s ago
    assert source.reads == 1
    await asyncio.sleep(0.25)
    assert await shared.get(source.read) == 1
    assert source.reads == 2
