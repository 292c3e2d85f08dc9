"""The predictor's core: events in, served predictions out, with a published model version.

No learning, no join, no I/O: a predictor serves each event with the newest
:class:`~pipeline.serving.snapshot.ServingSnapshot` it was handed (:meth:`ServingCore.swap`,
between records) through the same serving rule as the learner
(:class:`pipeline.serving.serve.Server`), so with the same model and gating state both publish
the same bytes. Without a snapshot it serves the fallback chain, as an untrained learner does.

Duplicate event ids are not detected here (a predictor keeps no join buffer): delivery is at
least once, and downstream deduplicates by id.

>>> from pipeline.config import load_config
>>> from pipeline.schemas import Event
>>> cfg = load_config(None, {"name": "doc", "fallback": {"default": False}}, environ={})
>>> core = ServingCore(cfg)
>>> outcome = core.on_event(Event(id="1", ts=0.0, features={"x": 1.0}))
>>> outcome.prediction.source, outcome.prediction.model_version, outcome.prediction.mode
('default', 0, 'cold')

A snapshot from a learner with other fallback rules is refused: this predictor would serve
other answers than the learner scored.

>>> other = load_config(None, {"name": "doc", "fallback": {"default": True}}, environ={})
>>> from pipeline.core import LearningCore
>>> from pipeline.serving.snapshot import snapshot_of
>>> core.swap(snapshot_of(LearningCore.from_config(other), other, {}))
Traceback (most recent call last):
...
ValueError: model version 0 of pipeline 'doc' comes with another fallback chain ...
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pipeline.config import RiverlineConfig
from pipeline.core import Outcome, Rejection
from pipeline.explain import Explainer
from pipeline.fallback import Fallback
from pipeline.gating import Gating
from pipeline.guard import finite_prediction
from pipeline.models import is_classifier, make_metric, parse_model_spec
from pipeline.provenance import fallback_digest
from pipeline.schemas import Event, Prediction
from pipeline.serving.serve import Server
from pipeline.serving.snapshot import ServingSnapshot


class ServingCore:
    """Serves events with one model version at a time."""

    def __init__(self, config: RiverlineConfig, snapshot: ServingSnapshot | None = None) -> None:
        self.config = config
        self.pipeline = config.name
        self.fallback = Fallback.from_config(config.fallback)
        self.fallback_digest = fallback_digest(config)
        self.events = 0
        self.model_errors = 0
        self.served_by: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.snapshot: ServingSnapshot | None = None
        # No version yet: the fallback serves, in mode cold, as an untrained learner's would.
        metric = make_metric(config.evaluation.metric)
        self._gating = Gating(config.gating, bool(metric.bigger_is_better))
        self._model: Any = None
        self._version = 0
        classifier = is_classifier(parse_model_spec(config.model.spec))
        self._server = Server(classifier, None, self.pipeline)
        if snapshot is not None:
            self.swap(snapshot)

    @property
    def classifier(self) -> bool:
        return self._server.classifier

    @property
    def explainer(self) -> Explainer | None:
        """What explains the model's predictions (None: explanations are off)."""
        return self._server.explainer

    @property
    def model_version(self) -> int:
        """The version served now: labels its model learned from (0 before any)."""
        return self._version

    def check(self, snapshot: ServingSnapshot) -> None:
        """Raise ValueError if this core must not serve the snapshot.

        Refused, not merely logged: with another fallback chain (or for another pipeline) the
        predictions would differ from what the learner scores as served. A predictor keeps
        its current version and says so loudly; the fix is the same config on every process.
        """
        if snapshot.pipeline != self.pipeline:
            raise ValueError(
                f"model version {snapshot.version} is of pipeline {snapshot.pipeline!r}, "
                f"not {self.pipeline!r}"
            )
        if snapshot.fallback_digest != self.fallback_digest:
            raise ValueError(
                f"model version {snapshot.version} of pipeline {self.pipeline!r} comes with "
                f"another fallback chain (digest {snapshot.fallback_digest[:12]}, this "
                f"predictor's {self.fallback_digest[:12]}): give every process the same "
                "fallback config"
            )

    def swap(self, snapshot: ServingSnapshot) -> None:
        """Serve the next records with this version (call between records, never during one)."""
        self.check(snapshot)
        previous = self._server.explainer
        server = Server(
            snapshot.classifier,
            snapshot.explain_top_k,
            self.pipeline,
            getattr(snapshot, "explain", None),  # absent from versions saved before it
        )
        # The background of recent events, the one-in-every count and the time spent go on
        # from version to version: a new model is explained against the same recent events.
        if (
            previous is not None
            and server.explainer is not None
            and previous.settings == server.explainer.settings
            and previous.classifier == server.explainer.classifier
        ):
            server.explainer = previous
        self._server = server
        self._gating = snapshot.gating
        self._model = snapshot.model
        self._version = snapshot.version
        self.snapshot = snapshot

    def on_event(self, event: Event, origin: Any = None) -> Outcome:
        outcome = Outcome()
        self.events += 1
        # Null features are missing values: River models expect absent keys, not None.
        x = {k: v for k, v in event.features.items() if v is not None}
        model_pred = self._model_prediction(x, outcome, origin)
        answer = self.fallback.answer(x)
        fields, _ = self._server.serve(
            event.id, event.ts, x, model_pred, answer, self._gating, self._model, self._version
        )
        if isinstance(fields, Prediction):
            outcome.prediction = fields
            self.served_by[fields.source] += 1
        else:
            outcome.prediction_fields = fields
            self.served_by[fields["source"]] += 1
        return outcome

    def _model_prediction(self, x: dict[str, Any], outcome: Outcome, origin: Any) -> Any:
        model = self._model
        if model is None:
            return None
        try:
            if self._server.classifier:
                prediction = model.predict_proba_one(x)
            else:
                prediction = model.predict_one(x)
        except Exception as e:
            # As the learner: a model that chokes on one strange vector must not stop serving.
            self.model_errors += 1
            self.dead_letters["model_error"] += 1
            message = f"predict raised {type(e).__name__}: {e}"
            outcome.reject(Rejection("model_error", message, origin))
            return None
        if not finite_prediction(prediction):
            # As the learner: NaN or infinity is no opinion (the fallback serves).
            self.model_errors += 1
            return None
        return prediction

    def report(self) -> dict[str, Any]:
        """The predictor's counts, as plain JSON-able values."""
        return {
            "events": self.events,
            "model_version": self._version,
            "mode": self._gating.mode,
            "predictions_by_source": dict(sorted(self.served_by.items())),
            "model_errors": self.model_errors,
            "dead_letters": dict(sorted(self.dead_letters.items())),
        }
