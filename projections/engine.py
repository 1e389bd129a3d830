"""Plan one batch of events for one partition: new records and coalesced aggregate deltas. Pure.

For every entity the batch touches: take its record as stored, apply the
batch's events (duplicates of an applied ``event_id`` change nothing), and
write the difference between the record's contributions after and before to
every bucket of each contribution's anchor. Deltas of the whole batch are
summed per (aggregate key, field) before they are written, so the write cost
follows the number of distinct buckets touched, not the number of events.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from projections.contributions import (
    GAUGE,
    Credit,
    Item,
    Rules,
    found_in,
    untouched_since,
)
from projections.entities import SEEN, UNASSIGNED, Record, apply, apply_fact, entity_id, unpack
from projections.events import Event, RepUpserted, TeamUpserted
from projections.facts import LeadFact, lead_fact
from projections.windows import live_buckets, written_buckets

EntityKey = tuple[str, str]  # (kind, id)
AggregateKey = tuple[str, str, str]  # (scope, scope id, bucket)
GAUGE_BUCKET = "G"

# Records that expire (docs/lateness.md, "State expiry"): kinds whose events all come from
# their own partition and whose records feed no gauge (an opportunity once closed). Each
# keeps the time of its latest event in LAST; once that is more than the lateness horizon
# behind the stream time before an event of the record, the record is over: the event
# starts a new one (the old one's contributions stay in their buckets), and the store may
# delete it.
EXPIRING = frozenset({"call", "msg", "mtg", "cmp", "opp"})
LAST = "last_at"
# A lead also takes facts from other partitions, in an order that depends on timing, so it
# never ends: once its LAST is more than the horizon behind, the store compacts it instead,
# dropping what no event still to be applied can need (``compacted``).
COMPACTING = "lead"


def can_end(kind: str, record: Record) -> bool:
    """Whether the record ends once its LAST is more than the horizon behind."""
    return kind in EXPIRING and LAST in record and (kind != "opp" or "x_at" in record)


def swept(kind: str, record: Record) -> bool:
    """Whether the store deletes (``can_end``) or compacts the record once it is over."""
    return can_end(kind, record) or (kind == COMPACTING and LAST in record)


def compacted(record: Record) -> Record:
    """A lead over by the horizon without the fields no event still to be applied can need.

    Any event of its own still applied is newer than every one it holds (their times are
    at most LAST, more than the horizon behind), so its last-writer-wins ordering fields
    (``<group>@``) decide nothing; and a lead fact applied twice changes nothing (a touch
    keeps the minimum, a conversion is a flag), so its ``#<fact_id>`` fields go too. Its
    ``!<event_id>`` fields stay: a copy of one of its events with another time could be on
    time, and must still be recognised. Its owner and owner's team go where they are the
    creating rep and team (most leads): read as missing, they are those (``found_in``,
    ``untouched_since``), and an event that assigns the lead again sets both."""
    out = {k: v for k, v in record.items() if not k.startswith("#") and k[-1:] != "@"}
    for name, creator in SAME_AS_CREATOR:
        if name in out and out[name] == out.get(creator):
            del out[name]
    return out


# A lead's fields that read as missing are its creator's (contributions.found_in).
SAME_AS_CREATOR = (("owner", "c_rep"), ("o_team", "c_team"))


class DirectoryView:
    """The directory from rep and team records; implements entities.Directory."""

    def __init__(self, records: Mapping[EntityKey, Record], rules: Rules) -> None:
        self.org_zone = rules.org_zone
        self.queue_teams = dict(rules.queue_teams)
        # rep -> its upserts as sorted (at, event id) and, in the same order, their teams
        self._reps: dict[str, tuple[list[tuple[int, str]], list[str]]] = {}
        self._zones: dict[str, str] = {}
        self._names: dict[str, str] = {}  # rep -> the latest name its upserts gave
        for key, record in records.items():
            self.update(key, record)

    def update(self, key: EntityKey, record: Record) -> None:
        """Take what a rep or team record says, replacing what was known of it."""
        kind, ident = key
        if kind == "team":
            if "timezone" in record:
                self._zones[ident] = record["timezone"]
            else:
                self._zones.pop(ident, None)
        elif kind == "rep":
            upserts = []
            for name, value in record.items():
                if name.startswith(SEEN) and value.startswith("rep|"):
                    _, at, team, _active = unpack(value)
                    upserts.append((int(at), name[len(SEEN) :], team))
            upserts.sort()
            self._reps[ident] = ([(at, e) for at, e, _ in upserts], [t for _, _, t in upserts])
            if record.get("name"):
                self._names[ident] = record["name"]

    def add_upsert(self, rep_id: str, at_ms: int, event_id: str, team_id: str) -> None:
        """One more upsert of a rep (a batch learns them one by one: no re-read of the record,
        which can hold thousands)."""
        order, teams = self._reps.setdefault(rep_id, ([], []))
        position = bisect_right(order, (at_ms, event_id))
        if position and order[position - 1] == (at_ms, event_id):
            return  # learnt already: a batch planned again after a Redis outage
        order.insert(position, (at_ms, event_id))
        teams.insert(position, team_id)

    def team_of(self, rep_id: str, at_ms: int) -> str:
        """The team of the rep's latest upsert (by time, then event id) not after ``at_ms``."""
        found = self._reps.get(rep_id)
        if found is None:
            return UNASSIGNED
        order, teams = found
        # Every (at, event id) with at <= at_ms sorts before (at_ms, chr(0x10FFFF) * 129).
        position = bisect_right(order, (at_ms, _AFTER_EVERY_ID))
        return teams[position - 1] if position else UNASSIGNED

    def zone_of(self, team_id: str) -> str:
        return self._zones.get(team_id, self.org_zone)

    def name_of(self, rep_id: str) -> str | None:
        """The rep's name from its latest ``rep.upserted`` that gave one (None: never named)."""
        return self._names.get(rep_id)

    def team_of_queue(self, queue_id: str) -> str | None:
        return self.queue_teams.get(queue_id)


