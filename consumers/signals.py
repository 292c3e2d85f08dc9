"""Turn SIGINT/SIGTERM into a flag the consumer loop checks, so it stops between records."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


class StopFlag:
    """Set by a signal (or by code); the loop finishes its record, checkpoints and exits.

    >>> flag = StopFlag()
    >>> flag.is_set()
    False
    >>> flag.set("test")
    >>> flag.is_set(), flag.reason
    (True, 'test')
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        # The event's own, not a method calling it: the loop asks after every record.
        self.is_set: Callable[[], bool] = self._event.is_set

    def set(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    def install(self) -> None:
        """Route SIGINT and SIGTERM here; only possible from the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.set(signal.Signals(signum).name)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
