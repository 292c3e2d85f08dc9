"""`riverline replay`: publish a dataset as events and delayed labels."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli.app import app
from pipeline.cli.common import (
    DEFAULT_CONFIG,
    BootstrapOpt,
    ConfigOpt,
    LogOpt,
    MetricsPortOpt,
    NameOpt,
    RedisOpt,
    build_config,
    console,
    friendly_errors,
    kafka_bootstrap,
    parse_speed,
    print_error,
    setup_logging,
)

if TYPE_CHECKING:
    from pipeline.telemetry import ReplayMetrics
    from producers.schedule import Emission


class Tally:
    """Counts emissions and hands them to the metrics and the progress bar every ``every_s``
    seconds (at the next emission; 0: at each): their locks, taken per record, were a sixth
    of a replay at full speed. ``hand_over`` at the end.

    >>> from pipeline.telemetry import ReplayMetrics
    >>> from producers.schedule import Emission
    >>> metrics, advanced = ReplayMetrics(), []
    >>> tally = Tally(metrics, advanced.append, every_s=3600)
    >>> for seq, kind in enumerate(["event", "event", "label"]):
    ...     tally(Emission(kind, None, 10.0 + seq, seq))
    >>> advanced, metrics.registry.get_sample_value("riverline_replay_event_time_seconds")
    ([], 0.0)
    >>> tally.hand_over()
    >>> advanced, metrics.registry.get_sample_value("riverline_replay_event_time_seconds")
    ([2], 12.0)
    """

    def __init__(
        self, metrics: ReplayMetrics, advance: Callable[[int], None], every_s: float
    ) -> None:
        self.metrics = metrics
        self.advance = advance
        self.every_s = every_s
        self.counts = {"event": 0, "label": 0}
        self.ts = 0.0
        self.due = time.monotonic() + every_s

    def __call__(self, emission: Emission) -> None:
        self.counts[emission.kind] += 1
        self.ts = emission.ts
        if time.monotonic() >= self.due:
            self.hand_over()

    def hand_over(self) -> None:
        for kind, count in self.counts.items():
            if count:
                self.metrics.emitted(kind, self.ts, count)
        if self.counts["event"]:
            self.advance(self.counts["event"])
        self.counts = {"event": 0, "label": 0}
        self.due = time.monotonic() + self.every_s


@app.command()
def replay(
    source: Annotated[str, typer.Option(help="river:<Dataset>, a .csv or a .jsonl file.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
    label_delay: Annotated[
        str,
        typer.Option(
            help="Events (50) or event time (30s, 5m, 1h) before a label is known; none: "
            "publish no label (people are the only teachers)."
        ),
    ] = "0",
    start: Annotated[
        str | None,
        typer.Option(
            help="Event time of the first row where the source has no time column (River "
            "datasets): epoch seconds, or 'now' [default: 1700000000].",
            show_default=False,
        ),
    ] = None,
    speed: Annotated[str, typer.Option(help="Times real time (e.g. 10), or 'max'.")] = "max",
    limit: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    id_column: Annotated[str, typer.Option(help="CSV/JSONL id column.")] = "id",
    ts_column: Annotated[str, typer.Option(help="CSV/JSONL event-time column.")] = "ts",
    label_column: Annotated[
        str | None,
        typer.Option(help="CSV/JSONL label column [default: label]; a row with it empty has none."),
    ] = None,
    no_labels: Annotated[
        bool, typer.Option("--no-labels", help="The source has no label column, on purpose.")
    ] = False,
    key_column: Annotated[str | None, typer.Option(help="Partitioning key column.")] = None,
    attribute: Annotated[
        list[str] | None, typer.Option(help="A column that is an attribute, not a feature.")
    ] = None,
    on_error: Annotated[str, typer.Option(help="A malformed row: 'stop' or 'skip'.")] = "stop",
    metrics_port: MetricsPortOpt = None,
    log_level: LogOpt = "WARNING",
) -> None:
    """Publish a dataset to the events and labels topics, labels delayed as River would."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from pipeline.telemetry import ReplayMetrics, serve_registry
    from producers.replay import replay as do_replay
    from producers.schedule import parse_delay
    from producers.sources import NoLabelColumn, SourceError, SourceOptions

    setup_logging(log_level)
    if on_error not in ("stop", "skip"):
        raise typer.BadParameter("'stop' or 'skip'", param_hint="--on-error")
    try:
        delay = None if label_delay.strip().lower() == "none" else parse_delay(label_delay)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--label-delay") from None
    try:
        first_ts = None if start is None else time.time() if start == "now" else float(start)
    except ValueError:
        raise typer.BadParameter("epoch seconds or 'now'", param_hint="--start") from None
    pace = parse_speed(speed)
    if no_labels and label_column is not None:
        raise typer.BadParameter("--no-labels and --label-column contradict each other")
    with friendly_errors():
        cfg = build_config(config, name, bootstrap, redis_url)
        options = SourceOptions(
            id_column=id_column,
            ts_column=ts_column,
            label_column=None if no_labels else label_column or "label",
            key_column=key_column,
            attribute_columns=tuple(attribute or ()),
            limit=limit,
            on_error=on_error,  # type: ignore[arg-type]
        )
        if first_ts is not None:
            options = replace(options, start=first_ts)
        metrics = ReplayMetrics()
        options.on_skip = lambda _error: metrics.skipped.inc()
        if metrics_port is not None:
            port = serve_registry(metrics.registry, metrics_port)
            console.print(f"metrics on http://127.0.0.1:{port}/metrics", highlight=False)

        with kafka_bootstrap(cfg, embedded_ok=False) as servers:
            columns = [
                *Progress.get_default_columns()[:1],
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            ]
            with Progress(*columns, console=console, transient=False) as progress:
                task = progress.add_task("events", total=limit)
                # Paced, each emission is shown at once; at full speed, ten times a second.
                tally = Tally(
                    metrics,
                    lambda events: progress.advance(task, events),
                    every_s=0.1 if pace is None else 0.0,
                )
                try:
                    result = do_replay(
                        cfg,
                        servers,
                        source,
                        delay,
                        options=options,
                        speed=pace,
                        on_emission=tally,
                    )
                except SourceError as e:
                    print_error(e)
                    raise typer.Exit(2 if isinstance(e, NoLabelColumn) else 1) from None
                finally:
                    tally.hand_over()
    console.print(
        f"published {result.events} events and {result.labels} labels in {result.seconds:.2f}s"
        + (f"; skipped {result.skipped} malformed rows" if result.skipped else ""),
        highlight=False,
    )