# Sorts after every event id of the contract (at most 128 characters, each at most U+10FFFF).
_AFTER_EVERY_ID = chr(0x10FFFF) * 129


@dataclass
class BatchPlan:
    records: dict[EntityKey, Record] = field(default_factory=dict)  # final, touched only
    changed_fields: dict[EntityKey, dict[str, str]] = field(default_factory=dict)
    deltas: dict[AggregateKey, dict[str, int]] = field(default_factory=dict)
    # Open, untouched leads by scope: (scope, id) -> {lead id: created ms}, and removals.
    untouched_add: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    untouched_remove: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    facts: list[LeadFact] = field(default_factory=list)  # to publish before the commit
    replaced: set[EntityKey] = field(default_factory=set)  # over: stored fields go first
    expiring: dict[EntityKey, int] = field(default_factory=dict)  # changed and swept: LAST
    applied: int = 0  # events
    duplicates: int = 0  # events
    facts_applied: int = 0
    facts_duplicate: int = 0
    newest_ms: int = 0  # occurred_at of the newest event applied


def _directory_first(paired: tuple[Event | LeadFact, int]) -> int:
    return 0 if isinstance(paired[0], RepUpserted | TeamUpserted) else 1


def key_of(item: Event | LeadFact) -> EntityKey:
    """The record an event or a lead fact updates."""
    return ("lead", item.lead_id) if isinstance(item, LeadFact) else entity_id(item)


