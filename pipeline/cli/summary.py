"""The end-of-run summary `run` and `demo` print."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from pipeline.cli.common import (
    stdout_console,
)


def print_summary(report: dict[str, Any]) -> None:
    out = stdout_console()
    out.print(
        f"\n[bold]{report['events']}[/bold] events, [bold]{report['labels']}[/bold] labels "
        f"learned, mode now [bold]{report['mode']}[/bold]"
    )
    out.print("\n[bold]Predictions served by source[/bold]")
    sources = Table()
    sources.add_column("source")
    sources.add_column("predictions", justify="right")
    for source, count in report["predictions_by_source"].items():
        sources.add_row(source, str(count))
    out.print(sources)
    out.print("\n[bold]Metrics on the same labels[/bold]")
    metrics = Table()
    metrics.add_column("metric")
    for role in ("model", "fallback", "served"):
        metrics.add_column(role, justify="right")
    for metric_name in report["metrics"]["model"]:
        metrics.add_row(
            metric_name,
            *(
                f"{report['metrics'][role][metric_name]:.4f}"
                for role in ("model", "fallback", "served")
            ),
        )
    out.print(metrics)
    decisions = sorted(report["promotions"] + report["demotions"], key=lambda d: d["label_index"])
    for decision in decisions:
        out.print(
            f"{decision['kind']} at label {decision['label_index']}: windowed model "
            f"{decision['model_metric']:.4f} vs fallback {decision['fallback_metric']:.4f}"
        )
    if not report["promotions"]:
        out.print("the model was not promoted: the fallback served throughout")
    latency = report.get("run", {}).get("latency_ms", {}).get("event_to_prediction")
    if latency and latency["count"]:
        out.print(
            f"event-to-prediction latency ms: p50 {latency['p50']:.1f}  p90 {latency['p90']:.1f}  "
            f"p99 {latency['p99']:.1f}"
        )
    for drift in report.get("drift", []):
        out.print(f"drift detected at label {drift['label_index']} ({drift['detector']})")
    if report["dead_letters"]:
        out.print(f"dead letters: {report['dead_letters']}")
    _print_review(out, report)


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
