"""The token buckets of ``salespulse ingest`` (streams/rate_limit.py), on a fake clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.rate_limits import DEFAULT_LIMITS, MAX_BURST, Limit, describe, parse_limits
from streams.rate_limit import RateLimiter, fingerprint, retry_after

pytestmark = pytest.mark.unit


class Ticks:
    """A monotonic clock in seconds that moves only when the test moves it."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(rate: float, burst: int, ticks: Ticks) -> RateLimiter:
    return RateLimiter({"twilio": Limit(rate, burst), "hubspot": Limit(rate, burst)}, ticks)


def test_a_full_bucket_admits_its_burst_at_once_then_refuses() -> None:
    ticks = Ticks()
    buckets = limiter(2, 5, ticks)
    assert [buckets.take("twilio", "k") for _ in range(5)] == [0.0] * 5
    assert buckets.take("twilio", "k") == pytest.approx(0.5)  # one token at 2/s
    assert buckets.take("twilio", "k") == pytest.approx(0.5)  # a refusal spends nothing


def test_tokens_refill_at_the_rate_and_never_above_the_burst() -> None:
    ticks = Ticks()
    buckets = limiter(2, 5, ticks)
    for _ in range(5):
        buckets.take("twilio", "k")
    ticks.now += 1.0  # two tokens
    assert [buckets.take("twilio", "k") == 0.0 for _ in range(3)] == [True, True, False]
    ticks.now += 3600.0  # an hour idle refills to the burst, not to 7,200
    assert sum(buckets.take("twilio", "k") == 0.0 for _ in range(20)) == 5


def test_retry_after_is_the_time_to_the_next_whole_token() -> None:
    ticks = Ticks()
    buckets = limiter(0.25, 1, ticks)  # one token per 4 s
    assert buckets.take("twilio", "k") == 0.0
    ticks.now += 1.0  # a quarter of a token back
    wait = buckets.take("twilio", "k")
    assert wait == pytest.approx(3.0)
    assert retry_after(wait) == 3
    ticks.now += 2.999
    assert buckets.take("twilio", "k") == pytest.approx(0.001)
    ticks.now += 0.001
    assert buckets.take("twilio", "k") == 0.0


@pytest.mark.parametrize(
    ("wait", "header"),
    [(1e-9, 1), (0.2, 1), (1.0, 1), (1.0000001, 2), (2.5, 3), (999.5, 1000), (0.0, 1)],
)
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(wait: float, header: int) -> None:
    assert retry_after(wait) == header


def test_each_source_and_each_key_has_its_own_bucket() -> None:
    ticks = Ticks()
    buckets = limiter(1, 2, ticks)
    for _ in range(2):
        assert buckets.take("twilio", "first credential") == 0.0
    assert buckets.take("twilio", "first credential") > 0
    assert buckets.take("twilio", "second credential") == 0.0  # a second credential
    assert buckets.take("hubspot", "first credential") == 0.0  # the same key, another source


def test_a_source_without_a_limit_is_always_admitted() -> None:
    buckets = RateLimiter({"twilio": None}, Ticks())
    assert all(buckets.take("twilio", "k") == 0.0 for _ in range(10_000))
    assert buckets.take("aircall", "k") == 0.0  # not configured at all: no limit either


def test_a_clock_that_goes_back_refills_nothing_and_does_not_lock_the_sender_out() -> None:
    ticks = Ticks(1_000.0)
    buckets = limiter(1, 1, ticks)
    assert buckets.take("twilio", "k") == 0.0
    ticks.now = 10.0  # back by 990 s
    assert buckets.take("twilio", "k") == pytest.approx(1.0)
    ticks.now = 11.0  # refill counts from where the clock now stands
    assert buckets.take("twilio", "k") == 0.0


def test_extreme_limits() -> None:
    ticks = Ticks()
    slow = limiter(0.001, 1, ticks)
    slow.take("twilio", "k")
    assert retry_after(slow.take("twilio", "k")) == 1000  # the longest Retry-After there is
    fast = limiter(1_000_000, MAX_BURST, ticks)
    assert sum(fast.take("twilio", "k") == 0.0 for _ in range(1_000)) == 1_000
    ticks.now += 1e12  # a clock far in the future: the bucket is full, not overflowing
    assert fast.take("twilio", "k") == 0.0


@pytest.mark.parametrize(
    ("rate", "burst"),
    [
        (0, 10),
        (-1, 10),
        (0.0001, 10),
        (math.nan, 10),
        (math.inf, 10),
        (2_000_000, 10),
        (1, 0),
        (1, -5),
        (1, MAX_BURST + 1),
        (1, True),
    ],
)
def test_hostile_limits_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        Limit(rate, burst)


