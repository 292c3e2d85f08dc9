"""The garbage collector's settings for a long-running role's hot loop.

Every record allocates a handful of short-lived containers (its JSON, the event, the merge
item, the outcome); CPython's default generation-0 threshold (700) runs a young collection every
few dozen records, and each older collection walks everything alive, the imported modules
(~100k objects for River, pydantic and the Kafka clients) and the restored model included.
Measured on the in-process edge (``benchmarks/run.py``): 5-15% of the time per event.

So, once a role has started (imports done, state restored, clients open):

- ``gc.freeze()`` moves everything alive to the permanent generation, which no collection walks
  (as Instagram does before forking workers; here it also spares a background checkpoint's
  forked child the copy-on-write faults a collection would cause in it);
- a larger generation-0 threshold collects young objects in fewer, larger passes.

Reference cycles are still collected, only later; nothing here changes what the process
computes.

>>> import gc
>>> before = gc.get_threshold()
>>> tune_for_streaming()
>>> gc.get_threshold()[0]
10000
>>> gc.unfreeze(); gc.set_threshold(*before)
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
OLDER_THRESHOLDS = (20, 20)


def tune_for_streaming() -> None:
    """Freeze what is alive now and collect the young generation less often."""
    gc.collect()  # what start-up left behind is freed, not frozen
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
