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
from collections.abc import Callable, Mapping

from config.rate_limits import Limit

# Refill is float arithmetic on clock readings: a bucket that should hold exactly one
# token after the advertised wait may hold 0.9999999. Counting that as a token keeps the
# promise of Retry-After (come back after it and you are admitted).
_EPSILON = 1e-6


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
