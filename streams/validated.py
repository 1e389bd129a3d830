"""Events this process's ingest loop validated, kept by their bytes for its projection loop.

Ingest forwards a valid event's original bytes to the events topic, and the projection
loop of the same worker reads them back, most often within a batch or two. Parsing them
again gives the same event: ``parse_event`` depends on the bytes and the limits alone, but
for the instant "too far in the future", which only moves later (an event accepted at ingest
is accepted by any later parse). So the projection takes the event ingest made when its
record's bytes are here, and parses the record otherwise: a record written by another
worker or by anything else, one read after many more, a gap refilled from the log.

Bounded: at most ``capacity`` events, the oldest dropped first (events of partitions another
worker projects are never taken).
"""

from __future__ import annotations

from itertools import islice

from projections.events import Event

# About 750 bytes an event with its bytes (a simulated event of 233 bytes): about 37 MB.
CAPACITY = 50_000


class ValidatedEvents:
    def __init__(self, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._events: dict[bytes, Event] = {}

    def __len__(self) -> int:
        return len(self._events)

    def keep(self, value: bytes, event: Event) -> None:
        """Note that ``value`` parses to ``event`` (what ingest found it to be)."""
        events = self._events
        events[value] = event
        if len(events) > self.capacity:
            # The newest half stays: one copy every capacity/2 events, not a scan each time.
            self._events = dict(islice(events.items(), len(events) - self.capacity // 2, None))

    def take(self, value: bytes) -> Event | None:
        """The event ``value`` was validated as, forgotten now; None if it is not here."""
        return self._events.pop(value, None)
