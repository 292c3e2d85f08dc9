"""`riverline compare`'s runs, spread over worker processes.

Each worker gets a share of the configs (every ``workers``-th, in the order given) and reads the
source once for all of them (:func:`pipeline.compare.simulate_many`), rather than once per
config: merging the history costs about as much as a light core, so a worker per config would
pay it again for each. Workers are forked (where the platform can), so they start with the
parent's imports (River, pydantic, the models the configs name) instead of importing them again,
and only the configs go out and the reports (a few kB each) come back.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from consumers.gc_policy import OLDER_THRESHOLDS, YOUNG_THRESHOLD

if TYPE_CHECKING:
    from pipeline.config import RiverlineConfig
    from producers.reviewer import ReviewerSpec
    from producers.schedule import LabelDelay
    from producers.sources import SourceOptions


@contextmanager
def streaming_gc() -> Iterator[None]:
    """The collector as ``run``'s consumer has it during the runs (what is alive frozen, young
    objects collected every 10,000 allocations; so the core costs here what it costs there),
    then as before.

    Unlike the consumer's :func:`~consumers.gc_policy.tune_for_streaming`, no collection first:
    over the ~120k objects River and pydantic leave, it takes ~40 ms, a fifth of a comparison
    of 5,000 events. What start-up left to collect is frozen with the rest, and freed later.
    """
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def run_share(
    configs: Sequence[RiverlineConfig],
    source: str,
    delay: LabelDelay | None,
    options: SourceOptions,
    reviewer: ReviewerSpec | None,
) -> list[dict[str, Any]]:
    """One process's configs, their reports in the same order: one reading of the source per
    group of configs that share a history (the same partitions, validation and label type).
    """
    from pipeline.compare import simulate_many
    from pipeline.compare_order import history_key
    from pipeline.core import LearningCore
    from producers.reviewer import SimulatedAnswers
    from producers.sources import open_source

    answer = None
    if reviewer is not None:
        # What the simulated reviewer knows: every record's label, by id (it keeps no state
        # between answers, so one serves every config).
        truth = {r.id: r.label for r in open_source(source, options)}
        answer = SimulatedAnswers(reviewer, truth).answer
    cores = [LearningCore.from_config(config) for config in configs]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (config, core) in enumerate(zip(configs, cores, strict=True)):
        groups.setdefault(history_key(config, not core.classifier), []).append(i)
    reports: list[dict[str, Any]] = [{} for _ in configs]
    with streaming_gc():
        for members in groups.values():
            runs = simulate_many(
                [configs[i] for i in members],
                open_source(source, options),
                delay,
                answer=answer,
                interval=options.interval,
                cores=[cores[i] for i in members],
            )
            for i, report in zip(members, runs, strict=True):
                reports[i] = report
    return reports


def run_all(
    configs: Sequence[RiverlineConfig],
    source: str,
    delay: LabelDelay | None,
    options: SourceOptions,
    reviewer: ReviewerSpec | None,
    workers: int,
) -> list[dict[str, Any]]:
    """Every config's report, in the order given, over ``workers`` processes (1: this one)."""
    workers = max(1, min(workers, len(configs)))
    if workers == 1:
        return run_share(configs, source, delay, options, reviewer)
    shares = [list(configs[k::workers]) for k in range(workers)]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    # Frozen before forking: a worker's collections then leave the parent's objects alone,
    # rather than touching (and so copying) every page of them.
    with streaming_gc(), ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [
            pool.submit(run_share, share, source, delay, options, reviewer) for share in shares
        ]
        results = [future.result() for future in futures]
    reports: list[dict[str, Any]] = [{} for _ in configs]
    for k, share_reports in enumerate(results):
        reports[k::workers] = share_reports
    return reports
