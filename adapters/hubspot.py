"""HubSpot webhook batches (a JSON array of up to 100 events) -> lead and deal events.

* ``contact.creation`` -> ``lead.created``: the contact's origin from its
  ``changeSource`` via ``[hubspot.origin_by_change_source]``, and the change
  source as the lead source;
* ``contact.propertyChange`` of ``hubspot_owner_id`` -> ``lead.assigned`` (the
  owner's rep from ``[reps.hubspot]``); of ``hs_lead_status`` ->
  ``lead.stage_changed`` (the stage from ``[hubspot.lead_status_stages]``);
* ``deal.propertyChange`` of ``dealstage`` -> ``opportunity.stage_changed`` with
  the stage from ``[hubspot.deal_stages]``.

A deal closing (a stage mapped to ``won`` or ``lost``) and ``deal.creation``
are reported as ``incomplete``: the canonical events need the deal's owner and
amount, which HubSpot's webhook does not carry (it would take a call to
HubSpot's API). Other properties and subscription types are ignored.

HubSpot says ``eventId`` is not guaranteed unique, so the event id derives from
(``subscriptionType``, ``objectId``, ``propertyName``, ``occurredAt``,
``propertyValue``): a retried delivery (``attemptNumber`` grows) maps to the
same ids.
"""

from __future__ import annotations

from typing import Any

import orjson

from adapters.canonical import Incomplete, Mapped, event, map_parts, need, stable_id
from adapters.config import Mappings

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
    elif kind == "deal.propertyChange" and prop == "dealstage":
        stage = mappings.get("hubspot.deal_stages", need(item, "propertyValue", str))
        if stage in ("won", "lost"):
            raise Incomplete(
                f"deal {object_id} closed {stage}: opportunity.closed needs the deal's owner and "
                "amount, which the webhook does not carry"
            )
        out.events.append(
            event(
                "opportunity.stage_changed",
                event_id,
                at_ms,
                SOURCE,
                opportunity_id=deal_id(object_id),
                stage=stage,
            )
        )
    elif kind == "deal.creation":
        raise Incomplete(
            f"deal {object_id}: opportunity.created needs the deal's owner, amount, product "
            "and segment, which the webhook does not carry"
        )
    else:
        out.ignored += 1
