"""Lead facts: what an activity or a deal tells about a lead that lives on another partition.

A touch (an outbound call, a sent email or a held meeting on a lead) and an
opportunity created from a lead are events of other entities, keyed by their
own ids. The projector publishes them as facts keyed by ``lead_id`` to the
facts topic, which has the events topic's partitioning, so each lead's facts
reach the partition, and the Redis slot, that holds the lead.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from projections.events import CallStarted, EmailSent, Event, MeetingHeld, OpportunityCreated

TOUCH = "touch"
OPPORTUNITY = "opportunity"


@dataclass(frozen=True, slots=True)
class LeadFact:
    fact_id: str  # derived from the event's id, so a replay publishes the same fact
    lead_id: str
    kind: str  # TOUCH or OPPORTUNITY
    at_ms: int

    def encode(self) -> bytes:
        document = {"fact_id": self.fact_id, "lead_id": self.lead_id, "kind": self.kind}
        return orjson.dumps({**document, "at_ms": self.at_ms})

    @classmethod
    def decode(cls, raw: bytes) -> LeadFact:
        doc = orjson.loads(raw)
        return cls(str(doc["fact_id"]), str(doc["lead_id"]), str(doc["kind"]), int(doc["at_ms"]))


def lead_fact(event: Event) -> LeadFact | None:
    """The fact an event implies about a lead, if any."""
    lead_id = getattr(event, "lead_id", None)
    if not lead_id:
        return None
    if (
        isinstance(event, CallStarted) and event.direction == "outbound" and event.rep_id
    ) or isinstance(event, EmailSent | MeetingHeld):
        kind = TOUCH
    elif isinstance(event, OpportunityCreated):
        kind = OPPORTUNITY
    else:
        return None
    return LeadFact(f"{kind}:{event.event_id}", lead_id, kind, event.occurred_at_ms)
