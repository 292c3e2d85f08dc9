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
