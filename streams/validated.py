"""Events this process's ingest loop validated, kept by their bytes for its projection loop.

Ingest forwards a valid event's original bytes to the events topic, and the projection
loop of the same worker reads them back, most often within a batch or two. Parsing them
again gives the same event: ``parse_event`` depends on the bytes and the limits alone, but
for the instant "too far in the future", which only moves later (an event accepted at ingest
is accepted by any later parse). So the projection takes the event ingest made when its
record's bytes are here, and parses the record otherwise: a record written by another
worker or by anything else, one read after many more, a gap refilled from the log.

Only events of the partitions this worker projects are kept (``own``, at each assignment
of the projection loop; ``disown`` at a revocation drops the events of the partitions that
go). Ingest learns each event's partition from the send. Bounded: at most ``capacity``
events, the oldest dropped first. In a backlog ingest would run far ahead of the
projection, which then found most events dropped and parsed them again (three in four,
300,000 events end to end): so ingest waits for ``room`` before its next fetch (no batch
in hand: a rebalance need not wait) while the projection is taking events. Once the
projection has taken none for ``STALL_SECONDS`` (Redis away, a partition being refilled,
events it will never read), ingest drops the oldest events to make room and goes on,
without waiting again until the projection takes one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from itertools import islice

from projections.events import Event

# About 750 bytes an event with its bytes (a simulated event of 233 bytes): about 37 MB.
CAPACITY = 50_000
# How long ingest waits for room without the projection taking an event before it goes on.
STALL_SECONDS = 5.0


class ValidatedEvents:
    def __init__(self, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._events: dict[bytes, tuple[Event, int]] = {}  # with its partition
        self._owned: frozenset[int] = frozenset()  # the events topic's, projected here
        self._taken = 0  # events taken so far
        self._stalled_at = -1  # _taken when ingest last gave up waiting
        self._wake_at = -1  # while ingest waits: the size at which it may go on
        self._room = asyncio.Event()

    def __len__(self) -> int:
        return len(self._events)

    def own(self, partitions: Iterable[int]) -> None:
        """The partitions of the events topic this worker's projection loop holds now; the
        events of others go."""
        self._owned = frozenset(partitions)
        self._events = {v: kept for v, kept in self._events.items() if kept[1] in self._owned}

    def disown(self, partitions: Iterable[int]) -> None:
        """The projection loop gave these partitions up."""
        self.own(self._owned - set(partitions))

    def keep(self, value: bytes, event: Event, partition: int) -> None:
        """Note that ``value``, sent to ``partition`` of the events topic, parses to
        ``event`` (what ingest found it to be); only if this worker projects the partition."""
        if partition not in self._owned:
            return
        events = self._events
        events[value] = (event, partition)
        if len(events) > self.capacity:
            self._keep_newest(self.capacity // 2)

    def _keep_newest(self, count: int) -> None:
        # One copy every capacity/2 events when ingest does not wait, not a scan each time.
        events = self._events
        self._events = dict(islice(events.items(), max(len(events) - count, 0), None))

    def take(self, value: bytes) -> Event | None:
        """The event ``value`` was validated as, forgotten now; None if it is not here."""
        kept = self._events.pop(value, None)
        if kept is None:
            return None
        self._taken += 1
        if len(self._events) <= self._wake_at:
            self._room.set()
        return kept[0]

    async def room(self, batch: int) -> None:
        """Return once ``batch`` more events fit (or, for a batch over half the capacity,
        once half of it is free), waiting while the projection takes events. After
        STALL_SECONDS without a take, drop the oldest events to make that room and return,
        then at once until the projection takes one again."""
        wake_at = max(self.capacity - batch, self.capacity // 2)
        while len(self._events) > wake_at and self._taken != self._stalled_at:
            taken = self._taken
            self._wake_at = wake_at
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), STALL_SECONDS)
            except TimeoutError:
                if self._taken == taken:
                    self._stalled_at = taken
                    self._keep_newest(wake_at)
            finally:
                self._wake_at = -1
