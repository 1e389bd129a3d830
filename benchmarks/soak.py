"""Soak: live simulated traffic at a steady rate through the worker, exporter and KPI publisher.

    python -m benchmarks.soak [--minutes 30] [--rate 3000] [--out FILE.json]

Starts, as real child processes and on ports of their own, one worker (``salespulse
worker``), the exporter (``salespulse exporter``) and the KPI publisher (``salespulse
publish-kpis``), all on a topic prefix of its own (``soak<random>``). It loads the
directory first (team and rep upserts, an hour before the run), then sends simulated
records to the raw topic at ``--rate`` records/s for ``--minutes`` (fractions allowed).

Traffic. The simulator's log, made one minute ahead in a child process (``LiveLog``,
seeded by ``--seed``): episodes (lead journeys, calls, meetings, deals, campaign spend)
start in the minute of wall time being made and their later events come in the minutes
they are due, so event time moves forward with wall time and a record is sent about when
it occurs. It uses the simulator's own episodes, envelopes and defects
(``simulator.log``), with the shares of the fault suite: 3 % duplicates (sent again up to
10 minutes later), 3 % late events (1 minute to 3 days), the events of 30 % of calls sent
out of order, 1 % invalid records of every class; nothing due after the end of the run is
made. Each minute sends exactly rate x 60 records, in the simulator's send order. Why not
one ``simulate()`` per minute: it makes a whole log at once, so each minute's log would
end every episode at the minute's end (tried: a third of the events were lead.created and
9 calls in 10 never ended, against a tenth and all in a long log). The org has no history
when a run starts, so the mix still leans to the first events of episodes, less so as the
run goes on (calls end within minutes, first touches come after about 25 minutes); the JSON's
``chunks`` count the valid events of each minute by type.

Every 5 s the benchmark scrapes the exporter's /metrics over HTTP itself and keeps the
scrape's duration (request to last byte, measured here) and status. Every 0.1 s it probes
the engine's progress (below). Every ``--sample-seconds`` (60) it prints a row:

* produced (acknowledged by the broker), ingested (the worker's
  ``salespulse_ingest_records_total``) and projected (``salespulse_projection_events_total``
  applied + duplicate);
* lag: the largest lag of the probes of that minute (below), and ``behind``, the largest
  number of records not yet through (raw not ingested + events not projected + lead facts
  not applied: end offsets against the ingest group's committed offsets and the
  projections' checkpoints in Redis);
* p50 and p99 of that minute's exporter scrapes;
* RSS (VmRSS from /proc/<pid>/status, summed over the process and its descendants, if
  any) of the worker, the exporter, the publisher, and of this benchmark (alone: the others
  are its children) and its generator child;
* Redis ``used_memory`` (INFO memory: the whole instance, so other users of the same
  Redis show in it) and the number of keys of this run's prefix (SCAN, not DBSIZE, which
  would count everyone's keys);
* the machine's 1-minute load average: other work on the machine shows there.

What lag means. Lag is wall-clock time from the raw topic to visible KPIs: at a probe, the
age of the oldest record on the raw topic whose effect is not yet visible in Redis. A
probe reads, in this order, the projections' checkpoints (events and lead-facts topics),
the ingest group's committed raw offsets, and the end offsets of the three topics. Every
record on the raw topic at probe i is visible at probe k when some probe j saw ingest
committed past probe i's raw end offsets (so those records' events are within probe j's
events end offsets), some probe m >= j saw the checkpoints at probe j's events end offsets
(so the lead facts they led to were published, within probe m's lead-facts end offsets),
and probe k sees the checkpoints at probe m's lead-facts end offsets. The lag at probe k
is its end minus the start of the newest such probe i. It is an upper bound: it never
understates, and overstates by up to about a probe interval per step. It is not records
behind / rate (lead facts are not events, and a count says nothing about how old the
oldest waiting record is), nor now minus the newest applied event time (the event time is
the simulator's, and the newest over all partitions hides a partition that is stuck).
The goal "lag never above 5 s" is: the largest lag of any probe while records are sent
is at most ``--lag-goal`` seconds. The KPI topic (the publisher's output) is not part of
it. The JSON also keeps, per row, the largest ``salespulse_consumer_lag`` (summed) and
``salespulse_projection_newest_event_age_seconds`` of the exporter's scrapes.

Goals, printed with PASS or FAIL at the end (a missed goal does not fail the run): the RSS
of the worker, the exporter and the publisher grows less than ``--rss-goal`` % from the
sample at ``--warmup-minutes`` (5) to the last sample (from the first sample when the run
is shorter), and the lag. The benchmark's own RSS and its generator's are shown, not
judged: they hold the carried records and a minute of traffic. The summary also shows the
mean CPU of every process, the local stack's servers included (anyone else's use of them
included too); the JSON has it per row.

Topics, Redis keys and the worker's Faust folder are deleted at the end; logs stay in the
stack folder (``<prefix>-worker.log``, ``-exporter.log``, ``-publisher.log``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from benchmarks import positive
from benchmarks.throughput import clean
from config.connections import kafka_options, redis_client
from config.settings import Settings
from projections.store import RedisStore, current_namespace
from simulator.live import Chunk, Job, LiveLog
from simulator.log import VALID, SimConfig, simulate
from stack.servers import servers
from streams.producer import publish
from streams.topics import ensure_topics
from streams.watch import Snapshot, scrape
from streams.worker_process import WorkerProcess
from tests.kafka_reader import caught_up

PROBE_SECONDS = 0.1
TICK = 0.01  # seconds between the producer's pauses
CHUNK_SECONDS = 60.0
DRAIN_TIMEOUT = 120.0
MIB = 2**20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Offsets = dict[int, int]


# Child processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Child:
    """A ``salespulse`` subcommand as a child process of its own, logging to a file."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", self.command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_until(ready: Callable[[], bool], timeout: float, what: str, child: Child) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.exit_code() is not None:
            raise SystemExit(f"{what} exited with code {child.exit_code()}; see {child.log_path}")
        with contextlib.suppress(OSError):
            if ready():
                return
        time.sleep(0.3)
    raise SystemExit(f"{what} was not ready after {timeout:.0f}s; see {child.log_path}")


