"""The single-writer lease against the real Redis: lapses, take-overs, lost data."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.checkpointing.store import CheckpointStore, Fenced
from pipeline.checkpointing.trust import LeaseVanished
from pipeline.state.lease import Lease, LeaseLost
from pipeline.state.redis_client import connect
from tests.conftest import TEST_SECRET

pytestmark = pytest.mark.integration


@pytest.fixture
def client(backends: Any, pipeline_name: str) -> Any:
    client = connect(backends.redis)
    yield client
    CheckpointStore(client, pipeline_name, None).delete_all()
    client.close()


def test_a_lapsed_lease_is_taken_back_with_the_same_token(client: Any, pipeline_name: str) -> None:
    lease = Lease(client, pipeline_name, 60_000, owner="a")
    store = CheckpointStore(client, pipeline_name, TEST_SECRET.encode())
    assert lease.try_acquire()
    token = lease.token
    client.delete(lease.key)  # expired during a Redis outage or a long pause
    lease.renew()
    assert lease.token == token and lease.holder() == f"a {token}"
    # A checkpoint already on its way with that token is still accepted.
    assert store.save({"n": 1}, {}, token=token) is not None


def test_a_lapsed_lease_taken_by_another_writer_is_lost(client: Any, pipeline_name: str) -> None:
    first = Lease(client, pipeline_name, 60_000, owner="a")
    assert first.try_acquire()
    client.delete(first.key)
    second = Lease(client, pipeline_name, 60_000, owner="b")
    assert second.try_acquire()
    assert second.token is not None and first.token is not None and second.token > first.token
    with pytest.raises(LeaseLost, match="held by b"):
        first.renew()
    store = CheckpointStore(client, pipeline_name, TEST_SECRET.encode())
    with pytest.raises(Fenced):
        store.save({"stale": True}, {}, token=first.token)
    # Even once the second writer is gone, the first does not come back: the fence moved.
    second.release()
    with pytest.raises(LeaseLost):
        first.renew()


def test_a_redis_that_lost_everything_gets_the_lease_and_fence_back(
    client: Any, pipeline_name: str
) -> None:
    lease = Lease(client, pipeline_name, 60_000, owner="a")
    assert lease.try_acquire()
    assert lease.try_acquire()  # ours already: same owner, still one holder
    token = lease.token
    client.delete(lease.key, lease.fence_key, lease.counter_key)
    lease.renew()
    assert lease.token == token
    assert int(client.get(lease.fence_key)) == token
    # A newcomer draws a token above ours, never a reused one.
    lease.release()
    newcomer = Lease(client, pipeline_name, 60_000, owner="b")
    assert newcomer.try_acquire()
    assert newcomer.token is not None and token is not None and newcomer.token > token


def test_a_redis_that_forgot_never_hands_out_the_old_writers_token_again(
    client: Any, pipeline_name: str
) -> None:
    """Redis restarts empty and a standby acquires before the old writer renews (issue 18)."""
    old = Lease(client, pipeline_name, 60_000, owner="a")
    assert old.try_acquire()
    store = CheckpointStore(client, pipeline_name, TEST_SECRET.encode())
    store.save({"writer": "a"}, {}, token=old.token)
    store.delete_all()  # this pipeline's keys only: what an empty restart leaves of them
    standby = Lease(client, pipeline_name, 60_000, owner="b")
    assert standby.try_acquire()
    assert standby.token is not None and old.token is not None and standby.token > old.token
    # The old writer's checkpoint, still on its way, is refused: the successor's state stands.
    with pytest.raises(Fenced):
        store.save({"writer": "a"}, {}, token=old.token)
    assert store.latest_version() is None
    with pytest.raises(LeaseLost, match="held by b"):
        old.renew()
    version = store.save({"writer": "b"}, {}, token=standby.token)
    assert store.load(version).state == {"writer": "b"}


def test_a_write_whose_lease_vanished_waits_for_the_lease_to_be_taken_back(
    client: Any, pipeline_name: str
) -> None:
    """Nobody holds the lease after the data loss: the writer does not write until its renew
    has taken the lease back (with its token), so it never writes unfenced."""
    lease = Lease(client, pipeline_name, 60_000, owner="a")
    assert lease.try_acquire()
    store = CheckpointStore(client, pipeline_name, TEST_SECRET.encode())
    store.delete_all()
    with pytest.raises(LeaseVanished):
        store.save({"n": 1}, {}, token=lease.token)
    assert store.latest_version() is None
    lease.renew()
    assert store.save({"n": 1}, {}, token=lease.token) is not None
