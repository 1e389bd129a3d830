"""Assemble a simulated event log: episodes, then duplicates, lateness, disorder and bad input.

``simulate(config)`` is pure and deterministic for a given config: the same
config gives the same bytes in the same order, whether they then go to Kafka
or to a JSONL file. Its ``Tally`` is the generator's own account of what it
made, kept independently of the validator, so tests can compare the engine's
counts with it.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from simulator import episodes
from simulator.episodes import Draft, Ids
from simulator.org import Org, activity_weight, build_org

# The bad-input classes of the contract, by the reason the validator must give.
INVALID_CLASSES = (
    "too_large",
    "invalid_json",
    "not_an_object",
    "unknown_schema_version",
    "unknown_type",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "negative_value",
    "timestamp_without_offset",
    "invalid_timestamp",
    "timestamp_out_of_range",
)

INSTANT_FIELDS = ("scheduled_for",)


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int
    count: int
    end_ms: int
    history_ms: int = 14 * 86_400_000
    teams: int = 4
    reps_per_team: int = 8
    campaigns: int = 6
    duplicate_share: float = 0.0
    late_share: float = 0.0
    call_disorder_share: float = 0.0
    invalid_share: float = 0.0
    max_event_bytes: int = 65_536
    local_offset_share: float = 0.1  # events stamped in the team's local offset, not Z

    @property
    def start_ms(self) -> int:
        return self.end_ms - self.history_ms


VALID = "valid"
DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Record:
    emit_ms: int  # when the source sends it; the log is ordered by this
    value: bytes
    label: str  # the generator's intent: VALID, DUPLICATE, or the expected DLQ reason


@dataclass
class Tally:
    records: int = 0
    valid: Counter[str] = field(default_factory=Counter)  # distinct events, by type
    duplicates: Counter[str] = field(default_factory=Counter)  # extra copies, by type
    invalid: Counter[str] = field(default_factory=Counter)  # by expected DLQ reason
    late: int = 0
    reordered_calls: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "valid": dict(sorted(self.valid.items())),
            "duplicates": dict(sorted(self.duplicates.items())),
            "invalid": dict(sorted(self.invalid.items())),
            "late": self.late,
            "reordered_calls": self.reordered_calls,
        }


def format_instant(ms: int, zone: Any = None) -> str:
    """RFC 3339 with milliseconds, in UTC (``Z``) or in the given zone's offset."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    if zone is not None:
        return moment.astimezone(zone).isoformat(timespec="milliseconds")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _finish(draft: Draft, rng: random.Random, ids: Ids, config: SimConfig) -> dict[str, Any]:
    """Give a draft its envelope and wire timestamps."""
    team = draft.pop("team")
    at = draft.pop("at")
    zone = team.zone if rng.random() < config.local_offset_share else None
    event: dict[str, Any] = {
        "event_id": ids.new("ev"),
        "type": draft.pop("type"),
        "occurred_at": format_instant(at, zone),
        "schema_version": 1,
        "source": "simulator",
    }
    for name in INSTANT_FIELDS:
        if name in draft:
            draft[name] = format_instant(draft[name], zone)
    event.update(draft)
    event["_at"] = at  # stripped before encoding
    return event


def _episode(rng: random.Random, ids: Ids, org: Org, config: SimConfig) -> list[Draft]:
    kind = rng.random()
    if kind < 0.05:
        at = rng.randint(config.start_ms, config.end_ms)
        return episodes.campaign_spend(rng, org, at)
    # Thinning: draw instants until one survives the team's daily rhythm.
    rep = rng.choice(org.reps)
    while True:
        at = rng.randint(config.start_ms, config.end_ms)
        if rng.random() < activity_weight(rep.team, at):
            break
    if kind < 0.50:
        return episodes.lead_journey(rng, ids, org, rep, at)
    if kind < 0.85:
        return episodes.inbound_call(rng, ids, rep.team, rep, at)
    if kind < 0.95:
        return episodes.meeting(rng, ids, rep, at)
    return episodes.deal(rng, ids, rep, at, lead_id=None)


