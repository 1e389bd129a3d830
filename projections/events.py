"""The canonical event contract, version 1.1, as typed, frozen events.

Every event type is a frozen dataclass. The annotations are the contract:
the validator and the published JSON Schema are both derived from them, so
there is one place to change when the contract grows.

Field conventions:
* ``Id``: a non-empty identifier of at most 128 characters, none of them a control
  character (U+0000-U+001F, U+007F-U+009F); every other character is allowed.
* ``Text``: free text of at most 256 characters.
* ``Count``: an integer from 0 to 2^53 - 1 (money in minor units, durations in ms): exact
  as a JSON number for every reader, and as a double inside Redis' Lua.
* ``Instant``: an RFC 3339 timestamp with an offset on the wire; held as
  integer epoch milliseconds in an attribute whose name ends in ``_ms``
  (the wire name drops that suffix).
* ``X | None``: optional on the wire.

Version 1.1 only relaxes version 1 (``schema_version`` stays 1, every v1 event
stays valid): a field is required only where a KPI needs it. Descriptive fields
(names, ``product``, ``segment``, ``scheduled_for``) are optional; a deal's close
may omit its owner and amount, which then come from the deal's record (its
created, updated and stage events: docs/events.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

SCHEMA_VERSION = 1

ID_MAX_CHARS = 128
TEXT_MAX_CHARS = 256
COUNT_MAX = 2**53 - 1


class FieldKind:
    """Marker carried in ``Annotated`` metadata to say how a field is checked."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"FieldKind({self.name})"


ID = FieldKind("id")
TEXT = FieldKind("text")
COUNT = FieldKind("count")
INSTANT = FieldKind("instant")
TIMEZONE = FieldKind("timezone")

Id = Annotated[str, ID]
Text = Annotated[str, TEXT]
Count = Annotated[int, COUNT]
Instant = Annotated[int, INSTANT]
TimeZoneName = Annotated[str, TIMEZONE]

