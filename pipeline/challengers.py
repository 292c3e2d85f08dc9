"""Challengers: models that learn beside the champion on every label, scored, never served.

Each challenger predicts every event the champion predicts (its answer kept until the label),
is scored prequentially on the same labels (whole run and over the gating window) and then
learns from the label, as the champion does. None is ever served. A promotion swaps a
challenger with the champion: the challenger's model serves from then on (through the gating,
as the champion did) and the old champion stays on as a challenger, each keeping its scores.
``challengers.promote: auto`` promotes the best challenger once it has been scored on at least
``gating.min_labels`` labels and beats the champion over the window by more than
``gating.margin`` (the gating's rule, with the champion in the fallback's place);
``manual`` leaves it to :meth:`Challengers.promote` (``riverline promote``). No I/O: the state
is part of the core's, so checkpoints carry it and a replay gives the same decisions.

What a takeover does not rewrite: the core's ``model`` metrics (whole run and the gating
window) go on as one series across champions, so the gating judges the new champion on a
window that still holds its predecessor's last answers; and the events predicted before the
swap but labelled after it score the answer the old champion gave (prequential: what was
answered at the time), in the new champion's leaderboard row as in the core's metrics.

>>> from pipeline.config import load_config
>>> cfg = load_config(None, {"evaluation": {"metric": "Accuracy"},
...     "model": {"spec": "dummy.NoChangeClassifier",
...               "challengers": [{"name": "prior", "spec": "dummy.PriorClassifier"}]},
...     "challengers": {"promote": "auto"}, "gating": {"min_labels": 3, "margin": 0.1}})
>>> from pipeline.models import parse_model_spec
>>> board = Challengers.from_config(cfg, classifier=True)
>>> champion = parse_model_spec(cfg.model.spec)
>>> for i, y in enumerate([True, False, True, True, True, True]):
...     x = {"i": i}
...     board.predict(str(i), x)
...     kept = champion.predict_proba_one(x)
...     decision = board.learn(str(i), x, y, kept, i + 1, champion)
...     champion.learn_one(x, y)
...     if decision is not None:
...         champion = decision.model
...         print(decision.label_index, decision.reason)
4 challenger 'prior' promoted over 'model': 0.6667 against 0.3333 over the last 3 labels
>>> [(row["name"], row["role"]) for row in board.report()["leaderboard"]]
[('prior', 'champion'), ('model', 'challenger')]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from river import metrics as river_metrics

from pipeline.evaluation import Windowed, adapt
from pipeline.models import make_metric, parse_model_spec

if TYPE_CHECKING:
    from pipeline.config import RiverlineConfig

__all__ = ["Challenger", "Challengers", "Promotion"]


@dataclass
class Challenger:
    """One model and its own scores (a champion's, while it is the champion)."""

    name: str
    spec: str
    model: Any
    metric: river_metrics.base.Metric
    window: Windowed
    scored: int = 0
    errors: int = 0  # predict_one or learn_one raised: no opinion, not learned
    learned: int = 0  # labels learned as a challenger

    def score(self, y: Any, prediction: Any) -> None:
        metric = self.metric
        adapted = adapt(metric, prediction)
        if adapted is not None:
            metric.update(y, adapted)
            self.window.update(y, adapted)
            self.scored += 1

    def row(self, role: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "role": role,
            "metric": float(self.metric.get()),
            "windowed": float(self.window.get()),
            "scored": self.scored,
            "errors": self.errors,
        }


@dataclass(frozen=True)
class Promotion:
    """A challenger took over: the model to serve now, and the decision's numbers."""

    name: str
    previous: str
    model: Any
    label_index: int
    challenger_metric: float
    champion_metric: float
    reason: str
    by_hand: bool = False  # riverline promote: the model version counts it (core.model_version)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "challenger_promotion",
            "name": self.name,
            "previous": self.previous,
            "label_index": self.label_index,
            "challenger_metric": self.challenger_metric,
            "champion_metric": self.champion_metric,
            "reason": self.reason,
            "by_hand": self.by_hand,
        }


