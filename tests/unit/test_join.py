import pickle

from pipeline.join import DUPLICATE, JoinBuffer, Pending
from pipeline.schemas import Label


def pending(i: str, ts: float = 0.0) -> Pending:
    return Pending(i, ts, {"x": 1.0}, model=None, fallback=None, served=None)


def test_label_after_event_joins_once() -> None:
    buf = JoinBuffer(ttl_events=10)
    assert buf.add_event(pending("a"), 1) == (None, [])
    found = buf.match("a")
    assert isinstance(found, Pending) and found.id == "a"
    assert buf.match("a") is DUPLICATE
    assert len(buf) == 0


def test_label_before_event_waits_for_it() -> None:
    buf = JoinBuffer(ttl_events=10)
    label = Label(id="a", ts=1.0, label=True)
    assert buf.match("a") is None
    buf.park_label(label, 0, origin=("labels", 0, 7))
    assert buf.match("a") is DUPLICATE  # a second copy while the first waits
    parked, evicted = buf.add_event(pending("a"), 1)
    assert (
        evicted == []
        and parked is not None
        and parked.label == label
        and parked.origin == ("labels", 0, 7)
    )


def test_expiry_by_event_count() -> None:
    buf = JoinBuffer(ttl_events=2)
    for n, i in enumerate("abcd", start=1):
        buf.add_event(pending(i), n)
    expired, orphans = buf.expire(now_ts=0.0, now_number=4)
    assert [p.id for p in expired] == ["a"]  # 'a' has 3 events after it, 'b' only 2
    assert orphans == []
    assert list(buf.pending) == ["b", "c", "d"]


def test_expiry_by_event_time_for_events_and_parked_labels() -> None:
    buf = JoinBuffer(ttl_events=None, ttl_seconds=10.0)
    buf.add_event(pending("a", ts=0.0), 1)
    buf.add_event(pending("b", ts=5.0), 2)
    buf.park_label(Label(id="z", ts=1.0, label=False), 2)
    expired, orphans = buf.expire(now_ts=11.5, now_number=2)
    assert [p.id for p in expired] == ["a"]
    assert [o.label.id for o in orphans] == ["z"]
    expired, _ = buf.expire(now_ts=15.0, now_number=2)
    assert expired == []  # exactly at the TTL: still waiting


def test_joined_ids_are_forgotten_after_the_ttl() -> None:
    buf = JoinBuffer(ttl_events=1)
    buf.add_event(pending("a"), 1)
    buf.match("a")
    buf.add_event(pending("b"), 2)
    buf.add_event(pending("c"), 3)
    buf.expire(0.0, 3)
    assert buf.match("a") is None  # memory stays bounded: an old id is unknown again


def test_capacity_bound_for_events_and_parked_labels() -> None:
    buf = JoinBuffer(ttl_events=None, max_pending=2)
    evicted = [buf.add_event(pending(i), n)[1] for n, i in enumerate("abc", start=1)]
    assert [[p.id for p in e] for e in evicted] == [[], [], ["a"]]
    dropped = [buf.park_label(Label(id=i, ts=0.0, label=1), 0, origin=i) for i in "xyz"]
    assert [[p.origin for p in d] for d in dropped] == [[], [], ["x"]]
    assert len(buf.pending) == 2 and len(buf.parked) == 2


def test_with_the_default_settings_unlabelled_events_expire_rather_than_being_evicted() -> None:
    from pipeline.config import JoinConfig

    defaults = JoinConfig()
    buf = JoinBuffer(defaults.ttl_events, defaults.ttl_seconds, defaults.max_pending)
    evicted = expired = 0
    for n in range(1, 150_001):
        evicted += len(buf.add(str(n), 0.0, {}, None, None, None, {}, n)[1])
        if n >= buf.horizon:
            expired += len(buf.expire(0.0, n)[0])
    assert evicted == 0
    assert expired == 50_000
    assert len(buf) == defaults.max_pending


def test_pending_bytes_are_counted_and_bound_the_buffer() -> None:
    buf = JoinBuffer(ttl_events=None, max_pending=100, max_pending_bytes=1000)
    evicted = [buf.add(str(n), 0.0, {}, None, None, None, {}, n, None, 300)[1] for n in range(1, 5)]
    assert [[p.id for p in e] for e in evicted] == [[], [], [], ["1"]]  # 1200 > 1000
    assert buf.pending_bytes == 900
    buf.match("3")
    assert buf.pending_bytes == 600
    # A single event larger than the budget stays (the newest is never evicted): the rest go.
    evicted = buf.add("big", 0.0, {}, None, None, None, {}, 5, None, 5000)[1]
    assert [p.id for p in evicted] == ["2", "4"] and list(buf.pending) == ["big"]
    assert buf.pending_bytes == 5000
    # Parked labels have a budget of their own, the same size.
    for i in range(4):
        buf.park_label(Label(id=f"l{i}", ts=0.0, label=True), 5, origin=i, size=400)
    assert list(buf.parked) == ["l2", "l3"] and buf.parked_bytes == 800
    # Through a checkpoint, and expiry.
    buf = pickle.loads(pickle.dumps(buf))
    assert buf.pending_bytes == 5000 and buf.parked_bytes == 800
    buf.ttl_events = 1
    buf.expire(0.0, 100)
    assert buf.pending_bytes == 0 and buf.parked_bytes == 0


def test_a_buffer_from_an_old_checkpoint_counts_its_bytes() -> None:
    buf = JoinBuffer(ttl_events=None, max_pending=100)
    buf.add("a", 0.0, {"x": "y" * 1000}, None, None, None, {}, 1, None, 0)
    state = buf.__getstate__()
    for name in ("pending_bytes", "parked_bytes", "max_pending_bytes"):
        state.pop(name)
    for p in state["pending"].values():
        object.__delattr__(p, "size")  # as a Pending pickled before sizes existed
    old = JoinBuffer.__new__(JoinBuffer)
    old.__setstate__(state)
    assert old.max_pending_bytes is None
    assert old.pending_bytes >= 1000 and old.pending["a"].size == old.pending_bytes
