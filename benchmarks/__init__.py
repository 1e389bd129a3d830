"""Benchmarks on the local stack; results and exact commands: benchmarks/RESULTS.md."""

from __future__ import annotations

import argparse
import time

from simulator.log import VALID, SimConfig, simulate

DAY_MS = 86_400_000


def numbers(text: str) -> list[int]:
    """An argparse type: a comma-separated list of numbers of at least 1 (``1000,5000``)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every number must be at least 1")
    return values


def positive(text: str) -> float:
    """An argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def require_at_least_one(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str
) -> None:
    """Exit with the usual one-line usage error if an integer option is below 1."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")


def org_month(count: int, *, call_disorder_share: float = 0.0) -> tuple[list[bytes], int]:
    """The log the throughput, scale and peers benchmarks share: ``count`` valid simulated
    events, 30 days of an org ending now (seed 12), in the order its sources send them;
    and how many leads they create."""
    records, tally = simulate(
        SimConfig(
            seed=12,
            count=count,
            end_ms=time.time_ns() // 1_000_000,
            history_ms=30 * DAY_MS,
            call_disorder_share=call_disorder_share,
        )
    )
    return [r.value for r in records if r.label == VALID], tally.valid["lead.created"]
