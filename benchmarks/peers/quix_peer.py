"""The five peer KPIs in Quix Streams 3.x, over a preloaded salespulse events topic.

    python -m benchmarks.peers.quix_peer --bootstrap HOST:PORT --topic TOPIC --expect N \\
        [--out rows.json] [--log events.jsonl] [--grace-days 35]

An ordinary Quix Streams Application (its own RocksDB state store and changelog topics, a
consumer group of its own, offsets reset to the earliest) computes, by the events'
``occurred_at``:

* activities (outbound ``call.started`` with a rep, ``email.sent``, ``meeting.held``) per
  rep, per team and for the org, per UTC clock hour and per UTC day. The team is the
  rep's at the event's time: the activities and the ``rep.upserted`` events are grouped
  by rep, and a stateful step keeps each rep's upserts. (Not ``join_asof``: a join makes
  Quix align every topic of the application by timestamp, which on this topology left the
  process waiting on fetches most of the time: 5,000 events took 5.8 s for 0.6 s of CPU,
  and 300,000 had used 31 s of CPU in five minutes.) Quix does not nest ``group_by``, so
  the credits (rep, team, org) go on to the windows through a topic of the run's own;
* calls offered, answered, abandoned and the summed speed of answer per queue per UTC
  clock hour of the call's start. A call's events come in any order on its partition: a
  stateful step keyed by the call keeps what the call has told so far and sends, for each
  change of what the call contributes, the old contribution negated and the new one,
  stamped with the call's start, to a tumbling window of sums per queue.

Tumbling windows emit every update (``.current()``); a sink keeps the latest per window.
The windows' grace is the engine's lateness horizon (35 days, the oracle's): Quix closes a
key's window once that key has seen an event ``grace`` past the window's end, and the
repartitioned streams interleave partitions, so a short grace skips updates as late (the
default of 0 skipped about 26,000 of them, issue 21). The run stops once it has consumed
``--expect`` records from the topic and every record it sent to its repartition topics
has come back; it prints events, wall seconds, events/s, the process's CPU seconds (user +
sys of every thread, librdkafka's included) and CPU µs per event, from its first record to
the end of its final checkpoint (state flushed and offsets committed). With ``--log`` the
rows are checked against the oracle (benchmarks.peers.check).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from confluent_kafka.admin import AdminClient
from quixstreams import Application
from quixstreams.dataframe.windows.aggregations import Sum
from quixstreams.models import TopicConfig
from quixstreams.sinks import BatchingSink, SinkBatch

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
DEFAULT_GRACE_DAYS = 35  # the engine's lateness horizon (SALESPULSE_LATENESS_HORIZON)
ACTIVITY_TYPES = frozenset({"email.sent", "meeting.held"})
CALL_FIGURES = ("offered", "answered", "abandoned", "wait_ms")
# A window's sums as rows of check.py: (kpi, the window's column, the column of "n").
CALL_ROWS = (
    ("calls_offered", "offered", None),
    ("calls_answered", "answered", None),
    ("calls_abandoned", "abandoned", None),
    ("asa", "wait_ms", "answered"),
)
SCOPE_SEPARATOR = ":"  # the credits' key: "<scope>:<id>" (no scope name holds one)


# ---- event time -------------------------------------------------------------------------


def instant_ms(text: str) -> int:
    """Epoch ms of an RFC 3339 instant (a ``Z`` or an offset, lower case allowed, any
    number of fraction digits)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.upper())
    return (datetime.fromisoformat(text) - EPOCH) // MILLISECOND


def occurred_at(value: Any, _headers: Any, _timestamp: int, _type: Any) -> int:
    """The topic's timestamp extractor: the event's own time, not the time it was sent."""
    return instant_ms(value["occurred_at"])


# ---- activities -------------------------------------------------------------------------


def is_activity(event: Mapping[str, Any]) -> bool:
    """An outbound call started by a rep, a sent email or a held meeting."""
    kind = event["type"]
    if kind == "call.started":
        return event.get("direction") == "outbound" and bool(event.get("rep_id"))
    return kind in ACTIVITY_TYPES


def is_activity_or_rep(event: Mapping[str, Any]) -> bool:
    """An activity, or a ``rep.upserted`` event (which tells a rep's team from its time)."""
    return event["type"] == "rep.upserted" or is_activity(event)


