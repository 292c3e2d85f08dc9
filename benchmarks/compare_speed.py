"""How close ``riverline compare`` comes to the learning core's own rate (issue 21); not a test.

    python benchmarks/compare_speed.py [--repeats 5] [--events 20000] [--json out.json]

The history is River's Bananas (2 features) cycled to ``--events`` events (unique ids, one
second apart) in a JSONL file, labels 50 events late, the model of ``benchmarks/run.py``
(StandardScaler | LogisticRegression, Accuracy). Each round runs, in an order rotated from
round to round so that a busy neighbour weighs on each alike:

- ``core``: the core's own rate, a bare loop feeding one core the records already parsed and
  merged (the same objects compare feeds it), under the consumer's GC policy, in CPU time;
- ``compare x1``: compare's runner (what ``riverline compare`` calls) for one config, in-process,
  CPU time: ratio ``core / compare`` per event is how close compare comes (1.0: no overhead);
- ``x1 jobs 1`` / ``x1 jobs 2``: the same in wall time, with ``--jobs 1`` (all in-process) and
  ``--jobs 2`` (a second process reads the history), against the core's own loop in wall time;
- ``jobs 1`` / ``jobs 2`` over 2 and 4 configs (gating margins 0.01-0.1: the same work each),
  wall time, workers included: the speed-up is ``jobs 1 / jobs 2``.

Medians over ``--repeats`` rounds (at least 3), and the load average before and after: on a
machine shared with other work, only ratios within one run mean anything; the speed-ups are
also given fastest run against fastest run, what two cores give when a neighbour lets them.
``--spec`` names another model (the default is about the lightest River has: the heavier
the model, the more the core's own cost dominates). ``PYTHONPATH`` picks the tree measured;
on a tree from before issue 21's speed work (no ``run_all``), the CLI's old path (a process
per config) is timed instead, so old and new trees run the same script.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if "PYTHONPATH" not in os.environ:  # set, it says which tree to measure
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from river import datasets

from pipeline.config import RiverlineConfig, load_config
from pipeline.core import LearningCore
from pipeline.schemas import Event, Label
from pipeline.validation import Validator
from producers.schedule import LabelDelay
from producers.sources import SourceOptions, open_source

SPEC = "preprocessing.StandardScaler | linear_model.LogisticRegression"
DELAY = LabelDelay(events=50)
MARGINS = (0.01, 0.02, 0.05, 0.1)

Runner = Callable[[Sequence[RiverlineConfig], str, SourceOptions, int], list[dict[str, Any]]]


def write_history(path: Path, events: int) -> None:
    """Bananas cycled to ``events`` rows, with an id and a time of their own."""
    rows = itertools.cycle(list(datasets.Bananas()))
    with path.open("w") as f:
        for i, (x, y) in zip(range(events), rows, strict=False):
            f.write(json.dumps({"id": str(i), "ts": float(i), **x, "label": y}) + "\n")


def config(margin: float, spec: str = SPEC) -> RiverlineConfig:
    return load_config(
        None,
        {
            "name": f"compare-speed-{margin}",
            "model": {"spec": spec},
            "evaluation": {"metric": "Accuracy"},
            "fallback": {"default": False},
            "gating": {"min_labels": 200, "window": 500, "margin": margin},
        },
        environ={},
    )


def runner() -> Runner:
    """The tree's own runner: run_all, or before it the CLI's process per config."""
    try:
        from pipeline.cli.compare_jobs import run_all
    except ImportError:
        return old_runner()

    def run(configs: Sequence[RiverlineConfig], source: str, options: SourceOptions, jobs: int):
        return run_all(configs, source, DELAY, options, None, jobs)

    return run


def old_runner() -> Runner:
    from concurrent.futures import ProcessPoolExecutor

    from pipeline.cli.compare import run_job  # type: ignore[attr-defined]

    def run(configs: Sequence[RiverlineConfig], source: str, options: SourceOptions, jobs: int):
        if jobs == 1:
            return [run_job(c, source, DELAY, options, None) for c in configs]
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_job, c, source, DELAY, options, None) for c in configs]
            return [f.result() for f in futures]

    return run


def merged(cfg: RiverlineConfig, source: str, options: SourceOptions) -> list[Any]:
    """The parsed, merged records compare feeds a core (the consumer's order)."""
    try:
        from pipeline.compare_order import consumer_order
    except ImportError:
        from pipeline.compare import consumer_order  # type: ignore[attr-defined,no-redef]
    validator = Validator(cfg.validation, regression=False)
    order = consumer_order(cfg, open_source(source, options), DELAY, validator)
    return [item.parsed for item in order]


def core_cpu(cfg: RiverlineConfig, parsed: list[Any]) -> float:
    """The bare loop: one core over the merged records, the consumer's GC, CPU seconds."""
    return core_times(cfg, parsed)[1]


def core_times(cfg: RiverlineConfig, parsed: list[Any]) -> tuple[float, float]:
    """The bare loop: one core over the merged records, the consumer's GC; wall and CPU
    seconds."""
    from consumers.gc_policy import tune_for_streaming

    core = LearningCore.from_config(cfg)
    on_event, on_label = core.on_event, core.on_label
    threshold = gc.get_threshold()
    tune_for_streaming()
    try:
        wall, started = time.perf_counter(), time.process_time()
        for item in parsed:
            if type(item) is Event:
                on_event(item)
            elif type(item) is Label:
                on_label(item)
        return time.perf_counter() - wall, time.process_time() - started
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def timed(
    run: Runner, configs: Sequence[RiverlineConfig], src: str, opts: SourceOptions, jobs: int
):
    wall, cpu = time.perf_counter(), time.process_time()
    reports = run(configs, src, opts, jobs)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert all(r["events"] == reports[0]["events"] for r in reports)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--spec", default=SPEC, help="the model (heavier: the core dominates)")
    args = parser.parse_args()
    repeats = max(3, args.repeats)
    run = runner()
    configs = [config(m, args.spec) for m in MARGINS]
    with tempfile.TemporaryDirectory() as tmp:
        source = str(Path(tmp) / "bananas.jsonl")
        write_history(Path(source), args.events)
        options = SourceOptions()
        parsed = merged(configs[0], source, options)
        events = sum(1 for p in parsed if type(p) is Event)
        stages: dict[str, Callable[[], float]] = {
            "core_cpu": lambda: core_cpu(configs[0], parsed),
            "core_wall": lambda: core_times(configs[0], parsed)[0],
            "compare_x1_cpu": lambda: timed(run, configs[:1], source, options, 1)[1],
            "x1_jobs1_wall": lambda: timed(run, configs[:1], source, options, 1)[0],
            "x1_jobs2_wall": lambda: timed(run, configs[:1], source, options, 2)[0],
            "x2_jobs1_wall": lambda: timed(run, configs[:2], source, options, 1)[0],
            "x2_jobs2_wall": lambda: timed(run, configs[:2], source, options, 2)[0],
            "x4_jobs1_wall": lambda: timed(run, configs, source, options, 1)[0],
            "x4_jobs2_wall": lambda: timed(run, configs, source, options, 2)[0],
        }
        timed(run, configs[:1], source, options, 1)  # warm-up: imports, file cache
        load_before = os.getloadavg()
        seconds: dict[str, list[float]] = {name: [] for name in stages}
        names = list(stages)
        for i in range(repeats):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                seconds[name].append(stages[name]())
        load_after = os.getloadavg()
    med = {name: statistics.median(values) for name, values in seconds.items()}
    us = {name: med[name] / events * 1e6 for name in med}
    result = {
        "tree": "run_all" if "pipeline.cli.compare_jobs" in sys.modules else "process per config",
        "spec": args.spec,
        "events": events,
        "repeats": repeats,
        "load_before": load_before,
        "load_after": load_after,
        "us_per_event_median": {k: round(v, 1) for k, v in us.items()},
        "core_events_per_second": round(events / med["core_cpu"]),
        "compare_x1_events_per_second": round(events / med["compare_x1_cpu"]),
        "compare_x1_over_core_rate": round(med["core_cpu"] / med["compare_x1_cpu"], 2),
        # One config with a second process reading the history: its rate in wall time
        # against the core's own in wall time (both processes' CPU is in the reports).
        "compare_x1_jobs1_over_core_wall": round(med["core_wall"] / med["x1_jobs1_wall"], 2),
        "compare_x1_jobs2_over_core_wall": round(med["core_wall"] / med["x1_jobs2_wall"], 2),
        "compare_x1_jobs2_events_per_second": round(events / med["x1_jobs2_wall"]),
        # The same ratios taken within each round (the machine's speed drifts between rounds).
        "per_round_median": {
            f"core_wall_over_{stage}": round(
                statistics.median(
                    c / x for c, x in zip(seconds["core_wall"], seconds[stage], strict=True)
                ),
                2,
            )
            for stage in ("x1_jobs1_wall", "x1_jobs2_wall")
        },
        "speedup_jobs2_x2": round(med["x2_jobs1_wall"] / med["x2_jobs2_wall"], 2),
        "speedup_jobs2_x4": round(med["x4_jobs1_wall"] / med["x4_jobs2_wall"], 2),
        # Fastest against fastest: what two free cores give, where a neighbour came and went.
        "speedup_jobs2_x4_fastest": round(
            min(seconds["x4_jobs1_wall"]) / min(seconds["x4_jobs2_wall"]), 2
        ),
        "speedup_jobs2_x2_fastest": round(
            min(seconds["x2_jobs1_wall"]) / min(seconds["x2_jobs2_wall"]), 2
        ),
        "x4_jobs1_events_per_second_per_config": round(events * 4 / med["x4_jobs1_wall"] / 4),
        "x4_jobs2_events_per_second_per_config": round(events * 4 / med["x4_jobs2_wall"] / 4),
        "runs_seconds": {k: [round(v, 3) for v in vs] for k, vs in seconds.items()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
