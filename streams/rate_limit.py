"""Token buckets for ``salespulse ingest``: how often one sender may deliver, and when a
sender that was refused may come back (docs/adapters.md, "Rate limits").

Pure: no I/O, no global clock. The caller passes the clock (``time.monotonic`` in the
service, a fake in the tests), so refill and Retry-After are deterministic and testable.

One token is one delivery (one HTTP request), whatever it carries: a HubSpot batch of
100 events costs what a single Twilio callback costs. A limit is about how hard a sender
may hit the service, and a vendor that batches is rewarded, not punished.

Buckets are keyed by source and a fingerprint of the credential that authenticated the
delivery, so their number is bounded by the credentials configured (today one per
source), never by what strangers send: nothing is looked up before authentication.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Bounds of a configured limit: beyond them it is a typo, and they keep Retry-After short
# (at most 1,000 s).
MIN_RATE = 0.001
MAX_RATE = 1_000_000.0
MAX_BURST = 1_000_000

# Refill is float arithmetic on clock readings: a bucket that should hold exactly one
# token after the advertised wait may hold 0.9999999. Counting that as a token keeps the
# promise of Retry-After (come back after it and you are admitted).
_EPSILON = 1e-6


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


def fingerprint(credential: str) -> str:
    """A short, non-reversible name for a credential: a bucket key that can be kept in
    memory (and would be harmless in a dump) without keeping the secret itself."""
    return hashlib.sha256(credential.encode()).hexdigest()[:16]


def retry_after(wait: float) -> int:
    """The Retry-After header for a wait in seconds: whole seconds, rounded up, at least
    1 (``Retry-After: 0`` invites an immediate retry that would be refused again)."""
    return max(1, math.ceil(wait))


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """One token bucket per (source, key), each full when first used."""

    def __init__(self, limits: Mapping[str, Limit | None], clock: Callable[[], float]) -> None:
        self.limits = dict(limits)
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def take(self, source: str, key: str) -> float:
        """Spend one token of the (source, key) bucket: 0.0 when there was one, otherwise
        nothing is spent and the answer is the seconds until there will be one. A source
        without a limit always gets 0.0."""
        limit = self.limits.get(source)
        if limit is None:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get((source, key))
        if bucket is None:
            bucket = self._buckets[source, key] = _Bucket(float(limit.burst), now)
        elapsed = now - bucket.stamp
        if elapsed > 0:
            bucket.tokens = min(float(limit.burst), bucket.tokens + elapsed * limit.rate)
        # A clock that went back (only a fake one can) refills nothing, and refill starts
        # again from where it now stands rather than waiting for it to catch up.
        bucket.stamp = now
        if bucket.tokens >= 1 - _EPSILON:
            bucket.tokens = max(0.0, bucket.tokens - 1)
            return 0.0
        return (1 - bucket.tokens) / limit.rate
