"""The core's fourth-pass fast paths keep the shapes checkpoints and callers rely on."""

from __future__ import annotations

import copy
import pickle
from collections import Counter, OrderedDict, deque
from typing import Any

from river import metrics

from pipeline.core import LearningCore, Tally
from pipeline.evaluation import Evaluator, Windowed
from pipeline.join import JoinBuffer
from pipeline.schemas import Event, Label


def test_joined_ids_pickle_as_the_ordered_dict_checkpoints_have() -> None:
    buf = JoinBuffer(ttl_events=10)
    for n in range(1, 6):
        buf.add(str(n), float(n), {}, None, None, None, {}, n)
    for event_id in ("4", "2"):
        buf.match(event_id)
    state = pickle.loads(pickle.dumps(buf.__getstate__()))
    assert type(state["joined"]) is OrderedDict
    assert list(state["joined"].items()) == [("4", (4.0, 4)), ("2", (2.0, 2))]
    for restored in (pickle.loads(pickle.dumps(buf)), copy.copy(buf), copy.deepcopy(buf)):
        assert list(restored.joined) == ["4", "2"]
        assert restored._joined_order == deque(["4", "2"])
        # Joined ids leave from the front, in the order their labels came: "4" holds "2" back.
        expired, _ = restored.expire(0.0, 14)
        assert [p.id for p in expired] == ["1", "3"]
        assert list(restored.joined) == ["4", "2"]
        restored.expire(0.0, 15)
        assert not restored.joined and not restored._joined_order


def test_tally_counts_like_a_counter_and_pickles_as_one() -> None:
    tally = Tally()
    for source in ("model", "default", "model"):
        tally[source] += 1
    assert tally == Counter({"model": 2, "default": 1})
    restored = pickle.loads(pickle.dumps(tally))
    assert type(restored) is Counter and restored == tally


def test_a_restored_core_counts_into_tallies() -> None:
    from pipeline.config import load_config

    config = load_config(None, {"name": "t", "fallback": {"default": False}}, environ={})
    core = LearningCore.from_config(config)
    core.on_event(Event(id="1", ts=0.0, features={"x": 1.0}))
    core.on_label(Label(id="1", ts=1.0, label=True))
    state = pickle.loads(pickle.dumps(core.state))
    assert type(state.served_by) is Counter  # the checkpoint's shape
    resumed = LearningCore.from_config(config, state)
    assert type(resumed.state.served_by) is Tally
    assert resumed.state.served_by == core.state.served_by


def test_paired_windows_read_and_pickle_as_two_windows() -> None:
    ev = Evaluator("Accuracy", (), window=3)
    reference = (Windowed(metrics.Accuracy(), 3), Windowed(metrics.Accuracy(), 3))
    rows: list[tuple[Any, Any, Any]] = [
        (True, {True: 0.9, False: 0.1}, False),
        (False, {True: 0.2, False: 0.8}, False),
        (True, {True: 0.4, False: 0.6}, True),
        (False, {True: 0.7, False: 0.3}, False),
    ]
    for y, model, fallback in rows:
        ev.score(y, model, fallback, fallback)
        reference[0].update(y, max(model, key=model.__getitem__))
        reference[1].update(y, fallback)
        want = (reference[0].get(), reference[1].get(), len(reference[0]))
        assert ev.windowed_values() == want
    assert ev._paired is not None
    restored = pickle.loads(pickle.dumps(ev))
    for window, want in zip(
        (restored.window_model, restored.window_fallback), reference, strict=True
    ):
        assert list(window.pairs) == list(want.pairs)
        assert window.metric.get() == want.metric.get()
    assert ev.windowed() == restored.windowed()


def test_two_class_serving_reads_as_the_loop_over_the_classes() -> None:
    """Server.serve's inlined two-class argmax and its cached JSON keys give what River's
    argmax and a key worked out per class give: the first most likely class, its probability
    as a float, every class's key and float in the model's order, colliding keys included, and
    keys cached by equality (1 finds True's), the first event of a pair of classes too."""
    import math

    import numpy as np

    from pipeline.config import GatingConfig
    from pipeline.fallback import Answer
    from pipeline.gating import Gating
    from pipeline.schemas import encode_fields, proba_key
    from pipeline.serving.serve import Server

    answers: list[dict[Any, Any]] = [
        {False: 0.3, True: 0.7},
        {True: 0.5, False: 0.5},
        {0: 0.9, 1: 0.1},
        {"1": 0.4, 1: 0.6},  # two classes, one JSON key
        {"a": np.float64(0.2), "b": np.float64(0.8)},
        {"a": 1, "b": 0},
        {"a": math.nan, "b": 0.5},
        {"a": 0.5, "b": math.nan},
        {"x": 0.2, "y": 0.3, "z": 0.5},
    ]
    gate = Gating(GatingConfig(confidence_threshold=0.0), bigger_is_better=True)
    gate.mode = "serving"
    server = Server(classifier=True, explain_top_k=None, pipeline="p")
    keys: dict[Any, str] = {}  # the server's cache of keys, by equality (True is 1)
    for _ in range(2):  # the keys unknown, then cached
        for answer in answers:
            fields, kept = server.serve(
                "1", 5.0, {"x": 1.0}, answer, Answer(0, "default", None), gate, None, 3
            )
            assert kept is answer and type(fields) is dict
            hard = max(answer, key=answer.__getitem__)
            if not answer[hard] >= 0.0:  # NaN: not confident enough to serve
                assert fields["source"] == "default"
                continue
            proba = {keys.setdefault(k, proba_key(k)): float(v) for k, v in answer.items()}
            assert fields["prediction"] is hard
            assert repr(fields["confidence"]) == repr(float(answer[hard]))
            assert type(fields["confidence"]) is float
            assert repr(fields["proba"]) == repr(proba)
            assert all(type(v) is float for v in fields["proba"].values())
            assert encode_fields(fields) == encode_fields({**fields, "proba": proba})