def process_stats(pids: dict[str, int], alone: Sequence[str] = ()) -> dict[str, tuple[int, float]]:
    """RSS (VmRSS, bytes) and CPU time used so far (user + system, seconds) of each process
    and all its descendants (of the ones named in ``alone``: of the process alone), from
    /proc; 0 when it is gone."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))

    def own(pid: int) -> tuple[int, float]:
        rss, cpu = 0, 0.0
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) * 1024
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
        return rss, cpu

    def tree(pid: int) -> tuple[int, float]:
        rss, cpu = own(pid)
        for child in children.get(pid, []):
            more = tree(child)
            rss, cpu = rss + more[0], cpu + more[1]
        return rss, cpu

    return {
        name: (0, 0.0) if not pid else own(pid) if name in alone else tree(pid)
        for name, pid in pids.items()
    }


# The generator child ----------------------------------------------------------------------


def _generate(conn: Connection, seed: int, teams: int, reps: int, max_event_bytes: int) -> None:
    """The generator child: answers each Job with a Chunk until it receives None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    gc.disable()  # hundreds of thousands of pending events, no cycles: 15 % less time
    log = LiveLog(seed, teams, reps, max_event_bytes)
    while (job := conn.recv()) is not None:
        conn.send(log.minute(job))


class Generator:
    def __init__(self, seed: int, teams: int, reps: int, max_event_bytes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, theirs = context.Pipe()
        self.process = context.Process(
            target=_generate, args=(theirs, seed, teams, reps, max_event_bytes), daemon=True
        )
        self.process.start()
        theirs.close()

    def request(self, job: Job) -> asyncio.Task[Chunk]:
        self.conn.send(job)
        return asyncio.create_task(asyncio.to_thread(self.conn.recv))

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


# Lag ----------------------------------------------------------------------------------------


def _covers(done: Offsets, ends: Offsets) -> bool:
    return all(done.get(p, 0) >= end for p, end in ends.items())


@dataclass(frozen=True)
class Probe:
    started: float  # monotonic, before the first read
    finished: float  # after the last read
    projected_events: Offsets  # next offset to apply (checkpoint + 1), per partition
    projected_facts: Offsets
    ingested: Offsets  # the ingest group's committed raw offsets
    raw: Offsets  # end offsets
    events: Offsets
    facts: Offsets

    def behind(self) -> int:
        """Records not yet through: raw not ingested, events and lead facts not applied."""
        pairs = (
            (self.raw, self.ingested),
            (self.events, self.projected_events),
            (self.facts, self.projected_facts),
        )
        return sum(max(0, end - done.get(p, 0)) for ends, done in pairs for p, end in ends.items())


class LagTracker:
    """The lag of each probe as the module docstring defines it."""

    def __init__(self) -> None:
        self.probes: list[Probe] = []
        self.next = 0  # the first probe whose raw records are not known to be visible yet
        self.j = 0  # search positions: the first probe that may have ingested them...
        self.m = 0  # ...and the first that may have projected what that one saw forwarded

    def add(self, probe: Probe) -> float:
        ps = self.probes
        ps.append(probe)
        k = len(ps) - 1
        while self.next <= k:
            raw = ps[self.next].raw
            while self.j <= k and not _covers(ps[self.j].ingested, raw):
                self.j += 1
            if self.j > k:
                break
            self.m = max(self.m, self.j)
            while self.m <= k and not _covers(ps[self.m].projected_events, ps[self.j].events):
                self.m += 1
            if self.m > k or not _covers(probe.projected_facts, ps[self.m].facts):
                break
            self.next += 1
        newest = ps[max(0, self.next - 1)]
        lag = probe.finished - newest.started
        cut = min(max(0, self.next - 1), self.j, self.m)
        if cut > 1_000:  # forget probes no search goes back to
            del ps[:cut]
            self.next -= cut
            self.j -= cut
            self.m -= cut
        return max(0.0, lag)

    def all_visible(self) -> bool:
        return self.next == len(self.probes)


# The run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    at: float
    seconds: float
    status: int  # HTTP status, 0 when there was no answer
    size: int
    exporter_lag: float | None  # sum of salespulse_consumer_lag
    event_age: float | None  # salespulse_projection_newest_event_age_seconds
    server_seconds: float | None  # salespulse_exporter_scrape_duration_seconds


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass
class Sample:
    elapsed: float
    produced: int
    ingested: int
    projected: int
    sent_per_second: float
    lag_max: float | None
    behind_max: int | None
    scrapes: int
    scrape_errors: int
    scrape_p50: float | None
    scrape_p99: float | None
    scrape_server_max: float | None  # the exporter's own salespulse_exporter_scrape_duration
    exporter_lag_max: float | None
    event_age_max: float | None
    producer_late_max: float
    rss: dict[str, int]
    cpu: dict[str, float]  # % of one core over the interval
    redis_used_memory: int
    redis_keys: int
    load: float  # the machine's 1-minute load average (other work on it shows here)

    def row(self) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value * 1000:,.0f}"

        cells = [
            f"{self.elapsed / 60:.1f}",
            f"{self.produced:,}",
            f"{self.ingested:,}",
            f"{self.projected:,}",
            "-" if self.lag_max is None else f"{self.lag_max:.2f}",
            "-" if self.behind_max is None else f"{self.behind_max:,}",
            f"{ms(self.scrape_p50)}/{ms(self.scrape_p99)}",
            f"{self.scrape_errors}",
            *(f"{self.rss[name] / MIB:,.0f}" for name in PROCESSES),
            f"{self.redis_used_memory / MIB:,.1f}",
            f"{self.redis_keys:,}",
            f"{self.load:.1f}",
        ]
        return "".join(f"{c:>{w}}" for c, (_, _, w) in zip(cells, COLUMNS, strict=True))


