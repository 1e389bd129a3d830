"""Entity records: what is known so far about one lead, deal, call, message, meeting...

A record is a flat ``dict[str, str]`` (it is stored as a Redis hash). Every
update is order-independent:

* fields owned by one kind of event are last-writer-wins by ``(occurred_at,
  event_id)``, kept in a ``<group>@`` ordering field;
* first-touch style fields keep the minimum;
* events that count one by one (a response, a spend, a held meeting) are kept
  as ``!<event_id>`` fields whose value says what they count. Every applied
  event leaves such a field (empty when it counts nothing), which is also how
  a duplicate ``event_id`` is recognised and ignored.
"""

from __future__ import annotations

import re
from typing import Protocol

from projections.events import (
    CallAnswered,
    CallEnded,
    CallStarted,
    CampaignSpend,
    EmailClicked,
    EmailOpened,
    EmailReplied,
    EmailSent,
    Event,
    LeadAssigned,
    LeadCreated,
    LeadResponded,
    LeadStageChanged,
    MeetingHeld,
    MeetingNoShow,
    MeetingScheduled,
    OpportunityClosed,
    OpportunityCreated,
    OpportunityStageChanged,
    OpportunityUpdated,
    RepUpserted,
    TeamUpserted,
)
from projections.facts import OPPORTUNITY, TOUCH, LeadFact

Record = dict[str, str]

UNASSIGNED = "unassigned"


class Directory(Protocol):
    """Who belongs where, as known when an event is applied."""

    def team_of(self, rep_id: str, at_ms: int) -> str:
        """The rep's team at that instant, or ``unassigned``."""
        ...

    def zone_of(self, team_id: str) -> str:
        """The team's IANA zone (the organisation's zone for unknown teams)."""
        ...

    def team_of_queue(self, queue_id: str) -> str | None:
        """The team a contact-centre queue belongs to, when configured."""
        ...


SEEN = "!"  # prefix of per-event fields
FACT_SEEN = "#"  # prefix of per-fact fields: a fact id can never collide with an event id
SEP = "|"
_ESCAPES = str.maketrans({"%": "%25", SEP: "%7C"})
_ESCAPED = re.compile("%(?:25|7C)")
_UNESCAPES = {"%25": "%", "%7C": SEP}


def pack(*parts: str) -> str:
    """Parts joined by ``|`` into one field value. ``%`` and ``|`` inside a part are
    percent-escaped, so every id of the contract round-trips through ``unpack``."""
    return SEP.join(p.translate(_ESCAPES) if SEP in p or "%" in p else p for p in parts)


def unescape(part: str) -> str:
    """One part of a ``pack``ed value as it was given."""
    return _ESCAPED.sub(lambda m: _UNESCAPES[m.group(0)], part) if "%" in part else part


def unpack(value: str) -> list[str]:
    """The parts of a ``pack``ed value."""
    parts = value.split(SEP)
    return [unescape(p) for p in parts] if "%" in value else parts


# Event type -> the entity kind it belongs to (its record is keyed by the subject id).
KIND_OF: dict[str, str] = {
    "team.upserted": "team",
    "rep.upserted": "rep",
    "lead.created": "lead",
    "lead.assigned": "lead",
    "lead.stage_changed": "lead",
    "lead.responded": "lead",
    "opportunity.created": "opp",
    "opportunity.updated": "opp",
    "opportunity.stage_changed": "opp",
    "opportunity.closed": "opp",
    "email.sent": "msg",
    "email.opened": "msg",
    "email.clicked": "msg",
    "email.replied": "msg",
    "meeting.scheduled": "mtg",
    "meeting.held": "mtg",
    "meeting.no_show": "mtg",
    "call.started": "call",
    "call.answered": "call",
    "call.ended": "call",
    "campaign.spend": "cmp",
}


def entity_id(event: Event) -> tuple[str, str]:
    """(kind, id) of the record an event updates."""
    return KIND_OF[event.TYPE], event.subject_id


def order_key(event: Event) -> str:
    """Sortable text for last-writer-wins: occurred_at first, then event_id."""
    return f"{event.occurred_at_ms:015d}{SEP}{event.event_id}"


def _newer(record: Record, group: str, event: Event) -> bool:
    """Whether ``event`` wins the last-writer-wins race for ``group``; records it if so."""
    key = order_key(event)
    if record.get(f"{group}@", "") >= key:
        return False
    record[f"{group}@"] = key
    return True


def _opt(value: str | None) -> str:
    return value or ""


def _team(directory: Directory, rep_id: str | None, at: int) -> str:
    """``team`` and ``zone`` of a rep at an instant, packed for storing in one field."""
    team = directory.team_of(rep_id, at) if rep_id else UNASSIGNED
    return pack(team, directory.zone_of(team))


