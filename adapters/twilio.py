"""Twilio Voice status callbacks -> call.started, call.answered, call.ended.

One callback is one form-encoded POST about one call leg. Twilio does not keep
their order; each canonical event comes from exactly one kind of callback, with
that callback's own ``Timestamp``, and its id from ``CallSid`` and the status,
so any order and any retry give the same events (the projection joins a call's
three events by ``call_id``):

* ``ringing`` of a parent call -> ``call.started`` (inbound: the called number's
  queue from ``[queues.twilio]``; outbound: the calling rep from ``[reps.twilio]``);
* ``in-progress`` of an agent's leg (``Direction=outbound-dial`` with a
  ``ParentCallSid``) -> ``call.answered`` of the parent call by the rep
  ``[reps.twilio]`` names for ``To``; of an ``outbound-api`` call, by its caller;
* ``completed`` of an agent's leg -> ``call.ended`` of the parent call with the
  talk time: the leg's ``CallDuration``, from the agent's answer to hang-up;
* a final status of a parent call -> ``call.ended``: ``completed``, ``busy``,
  ``no-answer`` (missed), ``failed``, ``canceled`` (abandoned). An inbound
  parent's ``CallDuration`` counts from when Twilio answered the caller, IVR and
  queue included, so it is not talk time: only an ``outbound-api`` call (a rep's
  own, no queue) reports its ``CallDuration`` as talk time.

A call answered by an agent thus ends twice, once per leg; the engine takes the
latest end as the call's end and the talk time from the end that reports one.
Everything else (``queued``, ``initiated``, an inbound call answered by the
IVR, an agent leg ringing, busy or unanswered) carries nothing the engine
counts: ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from adapters.canonical import Incomplete, Malformed, Mapped, event, map_parts, stable_id
from adapters.config import Mappings

SOURCE = "twilio"
FINAL = {
    "completed": "completed",
    "busy": "busy",
    "no-answer": "missed",
    "failed": "failed",
    "canceled": "abandoned",
}


def call_id(sid: str) -> str:
    return f"twilio-{sid}"


def timestamp_ms(value: object) -> int | None:
    """A callback's ``Timestamp`` (RFC 2822) in epoch ms; None when it is not such a date.
    A date without a zone, or with ``-0000`` (RFC 2822: UTC, local zone unknown), is UTC."""
    if not isinstance(value, str):
        return None
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # Overflow: a huge year
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


def map_callback(params: Mapping[str, str], mappings: Mappings, raw: bytes) -> Mapped:
    return map_parts([params], lambda part, out: _map(part, mappings, out), lambda _: raw)


def _map(params: Mapping[str, str], mappings: Mappings, out: Mapped) -> None:
    missing = [n for n in ("CallSid", "CallStatus", "Direction", "Timestamp") if not params.get(n)]
    if missing:
        raise Malformed(f"missing {', '.join(missing)}")
    at_ms = timestamp_ms(params["Timestamp"])
    if at_ms is None:
        raise Malformed("Timestamp is not RFC 2822")
    sid, status, direction = params["CallSid"], params["CallStatus"], params["Direction"]
    parent = params.get("ParentCallSid")
    event_id = stable_id(SOURCE, sid, status)

    def emit(kind: str, call: str, **fields: Any) -> None:
        out.events.append(event(kind, event_id, at_ms, SOURCE, call_id=call_id(call), **fields))

    if direction == "outbound-dial" and parent:
        if status == "completed":
            emit("call.ended", parent, outcome="completed", talk_ms=_duration_ms(params))
        elif status == "in-progress":
            emit("call.answered", parent, rep_id=mappings.get("reps.twilio", params.get("To", "")))
        else:
            out.ignored += 1
    elif status == "ringing":
        if direction == "inbound":
            queue = mappings.get("queues.twilio", params.get("To", ""))
            emit("call.started", sid, direction="inbound", queue_id=queue)
        else:
            rep = mappings.get("reps.twilio", params.get("From", ""))
            emit("call.started", sid, direction="outbound", rep_id=rep)
    elif status == "in-progress" and direction == "outbound-api":
        emit("call.answered", sid, rep_id=mappings.get("reps.twilio", params.get("From", "")))
    elif status in FINAL:
        own_talk = status == "completed" and direction == "outbound-api"
        emit(
            "call.ended",
            sid,
            outcome=FINAL[status],
            talk_ms=_duration_ms(params) if own_talk else None,
        )
    else:
        out.ignored += 1


def _duration_ms(params: Mapping[str, str]) -> int:
    seconds = params.get("CallDuration", "")
    if not (seconds.isascii() and seconds.isdigit()) or len(seconds) > 9:  # < 31 years
        raise Incomplete("completed without a CallDuration in whole seconds")
    return int(seconds) * 1000