def plan_batch(
    stored: Mapping[EntityKey, Record],
    items: Sequence[Event | LeadFact],
    directory: DirectoryView,
    rules: Rules,
    now_ms: int | None = None,
    streams: Sequence[int] | None = None,
) -> BatchPlan:
    """Apply ``items`` to copies of the ``stored`` records (missing = empty) and diff.

    Contributions go to the buckets a partition writes: the minute and the local day, the
    rollups deriving the other tiers (``windows.written_buckets``). With ``now_ms``, they
    skip the buckets past ``windows.kept_until``, which no read can ask for any more, and go
    to the shortest tiers still kept where the minute or the day is not
    (``windows.live_buckets``).
    ``streams`` gives, beside each item in offset order, the partition's stream time before
    it (projections/lateness.py): with it, records of the EXPIRING kinds end as the
    lateness horizon says; without, none ends.
    """
    plan = BatchPlan()
    before: dict[EntityKey, Record] = {}
    changes: dict[Item, int] = {}
    credit_changes: dict[Credit, int] = {}
    horizon = rules.lateness_horizon_ms
    paired = zip(items, streams or [0] * len(items), strict=True)
    for item, stream in sorted(paired, key=_directory_first):
        key = key_of(item)
        if key not in plan.records:
            before[key] = dict(stored.get(key, {}))
            plan.records[key] = dict(before[key])
        record = plan.records[key]
        if isinstance(item, LeadFact):
            fresh = apply_fact(record, item)
        else:
            if stream and can_end(key[0], record) and int(record[LAST]) < stream - horizon:
                # Over: what it has counted stays counted, and a new record starts.
                old_found, found = found_in(*key, before[key], rules), found_in(*key, record, rules)
                _add_difference(changes, old_found.items, found.items)
                _add_difference(credit_changes, old_found.credits, found.credits)
                before[key], record = {}, {}
                plan.records[key] = record
                plan.replaced.add(key)
            fresh = apply(record, item, directory)
            if fresh and (key[0] in EXPIRING or key[0] == COMPACTING):
                record[LAST] = str(max(int(record.get(LAST, 0)), item.occurred_at_ms))
            fact = lead_fact(item) if fresh else None
            if fact is not None:
                plan.facts.append(fact)
            if fresh and isinstance(item, RepUpserted):
                directory.add_upsert(item.rep_id, item.occurred_at_ms, item.event_id, item.team_id)
            elif fresh and isinstance(item, TeamUpserted):
                directory.update(key, record)
        if isinstance(item, LeadFact):
            plan.facts_applied += fresh
            plan.facts_duplicate += not fresh
        else:
            plan.applied += fresh
            plan.duplicates += not fresh
            if fresh:
                plan.newest_ms = max(plan.newest_ms, item.occurred_at_ms)
    for key, record in plan.records.items():
        old = before[key]
        changed = {k: v for k, v in record.items() if old.get(k) != v}
        if not changed:
            continue
        plan.changed_fields[key] = changed
        if swept(key[0], record):
            plan.expiring[key] = int(record[LAST])
        if key[0] == "lead":
            _untouched_difference(plan, key[1], old, record, rules)
        old_found, found = found_in(*key, old, rules), found_in(*key, record, rules)
        _add_difference(changes, old_found.items, found.items)
        _add_difference(credit_changes, old_found.credits, found.credits)
    _spread(plan.deltas, changes, credit_changes, rules.org_zone, now_ms)
    return plan


def _untouched_difference(
    plan: BatchPlan, lead_id: str, old: Record, new: Record, rules: Rules
) -> None:
    old_scopes, _ = untouched_since("lead", old, rules)
    new_scopes, since = untouched_since("lead", new, rules)
    for scope in old_scopes:
        if scope not in new_scopes:
            plan.untouched_remove.setdefault(scope, set()).add(lead_id)
    for scope in new_scopes:
        plan.untouched_add.setdefault(scope, {})[lead_id] = since


def _add_difference(
    changes: dict[Item, int], old: Mapping[Item, int], new: Mapping[Item, int]
) -> None:  # Items, or Credits (the same tuple type)
    """Add ``new - old`` per item to ``changes``."""
    for item, value in new.items():
        change = value - old.get(item, 0)
        if change:
            changes[item] = changes.get(item, 0) + change
    for item, value in old.items():
        if item not in new:
            changes[item] = changes.get(item, 0) - value


