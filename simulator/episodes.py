"""Episodes: the life of one lead, deal, inbound call or campaign spend, as canonical events.

Each function draws from a seeded ``random.Random`` and returns events as
dicts in the wire format of the contract; timestamps are integer ms and are
formatted by ``simulator.log``.
"""

from __future__ import annotations

import math
import random
from typing import Any

from simulator.org import Org, Rep, Team

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

Draft = dict[str, Any]  # an event before its envelope is finished


class Ids:
    """Short, unique, reproducible ids drawn from the run's random generator."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def new(self, prefix: str) -> str:
        return f"{prefix}-{self._rng.getrandbits(60):015x}"


def _lognormal_ms(rng: random.Random, median_ms: float, sigma: float) -> int:
    return int(median_ms * math.exp(rng.gauss(0, sigma)))


def _event(type_name: str, at_ms: int, team: Team, **fields: Any) -> Draft:
    return {"type": type_name, "at": at_ms, "team": team, **fields}


def directory(org: Org, at_ms: int) -> list[Draft]:
    drafts = [
        _event("team.upserted", at_ms, t, team_id=t.team_id, name=t.name, timezone=t.timezone)
        for t in org.teams
    ]
    drafts += [
        _event(
            "rep.upserted",
            at_ms,
            r.team,
            rep_id=r.rep_id,
            name=r.name,
            team_id=r.team.team_id,
            active=True,
        )
        for r in org.reps
    ]
    return drafts


def _touch(rng: random.Random, ids: Ids, rep: Rep, lead_id: str, at: int) -> list[Draft]:
    """One touch of a lead: an outbound call, a sent email or a held meeting."""
    team = rep.team
    kind = rng.random()
    if kind < 0.5:
        call_id = ids.new("call")
        drafts = [
            _event(
                "call.started",
                at,
                team,
                call_id=call_id,
                direction="outbound",
                rep_id=rep.rep_id,
                lead_id=lead_id,
            )
        ]
        if rng.random() < 0.35:
            answered = at + rng.randint(5_000, 30_000)
            talk = _lognormal_ms(rng, 4 * MINUTE, 0.7)
            drafts.append(
                _event("call.answered", answered, team, call_id=call_id, rep_id=rep.rep_id)
            )
            drafts.append(
                _event(
                    "call.ended",
                    answered + talk,
                    team,
                    call_id=call_id,
                    outcome="completed",
                    rep_id=rep.rep_id,
                    talk_ms=talk,
                )
            )
        else:
            outcome = rng.choice(["voicemail", "busy", "missed", "failed"])
            drafts.append(
                _event(
                    "call.ended",
                    at + rng.randint(10_000, 40_000),
                    team,
                    call_id=call_id,
                    outcome=outcome,
                    rep_id=rep.rep_id,
                )
            )
        return drafts
    if kind < 0.9:
        message_id = ids.new("msg")
        drafts = [
            _event(
                "email.sent", at, team, message_id=message_id, rep_id=rep.rep_id, lead_id=lead_id
            )
        ]
        if rng.random() < 0.45:
            opened = at + _lognormal_ms(rng, 2 * HOUR, 1.2)
            drafts.append(
                _event(
                    "email.opened",
                    opened,
                    team,
                    message_id=message_id,
                    rep_id=rep.rep_id,
                    lead_id=lead_id,
                )
            )
            if rng.random() < 0.25:
                drafts.append(
                    _event(
                        "email.clicked",
                        opened + rng.randint(2_000, 600_000),
                        team,
                        message_id=message_id,
                        rep_id=rep.rep_id,
                        lead_id=lead_id,
                    )
                )
            if rng.random() < 0.2:
                drafts.append(
                    _event(
                        "email.replied",
                        opened + _lognormal_ms(rng, HOUR, 1.0),
                        team,
                        message_id=message_id,
                        rep_id=rep.rep_id,
                        lead_id=lead_id,
                    )
                )
        return drafts
    meeting_id = ids.new("mtg")
    return [
        _event(
            "meeting.scheduled",
            at - DAY,
            team,
            meeting_id=meeting_id,
            rep_id=rep.rep_id,
            lead_id=lead_id,
            scheduled_for=at,
        ),
        _event(
            "meeting.held",
            at,
            team,
            meeting_id=meeting_id,
            rep_id=rep.rep_id,
            lead_id=lead_id,
            scheduled_for=at,
        ),
    ]


def lead_journey(rng: random.Random, ids: Ids, org: Org, rep: Rep, at: int) -> list[Draft]:
    """A lead from creation through touches and stages, sometimes into a deal."""
    team = rep.team
    lead_id = ids.new("lead")
    marketing = rng.random() < 0.6
    created = _event(
        "lead.created",
        at,
        team,
        lead_id=lead_id,
        origin="marketing" if marketing else "sales",
        lead_source=rng.choice(["webinar", "paid-search", "content", "event"])
        if marketing
        else rng.choice(["outbound", "referral", "partner"]),
        rep_id=rep.rep_id,
        segment=rng.choice(["smb", "mid-market", "enterprise"]),
        territory=team.team_id,
    )
    if marketing:
        created["campaign_id"] = rng.choice(org.campaigns)
    drafts = [created]
    if rng.random() < 0.12:
        return drafts  # never touched
    first_touch = at + _lognormal_ms(rng, 25 * MINUTE, 1.6)
    if rng.random() < 0.1:  # routed to a colleague before anyone calls
        rep = rng.choice(org.reps_of(team))
        drafts.append(
            _event(
                "lead.assigned",
                at + (first_touch - at) // 2,
                team,
                lead_id=lead_id,
                rep_id=rep.rep_id,
            )
        )
    drafts += _touch(rng, ids, rep, lead_id, first_touch)
    drafts.append(
        _event(
            "lead.stage_changed",
            first_touch,
            team,
            lead_id=lead_id,
            stage="contacted",
            rep_id=rep.rep_id,
        )
    )
    later = first_touch
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        later += _lognormal_ms(rng, DAY, 0.8)
        drafts += _touch(rng, ids, rep, lead_id, later)
    if rng.random() < 0.4:
        drafts.append(
            _event(
                "lead.responded",
                later + _lognormal_ms(rng, 6 * HOUR, 1.0),
                team,
                lead_id=lead_id,
                rep_id=rep.rep_id,
                sentiment=rng.choices(["positive", "neutral", "negative"], [0.45, 0.3, 0.25])[0],
            )
        )
    decided = later + _lognormal_ms(rng, 2 * DAY, 0.8)
    fate = rng.random()
    if fate < 0.3:
        drafts.append(
            _event(
                "lead.stage_changed",
                decided,
                team,
                lead_id=lead_id,
                stage="unqualified",
                rep_id=rep.rep_id,
            )
        )
    elif fate < 0.65:
        drafts.append(
            _event(
                "lead.stage_changed",
                decided,
                team,
                lead_id=lead_id,
                stage="qualified",
                rep_id=rep.rep_id,
            )
        )
        if rng.random() < 0.5:
            converted = decided + _lognormal_ms(rng, 2 * DAY, 0.8)
            drafts.append(
                _event(
                    "lead.stage_changed",
                    converted,
                    team,
                    lead_id=lead_id,
                    stage="converted",
                    rep_id=rep.rep_id,
                )
            )
            drafts += deal(rng, ids, rep, converted, lead_id)
    return drafts


def deal(rng: random.Random, ids: Ids, rep: Rep, at: int, lead_id: str | None) -> list[Draft]:
    """An opportunity through its stages to won or lost; now and then reopened and re-closed.

    One deal in five is "thin", as webhooks report it (contract 1.1): created, staged and
    closed without owner or amount, which come in ``opportunity.updated`` events, sometimes
    only after the close; now and then its amount is never known."""
    team = rep.team
    opportunity_id = ids.new("opp")
    amount = int(_lognormal_ms(rng, 12_000_00, 0.9)) // 100 * 100
    thin = rng.random() < 0.2
    created = _event("opportunity.created", at, team, opportunity_id=opportunity_id)
    if not thin:
        created.update(
            rep_id=rep.rep_id,
            amount_minor=amount,
            product=rng.choice(["core", "pro", "enterprise"]),
            segment=rng.choice(["smb", "mid-market", "enterprise"]),
        )
    if lead_id is not None:
        created["lead_id"] = lead_id
    drafts = [created]
    stage_at = at
    for stage in ("discovery", "proposal", "negotiation"):
        if rng.random() < 0.7:
            stage_at += _lognormal_ms(rng, 2 * DAY, 0.6)
            staged = _event(
                "opportunity.stage_changed",
                stage_at,
                team,
                opportunity_id=opportunity_id,
                stage=stage,
            )
            if not thin:
                staged["rep_id"] = rep.rep_id
            drafts.append(staged)
    closes = 2 if rng.random() < 0.03 else 1
    closed_at = stage_at
    for _ in range(closes):
        closed_at += _lognormal_ms(rng, 4 * DAY, 0.9)
        won = rng.random() < 0.45
        close: Draft = _event(
            "opportunity.closed",
            closed_at,
            team,
            opportunity_id=opportunity_id,
            outcome="won" if won else "lost",
        )
        if not thin:
            close["rep_id"] = rep.rep_id
            if won:
                close["amount_minor"] = int(amount * rng.uniform(0.7, 1.1)) // 100 * 100
        if won:
            close["customer_id"] = ids.new("cust")
            close["new_customer"] = rng.random() < 0.7
        drafts.append(close)
    if thin:
        drafts += _thin_deal_record(rng, opportunity_id, rep, at, closed_at, amount)
    return drafts


def _thin_deal_record(
    rng: random.Random, opportunity_id: str, rep: Rep, created_at: int, closed_at: int, amount: int
) -> list[Draft]:
    """The owner and amount of a thin deal, each in its own update (as a CRM sends property
    changes): soon after creation, or only after the close; one amount in ten never comes."""
    drafts = []
    for field, value in (("rep_id", rep.rep_id), ("amount_minor", amount)):
        if field == "amount_minor" and rng.random() < 0.1:
            continue
        late = rng.random() < 0.3
        at = closed_at + _lognormal_ms(rng, HOUR, 1.0) if late else created_at + rng.randint(0, 5)
        drafts.append(
            _event(
                "opportunity.updated",
                at,
                rep.team,
                opportunity_id=opportunity_id,
                **{field: value},
            )
        )
    return drafts


def inbound_call(rng: random.Random, ids: Ids, team: Team, rep: Rep, at: int) -> list[Draft]:
    """An inbound call to a team's queue: answered, or abandoned while waiting."""
    call_id = ids.new("call")
    drafts = [
        _event(
            "call.started", at, team, call_id=call_id, direction="inbound", queue_id=team.queue_id
        )
    ]
    wait = int(rng.expovariate(1 / 18_000))
    if rng.random() < 0.87:
        talk = _lognormal_ms(rng, 5 * MINUTE, 0.6)
        ended: Draft = _event(
            "call.ended",
            at + wait + talk,
            team,
            call_id=call_id,
            outcome="completed",
            rep_id=rep.rep_id,
        )
        if rng.random() < 0.8:
            ended["talk_ms"] = talk
        drafts += [
            _event("call.answered", at + wait, team, call_id=call_id, rep_id=rep.rep_id),
            ended,
        ]
        if "talk_ms" in ended and rng.random() < 0.2:
            # Ended twice, as Twilio reports it: the agent's leg with the talk time, then the
            # caller's leg a moment later without it (its duration includes the queue).
            drafts.append(
                _event(
                    "call.ended",
                    at + wait + talk + 1_000,
                    team,
                    call_id=call_id,
                    outcome="completed",
                )
            )
    else:
        drafts.append(_event("call.ended", at + wait, team, call_id=call_id, outcome="abandoned"))
    return drafts


def meeting(rng: random.Random, ids: Ids, rep: Rep, at: int) -> list[Draft]:
    """A meeting booked ahead, then held or missed."""
    meeting_id = ids.new("mtg")
    scheduled_for = at + _lognormal_ms(rng, 2 * DAY, 0.7)
    base = {"meeting_id": meeting_id, "rep_id": rep.rep_id, "scheduled_for": scheduled_for}
    outcome = "meeting.held" if rng.random() < 0.8 else "meeting.no_show"
    if outcome == "meeting.held" and rng.random() < 0.1:
        # logged after the fact (contract 1.1): no booking, no schedule
        return [_event(outcome, scheduled_for, rep.team, meeting_id=meeting_id, rep_id=rep.rep_id)]
    return [
        _event("meeting.scheduled", at, rep.team, **base),
        _event(outcome, scheduled_for, rep.team, **base),
    ]


def campaign_spend(rng: random.Random, org: Org, at: int) -> list[Draft]:
    team = org.teams[0]
    return [
        _event(
            "campaign.spend",
            at,
            team,
            campaign_id=rng.choice(org.campaigns),
            amount_minor=rng.randint(50, 2_000) * 100,
        )
    ]
