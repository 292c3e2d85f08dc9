"""The end-of-run summary `run` and `demo` print."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from pipeline.cli.common import (
    stdout_console,
)
from pipeline.display import literal


def _quantiles(latency: dict[str, Any]) -> str:
    return f"p50 {latency['p50']:.1f}  p90 {latency['p90']:.1f}  p99 {latency['p99']:.1f}"


def gating_lines(report: dict[str, Any]) -> list[str]:
    """Which metric decides promotion, and what it decided: the totals table alone can show
    the model behind on another metric, or behind over the whole run, and still promoted.

    >>> gating_lines({"metric": "ROCAUC", "promotions": [], "demotions": []})
    ['ROCAUC gates promotion (...): the model was not promoted, the fallback served throughout']
    """
    metric = report["metric"]
    lines = []
    decisions = sorted(report["promotions"] + report["demotions"], key=lambda d: d["label_index"])
    if report["promotions"]:
        first = report["promotions"][0]
        served = report.get("predictions_by_source") or {}
        total = sum(served.values())
        by_model = served.get("model", 0)
        # What was served, and by whom: a split learner serves nothing itself, and counts
        # what the predictors published.
        where = "published by the predictors" if report.get("served_from_predictions") else "served"
        if by_model:
            # How many it served is in the table by source above: this line stays short
            # enough for one terminal line.
            what = f"took over at label {first['label_index']}"
        else:
            what = (
                f"was promoted at label {first['label_index']}, but served none of the "
                f"{total} predictions {where}"
            )
        lines.append(
            f"{metric} gates promotion (on a window of recent labels): the model beat the "
            f"fallback and {what}; the table above counts every label, the model's untrained "
            "start included"
        )
    else:
        lines.append(
            f"{metric} gates promotion (on a window of recent labels): the model was not "
            "promoted, the fallback served throughout"
        )
    for decision in decisions:
        lines.append(
            f"{decision['kind']} at label {decision['label_index']}: windowed {metric} model "
            f"{decision['model_metric']:.4f} vs fallback {decision['fallback_metric']:.4f}"
        )
    return lines


def labels_line(report: dict[str, Any]) -> str:
    """Events and labels, each kind of label counted by what it is.

    >>> labels_line({"events": 9, "labels": 6, "model_version": 5,
    ...              "review": {"corrections": 2}})  # doctest: +NORMALIZE_WHITESPACE
    '[bold]9[/bold] events, [bold]6[/bold] labels, [bold]5[/bold] learned (2 of them ground
    truth correcting a person; 1 raised in the model: dead letters model_error)'
    """
    # The model version counts the promotions by hand too (pipeline/core.py): not labels.
    promotions = (report.get("challengers") or {}).get("promotions") or []
    by_hand = sum(1 for p in promotions if p.get("by_hand"))
    learned = report.get("model_version", report["labels"]) - by_hand
    raised = report["labels"] - learned
    corrections = (report.get("review") or {}).get("corrections", 0)
    notes = []
    if corrections:
        notes.append(f"{corrections} of them ground truth correcting a person")
    if raised:
        notes.append(f"{raised} raised in the model: dead letters model_error")
    count = (
        f"[bold]{report['events']}[/bold] events, [bold]{report['labels']}[/bold] labels, "
        f"[bold]{learned}[/bold] learned"
    )
    return count + (f" ({'; '.join(notes)})" if notes else "")


def not_learned_line(report: dict[str, Any]) -> str | None:
    """Labels that never reached the model, by kind; None when there were none.

    >>> not_learned_line({"duplicate_labels": 3, "dead_letters": {"label_orphaned": 2,
    ...                   "not_json": 1}})
    'labels not learned: 3 duplicates, 2 label_orphaned (dead letters)'
    """
    parts = []
    if duplicates := report.get("duplicate_labels"):
        parts.append(f"{duplicates} duplicates")
    for reason, count in (report.get("dead_letters") or {}).items():
        if reason.startswith("label_"):
            parts.append(f"{count} {reason} (dead letters)")
    review = report.get("review") or {}
    if after := review.get("answers_after_truth"):
        parts.append(f"{after} answers from people only scored (ground truth came first)")
    if late := review.get("answers_unjoined"):
        parts.append(f"{late} answers from people after their event left the join buffer")
    return "labels not learned: " + ", ".join(parts) if parts else None


def print_summary(report: dict[str, Any], replayed_first: bool = False) -> None:
    """``replayed_first``: everything was published before consuming began (the demo), so the
    time from publishing to prediction is mostly time spent waiting in the topic."""
    out = stdout_console()
    out.print("\n" + labels_line(report) + f", mode now [bold]{report['mode']}[/bold]")
    if not_learned := not_learned_line(report):
        out.print(not_learned, highlight=False)
    out.print("\n[bold]Predictions served by source[/bold]")
    sources = Table()
    sources.add_column("source")
    sources.add_column("predictions", justify="right")
    for source, count in report["predictions_by_source"].items():
        sources.add_row(literal(source), str(count))  # split mode reads them from a topic
    out.print(sources)
    out.print("\n[bold]Metrics on the same labels, over the whole run[/bold]")
    metrics = Table()
    metrics.add_column("metric")
    for role in ("model", "fallback", "served"):
        metrics.add_column(role, justify="right")
    for metric_name in report["metrics"]["model"]:
        gates = " (gates promotion)" if metric_name == report.get("metric") else ""
        metrics.add_row(
            metric_name + gates,
            *(
                f"{report['metrics'][role][metric_name]:.4f}"
                for role in ("model", "fallback", "served")
            ),
        )
    out.print(metrics)
    for line in gating_lines(report):
        out.print(line, highlight=False)
    latency = report.get("run", {}).get("latency_ms", {})
    processing = latency.get("processing")
    if processing and processing["count"]:
        out.print(f"processing per record, ms: {_quantiles(processing)}", highlight=False)
    waited = latency.get("event_to_prediction")
    if waited and waited["count"]:
        what = (
            "from publishing to prediction, ms (the replay published everything first, so "
            "this is mostly time waiting in the topic)"
            if replayed_first
            else "from publishing to prediction (time in the topic included), ms"
        )
        out.print(f"{what}: {_quantiles(waited)}", highlight=False)
    for drift in report.get("drift", []):
        out.print(literal(f"drift detected at label {drift['label_index']} ({drift['detector']})"))
    if report["dead_letters"]:
        out.print(f"dead letters: {report['dead_letters']}")
    served = report.get("served_from_predictions")
    if served:
        out.print(
            f"served metrics from the published predictions: {served['scored']} labelled events "
            f"scored, {served['unscored_no_prediction']} with no published prediction "
            f"({served['waiting_for_prediction']} still awaited), {served['ignored']} "
            "predictions published again or for unknown events",
            highlight=False,
        )
    _print_review(out, report)
    for line in challenger_lines(report):
        out.print(line, highlight=False)


def challenger_lines(report: dict[str, Any]) -> list[str]:
    """The leaderboard (champion first) and the takeovers, for the summary.

    >>> board = {"leaderboard": [
    ...     {"name": "lr", "role": "champion", "windowed": 0.9, "metric": 0.88, "scored": 90},
    ...     {"name": "model", "role": "challenger", "windowed": 0.8, "metric": 0.85,
    ...      "scored": 100}],
    ...     "promotions": [{"label_index": 50, "reason": "challenger 'lr' promoted ..."}]}
    >>> for line in challenger_lines({"challengers": board}):
    ...     print(line)
    champion   lr: windowed 0.9000, whole run 0.8800 (90 labels scored)
    challenger model: windowed 0.8000, whole run 0.8500 (100 labels scored)
    at label 50: challenger 'lr' promoted ...
    """
    board = report.get("challengers") or {}
    rows = board.get("leaderboard") or []
    width = max((len(r["role"]) for r in rows), default=0)
    lines = [
        f"{r['role']:<{width}} {r['name']}: windowed {r['windowed']:.4f}, whole run "
        f"{r['metric']:.4f} ({r['scored']} labels scored)"
        for r in rows
    ]
    takeovers = board.get("promotions", [])
    return lines + [f"at label {p['label_index']}: {p['reason']}" for p in takeovers]


def _print_review(out: Any, report: dict[str, Any]) -> None:
    """Humans in the loop, when anybody was asked."""
    review = report.get("review") or {}
    if not review.get("sent") and not review.get("labels_by_source", {}).get("human"):
        return
    out.print(
        f"review requests: {review['sent']} sent, {review['answered']} answered, "
        f"{review['expired']} expired, {review['skipped_budget']} skipped for budget, "
        f"{review['skipped_pending']} skipped (max_pending)"
    )
    learned = ", ".join(f"{n} {s}" for s, n in review.get("labels_by_source", {}).items())
    out.print(f"labels learned by source: {learned or 'none'}")
    if review.get("human_scored"):
        scores = ", ".join(f"{k} {v:.4f}" for k, v in review["human_metrics"].items())
        out.print(f"people vs ground truth ({review['human_scored']} answers): {scores}")
    answer = review.get("time_to_answer_s", {})
    if answer.get("count"):
        out.print(
            f"time to answer s: p50 {answer['p50']:.1f}  p90 {answer['p90']:.1f}  "
            f"p99 {answer['p99']:.1f}"
        )