PROCESSES = ("worker", "exporter", "publisher", "bench", "generator")
COLUMNS = (  # (title, second title line, width)
    ("", "minute", 6),
    ("", "produced", 11),
    ("", "ingested", 11),
    ("", "projected", 11),
    ("lag s", "max", 7),
    ("behind", "max", 9),
    ("scrape ms", "p50/p99", 12),
    ("scrape", "errors", 7),
    ("RSS MiB", "worker", 8),
    ("", "exporter", 9),
    ("", "publisher", 10),
    ("", "bench", 7),
    ("", "generator", 10),
    ("redis MiB", "used", 10),
    ("keys of", "prefix", 11),
    ("", "load", 6),
)
HEADER = "\n".join("".join(f"{c[n]:>{c[2]}}" for c in COLUMNS) for n in (0, 1))


class Soak:
    def __init__(
        self,
        settings: Settings,
        args: argparse.Namespace,
        worker: WorkerProcess,
        exporter: Child,
        publisher: Child,
        generator: Generator,
        shared: dict[str, int],
    ) -> None:
        self.settings = settings
        self.args = args
        self.worker = worker
        self.exporter = exporter
        self.publisher = publisher
        self.generator = generator
        self.shared = shared
        self.seconds = args.minutes * 60
        self.total = round(args.rate * self.seconds)
        self.tracker = LagTracker()
        self.stop = asyncio.Event()
        self.aborted = ""
        self.acked = 0
        self.failed = 0
        self.first_error = ""
        self.late_max = 0.0  # the producer behind its schedule, largest of the interval
        self.probes: list[tuple[float, int]] = []  # (lag, behind) of this interval
        self.lags: list[float] = []  # every probe's lag while records were sent
        self.scrapes: list[Scrape] = []  # this interval's
        self.all_scrapes: list[float] = []
        self.samples: list[Sample] = []
        self.chunks: list[dict[str, Any]] = []
        self.sending = True
        self.sent_at = 0.0
        self.drain: float | None = None
        self.redis_before = 0
        self.probe_errors = 0
        self.cpu_seconds: dict[str, float] = {}
        self.cpu_start: dict[str, float] = {}
        self.metrics_errors = 0

    # Probing ---------------------------------------------------------------------------

    async def probe_forever(self) -> None:
        s = self.settings
        raw = s.raw_topic
        topics = (raw, s.events_topic, s.facts_topic)
        tps = [TopicPartition(t, p) for t in topics for p in range(s.partitions)]
        partitions = range(s.partitions)
        group = f"{s.topic_prefix}-ingest"  # the ingest loop's group (streams/app.py)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap,
            **kafka_options(s),
            request_timeout_ms=10_000,
            isolation_level="read_committed",
        )
        admin = AIOKafkaAdminClient(
            bootstrap_servers=s.bootstrap, request_timeout_ms=10_000, **kafka_options(s)
        )
        await consumer.start()
        await admin.start()
        client = redis_client(s)
        try:
            store = RedisStore(client, await current_namespace(client, s.topic_prefix))
            while not self.stop.is_set():
                for name, child in (("exporter", self.exporter), ("publisher", self.publisher)):
                    if child.exit_code() is not None:
                        self.abort(f"the {name} exited with code {child.exit_code()}")
                if not self.worker.alive():
                    self.abort("the worker exited; see its log")
                started = time.monotonic()
                try:  # in this order: what is done before what there is (docstring)
                    progress = await store.progress(partitions)
                    committed = await admin.list_consumer_group_offsets(group)
                    ends = await consumer.end_offsets(tps)
                except (KafkaError, RedisError, OSError, TimeoutError) as exc:
                    self.probe_errors += 1
                    print(f"soak: a probe failed: {exc!r}", flush=True)
                    await self._pause(PROBE_SECONDS)
                    continue
                finished = time.monotonic()
                probe = Probe(
                    started,
                    finished,
                    _checkpoints(progress, s.events_topic),
                    _checkpoints(progress, s.facts_topic),
                    {tp.partition: m.offset for tp, m in committed.items() if tp.topic == raw},
                    _of(ends, raw),
                    _of(ends, s.events_topic),
                    _of(ends, s.facts_topic),
                )
                lag = self.tracker.add(probe)
                self.probes.append((lag, probe.behind()))
                if self.sending:
                    self.lags.append(lag)
                elif self.drain is None and self.tracker.all_visible():
                    self.drain = max(0.0, finished - self.sent_at)
                await self._pause(PROBE_SECONDS - (time.monotonic() - started))
        finally:
            await client.aclose()
            await admin.close()
            await consumer.stop()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), max(0.01, seconds))

    def abort(self, why: str) -> None:
        if not self.aborted:
            self.aborted = why
            print(f"soak: stopping early: {why}", flush=True)
        self.stop.set()

    # Scraping --------------------------------------------------------------------------

    async def scrape_forever(self, started: float) -> None:
        url = f"http://127.0.0.1:{self.settings.exporter_port}/metrics"
        interval = self.args.scrape_seconds
        timeout = aiohttp.ClientTimeout(total=max(30.0, interval))
        next_at = started
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self.stop.is_set():
                began = time.perf_counter()
                status, body = 0, b""
                try:
                    async with session.get(url) as response:
                        body = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError):
                    pass
                took = time.perf_counter() - began
                self.scrapes.append(Scrape(time.monotonic(), took, status, len(body), *_read(body)))
                self.all_scrapes.append(took)
                while next_at <= time.monotonic():
                    next_at += interval  # scrapes never overlap; a slow one skips ticks
                await self._pause(next_at - time.monotonic())

    # Producing -------------------------------------------------------------------------

    def job(self, index: int, start_ms: int) -> Job:
        chunk = min(CHUNK_SECONDS, self.seconds)
        begin = index * chunk
        end = min(self.seconds, begin + chunk)
        return Job(
            start_ms + round(begin * 1000),
            start_ms + round(end * 1000),
            round(self.args.rate * end) - round(self.args.rate * begin),
            start_ms + round(self.seconds * 1000),
        )

    def chunk_count(self) -> int:
        return math.ceil(self.seconds / min(CHUNK_SECONDS, self.seconds) - 1e-9)

    async def produce(self, started: float, start_ms: int, first: Chunk) -> None:
        s = self.settings
        producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap,
            **kafka_options(s),
            acks="all",
            enable_idempotence=True,
            linger_ms=10,
            max_batch_size=512 * 1024,
            max_request_size=4 * 1024 * 1024,
            request_timeout_ms=30_000,
        )
        await producer.start()

        def delivered(future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                self.failed += 1
                if not self.first_error:
                    self.first_error = (
                        "cancelled" if future.cancelled() else repr(future.exception())
                    )
            else:
                self.acked += 1

        rate = self.args.rate
        per_tick = max(1.0, rate * TICK)
        n, pause_at = 0, 0.0
        chunk = first
        try:
            for index in range(self.chunk_count()):
                self._chunk_done(chunk)
                following = None
                if index + 1 < self.chunk_count():
                    following = self.generator.request(self.job(index + 1, start_ms))
                for key, value in chunk.records:
                    if n >= pause_at:
                        if self.stop.is_set():
                            return
                        ahead = started + n / rate - time.monotonic()
                        if ahead > 0:
                            await asyncio.sleep(ahead)
                        else:
                            self.late_max = max(self.late_max, -ahead)
                        pause_at += per_tick
                    future = await producer.send(s.raw_topic, value, key=key)
                    future.add_done_callback(delivered)
                    n += 1
                if following is not None:
                    chunk = await following
            await producer.flush()
        finally:
            self.sending = False
            self.sent_at = time.monotonic()
            await producer.stop()

    def _chunk_done(self, chunk: Chunk) -> None:
        self.chunks.append(
            {
                "records": len(chunk.records),
                "episodes_started": chunk.episodes,
                "valid_events_by_type": chunk.types,
                "events_pending": chunk.pending,
                "records_carried": chunk.carried,
                "dropped_after_the_run": chunk.dropped,
                "generation_seconds": round(chunk.seconds, 2),
            }
        )

    # Sampling --------------------------------------------------------------------------

    def processes(self) -> dict[str, tuple[int, float]]:
        pids: dict[str, int] = {
            "worker": self.worker.pid,
            "exporter": self.exporter.pid,
            "publisher": self.publisher.pid,
            "bench": os.getpid(),
            "generator": self.generator.process.pid or 0,
            **self.shared,
        }
        return process_stats(pids, alone=["bench"])  # the others are its children

    async def sample(self, elapsed: float, previous: Sample | None) -> Sample:
        # What is read at once first, the slower reads (worker metrics, Redis SCAN) after.
        produced = self.acked
        probes, self.probes = self.probes, []
        scrapes, self.scrapes = self.scrapes, []
        late, self.late_max = self.late_max, 0.0
        stats = self.processes()
        span = elapsed - (previous.elapsed if previous else 0.0)
        cpu_before = self.cpu_seconds
        self.cpu_seconds = {name: cpu for name, (_, cpu) in stats.items()}
        try:
            snap = await asyncio.to_thread(scrape, self.worker.metrics_url, 10.0)
        except OSError as exc:
            self.metrics_errors += 1
            print(f"soak: the worker's metrics did not answer: {exc!r}", flush=True)
            snap = Snapshot(records=previous.ingested if previous else 0)
            snap.projected["applied"] = previous.projected if previous else 0
        client = redis_client(self.settings)
        try:
            used = int((await client.info("memory"))["used_memory"])
            keys, cursor = 0, 0
            pattern = f"*{self.settings.topic_prefix}:*"
            while True:
                cursor, found = await client.scan(cursor, match=pattern, count=10_000)
                keys += len(found)
                if cursor == 0:
                    break
        finally:
            await client.aclose()
        times = [x.seconds for x in scrapes if x.status == 200]
        exporter_lags = [x.exporter_lag for x in scrapes if x.exporter_lag is not None]
        ages = [x.event_age for x in scrapes if x.event_age is not None]
        server = [x.server_seconds for x in scrapes if x.server_seconds is not None]
        return Sample(
            elapsed=elapsed,
            produced=produced,
            ingested=int(snap.records),
            projected=snap.projected["applied"] + snap.projected["duplicate"],
            sent_per_second=(produced - (previous.produced if previous else 0)) / span,
            lag_max=max((lag for lag, _ in probes), default=None),
            behind_max=max((behind for _, behind in probes), default=None),
            scrapes=len(scrapes),
            scrape_errors=len(scrapes) - len(times),
            scrape_p50=percentile(times, 0.5) if times else None,
            scrape_p99=percentile(times, 0.99) if times else None,
            scrape_server_max=max(server, default=None),
            exporter_lag_max=max(exporter_lags, default=None),
            event_age_max=max(ages, default=None),
            producer_late_max=late,
            rss={name: rss for name, (rss, _) in stats.items()},
            cpu={
                name: round((cpu - cpu_before.get(name, 0.0)) / span * 100, 1)
                for name, cpu in self.cpu_seconds.items()
            },
            redis_used_memory=used,
            redis_keys=keys,
            load=os.getloadavg()[0],
        )

    async def run(self) -> None:
        s = self.settings
        client = redis_client(s)
        try:
            self.redis_before = int((await client.info("memory"))["used_memory"])
        finally:
            await client.aclose()
        # Event time starts a little ahead, so that the first minute is made before it begins
        # (about 50 us a record here); the run starts when it is ready, on time or a bit late.
        lead = 3.0 + self.args.rate * min(CHUNK_SECONDS, self.seconds) * 60e-6
        start_ms = time.time_ns() // 1_000_000 + round(lead * 1000)
        first = await self.generator.request(self.job(0, start_ms))
        await asyncio.sleep(max(0.0, start_ms / 1000 - time.time()))
        started = time.monotonic()
        self.cpu_seconds = self.cpu_start = {n: cpu for n, (_, cpu) in self.processes().items()}
        probing = asyncio.create_task(self.probe_forever())
        scraping = asyncio.create_task(self.scrape_forever(started))
        producing = asyncio.create_task(self.produce(started, start_ms, first))
        print(
            f"soak: {self.args.minutes:g} min at {self.args.rate:,} records/s "
            f"({self.total:,} records), prefix {s.topic_prefix}, {s.partitions} partitions, "
            f"worker metrics :{s.worker_metrics_port}, exporter :{s.exporter_port}",
            flush=True,
        )
        print(HEADER, flush=True)
        try:
            step = self.args.sample_seconds
            ticks = [step * n for n in range(1, math.floor(self.seconds / step + 1e-9) + 1)]
            if not ticks or ticks[-1] < self.seconds - 1e-6:
                ticks.append(self.seconds)
            for n, at in enumerate(ticks):
                await self._pause(started + at - time.monotonic())
                if n == len(ticks) - 1 and not self.stop.is_set():
                    # The last row: once everything was sent (the producer may be late).
                    await asyncio.wait([producing, probing], return_when="FIRST_COMPLETED")
                if self.stop.is_set():
                    break
                previous = self.samples[-1] if self.samples else None
                self.samples.append(await self.sample(time.monotonic() - started, previous))
                print(self.samples[-1].row(), flush=True)
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while not self.stop.is_set() and self.drain is None and time.monotonic() < deadline:
                await asyncio.sleep(PROBE_SECONDS)
        finally:
            self.stop.set()
            for task in (producing, scraping, probing):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # Report ----------------------------------------------------------------------------

    def goals(self) -> tuple[list[dict[str, Any]], str]:
        """Each goal with what was measured and whether it was met; and the RSS baseline."""
        out: list[dict[str, Any]] = []
        samples = self.samples
        if not samples:
            return out, "no samples"
        warm = self.args.warmup_minutes * 60
        base = next((x for x in samples[:-1] if x.elapsed >= warm - 1e-6), samples[0])
        note = f"minute {base.elapsed / 60:.1f}"
        if base.elapsed < warm - 1e-6:
            note += f" (the run is shorter than the {self.args.warmup_minutes:g}-minute warm-up)"
        last = samples[-1]
        for name in ("worker", "exporter", "publisher"):
            before, after = base.rss[name], last.rss[name]
            growth = (after - before) / before * 100 if before else math.inf
            out.append(
                {
                    "goal": f"{name} RSS growth < {self.args.rss_goal:g} %",
                    "measured": f"{growth:+.1f} % ({before / MIB:,.0f} -> {after / MIB:,.0f} MiB)",
                    "value": growth if math.isfinite(growth) else None,
                    "met": growth < self.args.rss_goal,
                }
            )
        worst = max(self.lags, default=math.inf)
        p99 = percentile(self.lags, 0.99) if self.lags else math.inf
        out.append(
            {
                "goal": f"lag never above {self.args.lag_goal:g} s",
                "measured": f"max {worst:.2f} s, p99 {p99:.2f} s ({len(self.lags):,} probes)",
                "value": worst if math.isfinite(worst) else None,
                "met": worst <= self.args.lag_goal,
            }
        )
        return out, note

    def summary(self) -> dict[str, Any]:
        goals, baseline = self.goals()
        seconds = self.samples[-1].elapsed if self.samples else 0.0
        scrapes = self.all_scrapes
        print()
        print(f"{'goal':<34}{'measured':<44}result")
        for goal in goals:
            print(f"{goal['goal']:<34}{goal['measured']:<44}{'PASS' if goal['met'] else 'FAIL'}")
        print(f"RSS growth is from the sample at {baseline} to the last sample")
        print(f"{'produced':<34}{self.acked:,} of {self.total:,} ({self.failed:,} failed)")
        if seconds:
            print(f"{'achieved rate':<34}{self.acked / seconds:,.0f} records/s")
        if self.first_error:
            print(f"{'first producer error':<34}{self.first_error}")
        late = max((x.producer_late_max for x in self.samples), default=0.0)
        print(f"{'producer behind schedule, max':<34}{late:.2f} s")
        if scrapes:
            p50, p99 = percentile(scrapes, 0.5) * 1000, percentile(scrapes, 0.99) * 1000
            errors = sum(x.scrape_errors for x in self.samples)
            print(
                f"{'exporter scrapes':<34}{len(scrapes):,}, p50 {p50:,.0f} ms, p99 {p99:,.0f} ms, "
                f"max {max(scrapes) * 1000:,.0f} ms, {errors} errors"
            )
        drain = f"not within {DRAIN_TIMEOUT:.0f} s" if self.drain is None else f"{self.drain:.1f} s"
        print(f"{'all visible after the last send':<34}{drain}")
        if self.samples:
            first, last = self.samples[0], self.samples[-1]
            print(
                f"{'Redis used_memory':<34}{self.redis_before / MIB:,.1f} before, "
                f"{last.redis_used_memory / MIB:,.1f} MiB at the end (whole instance)"
            )
            print(f"{'keys of the prefix':<34}{first.redis_keys:,} -> {last.redis_keys:,}")
            used = {
                name: (self.cpu_seconds[name] - self.cpu_start[name]) / last.elapsed * 100
                for name in self.cpu_start
            }
            print(
                f"{'CPU, % of one core (mean)':<34}"
                + ", ".join(f"{name} {value:.0f}" for name, value in used.items())
            )
            for name in ("bench", "generator"):
                print(
                    f"{name + ' RSS (not a goal)':<34}{first.rss[name] / MIB:,.0f} -> "
                    f"{last.rss[name] / MIB:,.0f} MiB"
                )
        if self.probe_errors or self.metrics_errors:
            print(
                f"{'failed reads':<34}{self.probe_errors} probes, "
                f"{self.metrics_errors} worker metrics scrapes"
            )
        if self.aborted:
            print(f"{'stopped early':<34}{self.aborted}")
        return {
            "minutes": self.args.minutes,
            "rate": self.args.rate,
            "prefix": self.settings.topic_prefix,
            "partitions": self.settings.partitions,
            "records": self.total,
            "produced": self.acked,
            "failed": self.failed,
            "aborted": self.aborted or None,
            "lag_definition": "wall seconds from the raw topic to visible KPIs (upper bound)",
            "probe_seconds": PROBE_SECONDS,
            "drain_seconds": self.drain,
            "redis_used_memory_before": self.redis_before,
            "rss_baseline": baseline,
            "goals": goals,
            "samples": [dataclasses.asdict(x) for x in self.samples],
            "chunks": self.chunks,
        }


def _checkpoints(progress: list[dict[str, str]], topic: str) -> Offsets:
    """The next offset to apply of each partition of ``topic``, from RedisStore.progress."""
    return {p: int(fields[topic]) + 1 for p, fields in enumerate(progress) if topic in fields}


def _of(ends: dict[TopicPartition, int], topic: str) -> Offsets:
    return {tp.partition: offset for tp, offset in ends.items() if tp.topic == topic}


def _read(body: bytes) -> tuple[float | None, float | None, float | None]:
    """Consumer lag (sum), newest event age and the exporter's own scrape time, if present."""
    lag = age = took = None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("salespulse_consumer_lag{"):
            lag = (lag or 0.0) + float(line.rsplit(" ", 1)[1])
        elif line.startswith("salespulse_projection_newest_event_age_seconds "):
            age = float(line.rsplit(" ", 1)[1])
        elif line.startswith("salespulse_exporter_scrape_duration_seconds "):
            took = float(line.rsplit(" ", 1)[1])
    return lag, age, took


async def _load_directory(settings: Settings, directory: list[bytes]) -> None:
    await publish(settings, settings.raw_topic, directory)
    client = redis_client(settings)
    try:
        store = RedisStore(client, await current_namespace(client, settings.topic_prefix))
        deadline = time.monotonic() + 120
        while not await caught_up(settings, store):
            if time.monotonic() > deadline:
                raise SystemExit("the directory was not projected within 120 s")
            await asyncio.sleep(0.25)
    finally:
        await client.aclose()


async def _drop_publisher_keys(settings: Settings) -> None:
    client = redis_client(settings)
    try:
        keys = [k async for k in client.scan_iter(match=f"{settings.topic_prefix}:kpi:*")]
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=positive, default=30.0, help="of sending; 0.5 is fine")
    parser.add_argument("--rate", type=int, default=3_000, help="records/s to the raw topic")
    parser.add_argument("--sample-seconds", type=positive, default=60.0, help="between rows")
    parser.add_argument("--scrape-seconds", type=positive, default=5.0, help="exporter scrapes")
    parser.add_argument("--warmup-minutes", type=float, default=5.0, help="RSS baseline")
    parser.add_argument("--rss-goal", type=float, default=5.0, help="largest RSS growth, %%")
    parser.add_argument("--lag-goal", type=float, default=5.0, help="largest lag, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--teams", type=int, default=4)
    parser.add_argument("--reps-per-team", type=int, default=8)
    parser.add_argument("--worker-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--exporter-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--out", type=Path, help="also write the results here, as JSON")
    args = parser.parse_args()
    if args.rate < 1:
        parser.error(f"--rate must be at least 1, not {args.rate}")
    if args.teams < 1 or args.reps_per_team < 1:
        parser.error("--teams and --reps-per-team must be at least 1")

    base = Settings.from_env()
    shared: dict[str, int] = {}  # the stack's servers: their CPU is shown (others use them too)
    for server in servers(base):
        server.up()
        if not server.external:
            shared[server.name] = server.pid() or 0
    prefix = f"soak{uuid.uuid4().hex[:8]}"
    worker_port = args.worker_port or free_port()
    exporter_port = args.exporter_port or free_port()
    while exporter_port == worker_port:
        exporter_port = free_port()
    env = {
        "SALESPULSE_TOPIC_PREFIX": prefix,
        "SALESPULSE_WORKER_METRICS_PORT": str(worker_port),
        "SALESPULSE_EXPORTER_PORT": str(exporter_port),
    }
    settings = dataclasses.replace(
        base, topic_prefix=prefix, worker_metrics_port=worker_port, exporter_port=exporter_port
    )
    stack = Path(settings.stack_dir)
    records, _ = simulate(
        SimConfig(
            seed=args.seed,
            count=args.teams * (1 + args.reps_per_team),
            end_ms=time.time_ns() // 1_000_000,
            history_ms=3_600_000,
            teams=args.teams,
            reps_per_team=args.reps_per_team,
        )
    )
    # As tests/support.py directory_first splits a log: the team and rep upserts.
    directory = [r.value for r in records if r.label == VALID and b'.upserted"' in r.value]
    worker = WorkerProcess(env, stack / f"{prefix}-worker.log")
    exporter = Child("exporter", env, stack / f"{prefix}-exporter.log")
    publisher = Child("publish-kpis", env, stack / f"{prefix}-publisher.log")
    generator = Generator(args.seed, args.teams, args.reps_per_team, settings.max_event_bytes)
    soak = Soak(settings, args, worker, exporter, publisher, generator, shared)
    try:
        asyncio.run(ensure_topics(settings))
        worker.start(timeout=120)
        exporter.start()
        health = f"http://127.0.0.1:{exporter_port}/api/v1/health"
        wait_until(lambda: _answers(health), 60, "the exporter", exporter)
        publisher.start()
        wait_until(
            lambda: b"KPI publisher active" in publisher.log_path.read_bytes(),
            60,
            "the KPI publisher",
            publisher,
        )
        asyncio.run(_load_directory(settings, directory))
        asyncio.run(soak.run())
    finally:
        generator.stop()
        publisher.stop()
        exporter.stop()
        worker.stop()
        asyncio.run(clean(settings))
        asyncio.run(_drop_publisher_keys(settings))
        shutil.rmtree(settings.stack_path / "faust" / f"{prefix}-worker", ignore_errors=True)
    report = soak.summary()
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if soak.aborted:
        raise SystemExit(1)


def _answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


if __name__ == "__main__":
    main()
