"""Run the Kafka Streams peer (benchmarks/peers/kafka_streams) over a preloaded events topic.

    python -m benchmarks.peers.kafka_streams_peer --bootstrap HOST:PORT --topic TOPIC \\
        --expect N [--out rows.json] [--log events.jsonl]

Builds the fat jar with Maven (``mvn -q -B package``) when it is missing or older than its
sources, runs it with the machine's JDK (``java -jar``) and prints one line: events, wall
seconds, events/s, CPU seconds (user+sys of the JVM) and CPU µs per event, for the whole
process (JVM start-up, rebalance, the drain of the internal topics and teardown included)
and, from samples of /proc/<pid>/stat, from the first record processed to the moment every
internal topic was drained (the app prints both instants). With ``--log`` the rows are
checked against the oracle (benchmarks.peers.check); a mismatch exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent / "kafka_streams"
JAR = PROJECT / "target" / "kafka-streams-peer.jar"
TICKS = os.sysconf("SC_CLK_TCK")


def sources() -> list[Path]:
    """The files the jar is built from."""
    return [PROJECT / "pom.xml", *sorted((PROJECT / "src").rglob("*.java"))]


def build(force: bool = False) -> float | None:
    """Build the jar if it is missing or stale (or ``force``); seconds taken, None if fresh."""
    if not force and JAR.exists():
        built = JAR.stat().st_mtime
        if all(path.stat().st_mtime <= built for path in sources()):
            return None
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SystemExit("mvn (Maven) is not on PATH: it builds the Kafka Streams peer")
    started = time.monotonic()
    done = subprocess.run(
        [mvn, "-q", "-B", "package"], cwd=PROJECT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not JAR.exists():
        raise SystemExit(f"the Kafka Streams peer did not build:\n{done.stdout}{done.stderr}")
    return time.monotonic() - started


def cpu_seconds(pid: int) -> float | None:
    """User+sys CPU seconds of a live process so far (/proc/<pid>/stat), None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


@dataclass
class Sampler:
    """(wall clock ms, CPU seconds) of a process every ``every`` seconds, until it exits."""

    pid: int
    every: float = 0.05
    samples: list[tuple[float, float]] = field(default_factory=list)

    def run(self) -> None:
        while (cpu := cpu_seconds(self.pid)) is not None:
            self.samples.append((time.time() * 1000, cpu))
            time.sleep(self.every)

    def cpu_at(self, at_ms: float) -> float:
        """CPU seconds at the wall clock instant ``at_ms``, interpolated between samples."""
        before = [s for s in self.samples if s[0] <= at_ms]
        after = [s for s in self.samples if s[0] >= at_ms]
        if not before or not after:
            raise ValueError("no CPU sample on both sides of that instant")
        (t0, c0), (t1, c1) = before[-1], after[0]
        return c0 if t1 == t0 else c0 + (c1 - c0) * (at_ms - t0) / (t1 - t0)


@dataclass
class Result:
    """One run: the app's own summary line, and what the runner measured around it."""

    events: int
    wall: float  # seconds, the whole java process
    cpu: float  # user+sys seconds of the whole java process (from wait4)
    app: dict[str, Any]  # the app's JSON line: processed, rows, *_ms instants
    steady_wall: float  # first record processed -> internal topics drained
    steady_cpu: float  # CPU of the process in that span (from /proc samples)

    def line(self) -> str:
        """The one line of figures."""
        n = self.events
        return (
            f"kafka streams peer: {n} events, {self.wall:.2f} s wall, {n / self.wall:,.0f} "
            f"events/s, {self.cpu:.2f} s CPU (user+sys of the JVM, start-up and teardown "
            f"included), {self.cpu / n * 1e6:.1f} µs CPU/event; from the first record to "
            f"drained: {self.steady_wall:.2f} s, {n / self.steady_wall:,.0f} events/s, "
            f"{self.steady_cpu:.2f} s CPU, {self.steady_cpu / n * 1e6:.1f} µs CPU/event "
            f"(all read after {self.read_seconds:.2f} s)"
        )

    @property
    def read_seconds(self) -> float:
        """From the first record processed to the last input record processed (the rest of
        the span is the drain: commits flushing caches into the repartition topics)."""
        return float(self.app["caught_up_ms"] - self.app["first_record_ms"]) / 1000


def run(
    bootstrap: str,
    topic: str,
    expect: int,
    out: Path,
    *,
    state_dir: Path | None = None,
    extra: list[str] | None = None,
    timeout: float = 1800,
) -> Result:
    """Run the jar to the end of ``expect`` records; the rows are in ``out``."""
    java = shutil.which("java")
    if java is None:
        raise SystemExit("java (a JDK 17+) is not on PATH")
    with tempfile.TemporaryDirectory(prefix="ks-peer-") as scratch:
        command = [
            *(java, "-jar", str(JAR), "--bootstrap", bootstrap, "--topic", topic),
            *("--expect", str(expect), "--out", str(out)),
            *("--state-dir", str(state_dir or Path(scratch) / "state")),
            *("--timeout-s", str(int(timeout))),
            *(extra or []),
        ]
        summary = Path(scratch) / "stdout"
        with summary.open("w") as stdout:
            started = time.monotonic()
            proc = subprocess.Popen(command, stdout=stdout)
            sampler = Sampler(proc.pid)
            thread = threading.Thread(target=sampler.run, daemon=True)
            thread.start()
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.monotonic() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
            thread.join()
        if proc.returncode != 0:
            raise SystemExit(f"the Kafka Streams peer exited {proc.returncode}")
        app = json.loads(summary.read_text().strip().splitlines()[-1])
    first, drained = app["first_record_ms"], app["drained_ms"]
    return Result(
        events=int(app["processed"]),
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        app=app,
        steady_wall=(drained - first) / 1000,
        steady_cpu=sampler.cpu_at(drained) - sampler.cpu_at(first),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of a Kafka broker")
    parser.add_argument("--topic", required=True, help="the preloaded events topic")
    parser.add_argument("--expect", type=int, required=True, help="records on the topic")
    parser.add_argument("--out", type=Path, help="write the rows here (JSON)")
    parser.add_argument("--log", type=Path, help="the JSONL log of the topic: check the rows")
    parser.add_argument("--rebuild", action="store_true", help="build the jar even if fresh")
    parser.add_argument(
        "--commit-interval-ms", type=int, default=1000, help="Kafka Streams' commit.interval.ms"
    )
    args = parser.parse_args(argv)
    if args.expect < 1:
        parser.error("--expect must be at least 1")
    seconds = build(force=args.rebuild)
    if seconds is not None:
        print(
            f"built {JAR.relative_to(Path.cwd()) if JAR.is_relative_to(Path.cwd()) else JAR} "
            f"in {seconds:.1f} s",
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="ks-peer-out-") as scratch:
        out = args.out or Path(scratch) / "rows.json"
        extra = ["--commit-interval-ms", str(args.commit_interval_ms)]
        result = run(args.bootstrap, args.topic, args.expect, out, extra=extra)
        print(result.line(), flush=True)
        if not args.log:
            return 0
        from benchmarks.peers.check import mismatches

        rows = json.loads(out.read_text())
    problems = mismatches(args.log, rows)
    for line in problems:
        print(line)
    print(f"oracle check: {'MISMATCH' if problems else 'equal'} ({len(rows)} rows)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
