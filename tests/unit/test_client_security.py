"""Every Kafka and Redis client a salespulse process makes carries the security settings.

Read from the source, so that a client added later without them (or with them twice, a
TypeError only under TLS) fails here rather than in a deployment with SASL_SSL.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# What users run: the processes, the stack, and the benchmarks (run against any stack).
RUNTIME = ["streams", "exporters", "stack", "adapters", "projections", "simulator", "benchmarks"]
KAFKA_CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "create_conn"}
# The only places a Redis client may be made from a URL: they take the security options.
REDIS_FACTORIES = {
    "projections/store.py",  # connect(url, retries, **options)
    "config/connections.py",  # redis_client, redis_sync_client
    "benchmarks/scale.py",  # each node of a local stack, with redis_options
}
# The clustered local stack checks its nodes one by one with plain clients: settings refuse
# a secure cluster stack (a secured cluster is reached with the Kafka and Redis settings).
PLAIN_ONLY = {"stack/cluster.py"}


# The naive Faust agent is the baseline the throughput benchmark compares with: a plain agent
# as its documentation shows one, on the plain local stack only.
BASELINES = {"benchmarks/naive_agent.py"}


# Test helpers the benchmarks use too (benchmarks/freshness.py reads topics with it).
SHARED_HELPERS = ["tests/kafka_reader.py"]


def _calls() -> list[tuple[str, ast.Call]]:
    found = []
    paths = [p for folder in RUNTIME for p in sorted((ROOT / folder).rglob("*.py"))]
    for path in paths + [ROOT / helper for helper in SHARED_HELPERS]:
        name = str(path.relative_to(ROOT))
        if name in BASELINES:
            continue
        tree = ast.parse(path.read_text(), name)
        found += [(name, node) for node in ast.walk(tree) if isinstance(node, ast.Call)]
    return found


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _spread(call: ast.Call, function: str) -> int:
    """How many ``**function(...)`` arguments the call has."""
    return sum(
        1
        for keyword in call.keywords
        if keyword.arg is None
        and isinstance(keyword.value, ast.Call)
        and _name(keyword.value.func) == function
    )


def test_every_kafka_client_takes_the_security_options_once() -> None:
    clients = [(path, call) for path, call in _calls() if _name(call.func) in KAFKA_CLIENTS]
    assert len(clients) >= 15, "the scan found the clients"
    wrong = [
        f"{path}:{call.lineno} {_name(call.func)}"
        for path, call in clients
        if _spread(call, "kafka_options") != 1 and path not in PLAIN_ONLY
    ]
    assert not wrong, f"without **kafka_options(settings) exactly once: {wrong}"


def test_redis_clients_are_made_only_where_the_security_options_are_applied() -> None:
    made = [
        f"{path}:{call.lineno}"
        for path, call in _calls()
        if _name(call.func) == "from_url"
        or (
            isinstance(call.func, ast.Attribute)
            and call.func.attr in {"Redis", "StrictRedis", "RedisCluster"}
        )
        or (isinstance(call.func, ast.Name) and call.func.id == "RedisCluster")
    ]
    outside = [where for where in made if where.split(":")[0] not in REDIS_FACTORIES | PLAIN_ONLY]
    assert not outside, f"Redis clients made without redis_options: {outside}"


def test_the_faust_app_takes_the_credentials() -> None:
    apps = [call for path, call in _calls() if _name(call.func) == "App" and "streams/" in path]
    assert apps and all(any(k.arg == "broker_credentials" for k in call.keywords) for call in apps)
