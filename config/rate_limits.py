"""The rate limits of ``salespulse ingest`` as configured (SALESPULSE_INGEST_RATE_LIMITS):
per source, how many deliveries a second refill a bucket of how many (docs/adapters.md,
"Rate limits"). The buckets themselves are ``streams.rate_limit``. Pure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

# Bounds of a configured limit: beyond them it is a typo, and they keep Retry-After short
# (at most 1,000 s).
MIN_RATE = 0.001
MAX_RATE = 1_000_000.0
MAX_BURST = 1_000_000


@dataclass(frozen=True, slots=True)
class Limit:
    """``rate`` tokens per second flow into a bucket that holds at most ``burst``."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and MIN_RATE <= self.rate <= MAX_RATE):
            raise ValueError(f"rate {self.rate!r}/s: use {MIN_RATE:g} to {MAX_RATE:.0f} per second")
        if isinstance(self.burst, bool) or not 1 <= self.burst <= MAX_BURST:
            raise ValueError(f"burst {self.burst!r}: use 1 to {MAX_BURST}")

    def __str__(self) -> str:
        rate = f"{self.rate:f}".rstrip("0").rstrip(".")
        return f"{rate}/s:{self.burst}"


# Per delivery and per credential. The sum of the sustained rates (790/s) stays well
# below what one ingest process serves (about 4,500 deliveries/s on two cores,
# benchmarks/RESULTS.md), so one sender flooding at its limit leaves the others room.
DEFAULT_LIMITS: Mapping[str, Limit | None] = {
    # Our own and customers' systems, written against docs/adapters.md, which tells them
    # to honour Retry-After; an array may carry thousands of events per request.
    "events": Limit(50, 500),
    # Batches of up to 100 events: 20/s is 2,000 events/s, and a burst of 200 batches
    # takes a 20,000-contact import at once. HubSpot retries a refused batch later with
    # backoff, re-signed with a fresh request timestamp: a 429 delays rather than loses.
    "hubspot": Limit(20, 200),
    # A Pub/Sub API relay the operator runs: it must honour Retry-After (docs).
    "salesforce": Limit(20, 200),
    # Twilio does not retry a status callback answered 429 (its default retry policy is
    # connection failures only, and even opted-in retries end within 15 s): a refused
    # callback is a call missing from the KPIs. Generous: 500 callbacks/s is about
    # 100 new calls a second, far above any contact centre here; the burst absorbs a
    # backlog Twilio flushes at once.
    "twilio": Limit(500, 5000),
    # Aircall disables a webhook that keeps failing, which stops every call event: as
    # generous as Twilio for its volume (several webhooks per call).
    "aircall": Limit(200, 2000),
}

_SPEC = re.compile(r"(?P<rate>\d{1,7}(?:\.\d{1,6})?)/s:(?P<burst>\d{1,7})")
_OFF = frozenset({"off", "0"})


def parse_limits(
    text: str, defaults: Mapping[str, Limit | None] = DEFAULT_LIMITS
) -> dict[str, Limit | None]:
    """``source=rate/s:burst,...`` over ``defaults``; ``source=off`` (or ``0``) lifts one
    source's limit, ``off`` alone every one. A source not named keeps its default, so
    changing one limit does not silently lift the others.

    ValueError, with a one-line message, for anything else: a limit nobody can read is
    refused at start-up, not guessed."""
    limits = dict(defaults)
    if text.strip().lower() in _OFF:
        return dict.fromkeys(limits)
    seen: set[str] = set()
    for item in filter(str.strip, text.split(",")):
        source, equals, spec = (part.strip() for part in item.partition("="))
        example = f"e.g. {source or 'twilio'}=500/s:5000 or {source or 'twilio'}=off"
        if not equals or not spec:
            raise ValueError(f"{item.strip()!r} is not source=rate/s:burst ({example})")
        if source not in defaults:
            raise ValueError(f"unknown source {source!r}: use {', '.join(defaults)}")
        if source in seen:
            raise ValueError(f"{source} is given twice")
        seen.add(source)
        if spec.lower() in _OFF:
            limits[source] = None
            continue
        match = _SPEC.fullmatch(spec)
        if match is None:
            raise ValueError(f"{item.strip()!r} is not source=rate/s:burst ({example})")
        rate, burst = float(match["rate"]), int(match["burst"])
        if rate == 0:
            raise ValueError(f"{source}: a rate of 0 admits nothing; use {source}=off to lift it")
        try:
            limits[source] = Limit(rate, burst)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
    return limits


def describe(limits: Mapping[str, Limit | None]) -> str:
    """The limits in the form they are configured, for the start-up log line."""
    return ", ".join(f"{source}={limit or 'off'}" for source, limit in limits.items())