def _spread(
    deltas: dict[AggregateKey, dict[str, int]],
    changes: Mapping[Item, int],
    credit_changes: Mapping[Credit, int],
    org_zone: str,
    now_ms: int | None,
) -> None:
    """Write each item's change to every bucket of its anchor, summed per (key, field); a
    credit's change goes to the org's (in ``org_zone``), the team's and the rep's buckets.

    The buckets of each distinct (zone, anchor) are computed once and become a chain of
    nodes, one per bucket, shared by every anchor whose buckets end the same way (events of
    one day share their day, week, ... buckets; most have a minute of their own). Items are
    summed per (scope, id, first node); then each round writes every group to its node's
    bucket and merges it into the group of the node after, so a field is added once per
    distinct bucket, not once per anchor."""
    node_of: dict[tuple[str, int], int] = {}  # (zone, anchor) -> its first node
    node_of_rest: dict[tuple[str, ...], int] = {}  # the buckets from a node on -> the node
    bucket_of: list[str] = []  # node -> its bucket
    next_of: list[int] = []  # node -> the node after (-1: none)
    groups: dict[tuple[str, str, int], dict[str, int]] = {}

    def first_node(zone: str, anchor: int) -> int:
        """The first node of an anchor's chain (made now: the lookup missed), -1: none."""
        if anchor == GAUGE:
            targets: tuple[str, ...] = (GAUGE_BUCKET,)
        elif now_ms is None:
            targets = written_buckets(anchor, zone)
        else:
            targets = live_buckets(anchor, zone, now_ms)
        # The longest ending already known first, then a node for each bucket before it.
        known, node = len(targets), -1
        for i in range(len(targets)):
            found = node_of_rest.get(targets[i:])
            if found is not None:
                known, node = i, found
                break
        for i in range(known - 1, -1, -1):
            bucket_of.append(targets[i])
            next_of.append(node)
            node = len(bucket_of) - 1
            node_of_rest[targets[i:]] = node
        node_of[(zone, anchor)] = node
        return node

    for (scope, scope_id, zone, anchor, name), change in changes.items():
        if not change:
            continue
        node = node_of.get((zone, anchor))
        if node is None:
            node = first_node(zone, anchor)
        if node >= 0:
            fields = groups.get((scope, scope_id, node))
            if fields is None:
                groups[(scope, scope_id, node)] = {name: change}
            else:
                fields[name] = fields.get(name, 0) + change
    for (rep, team, zone, anchor, name), change in credit_changes.items():
        if not change:
            continue
        node = node_of.get((org_zone, anchor))
        if node is None:
            node = first_node(org_zone, anchor)
        if node >= 0:  # written out (as below): this runs for most fields of a batch
            fields = groups.get(("org", "", node))
            if fields is None:
                groups[("org", "", node)] = {name: change}
            else:
                fields[name] = fields.get(name, 0) + change
        if zone != org_zone:
            node = node_of.get((zone, anchor))
            if node is None:
                node = first_node(zone, anchor)
        if node >= 0:
            fields = groups.get(("team", team, node))
            if fields is None:
                groups[("team", team, node)] = {name: change}
            else:
                fields[name] = fields.get(name, 0) + change
            if rep:
                fields = groups.get(("rep", rep, node))
                if fields is None:
                    groups[("rep", rep, node)] = {name: change}
                else:
                    fields[name] = fields.get(name, 0) + change
    while groups:
        after: dict[tuple[str, str, int], dict[str, int]] = {}
        for (scope, scope_id, node), fields in groups.items():
            into = deltas.get((scope, scope_id, bucket_of[node]))
            if into is None:
                deltas[(scope, scope_id, bucket_of[node])] = dict(fields)
            else:
                for name, change in fields.items():
                    into[name] = into.get(name, 0) + change
            following = next_of[node]
            if following < 0:
                continue
            into = after.get((scope, scope_id, following))
            if into is None:
                after[(scope, scope_id, following)] = fields  # not changed until merged into
            else:
                for name, change in fields.items():
                    into[name] = into.get(name, 0) + change
        groups = after
    for key, fields in list(deltas.items()):
        if 0 in fields.values():
            fields = {name: value for name, value in fields.items() if value}
            if fields:
                deltas[key] = fields
            else:
                del deltas[key]
