"""Worker and Redis CPU per event of two versions of the code, run in turn on one stack: a
change of a few µs per event shows beside the machine's drift.

    python -m benchmarks.compare --base REV [--runs 3] [--count 300000]
        [--end-to-end | --no-end-to-end] [--timeout 3600]

One run of the throughput benchmark's end to end row (one worker from the raw topic:
ingest, validation, republish, lead facts, projection; ``--no-end-to-end``: the projection
alone, over the events topic) meters one worker over a fresh copy of the log, as
benchmarks.throughput does. On a busy or drifting machine the same code measured 49.6 to
56.6 µs per event in four such runs (benchmarks/RESULTS.md, stop 38), so one run of each
version cannot show a change of 2 µs. Here the runs of the two alternate, ABBA (base, this
checkout, this checkout, base, ...), ``--runs`` of each, and the table gives every run, then
each version's median and range and the difference of the medians.

The base is checked out (``git worktree``) into the stack's folder and its planner compiled
there (a build of the same sources from this checkout is copied, not compiled again); its
workers run from there with this checkout's Python environment and settings, so a base
must read the same ``SALESPULSE_*`` settings. The worktree is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import org_month
from benchmarks.scale import OneLineParser
from benchmarks.throughput import clean, cpu_per_event, fed_project, fresh
from config.settings import Settings
from projections import BUILDS, sources_digest
from stack.servers import servers

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Version:
    name: str  # as the table shows it
    code: Path | None  # the checkout its workers run; None: this one


@dataclass(frozen=True)
class Measured:
    version: str
    rate: float  # events/s, as the throughput benchmark times them
    worker: float | None  # CPU µs per event; None: too few events left to meter
    redis: float | None


def git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(done.stderr.strip() or f"git {' '.join(args)} failed")
    return done.stdout.strip()


def order(runs: int) -> list[int]:
    """Which version (0: base, 1: this checkout) each run is: ABBA ABBA ..., so that a drift
    of the machine over the session weighs on both alike; ``runs`` of each."""
    return [(0, 1, 1, 0)[n % 4] for n in range(2 * runs)]


def summary(values: Sequence[float]) -> tuple[float, float, float]:
    """Median, least and greatest."""
    return statistics.median(values), min(values), max(values)


def check_out(commit: str, stack_dir: Path) -> Version:
    """A worktree of ``commit`` (a full hash) under ``stack_dir`` with its planner compiled."""
    where = stack_dir / f"compare-{commit[:12]}"
    if where.exists():
        git("worktree", "remove", "--force", str(where))
    stack_dir.mkdir(parents=True, exist_ok=True)
    git("worktree", "add", "--detach", str(where), commit)
    same = BUILDS / sources_digest(where / "projections")
    if same.is_dir():  # a build of the very same sources: no need to compile again
        shutil.copytree(same, where / "build" / "compiled" / same.name)
    said = subprocess.run(
        [sys.executable, "-m", "tools.compile_planner"],
        cwd=where,
        capture_output=True,
        text=True,
        check=False,
    )
    last = (said.stdout + said.stderr).strip().splitlines()[-1:] or ["(nothing said)"]
    print(f"base {commit[:12]}: {last[0]}")
    return Version(f"base {commit[:8]}", where)


def this_checkout() -> Version:
    head = git("rev-parse", "--short=8", "HEAD")
    dirty = "+changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    return Version(f"this {head}{dirty}", None)


def measure(
    base: Settings, version: Version, values: list[bytes], leads: int, args: argparse.Namespace
) -> Measured:
    settings = fresh(base)
    topic = settings.raw_topic if args.end_to_end else settings.events_topic
    try:
        run, cost = fed_project(settings, topic, values, leads, 1, args.timeout, version.code)
    finally:
        asyncio.run(clean(settings))
    if cost is None:
        return Measured(version.name, run.rate, None, None)
    return Measured(version.name, run.rate, *cpu_per_event(cost))


def table(versions: Sequence[Version], measured: Sequence[Measured]) -> list[str]:
    lines = [f"{'':<28}{'events/s':>10}{'worker µs/ev':>14}{'Redis µs/ev':>13}"]
    for n, m in enumerate(measured, 1):
        cpu = (
            f"{m.worker:>14,.1f}{m.redis:>13,.1f}"
            if m.worker is not None and m.redis is not None
            else "   too few events left to meter"
        )
        lines.append(f"{f'run {n}: {m.version}':<28}{m.rate:>10,.0f}{cpu}")
    medians: dict[str, tuple[float, float, float]] = {}
    for version in versions:
        mine = [m for m in measured if m.version == version.name]
        for label, values in (
            ("events/s", [m.rate for m in mine]),
            ("worker µs/ev", [m.worker for m in mine if m.worker is not None]),
            ("Redis µs/ev", [m.redis for m in mine if m.redis is not None]),
        ):
            if values:
                medians[f"{version.name}|{label}"] = median, low, high = summary(values)
                lines.append(
                    f"{version.name:<28}{label:<14}median {median:>10,.1f}"
                    f"   range {low:,.1f} to {high:,.1f}"
                )
    base, this = versions
    for label in ("events/s", "worker µs/ev", "Redis µs/ev"):
        if f"{base.name}|{label}" in medians and f"{this.name}|{label}" in medians:
            before, after = medians[f"{base.name}|{label}"][0], medians[f"{this.name}|{label}"][0]
            lines.append(
                f"{'this - base':<28}{label:<14}median {after - before:>+10,.1f}"
                f"   ({(after / before - 1) * 100:+.1f} %)"
            )
    return lines


def main() -> None:
    parser = OneLineParser(prog="benchmarks.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the revision to compare with")
    parser.add_argument("--runs", type=int, default=3, help="runs of each version")
    parser.add_argument("--count", type=int, default=300_000)
    parser.add_argument(
        "--end-to-end",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one worker from the raw topic (else the projection alone)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="per run (seconds)")
    args = parser.parse_args()
    if args.runs < 1 or args.count < 1:
        parser.error("--runs and --count must be at least 1")
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, not {args.timeout}")
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}")
    except RuntimeError:
        parser.error(f"--base {args.base!r} is not a revision of this repository")

    settings = Settings.from_env()
    for server in servers(settings):
        server.up()
    base = check_out(commit, Path(settings.stack_dir))
    versions = [base, this_checkout()]
    try:
        values, leads = org_month(args.count)
        measured = []
        for n, which in enumerate(order(args.runs), 1):
            version = versions[which]
            print(f"run {n} of {2 * args.runs}: {version.name}", flush=True)
            measured.append(measure(settings, version, values, leads, args))
    finally:
        assert base.code is not None
        git("worktree", "remove", "--force", str(base.code))
    what = "end to end from the raw topic" if args.end_to_end else "the projection alone"
    print(f"\n{args.count:,} events in {settings.partitions} partitions, one worker, {what}")
    print("\n".join(table(versions, measured)))


if __name__ == "__main__":
    main()
