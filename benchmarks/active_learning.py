"""Active learning on a stream: how many labels people must give, and what the model ends at.

``python benchmarks/active_learning.py [--accuracy 1.0] [--delay 10] [--json out.json]``

Labels come only from a simulated reviewer (``producers/reviewer.py``): it answers each review
request ``--delay`` seconds of event time later, right with probability ``--accuracy``. No
ground-truth stream. The runs go in-process through riverline's learning core (the same code
the consumer runs), one per policy:

- ``every label``: the reviewer answers every event (what learning from every label costs);
- ``unserved``: every event the model does not serve (all of them until it is promoted);
- ``uncertain``: no model opinion or confidence below ``confidence_below``;
- ``entropy``: River's ``active.EntropySampler`` (seeded), at several discount factors.

The model is scored on **every** event of the stream, asked before the event is processed,
against the true label (prequential over the whole stream, not only the labelled events, which
the policies choose and would bias). Not a test: figures go in docs/tutorials/people-in-the-loop.md.
"""

from __future__ import annotations

import argparse
import heapq
import json
import time
from typing import Any

from river import metrics

from pipeline.config import load_config
from pipeline.core import LearningCore
from pipeline.schemas import Event, Label, ReviewRequest
from producers.reviewer import ReviewerSpec, SimulatedAnswers
from producers.sources import open_source

DATASETS = {
    "Phishing": ("preprocessing.StandardScaler | linear_model.LogisticRegression", False),
    "Bananas": ("neighbors.KNNClassifier(n_neighbors=7)", False),
    "ImageSegments": (
        "preprocessing.StandardScaler | multiclass.OneVsRestClassifier("
        "linear_model.LogisticRegression())",
        "sky",
    ),
}


def run(
    dataset: str,
    policy: str,
    accuracy: float,
    delay: float,
    discount: float = 3.0,
    seed: int = 1,
    steered: bool = False,
) -> dict[str, Any]:
    """One run; ``steered``: entropy with its default target share, else a fixed factor."""
    spec, default = DATASETS[dataset]
    review: dict[str, Any] = {"deadline_seconds": None, "max_pending": 1_000_000}
    if policy != "every label":
        review.update(policy=policy, discount_factor=discount, seed=42)
    config = load_config(
        None,
        {
            "name": "bench-al",
            "model": {"spec": spec},
            "evaluation": {"metric": "Accuracy"},
            "fallback": {"default": default},
            "review": review,
        },
        environ={},
    )
    if not steered:
        fixed = config.review.model_copy(update={"target_share": None})
        config = config.model_copy(update={"review": fixed})
    core = LearningCore.from_config(config)
    rows = list(open_source(f"river:{dataset}"))
    truth = {r.id: r.label for r in rows}
    answers = SimulatedAnswers(ReviewerSpec(accuracy, delay, seed), truth)
    due: list[tuple[float, int, Label]] = []
    accuracy_all, rocauc_all, accuracy_tail = (
        metrics.Accuracy(),
        metrics.ROCAUC(),
        metrics.Accuracy(),
    )
    tail_from = (
        int(len_rows * 0.8) if (len_rows := len(list(open_source(f"river:{dataset}")))) else 0
    )
    asked = 0
    started = time.perf_counter()
    for n, r in enumerate(rows):
        while due and due[0][0] <= r.ts:
            core.on_label(heapq.heappop(due)[2])
        x = {k: v for k, v in r.features.items() if v is not None}
        proba = core.state.model.predict_proba_one(x)  # type: ignore[attr-defined]
        hard = max(proba, key=proba.__getitem__) if proba else default
        accuracy_all.update(r.label, hard)
        if n >= tail_from:
            accuracy_tail.update(r.label, hard)
        if proba and isinstance(r.label, bool):
            rocauc_all.update(r.label, proba)
        outcome = core.on_event(Event(id=r.id, ts=r.ts, features=r.features))
        requests = [o.record for o in outcome.review if isinstance(o.record, ReviewRequest)]
        if policy == "every label":
            requests = [
                ReviewRequest(
                    id=r.id,
                    pipeline="bench",
                    ts=r.ts,
                    features=r.features,
                    task="classification",
                    mode="label",
                    requested_at=r.ts,
                )
            ]
        for request in requests:
            label = answers.answer(request)
            if label is not None:
                asked += 1
                heapq.heappush(due, (label.ts, n, label))
    while due:
        core.on_label(heapq.heappop(due)[2])
    report = core.report()
    return {
        "dataset": dataset,
        "policy": policy
        if policy != "entropy"
        else f"entropy (target share {config.review.target_share:g}, default)"
        if steered
        else f"entropy (discount {discount:g})",
        "events": len(rows),
        "labels": report["labels"],
        "label_share": report["labels"] / len(rows),
        "accuracy": accuracy_all.get(),
        "rocauc": rocauc_all.get(),
        "accuracy_last_20pct": accuracy_tail.get(),
        "promoted_at": report["promotions"][0]["label_index"] if report["promotions"] else None,
        "seconds": round(time.perf_counter() - started, 2),
        "asked": asked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accuracy", type=float, default=1.0)
    parser.add_argument("--delay", type=float, default=10.0, help="event seconds to answer")
    parser.add_argument("--discounts", default="1,3,6,8", help="EntropySampler discount factors")
    parser.add_argument("--datasets", default="Phishing,Bananas")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = []
    for dataset in args.datasets.split(","):
        runs = [("every label", 0.0), ("unserved", 0.0), ("uncertain", 0.0)]
        runs += [("entropy", float(d)) for d in args.discounts.split(",")]
        runs += [("entropy", -1.0)]  # the default: steered to its target share
        for policy, discount in runs:
            steered = discount < 0
            result = run(
                dataset,
                policy,
                args.accuracy,
                args.delay,
                3.0 if steered else discount or 3.0,
                steered=steered,
            )
            results.append(result)
            print(
                f"{dataset:9} {result['policy']:24} labels {result['labels']:5d} "
                f"({result['label_share']:6.1%})  accuracy {result['accuracy']:.4f}  "
                f"last 20% {result['accuracy_last_20pct']:.4f}  ROCAUC {result['rocauc']:.4f}  "
                f"promoted at {result['promoted_at']}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
