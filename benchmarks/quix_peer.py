"""The Quix Streams peer of issue 22 (not a test, not a dependency of riverline).

    pip install -r benchmarks/requirements-peer.txt
    python benchmarks/quix_peer.py --bootstrap HOST:PORT --events E --labels L \
        --predictions P --group G [--guarantee at-least-once|exactly-once]

The job riverline does, written the way a Quix Streams user would write it: the events and the
labels topics (keyed by id, as ``riverline replay`` publishes them) concatenated into one
dataframe, which Quix aligns by record timestamp; each event's features kept in the key's
RocksDB state until its label comes; River's ``StandardScaler | LogisticRegression`` predicts
every event (one prediction, JSON, to the predictions topic) and learns from every label.

What it does not do, and riverline does: a fallback until the model earns trust, gating,
three-way evaluation, validation with dead letters, a model guard, checkpoints of the learning
state (Quix's state is per key; the model here is lost on a restart). Quix's state changelog
topics and its commits every ``commit_interval`` (5 s) stay on: they are what its state costs.

Runs until stopped (SIGTERM or SIGINT); ``benchmarks/peer.py`` times it from outside.
"""

from __future__ import annotations

import argparse
from typing import Any

from quixstreams import Application, State
from river import linear_model, preprocessing


def build(args: argparse.Namespace) -> Application:
    """The application: two topics in, predictions out, features in per-key state."""
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee=args.guarantee,
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    events = app.topic(args.events, key_deserializer="str", value_deserializer="json")
    labels = app.topic(args.labels, key_deserializer="str", value_deserializer="json")
    predictions = app.topic(args.predictions, key_serializer="str", value_serializer="json")
    for topic in (events, labels):
        # Tansu describes no retention.ms, which Quix reads to size the changelog topic.
        topic.broker_config.extra_config.setdefault("retention.ms", "-1")
    model: Any = preprocessing.StandardScaler() | linear_model.LogisticRegression()

    def step(value: dict[str, Any], state: State) -> dict[str, Any] | None:
        if "features" in value:  # an event: keep its features, predict
            x = value["features"]
            state.set("x", x)
            proba = model.predict_proba_one(x)
            p = proba.get(True, 0.0)
            return {"id": value["id"], "ts": value["ts"], "prediction": p >= 0.5, "proba": p}
        x = state.get("x")  # a label: learn from the event's features, forget them
        if x is not None:
            model.learn_one(x, value["label"])
            state.delete("x")
        return None

    sdf = app.dataframe(events).concat(app.dataframe(labels))
    sdf = sdf.apply(step, stateful=True).filter(lambda v: v is not None)
    sdf.to_topic(predictions)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--predictions", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", default=None)
    parser.add_argument(
        "--guarantee", choices=("at-least-once", "exactly-once"), default="at-least-once"
    )
    build(parser.parse_args(argv)).run()


if __name__ == "__main__":
    main()
