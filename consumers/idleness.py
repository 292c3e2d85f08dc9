"""``--until-idle``: when a role may stop because its input went quiet.

Shared by the writer's loop (``run``, ``learner``) and the predictor's.
"""

from __future__ import annotations

import logging
import time

from consumers.inputs import Inputs

log = logging.getLogger(__name__)


class IdleStop:
    """Stop after ``seconds`` with nothing fetched or processed, once the input is caught up.

    Idle time counts from the first assignment (joining the group is not idleness); records the
    merge holds back for order are not the end of the stream, nor is silence from a broker that
    does not answer. ``seconds=None`` never stops.
    """

    def __init__(self, seconds: float | None, inputs: Inputs) -> None:
        self.seconds = seconds
        self.inputs = inputs
        self.last_activity: float | None = None

    def after_turn(self, now: float, fetched: int, processed: int, may_stop: bool = True) -> bool:
        """Note one turn of the loop; True when the role should stop now.

        ``may_stop`` False defers it (e.g. a writer whose checkpoints cannot be written yet).
        """
        inputs = self.inputs
        if (fetched or processed or self.last_activity is None) and inputs.assignment():
            self.last_activity = now
        if (
            self.seconds is None
            or self.last_activity is None
            or fetched
            or processed
            or len(inputs.merge)
            or not may_stop
            or now - self.last_activity < self.seconds
        ):
            return False
        if inputs.caught_up():
            log.info("nothing new for %.1fs: stopping", self.seconds)
            return True
        self.last_activity = time.monotonic()
        return False
