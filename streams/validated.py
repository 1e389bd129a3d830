"""Events this worker's ingest loop validated, kept by their bytes for its projection loop.

Ingest forwards a valid event's original bytes to the events topic; the projection loop
of the same worker soon reads those bytes back and would parse and validate them again.
It takes the event ingest built instead. Equal bytes parse to an equal event (``parse_event``
depends on the clock only to refuse an event too far in the future, and the projection
reads later than ingest), so this changes nothing the projection does, and bytes that some
other writer put on the topic are not here: they are parsed and checked as before.

Bounded: a worker projects only the events partitions it is assigned, and in a backlog
ingest runs ahead of the projection, so the oldest events are dropped past ``capacity``.
"""

from __future__ import annotations

from collections import OrderedDict

from projections.events import Event


class Validated:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._events: OrderedDict[bytes, Event] = OrderedDict()
        self.taken = 0  # bytes asked for and found (a metric's source)
        self.missed = 0  # bytes asked for and not found: parsed by the projection

    def __len__(self) -> int:
        return len(self._events)

    def remember(self, value: bytes, event: Event) -> None:
        """Keep the event parsed from ``value``, dropping the oldest past the capacity."""
        events = self._events
        events[value] = event
        if len(events) > self.capacity:
            events.popitem(last=False)

    def take(self, value: bytes) -> Event | None:
        """The event parsed from these bytes, once; None if it is not kept."""
        event = self._events.pop(value, None)
        if event is None:
            self.missed += 1
        else:
            self.taken += 1
        return event
