"""Aircall call webhooks -> call.started, call.answered, call.ended.

The envelope is ``{resource, event, timestamp, token, data}``; ``data`` is the
call. Each canonical event comes from one webhook event, timed by the call's
own ``started_at`` / ``answered_at`` / ``ended_at`` (Unix seconds), with its id
from the call id and the event, so a retry or a reordering changes nothing:

* ``call.created`` -> ``call.started`` (inbound: the queue ``[queues.aircall]``
  names for ``number.digits``; outbound: the rep ``[reps.aircall]`` names for
  ``user.id``);
* ``call.answered`` -> ``call.answered`` by the rep of ``user.id``;
* ``call.ended`` -> ``call.ended``: ``completed`` with talk time ``ended_at -
  answered_at`` when answered; ``abandoned`` when ``missed_call_reason`` says
  the caller gave up; ``missed`` otherwise.

Other events (``call.ringing_on_agent``, ``call.hungup``, ...) are ignored: the
three above carry complete data.
"""

from __future__ import annotations

import math
from typing import Any

from adapters.canonical import Mapped, event, map_parts, need, stable_id
from adapters.config import Mappings

SOURCE = "aircall"
ABANDONED = {"short_abandoned", "abandoned_in_ivr", "abandoned_in_classic"}


def call_id(aircall_id: int) -> str:
    return f"aircall-{aircall_id}"


def timestamp_ms(value: object) -> int | None:
    """The envelope's ``timestamp`` (Unix seconds, a JSON number) in epoch ms; None when it
    is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        return int(value) * 1000 if math.isfinite(value) else None
    return value * 1000


def map_webhook(envelope: Any, mappings: Mappings, raw: bytes) -> Mapped:
    """``envelope`` is the parsed body; its token was checked by the caller."""
    return map_parts([envelope], lambda part, out: _map(part, mappings, out), lambda _: raw)


def _map(envelope: Any, mappings: Mappings, out: Mapped) -> None:
    kind = need(envelope, "event", str)
    if kind not in ("call.created", "call.answered", "call.ended"):
        out.ignored += 1
        return
    data = need(envelope, "data", dict)
    ident = need(data, "id", int)
    event_id = stable_id(SOURCE, ident, kind)
    direction = need(data, "direction", str)
    if kind == "call.created":
        if direction == "inbound":
            number = need(data, "number", dict)
            fields = {"queue_id": mappings.get("queues.aircall", need(number, "digits", str))}
        else:
            fields = {"rep_id": _rep(data, mappings)}
        at = need(data, "started_at", int)
        out.events.append(
            event(
                "call.started",
                event_id,
                at * 1000,
                SOURCE,
                call_id=call_id(ident),
                direction="inbound" if direction == "inbound" else "outbound",
                **fields,
            )
        )
    elif kind == "call.answered":
        at = need(data, "answered_at", int)
        out.events.append(
            event(
                "call.answered",
                event_id,
                at * 1000,
                SOURCE,
                call_id=call_id(ident),
                rep_id=_rep(data, mappings),
            )
        )
    else:
        ended = need(data, "ended_at", int)
        answered = data.get("answered_at")
        if isinstance(answered, int) and not isinstance(answered, bool):
            outcome, talk_ms = "completed", max(0, ended - answered) * 1000
        elif data.get("missed_call_reason") in ABANDONED:
            outcome, talk_ms = "abandoned", None
        else:
            outcome, talk_ms = "missed", None
        out.events.append(
            event(
                "call.ended",
                event_id,
                ended * 1000,
                SOURCE,
                call_id=call_id(ident),
                outcome=outcome,
                talk_ms=talk_ms,
            )
        )


def _rep(data: dict[str, Any], mappings: Mappings) -> str:
    user = need(data, "user", dict)
    return mappings.get("reps.aircall", need(user, "id", int))
