"""When the model serves: "fake it till you make it".

States: ``cold`` (no label yet) -> ``shadow`` (the model learns and is scored, the fallback
serves) -> ``serving`` (the model serves each prediction whose confidence clears the threshold)
-> back to ``shadow`` on demotion. The band between +margin and -margin is hysteresis: a model
that just got promoted is not demoted by noise.

>>> from pipeline.config import GatingConfig
>>> gate = Gating(GatingConfig(min_labels=2, window=10, margin=0.05), bigger_is_better=True)
>>> gate.mode
'cold'
>>> gate.observe(1, model=0.5, fallback=0.6, window_size=1)
>>> gate.mode
'shadow'
>>> promoted = gate.observe(2, model=0.8, fallback=0.6, window_size=2)
>>> promoted.kind, promoted.label_index, promoted.model_metric, promoted.fallback_metric
('promotion', 2, 0.8, 0.6)
>>> gate.observe(3, model=0.58, fallback=0.6, window_size=3)  # inside the band: stays
>>> gate.observe(4, model=0.5, fallback=0.6, window_size=4).kind
'demotion'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pipeline.config import GatingConfig

Mode = Literal["cold", "shadow", "serving"]


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Literal["promotion", "demotion"]
    label_index: int
    model_metric: float
    fallback_metric: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Gating:
    config: GatingConfig
    bigger_is_better: bool
    mode: Mode = "cold"
    decisions: list[Decision] = field(default_factory=list)

    def advantage(self, model: float, fallback: float) -> float:
        """How much better the model is, whatever the metric's direction."""
        return model - fallback if self.bigger_is_better else fallback - model

    def observe(
        self, label_index: int, model: float, fallback: float, window_size: int
    ) -> Decision | None:
        """Called after each learned label with the windowed metrics."""
        mode = self.mode
        if mode == "cold":
            self.mode = mode = "shadow"
        if window_size == 0:
            return None
        # advantage(), inlined: this runs on every label.
        advantage = model - fallback if self.bigger_is_better else fallback - model
        config = self.config
        margin = config.margin
        if mode == "shadow":
            if not advantage > margin or label_index < config.min_labels:
                return None
            # Promotion also needs a window of evidence (after a drift the windows restart).
            if window_size < min(config.window, max(config.min_labels, 1)):
                return None
            return self._decide(
                "promotion",
                label_index,
                model,
                fallback,
                f"model beats fallback by more than {margin}",
            )
        if mode == "serving" and advantage < -margin:
            return self._decide(
                "demotion",
                label_index,
                model,
                fallback,
                f"model worse than fallback by more than {margin}",
            )
        return None

    def demote(
        self, label_index: int, model: float, fallback: float, reason: str
    ) -> Decision | None:
        """Forced demotion, e.g. on drift; a no-op unless serving."""
        if self.mode != "serving":
            return None
        return self._decide("demotion", label_index, model, fallback, reason)

    def serves_model(self, confidence: float | None) -> bool:
        """Whether this prediction goes out as the model's; None confidence means regression."""
        if self.mode != "serving":
            return False
        return confidence is None or confidence >= self.config.confidence_threshold

    def _decide(
        self,
        kind: Literal["promotion", "demotion"],
        label_index: int,
        model: float,
        fallback: float,
        reason: str,
    ) -> Decision:
        decision = Decision(kind, label_index, model, fallback, reason)
        self.mode = "serving" if kind == "promotion" else "shadow"
        self.decisions.append(decision)
        return decision

    @property
    def promotions(self) -> list[Decision]:
        return [d for d in self.decisions if d.kind == "promotion"]

    @property
    def demotions(self) -> list[Decision]:
        return [d for d in self.decisions if d.kind == "demotion"]
