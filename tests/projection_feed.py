"""Feed events straight to a Projector on a store, as the worker's loop would: split
over partitions by subject (Kafka's default partitioner), directory first, then in random
batches, with the lead facts the projector publishes fed back on a second "topic"
partitioned by lead."""

from __future__ import annotations

import random
from collections.abc import Sequence

from projections.contributions import Rules
from projections.engine import DirectoryView
from projections.events import Event, RepUpserted, TeamUpserted
from projections.facts import LeadFact
from projections.store import RedisClient
from projections.stores import ProjectionStore
from streams.projector import DeadLetter, Positioned, Projector
from tests.oracle import kafka_partition

TOPIC = "events"


async def drop(client: RedisClient, namespace: str) -> None:
    async for key in client.scan_iter(match=f"{{{namespace}:*", count=1000):
        await client.delete(key)


async def project(
    store: ProjectionStore,
    events: list[Event],
    partitions: int,
    rng: random.Random,
    *,
    rules: Rules,
    end_ms: int,
    dead_letter: DeadLetter | None = None,
    directory: DirectoryView | None = None,
    batch: int | None = None,
    projector_type: type[Projector] = Projector,
) -> tuple[ProjectionStore, list[list[Positioned]]]:
    """Project ``events`` in the given order (the directory's first), in batches of 0 to
    400 records of each partition (or exactly ``batch``); returns the store and each
    partition's records of the events topic as they were delivered."""
    facts: list[list[Positioned]] = [[] for _ in range(partitions)]
    fact_offsets = [0] * partitions

    async def publish(new: Sequence[LeadFact]) -> None:
        for fact in new:
            p = kafka_partition(fact.lead_id, partitions)
            facts[p].append(Positioned("facts", p, fact_offsets[p], fact))
            fact_offsets[p] += 1

    # The projector's "now" is the log's end: which minute and hour buckets it keeps.
    projector = projector_type(
        store,
        directory or DirectoryView({}, rules),
        rules,
        publish,
        clock=lambda: end_ms,
        dead_letter=dead_letter,
    )
    first = [e for e in events if isinstance(e, RepUpserted | TeamUpserted)]
    rest = [e for e in events if not isinstance(e, RepUpserted | TeamUpserted)]
    queues: list[list[Positioned]] = [[] for _ in range(partitions)]
    for event in first + rest:
        p = kafka_partition(event.subject_id, partitions)
        queues[p].append(Positioned(TOPIC, p, len(queues[p]), event))
    delivered = [list(queue) for queue in queues]
    await projector.apply([i for queue in queues for i in queue if i.item in first])
    queues = [[i for i in queue if i.item not in first] for queue in queues]
    while any(queues) or any(facts):
        taken: list[Positioned] = []
        for pending in (*queues, *facts):
            take = rng.randint(0, 400) if batch is None else batch
            taken += pending[:take]
            del pending[:take]
        taken.sort(key=lambda i: (i.partition, i.topic, i.offset))
        await projector.apply(taken)
    return store, delivered
