"""Plan one batch of events for one partition: new records and coalesced aggregate deltas. Pure.

For every entity the batch touches: take its record as stored, apply the
batch's events (duplicates of an applied ``event_id`` change nothing), and
write the difference between the record's contributions after and before to
every bucket of each contribution's anchor. Deltas of the whole batch are
summed per (aggregate key, field) before they are written, so the write cost
follows the number of distinct buckets touched, not the number of events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from projections.contributions import GAUGE, Rules, contributions
from projections.entities import SEEN, SEP, UNASSIGNED, Record, apply, entity_id
from projections.events import Event, RepUpserted, TeamUpserted
from projections.windows import TIERS, buckets

EntityKey = tuple[str, str]  # (kind, id)
AggregateKey = tuple[str, str, str]  # (scope, scope id, bucket)
GAUGE_BUCKET = "G"


class DirectoryView:
    """The directory from rep and team records; implements entities.Directory."""

    def __init__(
        self,
        records: Mapping[EntityKey, Record],
        org_zone: str,
        queue_teams: Mapping[str, str] | None = None,
    ) -> None:
        self.org_zone = org_zone
        self.queue_teams = dict(queue_teams or {})
        self._reps: dict[str, list[tuple[int, str, str]]] = {}
        self._zones: dict[str, str] = {}
        for key, record in records.items():
            self.update(key, record)

    def update(self, key: EntityKey, record: Record) -> None:
        kind, ident = key
        if kind == "team" and "timezone" in record:
            self._zones[ident] = record["timezone"]
        elif kind == "rep":
            upserts = []
            for name, value in record.items():
                if name.startswith(SEEN) and value.startswith("rep" + SEP):
                    _, at, team, _active = value.split(SEP)
                    upserts.append((int(at), name[len(SEEN) :], team))
            self._reps[ident] = sorted(upserts)

    def team_of(self, rep_id: str, at_ms: int) -> str:
        team = UNASSIGNED
        for at, _event_id, upserted_team in self._reps.get(rep_id, ()):
            if at > at_ms:
                break
            team = upserted_team
        return team

    def zone_of(self, team_id: str) -> str:
        return self._zones.get(team_id, self.org_zone)

    def team_of_queue(self, queue_id: str) -> str | None:
        return self.queue_teams.get(queue_id)


@dataclass
class BatchPlan:
    records: dict[EntityKey, Record] = field(default_factory=dict)  # final, touched only
    changed_fields: dict[EntityKey, dict[str, str]] = field(default_factory=dict)
    deltas: dict[AggregateKey, dict[str, int]] = field(default_factory=dict)
    applied: int = 0
    duplicates: int = 0


def _directory_first(event: Event) -> int:
    return 0 if isinstance(event, RepUpserted | TeamUpserted) else 1


def plan_batch(
    stored: Mapping[EntityKey, Record],
    events: Iterable[Event],
    directory: DirectoryView,
    rules: Rules,
) -> BatchPlan:
    """Apply ``events`` to copies of the ``stored`` records (missing = empty) and diff."""
    plan = BatchPlan()
    before: dict[EntityKey, Record] = {}
    for event in sorted(events, key=_directory_first):
        key = entity_id(event)
        if key not in plan.records:
            before[key] = dict(stored.get(key, {}))
            plan.records[key] = dict(before[key])
        record = plan.records[key]
        if apply(record, event, directory):
            plan.applied += 1
            if key[0] in ("rep", "team"):
                directory.update(key, record)
        else:
            plan.duplicates += 1
    for key, record in plan.records.items():
        old = before[key]
        changed = {k: v for k, v in record.items() if old.get(k) != v}
        if not changed:
            continue
        plan.changed_fields[key] = changed
        _add_difference(
            plan.deltas, contributions(*key, old, rules), contributions(*key, record, rules)
        )
    return plan


def _add_difference(
    deltas: dict[AggregateKey, dict[str, int]],
    old: Mapping[tuple[str, str, str, int, str], int],
    new: Mapping[tuple[str, str, str, int, str], int],
) -> None:
    for item in old.keys() | new.keys():
        change = new.get(item, 0) - old.get(item, 0)
        if change == 0:
            continue
        scope, scope_id, zone, anchor, name = item
        targets = (GAUGE_BUCKET,) if anchor == GAUGE else buckets(anchor, zone)
        for bucket in targets:
            fields = deltas.setdefault((scope, scope_id, bucket), {})
            total = fields.get(name, 0) + change
            if total:
                fields[name] = total
            else:
                fields.pop(name, None)


def bucket_ttl_tier(bucket: str) -> str:
    """The tier letter of a bucket id (see projections.windows.TIERS), ``G`` for gauges."""
    tier = bucket[0]
    if tier not in TIERS and tier != GAUGE_BUCKET:
        raise ValueError(f"not a bucket id: {bucket!r}")
    return tier
