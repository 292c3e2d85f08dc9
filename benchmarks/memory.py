"""Memory over a long stream (not a test): the learning core's RSS as events flow.

    python benchmarks/memory.py [--events 200000] [--max-pending 10000]

Agrawal events where only one in five ever gets a label, so most events wait in the join
buffer until they are evicted: the resident set size must level off, not grow with the stream.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from river import datasets

from pipeline.config import load_config
from pipeline.core import LearningCore
from pipeline.schemas import Event, Label


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--max-pending", type=int, default=10_000)
    args = parser.parse_args()
    cfg = load_config(
        None,
        {
            "model": {"spec": "tree.HoeffdingTreeClassifier(max_depth=8)"},
            "evaluation": {"metric": "Accuracy"},
            "fallback": {"default": 0},
            "join": {"ttl_events": None, "max_pending": args.max_pending},
        },
        environ={},
    )
    core = LearningCore.from_config(cfg)
    step = args.events // 10
    print(f"{'events':>8} {'rss MiB':>8} {'pending':>8} {'evicted':>8}")
    for i, (x, y) in enumerate(datasets.synth.Agrawal(seed=1).take(args.events)):
        core.on_event(Event(id=str(i), ts=float(i), features=x))
        if i % 5 == 0 and i >= 100:
            j = i - 100
            core.on_label(Label(id=str(j), ts=float(i), label=y))
        if (i + 1) % step == 0:
            state = core.state
            print(
                f"{i + 1:>8} {rss_mib():>8.1f} {len(state.join):>8} {state.expired_unlabelled:>8}"
            )


if __name__ == "__main__":
    main()