@given(
    rate=st.floats(0.001, 1_000),
    burst=st.integers(1, 50),
    start=st.floats(0, 1e7),
    gaps=st.lists(st.floats(0, 5), min_size=1, max_size=60),
)
def test_coming_back_after_retry_after_is_admitted(
    rate: float, burst: int, start: float, gaps: list[float]
) -> None:
    """The promise of the header, whatever happened before: a sender refused now and
    waiting the whole seconds it was told is admitted."""
    ticks = Ticks(start)
    buckets = limiter(rate, burst, ticks)
    for gap in gaps:
        ticks.now += gap
        wait = buckets.take("twilio", "k")
        if wait > 0:
            ticks.now += retry_after(wait)
            assert buckets.take("twilio", "k") == 0.0, (rate, burst, wait)


@given(
    rate=st.floats(0.1, 100),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=100),
)
def test_never_more_than_the_burst_plus_what_the_rate_refilled(
    rate: float, burst: int, gaps: list[float]
) -> None:
    ticks = Ticks()
    buckets = limiter(rate, burst, ticks)
    admitted = 0
    for gap in gaps:
        ticks.now += gap
        admitted += buckets.take("twilio", "k") == 0.0
    assert admitted <= burst + rate * sum(gaps) + 1e-6


# Configuration --------------------------------------------------------------------------


def test_defaults_limit_every_source_and_leave_room_for_the_others() -> None:
    assert parse_limits("") == DEFAULT_LIMITS
    assert all(DEFAULT_LIMITS.values())
    # Twilio does not retry a 429: its limit must be the most generous.
    twilio = DEFAULT_LIMITS["twilio"]
    assert twilio is not None
    assert all(
        limit is None or (limit.rate <= twilio.rate and limit.burst <= twilio.burst)
        for limit in DEFAULT_LIMITS.values()
    )
    # One process serves about 4,500 deliveries/s (benchmarks/RESULTS.md).
    assert sum(limit.rate for limit in DEFAULT_LIMITS.values() if limit) < 1_000


def test_a_named_source_is_changed_and_the_others_keep_their_defaults() -> None:
    limits = parse_limits(" hubspot = 5/s:50 , twilio=off,aircall=0.5/s:1,")
    assert limits["hubspot"] == Limit(5, 50)
    assert limits["twilio"] is None
    assert limits["aircall"] == Limit(0.5, 1)
    assert limits["events"] == DEFAULT_LIMITS["events"]
    assert parse_limits("twilio=0")["twilio"] is None
    assert parse_limits("off") == dict.fromkeys(DEFAULT_LIMITS)
    assert parse_limits("OFF") == dict.fromkeys(DEFAULT_LIMITS)


def test_limits_read_back_as_they_are_written() -> None:
    limits = parse_limits("events=0.001/s:1,hubspot=1000000/s:1000000,twilio=off")
    text = describe(limits)
    assert text.startswith("events=0.001/s:1, hubspot=1000000/s:1000000, salesforce=20/s:200")
    assert "twilio=off" in text
    assert parse_limits(text.replace(" ", "")) == limits


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("twilio", "'twilio' is not source=rate/s:burst (e.g. twilio=500/s:5000 or twilio=off)"),
        ("twilio=", "is not source=rate/s:burst"),
        ("twilio=fast", "'twilio=fast' is not source=rate/s:burst"),
        ("twilio=500", "is not source=rate/s:burst"),
        ("twilio=500/s", "is not source=rate/s:burst"),
        ("twilio=500/m:10", "is not source=rate/s:burst"),
        ("twilio=-1/s:10", "is not source=rate/s:burst"),
        ("twilio=nan/s:10", "is not source=rate/s:burst"),
        ("twilio=inf/s:10", "is not source=rate/s:burst"),
        ("twilio=1e3/s:10", "is not source=rate/s:burst"),
        ("twilio=1_000/s:10", "is not source=rate/s:burst"),
        ("twilio=5/s:2.5", "is not source=rate/s:burst"),
        ("twilio=5/s:" + "9" * 5000, "is not source=rate/s:burst"),
        ("twilio=0/s:10", "a rate of 0 admits nothing; use twilio=off"),
        ("twilio=5/s:0", "twilio: burst 0: use 1 to 1000000"),
        ("twilio=0.0001/s:10", "twilio: rate 0.0001/s: use 0.001 to 1000000 per second"),
        ("twilio=2000000/s:10", "twilio: rate 2000000.0/s"),
        ("skype=5/s:10", "unknown source 'skype': use events, hubspot, salesforce, twilio"),
        ("=5/s:10", "unknown source ''"),
        ("twilio=5/s:10,twilio=off", "twilio is given twice"),
        ("twilio=5/s:10;hubspot=1/s:1", "is not source=rate/s:burst"),
    ],
)
def test_a_limit_that_cannot_be_read_is_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_limits(text)
    message = str(refused.value)
    assert says in message and "\n" not in message


def test_a_fingerprint_is_short_stable_and_not_the_secret() -> None:
    secret = "tw-token-0123456789"
    assert fingerprint(secret) == fingerprint(secret)
    assert fingerprint(secret) != fingerprint(secret + "x")
    assert len(fingerprint(secret)) == 16 and secret not in fingerprint(secret)
