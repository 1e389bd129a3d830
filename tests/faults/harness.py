"""One fault scenario: a known simulated log flowing through real processes, a fault, a check.

A scenario publishes a simulated log (valid events, duplicates, late events, call
callbacks out of order and invalid records) at a steady rate through the real
worker, injects its fault while records still flow, measures how long the
engine needs to catch up after the fault ends, and at the end compares:

* every KPI figure of many scopes and every window with the oracle's batch
  computation over the valid log (drift: figures that differ, must be 0);
* the distinct events the projections applied (each partition's ``!applied``,
  moved atomically with its checkpoint) with the distinct valid events produced:
  nothing missing, nothing counted twice;
* the dead-letter topic with the invalid records produced, value for value.

Each scenario adds a row to ``REPORT``; the table is printed at the end of the
pytest run (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from config.connections import redis_client
from config.settings import Settings
from projections.store import RedisStore, current_namespace
from projections.windows import WINDOWS
from simulator.log import DUPLICATE, VALID, SimConfig, simulate
from simulator.org import build_org
from streams.ingest import DLQ_MAX_VALUE_BYTES, HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC
from streams.producer import publish
from streams.worker_process import WorkerProcess
from tests.kafka_reader import Read, end_offsets, ingested, projected, read_topic
from tests.oracle import Oracle
from tests.support import differences, directory_first, write_valid_log

CATCH_UP_TIMEOUT = 300.0


@dataclass
class Row:
    scenario: str
    events_in: int  # records produced: valid, duplicates, invalid
    projected: int  # distinct events in the projections
    expected: int  # distinct valid events produced
    drift: int  # KPI figures that differ from the oracle
    compared: int
    dlq: int
    invalid: int
    recoveries: list[float] = field(default_factory=list)
    copies: int = 0  # DLQ records written again after a crash (same source offset)

    def cells(self) -> list[str]:
        recovery = ", ".join(f"{r:.1f}" for r in self.recoveries) or "-"
        copies = f" (+{self.copies} copies)" if self.copies else ""
        return [
            self.scenario,
            f"{self.events_in:,}",
            f"{self.projected:,} of {self.expected:,}",
            f"{self.drift} of {self.compared:,} figures",
            f"{self.dlq:,} of {self.invalid:,}{copies}",
            f"{recovery} s",
        ]


REPORT: list[Row] = []
HEADER = [
    "scenario",
    "events in",
    "events projected",
    "drift vs oracle",
    "DLQ records",
    "recovery time",
]


def table(rows: Sequence[Row]) -> str:
    cells = [HEADER, *(r.cells() for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


class Scenario:
    """A topic prefix, a simulated log and the worker processes of one fault scenario."""

    def __init__(
        self,
        name: str,
        stack_env: dict[str, str],
        folder: Path,
        *,
        count: int,
        seed: int,
        rate: float = 1_000.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.prepare(name, stack_env, folder, rate, extra_env)
        records, _ = simulate(
            SimConfig(
                seed=seed,
                count=count,
                end_ms=self.end_ms,
                history_ms=10 * 86_400_000,
                invalid_share=0.01,
                duplicate_share=0.03,
                late_share=0.03,
                call_disorder_share=0.3,
            )
        )
        self.log = folder / "valid.jsonl"
        write_valid_log(records, self.log)
        self.directory, self.rest = directory_first(records)
        self.invalid: list[bytes] = [r.value for r in records if r.label not in (VALID, DUPLICATE)]
        self.events_in = len(records)

    def prepare(
        self,
        name: str,
        stack_env: dict[str, str],
        folder: Path,
        rate: float,
        extra_env: dict[str, str] | None,
    ) -> None:
        """What every scenario has: its own topic prefix, clients and processes."""
        self.name = name
        self.folder = folder
        self.rate = rate
        self.env = {
            **stack_env,
            "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
            **(extra_env or {}),
        }
        self.settings = Settings.from_env(self.env)
        self.end_ms = time.time_ns() // 1_000_000
        self.recoveries: list[float] = []
        self.workers: list[WorkerProcess] = []
        self.client = redis_client(self.settings)

    def worker(self, metrics_port: int | None = None) -> WorkerProcess:
        env = dict(self.env)
        if metrics_port is not None:
            env["SALESPULSE_WORKER_METRICS_PORT"] = str(metrics_port)
        worker = WorkerProcess(env, self.folder / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        return worker

    async def store(self) -> RedisStore:
        return RedisStore(
            self.client, await current_namespace(self.client, self.settings.topic_prefix)
        )

    async def load_directory(self) -> None:
        """Teams and reps first, as a deployment loads them, and wait until they are in."""
        await publish(self.settings, self.settings.raw_topic, self.directory)
        await self.wait_caught_up()

    def produce(self, extra: Sequence[bytes] = (), extra_rate: float = 0.0) -> asyncio.Task[int]:
        """Publish the rest of the log at the scenario's rate (and ``extra`` records beside
        it at ``extra_rate``) in the background."""

        async def both() -> int:
            jobs = [publish(self.settings, self.settings.raw_topic, self.rest, rate=self.rate)]
            if extra:
                jobs.append(publish(self.settings, self.settings.raw_topic, extra, rate=extra_rate))
            return sum(await asyncio.gather(*jobs))

        return asyncio.create_task(both())

    # Progress ---------------------------------------------------------------------------

    async def raw_ends(self) -> dict[int, int]:
        return await end_offsets(self.settings, self.settings.raw_topic)

    async def wait_caught_up(self, raw_ends: dict[int, int] | None = None) -> float:
        """Seconds until the engine has caught up with the raw topic as it is now (or as
        given): ingest has committed it, the projections have checkpointed every event
        ingest had forwarded by then, and then every lead fact published by then."""
        started = time.monotonic()

        async def until(done: Callable[[], Awaitable[bool]], what: str) -> None:
            while not await done():
                if time.monotonic() - started > CATCH_UP_TIMEOUT:
                    raise AssertionError(
                        f"{self.name}: {what} not caught up after {CATCH_UP_TIMEOUT:.0f}s; "
                        f"see {self.folder}"
                    )
                await asyncio.sleep(0.25)

        target = raw_ends if raw_ends is not None else await self.raw_ends()
        await until(lambda: ingested(self.settings, target), "ingest")
        for topic in (self.settings.events_topic, self.settings.facts_topic):
            ends = await end_offsets(self.settings, topic)
            store = await self.store()
            await until(lambda: projected(store, topic, ends), topic)  # noqa: B023
        return time.monotonic() - started

    async def fault_ends(self, at: float | None = None) -> tuple[float, dict[int, int]]:
        """Call when a fault ends (before restarting what it stopped), or give the moment
        it ended if the broker was away then: the moment, and what had been produced."""
        moment = time.monotonic() if at is None else at
        return moment, await self.raw_ends()

    async def recovered(self, ended: tuple[float, dict[int, int]]) -> float:
        """Wait until the engine has caught up with what was produced when the fault ended;
        records the seconds that took since then."""
        await self.wait_caught_up(ended[1])
        self.recoveries.append(time.monotonic() - ended[0])
        print(f"{self.name}: caught up {self.recoveries[-1]:.1f}s after the fault ended")
        return self.recoveries[-1]

    # Verdict ----------------------------------------------------------------------------

    def _copies(self, dead: Sequence[Read]) -> str:
        """Each dead letter written more than once (where its copies are), and what the
        workers logged about rebalances and transactions: a CI log shows only this."""
        where: dict[tuple[bytes, bytes, bytes], list[str]] = {}
        for d in dead:
            source = (
                d.headers[HEADER_TOPIC],
                d.headers[HEADER_PARTITION],
                d.headers[HEADER_OFFSET],
            )
            where.setdefault(source, []).append(f"dlq[{d.partition}]@{d.offset}")
        copies = [f"{s[1].decode()}@{s[2].decode()} in {w}" for s, w in where.items() if len(w) > 1]
        said = [
            f"worker-{i}: {line.decode(errors='replace')[:200]}"
            for i, worker in enumerate(self.workers)
            for line in worker.log().splitlines()
            if any(
                word in line for word in (b"assigned", b"revoked", b"ingest transaction", b"ence")
            )
        ]
        return "; ".join(copies[:5]) + "\n" + "\n".join(said[-40:])

    async def verify(self, poison: Sequence[bytes] = ()) -> Row:
        """Wait for the end of the log, then compare with the oracle; adds the row."""
        await self.wait_caught_up()
        store = await self.store()
        partitions = range(self.settings.partitions)
        progress = await store.progress(partitions)
        projected = sum(int(p.get("!applied", 0)) for p in progress)

        oracle = Oracle(
            self.log,
            horizon_ms=self.settings.rules.lateness_horizon_ms,
            partitions=self.settings.partitions,
        )
        expected = oracle.distinct_events()
        org = build_org(4, 8, 6)
        scopes = [("org", ""), ("team", "unassigned")]
        scopes += [("team", t.team_id) for t in org.teams]
        scopes += [("rep", r.rep_id) for r in org.reps[::5]]
        scopes += [("campaign", c) for c in org.campaigns]
        scopes += [("queue", t.queue_id) for t in org.teams]
        view = await store.directory(partitions, self.settings.rules)
        examples, compared = await differences(
            store, partitions, view, oracle, scopes, WINDOWS, self.end_ms
        )
        drift = len(examples)

        wrong = [*self.invalid, *poison]
        dead = await read_topic(
            self.settings,
            self.settings.dlq_topic,
            self.settings.partitions,
            expect=len(wrong),
            timeout=30,
        )
        # A dead letter written twice would carry the same source offset headers, which is
        # how a DLQ consumer would tell the copies apart (and how they are counted here).
        by_source = {
            (d.headers[HEADER_TOPIC], d.headers[HEADER_PARTITION], d.headers[HEADER_OFFSET]): d
            for d in dead
        }
        row = Row(
            self.name,
            self.events_in + len(poison),
            projected,
            expected,
            drift,
            compared,
            len(by_source),
            len(wrong),
            list(self.recoveries),
            copies=len(dead) - len(by_source),
        )
        REPORT.append(row)
        print(f"\n{table([row])}")
        assert not examples, f"{drift} figures drifted, e.g. {examples[:3]}"
        assert projected == expected, f"{projected} distinct events projected, {expected} produced"
        # Ingest forwards each batch in one transaction with its offsets: a crash anywhere
        # leaves no second copy of a dead letter.
        assert row.copies == 0, (
            f"{row.copies} dead letters were written twice: {self._copies(dead)}"
        )
        # Value for value: the DLQ holds each invalid record (once per source offset), and
        # nothing else.
        got_dead = Counter(d.value for d in by_source.values())
        assert got_dead == Counter(_as_dead_lettered(v) for v in wrong)
        return row

    async def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        await self.client.aclose()


def _as_dead_lettered(value: bytes) -> bytes:
    """The DLQ copy of a record: the original bytes, cut at a limit (architecture.md)."""
    return value[:DLQ_MAX_VALUE_BYTES]
