"""The cost of an explanation, per model kind (not a test; issue 20).

    python benchmarks/explain.py [--repeats 5] [--train 1000] [--explain 200] [--samples 128]

Per model, trained on the first ``--train`` events of River's Phishing (1,250 rows, 9
features): the time of the model's own answer (``predict_proba_one``) and of one
explanation (``Explainer.explain`` as the server calls it: ``top_k`` 3, ``explain.samples``,
a background of 32 recent events), each the median over ``--repeats`` passes of the mean over
``--explain`` later events, in this process's CPU time (a shared machine inflates wall time).
Also the method each kind got.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from river import datasets

from pipeline.explain import Explainer, ExplainSettings
from pipeline.models import parse_model_spec

CLOCK = time.process_time
MODELS = {
    "linear": "preprocessing.StandardScaler | linear_model.LogisticRegression",
    "tree": "tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-5)",
    "adaptive tree": "tree.HoeffdingAdaptiveTreeClassifier(grace_period=50, seed=1)",
    "forest (ARF, 10 trees)": "forest.ARFClassifier(seed=1)",
    "bagging (10 trees)": "ensemble.BaggingClassifier(tree.HoeffdingTreeClassifier(), seed=1)",
    "knn (scaled)": "preprocessing.StandardScaler | neighbors.KNNClassifier",
    "gaussian nb": "naive_bayes.GaussianNB",
}


def measure(spec: str, args: argparse.Namespace) -> dict[str, object]:
    rows = list(itertools.islice(datasets.Phishing(), args.train + args.explain))
    model = parse_model_spec(spec)
    for x, y in rows[: args.train]:
        model.learn_one(x, y)
    probes = [x for x, _ in rows[args.train :]]
    settings = ExplainSettings(top_k=3, samples=args.samples, background=32)
    predict_ms, explain_ms = [], []
    methods: Counter[str] = Counter()
    for _ in range(args.repeats):
        explainer = Explainer(settings, classifier=True)
        for x, _ in rows[args.train - 32 : args.train]:
            explainer.observe(x)
        answers = []
        started = CLOCK()
        for x in probes:
            proba = model.predict_proba_one(x)
            answers.append(max(proba, key=proba.__getitem__))
        predict_ms.append((CLOCK() - started) / len(probes) * 1000)
        started = CLOCK()
        for i, (x, target) in enumerate(zip(probes, answers, strict=True)):
            found = explainer.explain(model, x, str(i), target, model.predict_proba_one(x)[target])
            if found:
                methods[
                    found[-1].get("method", "linear") if "method" in found[-1] else "linear"
                ] += 1
        explain_ms.append((CLOCK() - started) / len(probes) * 1000)
    return {
        "predict_ms": statistics.median(predict_ms),
        "explain_ms": statistics.median(explain_ms),
        "methods": dict(methods),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--explain", type=int, default=200)
    parser.add_argument("--samples", type=int, default=128)
    args = parser.parse_args()
    print("| model | predict ms | explain ms | explain / predict | methods (all repeats) |")
    print("| --- | --- | --- | --- | --- |")
    for name, spec in MODELS.items():
        got = measure(spec, args)
        ratio = got["explain_ms"] / got["predict_ms"]  # type: ignore[operator]
        print(
            f"| {name} | {got['predict_ms']:.3f} | {got['explain_ms']:.3f} | {ratio:.0f} x | "
            f"{got['methods']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