def apply(record: Record, event: Event, directory: Directory) -> bool:
    """Apply one event to its record; False (and no change) if it was applied before.

    The team (and its zone) of every rep the record credits is resolved now and
    stored, so the record's contribution never depends on a later directory.
    """
    seen = SEEN + event.event_id
    if seen in record:
        return False
    at = event.occurred_at_ms
    counted = ""
    if isinstance(event, LeadCreated):
        if _newer(record, "c", event):
            record.update(
                c_at=str(at),
                c_rep=_opt(event.rep_id),
                origin=event.origin,
                source=event.lead_source,
                campaign=_opt(event.campaign_id),
                c_team=_team(directory, event.rep_id, at),
            )
        if _newer(record, "own", event):
            record.update(owner=_opt(event.rep_id), o_team=_team(directory, event.rep_id, at))
    elif isinstance(event, LeadAssigned):
        if _newer(record, "own", event):
            record.update(owner=event.rep_id, o_team=_team(directory, event.rep_id, at))
    elif isinstance(event, LeadStageChanged):
        if _newer(record, "st", event):
            record["stage"] = event.stage
    elif isinstance(event, LeadResponded):
        team = directory.team_of(event.rep_id, at) if event.rep_id else UNASSIGNED
        counted = pack(
            "resp", str(at), _opt(event.rep_id), event.sentiment, team, directory.zone_of(team)
        )
    elif isinstance(event, OpportunityCreated):
        if _newer(record, "c", event):
            record.update(c_at=str(at), c_rep=_opt(event.rep_id), lead=_opt(event.lead_id))
        _deal_owner_and_amount(record, event, event.rep_id, event.amount_minor)
        _deal_teams(record, directory)
    elif isinstance(event, OpportunityUpdated):
        _deal_owner_and_amount(record, event, event.rep_id, event.amount_minor)
        _deal_teams(record, directory)
    elif isinstance(event, OpportunityStageChanged):
        _deal_owner_and_amount(record, event, event.rep_id, None)
        _deal_teams(record, directory)
    elif isinstance(event, OpportunityClosed):
        if _newer(record, "x", event):
            record.update(
                x_at=str(at),
                x_rep=_opt(event.rep_id),
                outcome=event.outcome,
                amount="" if event.amount_minor is None else str(event.amount_minor),
            )
        _deal_teams(record, directory)
    elif isinstance(event, EmailSent):
        if _newer(record, "s", event):
            record.update(
                s_at=str(at),
                s_rep=event.rep_id,
                lead=_opt(event.lead_id),
                s_team=_team(directory, event.rep_id, at),
            )
    elif isinstance(event, EmailOpened | EmailClicked | EmailReplied):
        record[event.TYPE.split(".")[1]] = "1"
    elif isinstance(event, MeetingHeld | MeetingNoShow):
        team = directory.team_of(event.rep_id, at)
        counted = pack(
            event.TYPE.split(".")[1], str(at), event.rep_id, team, directory.zone_of(team)
        )
    elif isinstance(event, CallStarted):
        if _newer(record, "s", event):
            queue_team = directory.team_of_queue(event.queue_id) if event.queue_id else None
            record.update(
                s_at=str(at),
                direction=event.direction,
                queue=_opt(event.queue_id),
                s_rep=_opt(event.rep_id),
                lead=_opt(event.lead_id),
                s_team=_team(directory, event.rep_id, at),
                q_team=pack(queue_team, directory.zone_of(queue_team)) if queue_team else "",
            )
    elif isinstance(event, CallAnswered):
        # The first answer counts; a later duplicate answer of the same call does not move it.
        if _newer_min(record, "a", event):
            record.update(
                a_at=str(at), a_rep=event.rep_id, a_team=_team(directory, event.rep_id, at)
            )
    elif isinstance(event, CallEnded):
        if _newer(record, "e", event):
            record.update(e_at=str(at), outcome=event.outcome, e_rep=_opt(event.rep_id))
        # Talk time from the latest end that reports one: a vendor may end a call twice,
        # once for the caller's leg (no talk time) and once for the agent's (with it).
        if event.talk_ms is not None and _newer(record, "tk", event):
            record["talk"] = str(event.talk_ms)
    elif isinstance(event, CampaignSpend):
        counted = pack("spend", str(at), str(event.amount_minor))
    elif isinstance(event, RepUpserted):
        # Every upsert is kept: a rep's team "at event time" is the latest one not after it.
        counted = pack("rep", str(at), event.team_id, "1" if event.active else "0")
        if event.name is not None and _newer(record, "n", event):
            record["name"] = event.name  # the latest name given, for people to read
    elif isinstance(event, TeamUpserted):
        if _newer(record, "t", event):
            record.update(name=_opt(event.name), timezone=event.timezone)
    elif isinstance(event, MeetingScheduled):
        pass  # no KPI of the catalogue reads it
    record[seen] = counted
    return True


def apply_fact(record: Record, fact: LeadFact) -> bool:
    """Apply a lead fact to the lead's record; False if it was applied before."""
    seen = FACT_SEEN + fact.fact_id
    if seen in record:
        return False
    if fact.kind == TOUCH:
        current = record.get("t_at")
        if current is None or fact.at_ms < int(current):
            record["t_at"] = str(fact.at_ms)  # the first touch
    elif fact.kind == OPPORTUNITY:
        record["converted"] = "1"
    record[seen] = ""
    return True


def _deal_owner_and_amount(
    record: Record, event: Event, rep_id: str | None, amount_minor: int | None
) -> None:
    """A deal's owner and amount: each the latest value given by its created, updated (and,
    for the owner, stage) events, by ``(occurred_at, event_id)``, whatever order they come in."""
    if rep_id is not None and _newer(record, "own", event):
        record["own"] = rep_id
    if amount_minor is not None and _newer(record, "amt", event):
        record["amt"] = str(amount_minor)


def _deal_teams(record: Record, directory: Directory) -> None:
    """The team (and zone) credited for the deal's creation and close: of the rep the event
    names, else of the deal's owner, at the event's instant. Re-resolved whenever the record
    changes, so an owner learnt later credits the same team as one known first."""
    owner = record.get("own") or record.get("c_rep", "")  # (records before 1.1 had no "own")
    if "c_at" in record:
        record["c_team"] = _team(directory, record["c_rep"] or owner, int(record["c_at"]))
    if "x_at" in record:
        record["x_team"] = _team(directory, record["x_rep"] or owner, int(record["x_at"]))


def _newer_min(record: Record, group: str, event: Event) -> bool:
    """First-writer-wins: the earliest ``(occurred_at, event_id)`` of the group is kept."""
    key = order_key(event)
    current = record.get(f"{group}@")
    if current is not None and current <= key:
        return False
    record[f"{group}@"] = key
    return True
