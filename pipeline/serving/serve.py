"""The serving rule: the model's answer and the fallback's in, the published prediction out.

One rule for every process that serves, so that the learner (:class:`pipeline.core.LearningCore`)
and a predictor (:class:`pipeline.serving.predictor_core.ServingCore`) given the same model and
gating state publish the same bytes. Pure, and on the hot path: no per-event allocation beyond
the prediction's own fields.

>>> from pipeline.config import GatingConfig
>>> from pipeline.fallback import Answer
>>> from pipeline.gating import Gating
>>> from pipeline.schemas import encode_fields
>>> server = Server(classifier=True, explain_top_k=None, pipeline="doc")
>>> gate = Gating(GatingConfig(), bigger_is_better=True)
>>> fields, kept = server.serve("1", 5.0, {"x": 1.0}, {True: 0.9, False: 0.1},
...                             Answer(False, "default", None), gate, model=None, model_version=7)
>>> fields["source"], fields["prediction"], fields["model_version"], fields["mode"]
('default', False, 7, 'cold')
>>> gate.mode = "serving"
>>> fields, kept = server.serve("1", 5.0, {"x": 1.0}, {True: 0.9, False: 0.1},
...                             Answer(False, "default", None), gate, model=None, model_version=7)
>>> encode_fields(fields)[:86]
b'{"id":"1","ts":5.0,"prediction":true,"proba":{"true":0.9,"false":0.1},"source":"model"'
"""

from __future__ import annotations

from typing import Any

from pipeline.evaluation import argmax
from pipeline.explain import Explainer, ExplainSettings
from pipeline.fallback import Answer
from pipeline.gating import Gating
from pipeline.schemas import Prediction, proba_key

_PLAIN = frozenset({bool, int, float, str, type(None)})


class Server:
    """What is served for one event, given the model's raw answer and the fallback's.

    Holds what does not change between events: whether the model is a classifier, whether
    predictions carry an explanation, the pipeline's name, and a cache of the JSON keys of the
    classes seen (worked out once per class, not per event).
    """

    __slots__ = (
        "_last_answer",
        "_proba_keys",
        "_shaped",
        "_template",
        "classifier",
        "explain_top_k",
        "explainer",
        "pipeline",
    )

    def __init__(
        self,
        classifier: bool,
        explain_top_k: int | None,
        pipeline: str | None,
        explain: ExplainSettings | None = None,
    ) -> None:
        self.classifier = classifier
        # ``explain`` says how; a bare ``explain_top_k`` (an older caller or model version)
        # explains every served prediction with the other settings' defaults.
        if explain is None and explain_top_k is not None:
            explain = ExplainSettings(top_k=explain_top_k)
        self.explain_top_k = explain.top_k if explain is not None else None
        self.explainer = Explainer(explain, classifier) if explain is not None else None
        self.pipeline = pipeline  # stamped on every prediction
        self._proba_keys: dict[Any, str] = {}  # class -> its JSON key
        # The fields of a fallback's answer in a mode, all but the id, time and model version:
        # (answer, mode, fields), kept once the fallback gave the same answer (the same object:
        # a constant fallback's) twice in a row. A copy and three stores are a third cheaper
        # than the twelve-key dict built afresh.
        self._shaped: tuple[Answer, str, dict[str, Any]] | None = None
        self._last_answer: Answer | None = None
        # Every field of a prediction, in Prediction's order (so that encode_fields gives the
        # bytes of encode(Prediction)): a copy and the stores of what an event changes are
        # cheaper than the dict built afresh.
        self._template: dict[str, Any] = {
            "id": "",
            "ts": 0.0,
            "prediction": None,
            "proba": None,
            "source": "none",
            "model_version": 0,
            "confidence": None,
            "mode": "cold",
            "explanation": None,
            "pipeline": pipeline,
            "deadline_passed": None,
            "reviewer": None,
        }

    def serve(
        self,
        event_id: str,
        ts: float,
        x: dict[str, Any],
        model_pred: Any,
        answer: Answer,
        gating: Gating,
        model: Any,
        model_version: int,
    ) -> tuple[dict[str, Any] | Prediction, Any]:
        """The prediction's fields (a :class:`Prediction` when a field is unusual) and the
        model's raw answer, kept for scoring. ``x`` is what the model was given (the event's
        features without its nulls): the explanation is of that."""
        confidence: float | None = None
        proba: dict[str, float] | None = None
        hard = model_pred
        mode = gating.mode
        explainer = self.explainer
        if explainer is not None:
            explainer.observe(x)  # every event is background, served by the model or not
        # What the model would serve, worked out only where it may serve (the fallback's
        # answer carries neither the model's probabilities nor its confidence), and only
        # where it has an opinion (an empty answer is none).
        if (
            mode == "serving"
            and model_pred is not None
            and (len(model_pred) > 0 if type(model_pred) is dict else model_pred != {})
        ):
            # gating.serves_model, inlined: a regressor's answer (no confidence) always serves.
            if self.classifier:
                if len(model_pred) == 2:  # argmax, inlined for two classes (the same test)
                    first, second = model_pred
                    hard = second if model_pred[second] > model_pred[first] else first
                else:
                    hard = argmax(model_pred)
                confidence = model_pred[hard]
                if type(confidence) is not float:  # float() of a float is that float
                    confidence = float(confidence)
                serves = confidence >= gating.config.confidence_threshold
            else:
                serves = True
        else:
            serves = False
            shaped = self._shaped
            if shaped is not None and shaped[0] is answer and shaped[1] == mode:
                fields = shaped[2].copy()
                fields["id"] = event_id
                fields["ts"] = ts
                fields["model_version"] = model_version
                return fields, model_pred
        explanation = None
        if serves:
            value = hard
            if self.classifier:
                keys = self._proba_keys
                proba = {}
                for k, v in model_pred.items():
                    try:
                        key = keys[k]
                    except KeyError:
                        key = keys[k] = proba_key(k)
                    proba[key] = v if type(v) is float else float(v)
            if explainer is not None:
                # The served class's probability, or the value, is what is explained.
                explanation = explainer.explain(
                    model,
                    x,
                    event_id,
                    hard if self.classifier else None,
                    confidence if self.classifier else value,
                )
            # The template's copy, in Prediction's field order, with what this event changes.
            fields = self._template.copy()
            fields["id"] = event_id
            fields["ts"] = ts
            fields["prediction"] = value
            fields["proba"] = proba
            fields["source"] = "model"
            fields["model_version"] = model_version
            fields["confidence"] = confidence
            fields["mode"] = mode
            fields["explanation"] = explanation
        else:
            value, confidence = answer.prediction, answer.confidence
            # In Prediction's field order: encode_fields gives the same bytes as
            # encode(Prediction).
            fields = {
                "id": event_id,
                "ts": ts,
                "prediction": value,
                "proba": proba,
                "source": answer.source,
                "model_version": model_version,
                "confidence": confidence,
                "mode": mode,
                "explanation": explanation,
                "pipeline": self.pipeline,
                "deadline_passed": None,
                "reviewer": None,
            }
        # The raw answer is kept for scoring: evaluation.adapt derives what each metric takes.
        # Every field is already of its declared type (the event was validated, probabilities
        # and confidence are floats, labels come from validated labels or the config), so no
        # pydantic model is built per prediction; anything unusual is validated as before.
        plain_confidence = confidence is None or type(confidence) is float
        if type(value) in _PLAIN and plain_confidence and explanation is None:
            if not serves:
                if answer is self._last_answer:
                    self._shaped = (answer, mode, fields.copy())
                self._last_answer = answer
            return fields, model_pred
        return Prediction(**fields), model_pred