def _corrupt(reason: str, template: dict[str, Any], rng: random.Random, limit: int) -> bytes:
    """One record with exactly one defect, of the given class, built from a valid event."""
    bad = dict(template)
    if reason == "too_large":
        bad["padding"] = "x" * limit
    elif reason == "invalid_json":
        if rng.random() < 0.5:
            whole = orjson.dumps(bad)
            return whole[: rng.randint(1, len(whole) - 1)]
        # 0xFF never starts UTF-8, so this is never JSON; no newline, so it fits a JSONL line.
        return b"\xff" + bytes(rng.choice(range(11, 256)) for _ in range(rng.randint(0, 200)))
    elif reason == "not_an_object":
        return orjson.dumps(rng.choice([[bad], "event", 42, None]))
    elif reason == "unknown_schema_version":
        bad["schema_version"] = rng.choice([0, 2, 99])
    elif reason == "unknown_type":
        bad["type"] = rng.choice(["lead.deleted", "call.transferred", "LEAD.CREATED"])
    elif reason == "missing_field":
        del bad["event_id"]
    elif reason == "wrong_type":
        bad["event_id"] = rng.choice([12345, True, ["x"], {"id": 1}])
    elif reason == "invalid_value":
        bad["event_id"] = rng.choice(["", "x" * 129])
    elif reason == "negative_value":
        bad = {k: template[k] for k in ("event_id", "occurred_at", "schema_version")}
        bad.update(
            type="campaign.spend", campaign_id="cmp-01", amount_minor=-rng.randint(1, 10_000)
        )
    elif reason == "timestamp_without_offset":
        bad["occurred_at"] = format_instant(template["_at"])[:-1]
    elif reason == "invalid_timestamp":
        bad["occurred_at"] = rng.choice(["2026-02-30T10:00:00Z", "yesterday", "1700000000", ""])
    elif reason == "timestamp_out_of_range":
        bad["occurred_at"] = rng.choice(["2199-01-01T00:00:00Z", "1969-12-31T23:59:59Z"])
    else:  # pragma: no cover - INVALID_CLASSES and this function change together
        raise ValueError(reason)
    bad.pop("_at", None)
    return orjson.dumps(bad)


def simulate(config: SimConfig) -> tuple[list[Record], Tally]:
    rng = random.Random(f"{config.seed}:{config.end_ms}:{config.history_ms}")
    ids = Ids(rng)
    org = build_org(config.teams, config.reps_per_team, config.campaigns)
    tally = Tally()
    n_invalid = round(config.count * config.invalid_share)
    n_duplicates = round(config.count * config.duplicate_share)
    n_valid = config.count - n_invalid - n_duplicates

    valid: list[dict[str, Any]] = []
    pending: list[Draft] = episodes.directory(org, config.start_ms)
    while len(valid) < n_valid:
        for draft in pending:
            if draft["at"] <= config.end_ms and len(valid) < n_valid:
                valid.append(_finish(draft, rng, ids, config))
        pending = _episode(rng, ids, org, config)

    records: list[tuple[int, int, bytes, str]] = []  # (emit_ms, tie-breaker, bytes, label)
    encoded = []
    for event in valid:
        at = event["_at"]
        body = orjson.dumps({k: v for k, v in event.items() if k != "_at"})
        encoded.append(body)
        tally.valid[event["type"]] += 1
        # The directory (teams, reps) is loaded before the events it classifies; never late.
        if rng.random() < config.late_share and not event["type"].endswith(".upserted"):
            tally.late += 1
            # Late by one minute to three days, log-uniformly.
            emit = at + int(math.exp(rng.uniform(math.log(60_000), math.log(3 * 86_400_000))))
        else:
            emit = at + rng.randint(0, 2_000)
        records.append((emit, len(records), body, VALID))

    _reorder_calls(valid, records, rng, config, tally)

    for index in rng.choices(range(len(valid)), k=n_duplicates) if valid else []:
        emit, _, body, _ = records[index]
        records.append((emit + rng.randint(1, 600_000), len(records), body, DUPLICATE))
        tally.duplicates[valid[index]["type"]] += 1

    for i in range(n_invalid):
        reason = INVALID_CLASSES[i % len(INVALID_CLASSES)]
        template = rng.choice(valid)
        body = _corrupt(reason, template, rng, config.max_event_bytes)
        records.append((rng.randint(config.start_ms, config.end_ms), len(records), body, reason))
        tally.invalid[reason] += 1

    records.sort()
    tally.records = len(records)
    return [Record(emit, body, label) for emit, _, body, label in records], tally


def _reorder_calls(
    valid: list[dict[str, Any]],
    records: list[tuple[int, int, bytes, str]],
    rng: random.Random,
    config: SimConfig,
    tally: Tally,
) -> None:
    """For a share of calls, shuffle when their events are sent (ended before started...)."""
    by_call: dict[str, list[int]] = {}
    for index, event in enumerate(valid):
        if event["type"].startswith("call."):
            by_call.setdefault(event["call_id"], []).append(index)
    for indexes in by_call.values():
        if len(indexes) > 1 and rng.random() < config.call_disorder_share:
            emits = [records[i][0] for i in indexes]
            rng.shuffle(emits)
            for i, emit in zip(indexes, emits, strict=True):
                records[i] = (emit, *records[i][1:])
            tally.reordered_calls += 1
