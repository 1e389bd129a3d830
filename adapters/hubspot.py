"""HubSpot webhook batches (a JSON array of up to 100 events) -> lead and deal events.

* ``contact.creation`` -> ``lead.created``: the contact's origin from its
  ``changeSource`` via ``[hubspot.origin_by_change_source]``, and the change
  source as the lead source;
* ``contact.propertyChange`` of ``hubspot_owner_id`` -> ``lead.assigned`` (the
  owner's rep from ``[reps.hubspot]``); of ``hs_lead_status`` ->
  ``lead.stage_changed`` (the stage from ``[hubspot.lead_status_stages]``);
* ``deal.creation`` -> ``opportunity.created`` (the webhook carries no property:
  owner and amount follow as property changes);
* ``deal.propertyChange`` of ``dealstage`` -> ``opportunity.closed`` when
  ``[hubspot.deal_stages]`` maps the stage to ``won`` or ``lost``, else
  ``opportunity.stage_changed``; of ``hubspot_owner_id`` -> ``opportunity.updated``
  with the owner's rep; of ``amount`` -> ``opportunity.updated`` with the amount
  in minor units; of ``closedate`` -> ``opportunity.updated`` with the expected close.

A close names neither owner nor amount: the engine takes both from the deal's
record (contract 1.1), whichever order HubSpot delivers them in. A property
cleared (an empty ``propertyValue``) leaves the last known value; other
properties and subscription types are ignored.

HubSpot says ``eventId`` is not guaranteed unique, so the event id derives from
(``subscriptionType``, ``objectId``, ``propertyName``, ``occurredAt``,
``propertyValue``): a retried delivery (``attemptNumber`` grows) maps to the
same ids.
"""

from __future__ import annotations

from typing import Any

import orjson

from adapters.canonical import Malformed, Mapped, event, map_parts, minor_units, need, stable_id
from adapters.config import Mappings
from projections.validation import format_instant_ms

SOURCE = "hubspot"
MAX_EVENTS = 100


def lead_id(object_id: int) -> str:
    return f"hubspot-contact-{object_id}"


def deal_id(object_id: int) -> str:
    return f"hubspot-deal-{object_id}"


def map_batch(batch: Any, mappings: Mappings) -> Mapped:
    """``batch`` is the parsed body; the caller checked the signature and that it is a list."""
    return map_parts(batch, lambda item, out: _map_one(item, mappings, out), orjson.dumps)


def _map_one(item: Any, mappings: Mappings, out: Mapped) -> None:
    kind = need(item, "subscriptionType", str)
    object_id = need(item, "objectId", int)
    at_ms = need(item, "occurredAt", int)
    prop = item.get("propertyName")
    value = item.get("propertyValue")
    event_id = stable_id(SOURCE, kind, object_id, prop, at_ms, value)
    if kind == "contact.creation":
        source = need(item, "changeSource", str)
        origin = mappings.get("hubspot.origin_by_change_source", source)
        out.events.append(
            event(
                "lead.created",
                event_id,
                at_ms,
                SOURCE,
                lead_id=lead_id(object_id),
                origin=origin,
                lead_source=source.lower(),
            )
        )
    elif kind == "contact.propertyChange" and prop == "hubspot_owner_id":
        rep = mappings.get("reps.hubspot", need(item, "propertyValue", str))
        out.events.append(
            event("lead.assigned", event_id, at_ms, SOURCE, lead_id=lead_id(object_id), rep_id=rep)
        )
    elif kind == "contact.propertyChange" and prop == "hs_lead_status":
        stage = mappings.get("hubspot.lead_status_stages", need(item, "propertyValue", str))
        out.events.append(
            event(
                "lead.stage_changed",
                event_id,
                at_ms,
                SOURCE,
                lead_id=lead_id(object_id),
                stage=stage,
            )
        )
    elif kind == "deal.creation":
        out.events.append(
            event("opportunity.created", event_id, at_ms, SOURCE, opportunity_id=deal_id(object_id))
        )
    elif kind == "deal.propertyChange" and prop in DEAL_PROPERTIES and value not in (None, ""):
        out.events.append(
            event(
                event_id=event_id,
                at_ms=at_ms,
                source=SOURCE,
                opportunity_id=deal_id(object_id),
                **_deal_change(prop, need(item, "propertyValue", str), mappings),
            )
        )
    else:
        out.ignored += 1


DEAL_PROPERTIES = ("dealstage", "hubspot_owner_id", "amount", "closedate")
LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def _deal_change(prop: str, value: str, mappings: Mappings) -> dict[str, Any]:
    """The canonical type and fields of a change of one of ``DEAL_PROPERTIES``."""
    if prop == "dealstage":
        stage = mappings.get("hubspot.deal_stages", value)
        if stage in ("won", "lost"):
            return {"kind": "opportunity.closed", "outcome": stage}
        return {"kind": "opportunity.stage_changed", "stage": stage}
    if prop == "hubspot_owner_id":
        return {"kind": "opportunity.updated", "rep_id": mappings.get("reps.hubspot", value)}
    if prop == "amount":
        return {"kind": "opportunity.updated", "amount_minor": minor_units(value, "amount")}
    if not (value.isascii() and value.isdigit()) or int(value) > LAST_MS:  # epoch ms
        raise Malformed(f"closedate: {value[:40]!r} is not epoch milliseconds")
    return {"kind": "opportunity.updated", "expected_close": format_instant_ms(int(value))}
