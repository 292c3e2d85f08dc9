"""A checkpoint written by the code before the lean core (main at 8f073b8) restores, and the
run goes on to the same report, predictions, dead letters and decisions as it did there.

The fixture holds the core's state after the first half of a stream, pickled by that code, and
what that code produced over the second half. To write it again (from a checkout of the code
that should write it; River's pickles are only as stable as River):

    python tests/unit/test_checkpoint_compat.py tests/unit/data/core_state_8f073b8.pickle
"""

from __future__ import annotations

import hashlib
import itertools
import pickle
import sys
from pathlib import Path
from typing import Any

from river import datasets

from pipeline.config import RiverlineConfig, load_config
from pipeline.core import LearningCore
from pipeline.schemas import Event, Label

FIXTURE = Path(__file__).parent / "data" / "core_state_8f073b8.pickle"
EVENTS = 1200
HALF = 1100  # records (events and labels) before the checkpoint


def config() -> RiverlineConfig:
    return load_config(
        None,
        {
            "name": "compat",
            "model": {"spec": "preprocessing.StandardScaler | linear_model.LogisticRegression"},
            "fallback": {"default": False},
            "gating": {"min_labels": 50, "window": 100},
            "join": {"ttl_events": 200, "max_pending": 400},
        },
        environ={},
    )


def stream() -> list[Event | Label]:
    """Bananas' features with labels 50 events late, the concept changed after 700 events;
    some labels never come (their events expire), some come twice (duplicates), some before
    their event (parked), some for events that never come (orphans); some events twice."""
    rows = list(itertools.islice(datasets.Bananas(), EVENTS))
    out: list[Event | Label] = []
    due: dict[int, list[Label]] = {}
    for i, (x, y) in enumerate(rows):
        learnable = x["1"] > 0.3  # a linear concept (Bananas' own is not): drift shows
        label = Label(id=str(i), ts=float(i) + 0.5, label=learnable if i < 700 else not y)
        if i % 170 == 11:
            out.append(Label(id=f"ghost{i}", ts=float(i), label=True))
        if i % 230 == 13:
            out.append(Event(id=str(i - 1), ts=float(i), features=dict(x)))
        if i % 150 == 7:
            out.append(label)  # before its event
        elif i % 40 != 3:
            due.setdefault(i + 50, []).append(label)
            if i % 97 == 5:
                due.setdefault(i + 60, []).append(label)  # again, later
        out.append(Event(id=str(i), ts=float(i), features=dict(x)))
        out.extend(due.pop(i, []))
    return out


def play(core: LearningCore, items: list[Event | Label]) -> dict[str, Any]:
    """Everything the core handed out, as comparable values."""
    digest = hashlib.sha256()
    seen: list[Any] = []
    for item in items:
        if isinstance(item, Event):
            outcome = core.on_event(item, origin=("e", item.id))
            digest.update(outcome.prediction_json() or b"-")
        else:
            outcome = core.on_label(item, origin=("l", item.id))
        seen.append(
            (
                outcome.status,
                outcome.learned,
                [(r.reason, r.message, r.origin) for r in outcome.rejections],
                [d.as_dict() for d in outcome.decisions],
                [p.id for p in outcome.expired],
            )
        )
    digest.update(repr(seen).encode())
    return {"outputs": digest.hexdigest(), "report": core.report()}


def write(path: Path) -> None:
    items = stream()
    core = LearningCore.from_config(config())
    play(core, items[:HALF])
    state = pickle.dumps(core.state, protocol=pickle.HIGHEST_PROTOCOL)
    expected = play(core, items[HALF:])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"state": state, **expected}))


def test_a_checkpoint_from_before_resumes_to_the_same_run() -> None:
    fixture = pickle.loads(FIXTURE.read_bytes())
    state = pickle.loads(fixture["state"])
    core = LearningCore.from_config(config(), state)
    items = stream()[HALF:]
    assert as_before(play(core, items)) == {
        "outputs": fixture["outputs"],
        "report": fixture["report"],
    }
    # And from a checkpoint of the restored state, written by this code.
    again = pickle.loads(fixture["state"])
    core = LearningCore.from_config(config(), pickle.loads(pickle.dumps(again)))
    assert as_before(play(core, items))["report"] == fixture["report"]


# Report fields added since the fixture was written, with the value the old run has for them.
ADDED = {"model_rollbacks": 0}
# Fields added inside a section (section, key): new numbers, not a different run.
ADDED_SINCE = {("review", "answers_after_truth")}


def as_before(played: dict[str, Any]) -> dict[str, Any]:
    report = {k: dict(v) if isinstance(v, dict) else v for k, v in played["report"].items()}
    for name, value in ADDED.items():
        assert report.pop(name) == value, name
    for section, key in ADDED_SINCE:
        report[section].pop(key, None)
    return {**played, "report": report}


def test_the_stream_exercises_every_path() -> None:
    core = LearningCore.from_config(config())
    report = play(core, stream())["report"]
    assert report["expired_unlabelled"] > 0
    assert report["duplicate_labels"] > 0
    assert report["promotions"] and report["demotions"]
    assert report["drift"]
    assert set(report["dead_letters"]) == {"duplicate_event", "label_orphaned"}
    assert report["predictions_by_source"]["model"] > 0


if __name__ == "__main__":
    write(Path(sys.argv[1]))
