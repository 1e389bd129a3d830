"""CPU per event of the worker's pure stages, without Kafka or Redis: steadier than a run on
the stack, for comparing a change to decoding or planning.

    python -m benchmarks.stages [--count 100000] [--partitions 12] [--batch 20000] [--repeat 3]

On the throughput benchmark's log (``benchmarks.org_month``: simulated valid events, 30 days
of an org, 30 % of calls' events out of order), in this process, best of ``--repeat``:

* decode and validate: ``parse_event`` on every record's bytes (a worker does it twice
  per event end to end: ingest, then the projection);
* plan: ``plan_batch`` (projections/engine.py) over batches of ``--batch`` events in log
  order, split over ``--partitions`` partitions by the subject's CRC-32 (a stand-in for
  Kafka's partitioner), each partition planned over its records as the batches before it
  left them, with the lead facts a batch derives applied in the next one (as the worker
  gets them back from the lead-facts topic). No lateness horizon: no record ends.
* commit payload: ``commit_call`` (projections/commit_payload.py), the keys and JSON argument
  of each partition's commit, over the plans of the plan stage;
* commit packed: those commits' ``EVALSHA`` commands packed into the bytes sent to Redis, by
  redis-py's connection and by the one the store uses (projections/command_packing.py).

The process collects garbage as a worker does (``streams.garbage.tune_gc``). Prints µs of this
process's CPU per event for each stage. What is left out, and measured by
benchmarks.throughput on the stack: Kafka's consumers and producers, Redis's answers, the
fold.
"""

from __future__ import annotations

import argparse
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial

from redis.asyncio.connection import AbstractConnection, Connection

from benchmarks import org_month, require_at_least_one
from config.settings import Settings
from projections.command_packing import FastConnection
from projections.commit_payload import CommitCall, Keys, commit_call
from projections.engine import BatchPlan, DirectoryView, EntityKey, key_of, plan_batch
from projections.entities import Record
from projections.events import Event
from projections.facts import LeadFact
from projections.stores import Commit
from projections.validation import Rejection, parse_event
from streams.garbage import tune_gc


def cpu_per_event(run: Callable[[], int], repeat: int) -> float:
    """The least process CPU µs per item of ``repeat`` runs (each returns its item count)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        items = run()
        best = min(best, (time.process_time() - start) / items * 1e6)
    return best


def decode_all(values: Sequence[bytes], now_ms: int) -> list[Event]:
    events = []
    for value in values:
        event = parse_event(value, now_ms=now_ms)
        if isinstance(event, Rejection):
            raise ValueError(f"the simulated log holds an invalid event: {event.detail}")
        events.append(event)
    return events


def partition_of(item: Event | LeadFact, partitions: int) -> int:
    return zlib.crc32(key_of(item)[1].encode()) % partitions


def plan_all(
    events: Sequence[Event], partitions: int, batch: int, now_ms: int
) -> tuple[float, int, list[Commit]]:
    """Plan the log in batches; returns the CPU seconds spent in ``plan_batch``, how many
    events the plans applied (duplicates are not) and each partition's batch as a commit."""
    rules = Settings.from_env({}).rules
    directory = DirectoryView({}, rules)
    stored: dict[int, dict[EntityKey, Record]] = defaultdict(dict)
    facts: list[LeadFact] = []
    spent, applied = 0.0, 0
    commits: list[Commit] = []
    offsets: dict[int, int] = defaultdict(int)
    for first in range(0, len(events), batch):
        pending: dict[int, list[Event | LeadFact]] = defaultdict(list)
        batch_items: list[Event | LeadFact] = [*events[first : first + batch], *facts]
        for item in batch_items:
            pending[partition_of(item, partitions)].append(item)
        facts = []
        for partition, items in pending.items():
            records = stored[partition]
            start = time.process_time()
            plan = plan_batch(records, items, directory, rules, now_ms)
            spent += time.process_time() - start
            records.update(plan.records)
            facts += plan.facts
            applied += plan.applied
            commits.append(_commit(partition, plan, offsets, len(items)))
    return spent, applied, commits


def _commit(partition: int, plan: BatchPlan, offsets: dict[int, int], count: int) -> Commit:
    """A partition's batch as the projector commits it: its checkpoint moved past it."""
    start = offsets[partition]
    offsets[partition] = start + count
    moves = {"events": (start - 1 if start else None, start + count - 1)}
    return Commit(partition, moves, plan, stream_ms=plan.newest_ms)


def payload_all(commits: Sequence[Commit], now_ms: int, events: int) -> int:
    """Build every commit's script call; returns ``events``, how many the log holds."""
    keys = Keys("bench:g1")
    for commit in commits:
        commit_call(keys, commit, now_ms)
    return events


def pack_all(connection: AbstractConnection, calls: Sequence[CommitCall], events: int) -> int:
    """Pack every commit's script call as ``connection`` does; returns ``events``."""
    sha = "0" * 40
    for keys, payload, _, _ in calls:
        connection.pack_command("EVALSHA", sha, len(keys), *keys, payload)
    return events


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks.stages", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per stage, the best kept")
    args = parser.parse_args()
    require_at_least_one(parser, args, "count", "partitions", "batch", "repeat")
    repeat = args.repeat
    tune_gc()
    values, _ = org_month(args.count, call_disorder_share=0.3)
    now_ms = time.time_ns() // 1_000_000
    events = decode_all(values, now_ms)
    print(f"events                     {len(events):>9,} in {args.partitions} partitions")
    decode = cpu_per_event(lambda: len(decode_all(values, now_ms)), repeat)
    print(f"decode and validate        {decode:>9.2f} µs/event")
    runs = [plan_all(events, args.partitions, args.batch, now_ms) for _ in range(repeat)]
    plan = min(spent for spent, _, _ in runs) / len(events) * 1e6
    print(f"plan (batches of {args.batch:,})".ljust(27) + f"{plan:>9.2f} µs/event")
    commits = runs[0][2]
    payload = cpu_per_event(lambda: payload_all(commits, now_ms, len(events)), repeat)
    print(f"commit payload             {payload:>9.2f} µs/event")
    calls = [commit_call(Keys("bench:g1"), commit, now_ms) for commit in commits]
    for name, connection in (("redis-py", Connection()), ("hiredis", FastConnection())):
        packing = cpu_per_event(partial(pack_all, connection, calls, len(events)), repeat)
        print(f"commit packed ({name})".ljust(27) + f"{packing:>9.2f} µs/event")


if __name__ == "__main__":
    main()