Origin = Literal["marketing", "sales"]
Sentiment = Literal["positive", "negative", "neutral"]
Outcome = Literal["won", "lost"]
Direction = Literal["inbound", "outbound"]
CallOutcome = Literal["completed", "missed", "abandoned", "voicemail", "busy", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """The envelope every event carries."""

    event_id: Id
    occurred_at_ms: Instant
    schema_version: int
    source: Text | None = None

    TYPE = ""  # the wire ``type``; set on every concrete class
    SUBJECT = ""  # the field naming the entity the event is about (the record key)

    @property
    def type(self) -> str:
        return self.TYPE

    @property
    def subject_id(self) -> str:
        value: str = getattr(self, self.SUBJECT)
        return value


# Directory ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TeamUpserted(Event):
    TYPE = "team.upserted"
    SUBJECT = "team_id"
    team_id: Id
    timezone: TimeZoneName
    name: Text | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RepUpserted(Event):
    TYPE = "rep.upserted"
    SUBJECT = "rep_id"
    rep_id: Id
    team_id: Id
    active: bool
    name: Text | None = None


# Leads -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LeadCreated(Event):
    TYPE = "lead.created"
    SUBJECT = "lead_id"
    lead_id: Id
    origin: Origin
    lead_source: Text
    campaign_id: Id | None = None
    rep_id: Id | None = None
    segment: Text | None = None
    territory: Text | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LeadAssigned(Event):
    TYPE = "lead.assigned"
    SUBJECT = "lead_id"
    lead_id: Id
    rep_id: Id


@dataclass(frozen=True, slots=True, kw_only=True)
class LeadStageChanged(Event):
    TYPE = "lead.stage_changed"
    SUBJECT = "lead_id"
    lead_id: Id
    stage: Id
    rep_id: Id | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LeadResponded(Event):
    TYPE = "lead.responded"
    SUBJECT = "lead_id"
    lead_id: Id
    sentiment: Sentiment
    rep_id: Id | None = None


# Opportunities ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OpportunityCreated(Event):
    """``rep_id`` is the owner when the deal is created; without it, the deal's owner
    from its record is credited (as for a close)."""

    TYPE = "opportunity.created"
    SUBJECT = "opportunity_id"
    opportunity_id: Id
    rep_id: Id | None = None
    amount_minor: Count | None = None  # the expected amount
    product: Text | None = None
    segment: Text | None = None
    lead_id: Id | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpportunityUpdated(Event):
    """(1.1) What is now known of a deal: its owner, amount, expected close. Each field
    given is the deal's latest value of that field by ``(occurred_at, event_id)``."""

    TYPE = "opportunity.updated"
    SUBJECT = "opportunity_id"
    opportunity_id: Id
    rep_id: Id | None = None
    amount_minor: Count | None = None
    expected_close_ms: Instant | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpportunityStageChanged(Event):
    TYPE = "opportunity.stage_changed"
    SUBJECT = "opportunity_id"
    opportunity_id: Id
    stage: Id
    rep_id: Id | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpportunityClosed(Event):
    """Without ``rep_id`` or ``amount_minor`` (1.1), the deal's owner and amount from its
    record are credited; a won deal whose amount is never known counts apart."""

    TYPE = "opportunity.closed"
    SUBJECT = "opportunity_id"
    opportunity_id: Id
    outcome: Outcome
    rep_id: Id | None = None
    amount_minor: Count | None = None
    customer_id: Id | None = None
    new_customer: bool | None = None


# Activities and engagement -----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailEvent(Event):
    """What happened to a message. Only a send credits a rep (an open, click or reply counts
    for the send), so only ``email.sent`` requires ``rep_id``."""

    SUBJECT = "message_id"
    message_id: Id
    rep_id: Id | None = None
    lead_id: Id | None = None
    opportunity_id: Id | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailSent(EmailEvent):
    TYPE = "email.sent"
    rep_id: Id


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailOpened(EmailEvent):
    TYPE = "email.opened"


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailClicked(EmailEvent):
    TYPE = "email.clicked"


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailReplied(EmailEvent):
    TYPE = "email.replied"


@dataclass(frozen=True, slots=True, kw_only=True)
class MeetingEvent(Event):
    """A meeting booked, held or missed. Held and missed meetings credit their rep, so they
    require ``rep_id``; no KPI reads a booking."""

    SUBJECT = "meeting_id"
    meeting_id: Id
    rep_id: Id | None = None
    scheduled_for_ms: Instant | None = None
    lead_id: Id | None = None
    opportunity_id: Id | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MeetingScheduled(MeetingEvent):
    TYPE = "meeting.scheduled"


@dataclass(frozen=True, slots=True, kw_only=True)
class MeetingHeld(MeetingEvent):
    TYPE = "meeting.held"
    rep_id: Id


@dataclass(frozen=True, slots=True, kw_only=True)
class MeetingNoShow(MeetingEvent):
    TYPE = "meeting.no_show"
    rep_id: Id


# Telephony -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStarted(Event):
    TYPE = "call.started"
    SUBJECT = "call_id"
    call_id: Id
    direction: Direction
    queue_id: Id | None = None
    rep_id: Id | None = None
    lead_id: Id | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallAnswered(Event):
    TYPE = "call.answered"
    SUBJECT = "call_id"
    call_id: Id
    rep_id: Id


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded(Event):
    TYPE = "call.ended"
    SUBJECT = "call_id"
    call_id: Id
    outcome: CallOutcome
    rep_id: Id | None = None
    talk_ms: Count | None = None


# Marketing spend ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignSpend(Event):
    TYPE = "campaign.spend"
    SUBJECT = "campaign_id"
    campaign_id: Id
    amount_minor: Count


EVENT_CLASSES: tuple[type[Event], ...] = (
    TeamUpserted,
    RepUpserted,
    LeadCreated,
    LeadAssigned,
    LeadStageChanged,
    LeadResponded,
    OpportunityCreated,
    OpportunityUpdated,
    OpportunityStageChanged,
    OpportunityClosed,
    EmailSent,
    EmailOpened,
    EmailClicked,
    EmailReplied,
    MeetingScheduled,
    MeetingHeld,
    MeetingNoShow,
    CallStarted,
    CallAnswered,
    CallEnded,
    CampaignSpend,
)

EVENT_TYPES: dict[str, type[Event]] = {cls.TYPE: cls for cls in EVENT_CLASSES}