def team_at(teams: list[list[Any]], at: int) -> str:
    """The team of the rep's latest upsert (by time, then event id) not after ``at``."""
    before = [upsert for upsert in teams if upsert[0] <= at]
    return str(max(before)[2]) if before else "unassigned"


def attributed(
    event: Mapping[str, Any], rep: str, at: int, _headers: Any, state: Any
) -> list[dict[str, Any]]:
    """The stateful step keyed by rep: the rep's upserts (``[time, event id, team]``) are
    kept; an activity goes on with the rep's team at its time. An activity that comes before
    any upsert of its rep is held until the first one comes (on a preloaded topic the
    partitions are read side by side, so an activity may overtake its rep's upsert)."""
    teams: list[list[Any]] = state.get("teams") or []
    if event["type"] == "rep.upserted":
        teams.append([at, event["event_id"], event.get("team_id") or "unassigned"])
        state.set("teams", teams)
        held: list[int] = state.get("held") or []
        state.delete("held")
        return [{"at": t, "rep": rep, "team": team_at(teams, t)} for t in held]
    if not teams:
        state.set("held", [*(state.get("held") or []), at])
        return []
    return [{"at": at, "rep": rep, "team": team_at(teams, at)}]


def credits(activity: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Whom an activity counts for: its rep, the rep's team and the org."""
    return [
        {"at": activity["at"], "credit": f"{scope}{SCOPE_SEPARATOR}{scope_id}"}
        for scope, scope_id in (("rep", activity["rep"]), ("team", activity["team"]), ("org", ""))
    ]


def activity_row(period: str) -> Callable[[Mapping[str, Any], str, int, Any], dict[str, Any]]:
    """A window's count as a check.py row of ``period``."""

    def row(window: Mapping[str, Any], key: str, _timestamp: int, _headers: Any) -> dict[str, Any]:
        scope, scope_id = key.split(SCOPE_SEPARATOR, 1)
        return {
            "kpi": "activities",
            "scope": scope,
            "id": scope_id,
            "period": period,
            "start_ms": window["start"],
            "value": window["value"],
        }

    return row


# ---- inbound calls ----------------------------------------------------------------------


def is_call_event(event: Mapping[str, Any]) -> bool:
    return bool(event["type"].startswith("call."))


def remember(call: dict[str, Any], event: Mapping[str, Any], at: int) -> None:
    """Fold one event into what is known of its call: its latest start (by time, then event
    id), its first answer, whether it ended."""
    kind, order = event["type"], [at, event["event_id"]]
    if kind == "call.started" and (call.get("start") is None or order > call["start"][:2]):
        call["start"] = [*order, event.get("direction"), event.get("queue_id")]
    elif kind == "call.answered" and (call.get("answer") is None or order < call["answer"]):
        call["answer"] = order
    elif kind == "call.ended":
        call["ended"] = True


def contribution(call: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a call adds to its queue's hour, or None if it is no offered inbound call."""
    start = call.get("start")
    if start is None or start[2] != "inbound" or start[3] is None:
        return None
    started, queue = start[0], start[3]
    answer = call.get("answer")
    return {
        "queue": queue,
        "start_ms": started,
        "offered": 1,
        "answered": int(answer is not None),
        "abandoned": int(answer is None and bool(call.get("ended"))),
        "wait_ms": max(0, answer[0] - started) if answer is not None else 0,
    }


def negated(figures: Mapping[str, Any]) -> dict[str, Any]:
    return {**figures, **{name: -figures[name] for name in CALL_FIGURES}}


def call_changes(
    event: Mapping[str, Any], _call_id: str, at: int, _headers: Any, state: Any
) -> list[dict[str, Any]]:
    """The stateful step keyed by call: the old contribution withdrawn and the new one
    added, when the event changes it."""
    call = state.get("call") or {}
    before = contribution(call)
    remember(call, event, at)
    state.set("call", call)
    after = contribution(call)
    if after == before:
        return []
    return [change for change in (before and negated(before), after) if change]


def call_rows(
    window: Mapping[str, Any], key: str, _timestamp: int, _headers: Any
) -> list[dict[str, Any]]:
    """A queue hour's sums as the four rows of check.py."""
    rows = []
    for kpi, column, n_column in CALL_ROWS:
        row = {
            "kpi": kpi,
            "scope": "queue",
            "id": key,
            "period": "hour",
            "start_ms": window["start"],
            "value": window[column],
        }
        if n_column is not None:
            row["n"] = window[n_column]
        rows.append(row)
    return rows


# ---- output and progress ----------------------------------------------------------------


class LatestRows(BatchingSink):
    """The sink: windows emit each update, so keep the latest row of each window."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[str, str, str, str, int], dict[str, Any]] = {}

    def write(self, batch: SinkBatch) -> None:
        for item in batch:
            row = item.value
            self.rows[(row["kpi"], row["scope"], row["id"], row["period"], row["start_ms"])] = row


class Usage(NamedTuple):
    wall: float
    cpu: float  # user + sys of the whole process, every thread


def usage_now() -> Usage:
    process = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process
    return Usage(time.perf_counter(), process.ru_utime + process.ru_stime)


class Progress:
    """Counts the records consumed and those through each repartition topic; stops the
    application once it has consumed ``expect`` and none is in flight.

    ``check`` runs as the last branch of every stream a record enters by (the topic and
    each repartition topic), so it sees the record's own sends already counted."""

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.consumed = 0
        self.sent: dict[str, int] = {}
        self.received: dict[str, int] = {}
        self.late = 0
        self.first: Usage | None = None
        self.last: Usage | None = None
        self.app: Application | None = None

    def consume(self, _value: Any) -> None:
        if not self.consumed:
            self.first = usage_now()
        self.consumed += 1

    def sending(self, name: str) -> Callable[[Any], None]:
        self.sent[name] = self.received[name] = 0

        def count(_value: Any) -> None:
            self.sent[name] += 1

        return count

    def receiving(self, name: str) -> Callable[[Any], None]:
        def count(_value: Any) -> None:
            self.received[name] += 1

        return count

    def on_late(self, *_args: Any, **_kwargs: Any) -> bool:
        """Count a window update skipped as late (and let Quix log it)."""
        self.late += 1
        return True

    def check(self, _value: Any) -> None:
        if self.consumed >= self.expect and self.sent == self.received and self.last is None:
            self.last = usage_now()
            assert self.app is not None
            self.app.stop()


# ---- the application --------------------------------------------------------------------


class Regrouping:
    """Re-keying with the records through each intermediate topic counted; keeps the
    dataframes records enter by, to end each with ``Progress.check``."""

    def __init__(self, app: Application, progress: Progress) -> None:
        self.app = app
        self.progress = progress
        self.entries: list[Any] = []

    def enter(self, sdf: Any) -> Any:
        self.entries.append(sdf)
        return sdf

    def group_by(self, sdf: Any, name: str, key: Callable[[Any], Any]) -> Any:
        """``sdf.group_by(key)``."""
        sdf = sdf.update(self.progress.sending(name))
        grouped = self.enter(sdf.group_by(key, name=name))
        return grouped.update(self.progress.receiving(name))

    def through(self, sdf: Any, topic: Any, key: Callable[[Any], Any]) -> Any:
        """``sdf.to_topic(topic, key=key)`` and a dataframe reading it back: a second
        re-keying after a ``group_by``, which Quix does not nest."""
        sdf = sdf.update(self.progress.sending(topic.name))
        sdf.to_topic(topic, key=key)
        again = self.enter(self.app.dataframe(topic))
        return again.update(self.progress.receiving(topic.name))

    def end(self) -> None:
        for sdf in self.entries:
            sdf.update(self.progress.check)


def build(app: Application, topic: str, progress: Progress, grace: timedelta) -> LatestRows:
    """The dataframes of the five KPIs; returns the sink their rows go to."""
    events = app.topic(
        topic, value_deserializer="json", key_deserializer="str", timestamp_extractor=occurred_at
    )
    credits_topic = app.topic(
        f"{app.config.consumer_group}.credits",
        key_serializer="str",
        key_deserializer="str",
        config=TopicConfig(
            num_partitions=events.broker_config.num_partitions,
            replication_factor=events.broker_config.replication_factor,
        ),
    )
    regroup = Regrouping(app, progress)
    sdf = regroup.enter(app.dataframe(events))
    sdf = sdf.update(progress.consume)
    rows = LatestRows()

    by_rep = regroup.group_by(sdf.filter(is_activity_or_rep), "rep", lambda e: e["rep_id"])
    activities = by_rep.apply(attributed, stateful=True, expand=True, metadata=True)
    activities = activities.apply(credits, expand=True)
    activities = activities.set_timestamp(lambda credit, _key, _ts, _headers: credit["at"])
    credited = regroup.through(activities, credits_topic, lambda credit: credit["credit"])
    for period, size in (("hour", HOUR), ("day", DAY)):
        window = credited.tumbling_window(size, grace_ms=grace, on_late=progress.on_late)
        counts = window.count().current()
        counts.apply(activity_row(period), metadata=True).sink(rows)

    changes = sdf.filter(is_call_event).apply(
        call_changes, stateful=True, expand=True, metadata=True
    )
    changes = changes.set_timestamp(lambda change, _key, _ts, _headers: change["start_ms"])
    by_queue = regroup.group_by(changes, "call_queue", lambda change: change["queue"])
    sums = by_queue.tumbling_window(HOUR, grace_ms=grace, on_late=progress.on_late)
    sums = sums.agg(**{name: Sum(name) for name in CALL_FIGURES}).current()
    sums.apply(call_rows, metadata=True, expand=True).sink(rows)
    regroup.end()
    return rows


def delete_topics_of(bootstrap: str, group: str) -> None:
    """Delete the run's own topics (its consumer group is used once): the credits topic and
    Quix's repartition and changelog topics, whose names hold the group's."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [name for name in admin.list_topics(timeout=30).topics if group in name]
    for future in admin.delete_topics(names, operation_timeout=30).values() if names else ():
        future.result()


def run(bootstrap: str, topic: str, expect: int, grace: timedelta) -> tuple[list, Progress]:
    """Run the application over the topic until it has consumed ``expect`` records."""
    progress = Progress(expect)
    group = f"salespulse-quix-peer-{uuid.uuid4().hex[:12]}"
    try:
        with tempfile.TemporaryDirectory(prefix="quix-peer-") as state_dir:
            app = Application(
                broker_address=bootstrap,
                consumer_group=group,
                auto_offset_reset="earliest",
                state_dir=state_dir,
                loglevel="WARNING",
            )
            progress.app = app
            rows = build(app, topic, progress, grace)
            app.run()
            progress.last = usage_now()  # after the final checkpoint's flush and commit
    finally:
        delete_topics_of(bootstrap, group)
    return sorted(rows.rows.values(), key=row_order), progress


def row_order(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (row["kpi"], row["scope"], row["id"], row["period"], row["start_ms"])


def report(progress: Progress) -> str:
    """The one line of figures."""
    assert progress.first is not None and progress.last is not None
    wall = progress.last.wall - progress.first.wall
    cpu = progress.last.cpu - progress.first.cpu
    events = progress.consumed
    return (
        f"quix peer: {events} events, {wall:.2f} s wall, {events / wall:,.0f} events/s, "
        f"{cpu:.2f} s CPU (user+sys, whole process), {cpu / events * 1e6:.1f} µs CPU/event, "
        f"{progress.late} window updates skipped as late"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of a Kafka broker")
    parser.add_argument("--topic", required=True, help="the preloaded events topic")
    parser.add_argument("--expect", type=int, required=True, help="records on the topic")
    parser.add_argument("--out", type=Path, help="write the rows here (JSON)")
    parser.add_argument("--log", type=Path, help="the JSONL log of the topic: check the rows")
    parser.add_argument("--grace-days", type=float, default=DEFAULT_GRACE_DAYS)
    args = parser.parse_args(argv)
    if args.expect < 1:
        parser.error("--expect must be at least 1")
    logging.getLogger("quixstreams").setLevel(logging.WARNING)

    rows, progress = run(args.bootstrap, args.topic, args.expect, timedelta(days=args.grace_days))
    print(report(progress), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows))
    if args.log:
        from benchmarks.peers.check import mismatches

        problems = mismatches(args.log, rows)
        for line in problems:
            print(line)
        print(f"oracle check: {'MISMATCH' if problems else 'equal'} ({len(rows)} rows)")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
