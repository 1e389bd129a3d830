"""How a log line says an exception: its class and message, whatever the class's repr."""

from __future__ import annotations

import pytest
from redis.exceptions import ClusterError, TryAgainError

from projections.errors import described

pytestmark = pytest.mark.unit


def test_a_redis_error_keeps_its_message() -> None:
    exc = ClusterError("TTL exhausted.")
    assert "TTL exhausted" not in repr(exc)  # why %r is not used: redis-py 8 drops it
    assert described(exc) == "ClusterError: TTL exhausted."
    assert described(TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot")) == (
        "TryAgainError: TRYAGAIN Multiple keys request during rehashing of slot"
    )


def test_an_error_without_a_message_is_its_class() -> None:
    assert described(TimeoutError()) == "TimeoutError"
    assert described(ValueError("bad value")) == "ValueError: bad value"
