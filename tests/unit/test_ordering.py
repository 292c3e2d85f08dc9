import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ordering import Item, OrderedMerge


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def items(partition: str, keys: list[tuple[float, int, int]]) -> list[Item]:
    return [Item(k, partition, off, k) for off, k in enumerate(keys)]


def test_waits_for_a_caught_up_partition_until_idle() -> None:
    clock = Clock()
    merge = OrderedMerge(100, clock)
    merge.assign(["a", "b"])
    merge.set_lag("b", 0)
    merge.push("a", items("a", [(1.0, 1, 0)]))
    assert merge.pop() is None
    clock.now = 0.099
    assert merge.pop() is None
    clock.now = 0.1
    item = merge.pop()
    assert item is not None and item.key == (1.0, 1, 0)


@pytest.mark.parametrize("lag", [None, 5])
def test_partition_with_data_at_the_broker_is_waited_for(lag: int | None) -> None:
    clock = Clock()
    merge = OrderedMerge(100, clock, stall_ms=60_000)
    merge.assign(["a", "b"])
    merge.set_lag("b", lag)
    merge.push("a", items("a", [(1.0, 1, 0)]))
    clock.now = 59.9  # far beyond max_idle_ms: still waiting, the records exist
    assert merge.pop() is None
    clock.now = 60.0  # the stall valve
    assert merge.pop() is not None


def test_labels_before_events_at_equal_time_then_seq() -> None:
    merge = OrderedMerge(0, Clock())
    merge.assign(["events", "labels"])
    merge.set_lag("events", 0)
    merge.set_lag("labels", 0)
    merge.push("events", items("events", [(5.0, 1, 3), (6.0, 1, 5)]))
    merge.push("labels", items("labels", [(5.0, 0, 2), (5.0, 0, 4)]))
    order = []
    while (item := merge.pop()) is not None:
        order.append(item.key)
    assert order == [(5.0, 0, 2), (5.0, 0, 4), (5.0, 1, 3), (6.0, 1, 5)]


def test_revoke_forgets_buffered_records() -> None:
    merge = OrderedMerge(0, Clock())
    merge.assign(["a", "b"])
    merge.set_lag("a", 0)
    merge.push("a", items("a", [(1.0, 1, 0)]))
    merge.push("b", items("b", [(0.5, 1, 1)]))
    merge.revoke(["b"])
    assert len(merge) == 1
    item = merge.pop()
    assert item is not None and item.partition == "a"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 1)), min_size=1, max_size=60),
    st.integers(1, 4),
    st.integers(0, 2**32 - 1),
)
def test_any_batching_gives_the_sorted_order(
    stamps: list[tuple[int, int]], n_partitions: int, seed: int
) -> None:
    """However records are split into partitions and batches, the output is the global order."""
    rng = random.Random(seed)
    records = sorted((float(ts), kind, seq) for seq, (ts, kind) in enumerate(stamps))
    partitions: dict[int, list[tuple[float, int, int]]] = {p: [] for p in range(n_partitions)}
    for key in records:  # keep each partition in order, as the producer writes them
        partitions[rng.randrange(n_partitions)].append(key)
    merge = OrderedMerge(0, Clock())  # no idle wait: only the lag rule keeps the order
    merge.assign(list(partitions))
    cursors = dict.fromkeys(partitions, 0)
    out: list[tuple[float, int, int]] = []
    while any(cursors[p] < len(partitions[p]) for p in partitions) or len(merge):
        # Fetch a random-sized batch from a random partition, as a broker might.
        p = rng.choice(list(partitions))
        batch = partitions[p][cursors[p] : cursors[p] + rng.randint(0, 3)]
        cursors[p] += len(batch)
        merge.push(p, [Item(k, p, 0, k) for k in batch])
        for q in partitions:
            merge.set_lag(q, len(partitions[q]) - cursors[q])
        while (item := merge.pop()) is not None:
            out.append(item.key)
    assert out == records


@pytest.mark.parametrize("lag", [None, 0, 5])
def test_a_never_wait_partition_never_holds_the_merge(lag: int | None) -> None:
    """A learner's predictions partitions: joined by id, so never waited for."""
    clock = Clock()
    merge = OrderedMerge(100, clock, never_wait=lambda p: p == "predictions")
    merge.assign(["events", "predictions"])
    merge.set_lag("predictions", lag)
    merge.set_lag("events", 0)
    merge.push("events", items("events", [(1.0, 1, 0), (2.0, 1, 1)]))
    first = merge.pop()
    assert first is not None and first.key == (1.0, 1, 0)
    # Once it holds records they are still merged in order with the others.
    merge.push("predictions", items("predictions", [(1.5, 2, 0)]))
    second, third = merge.pop(), merge.pop()
    assert second is not None and second.partition == "predictions"
    assert third is not None and third.key == (2.0, 1, 1)
    # The events partition, emptied, is waited for as before.
    merge.push("predictions", items("predictions", [(3.0, 2, 1)]))
    assert merge.pop() is None
    clock.now = 0.1
    assert merge.pop() is not None
