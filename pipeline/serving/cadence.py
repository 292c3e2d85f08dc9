"""When the learner publishes a model version: every ``serving.every_labels`` labels learned,
or every ``serving.every_seconds`` if it learned anything since, and at once on a promotion or
a demotion (the gating state predictors serve with changed). Pure: the clock is passed in.

>>> from pipeline.config import ServingConfig
>>> cadence = PublishCadence(ServingConfig(every_labels=100, every_seconds=10.0), now=0.0)
>>> cadence.due(version=0, now=1.0)          # nothing learned yet: nothing to publish
False
>>> cadence.due(version=99, now=1.0), cadence.due(version=100, now=1.0)
(False, True)
>>> cadence.published(100, now=1.0)
>>> cadence.due(version=101, now=5.0), cadence.due(version=101, now=11.0)  # time, if learned
(False, True)
>>> cadence.published(101, now=11.0)
>>> cadence.due(version=101, now=99.0)       # learned nothing since: the same version
False
>>> cadence.due(version=102, now=12.0, decided=True)  # a promotion or demotion: at once
True
"""

from __future__ import annotations

from pipeline.config import ServingConfig


class PublishCadence:
    """Tracks the last published version; :meth:`due` says whether to publish now."""

    def __init__(self, config: ServingConfig, now: float, last_version: int = 0) -> None:
        self.every_labels = config.every_labels
        self.every_seconds = config.every_seconds
        self.last_version = last_version  # e.g. the restored checkpoint's labels learned
        self.last_at = now

    def due(self, version: int, now: float, decided: bool = False) -> bool:
        """``version``: the core's ``model_version``; ``decided``: the outcome just processed
        carried a promotion or demotion.

        A decision is published even at an unchanged version (a label whose ``learn_one``
        raised can still move the gating); note the store keeps the first write of a version,
        so such a change reaches predictors with the next version.
        """
        if decided:
            return True
        if version <= self.last_version:
            return False
        return (
            version - self.last_version >= self.every_labels
            or now - self.last_at >= self.every_seconds
        )

    def published(self, version: int, now: float) -> None:
        self.last_version = max(self.last_version, version)
        self.last_at = now