@dataclass
class Challengers:
    """The champion's scores, the challengers, and their kept predictions by event id."""

    champion: Challenger
    members: list[Challenger]
    classifier: bool
    auto: bool
    margin: float
    min_labels: int
    bigger_is_better: bool
    kept: dict[str, list[Any]] = field(default_factory=dict)
    promotions: list[dict[str, Any]] = field(default_factory=list)
    # Ids of the promotions asked for by hand and applied (consumers/promotion.py): a request
    # seen again after a restart is not applied twice.
    applied: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: RiverlineConfig, classifier: bool) -> Challengers:
        name = config.evaluation.metric
        window = config.gating.window

        def new(label: str, spec: str, model: Any) -> Challenger:
            metric = make_metric(name)
            return Challenger(label, spec, model, metric, Windowed(make_metric(name), window))

        members = [new(c.name, c.spec, parse_model_spec(c.spec)) for c in config.model.challengers]
        probe = make_metric(name)
        return cls(
            # Named "model" as in the config (model.spec); it keeps the name as a challenger.
            champion=new("model", config.model.spec, None),  # the core holds the model
            members=members,
            classifier=classifier,
            auto=config.challengers.promote == "auto",
            margin=config.gating.margin,
            min_labels=config.gating.min_labels,
            bigger_is_better=bool(probe.bigger_is_better),
        )

    def predict(self, event_id: str, x: dict[str, Any]) -> None:
        """Every challenger's answer for an event, kept until its label (or its expiry)."""
        answers: list[Any] = []
        for member in self.members:
            try:
                model = member.model
                answers.append(
                    model.predict_proba_one(x) if self.classifier else model.predict_one(x)
                )
            except Exception:
                member.errors += 1
                answers.append(None)
        self.kept[event_id] = answers

    def forget(self, event_id: str) -> None:
        """The event expired or was evicted unlabelled: nothing to score."""
        self.kept.pop(event_id, None)

    def learn(
        self,
        event_id: str,
        x: dict[str, Any],
        y: Any,
        champion_prediction: Any,
        label_index: int,
        champion_model: Any,
    ) -> Promotion | None:
        """Score everyone's kept answer on ``y``, teach the challengers, and (auto) promote."""
        self.champion.score(y, champion_prediction)
        answers = self.kept.pop(event_id, None)
        for i, member in enumerate(self.members):
            if answers is not None and i < len(answers):
                member.score(y, answers[i])
        self.teach(x, y)
        if not self.auto or not self.members:
            return None
        return self._auto(label_index, champion_model)

    def teach(self, x: dict[str, Any], y: Any) -> None:
        """A label the champion learns from without a score (ground truth correcting a
        person's answer): the challengers learn it too."""
        for member in self.members:
            try:
                member.model.learn_one(x, y)
                member.learned += 1
            except Exception:
                member.errors += 1

    def _better(self, challenger: float, champion: float) -> bool:
        gain = challenger - champion if self.bigger_is_better else champion - challenger
        return gain > self.margin

    def _auto(self, label_index: int, champion_model: Any) -> Promotion | None:
        champion = self.champion.window.get()
        ready = [m for m in self.members if m.scored >= self.min_labels]
        if self.champion.scored < self.min_labels or not ready:
            return None
        sign = 1.0 if self.bigger_is_better else -1.0
        best = max(ready, key=lambda m: sign * m.window.get())
        if not self._better(best.window.get(), champion):
            return None
        return self.promote(best.name, label_index, champion_model, "auto")

    def promote(
        self, name: str, label_index: int, champion_model: Any, how: str = "manual"
    ) -> Promotion:
        """Make challenger ``name`` the champion; the champion stays on as a challenger."""
        problem = self.unknown(name)
        if problem is not None:
            raise KeyError(problem)
        index = next(i for i, m in enumerate(self.members) if m.name == name)
        winner, previous = self.members[index], self.champion
        ahead, behind = winner.window.get(), previous.window.get()
        model = winner.model
        previous.model = champion_model
        self.members[index] = previous
        winner.model = None  # the core holds the champion's model
        self.champion = winner
        # The answers kept for events still unlabelled were given by the models in their old
        # places: dropped, so no model is scored on another's answer. (The champion's answers
        # are the core's; those events score the answer served at the time, prequentially.)
        self.kept.clear()
        reason = (
            f"challenger {winner.name!r} promoted over {previous.name!r}: {ahead:.4f} against "
            f"{behind:.4f} over the last {len(winner.window)} labels"
            + ("" if how == "auto" else " (by hand)")
        )
        promotion = Promotion(
            winner.name, previous.name, model, label_index, ahead, behind, reason, how != "auto"
        )
        self.promotions.append(promotion.as_dict())
        return promotion

    def unknown(self, name: str) -> str | None:
        """Why ``name`` cannot be promoted (no such challenger), or None."""
        if any(m.name == name for m in self.members):
            return None
        known = ", ".join(repr(m.name) for m in self.members) or "none"
        return f"no challenger {name!r} (the challengers: {known})"

    def report(self) -> dict[str, Any]:
        """The leaderboard, champion first then by windowed metric, and the promotions."""
        sign = -1.0 if self.bigger_is_better else 1.0
        members = sorted(
            (m.row("challenger") for m in self.members), key=lambda r: sign * r["windowed"]
        )
        rows = [self.champion.row("champion"), *members]
        return {
            "promote": "auto" if self.auto else "manual",
            "leaderboard": rows,
            "promotions": list(self.promotions),
        }
