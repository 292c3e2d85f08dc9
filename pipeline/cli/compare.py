"""`riverline compare`: several configs over the same history, in-process, side by side."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.app import app
from pipeline.cli.common import build_config, console, friendly_errors, stdout_console


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def comparison_table(rows: list[dict[str, Any]]) -> Table:
    """The rows of :func:`pipeline.compare.summary_row` as one table, in the order given."""
    same = len({r["metric"] for r in rows}) == 1
    metric = rows[0]["metric"] if rows and same else "each run's metric"
    table = Table(
        title=f"{metric}, whole run (model%: served by the model; gap: served, best minus worst "
        "slice; µs/ev: CPU)",
        title_justify="left",
    )
    for header, justify in (
        ("config", "left"),
        ("model", "right"),
        ("fallback", "right"),
        ("served", "right"),
        ("prom.", "right"),
        ("dem.", "right"),
        ("model%", "right"),
        ("asked", "right"),
        ("gap", "right"),
        ("µs/ev", "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    # A config's name is what tells the runs apart: folded onto more lines, never cut short.
    table.columns[0].overflow = "fold"
    table.columns[0].min_width = 30
    for row in rows:
        asked = str(row["asked"]) + (f" ({row['answered']} ans.)" if row["asked"] else "")
        table.add_row(
            escape(row["name"] if same else f"{row['name']} ({row['metric']})"),
            _fmt(row["model"]),
            _fmt(row["fallback"]),
            _fmt(row["served"]),
            str(row["promotions"]),
            str(row["demotions"]),
            f"{row['model_share']:.0%}",
            asked,
            _fmt(row["slice_gap"]),
            _fmt(row["cpu_us_per_event"], 1),
        )
    return table


@app.command()
def compare(
    configs: Annotated[list[str], typer.Argument(help="YAML config files, one run each.")],
    source: Annotated[str, typer.Option(help="river:<Dataset>, a .csv or a .jsonl file.")],
    label_delay: Annotated[
        str, typer.Option(help="Events (50), event time (30s), or none (no ground truth).")
    ] = "0",
    limit: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    id_column: Annotated[str, typer.Option(help="CSV/JSONL id column.")] = "id",
    ts_column: Annotated[str, typer.Option(help="CSV/JSONL event-time column.")] = "ts",
    label_column: Annotated[str, typer.Option(help="CSV/JSONL label column.")] = "label",
    key_column: Annotated[str | None, typer.Option(help="Partitioning key column.")] = None,
    attribute: Annotated[
        list[str] | None,
        typer.Option(help="A column that is an attribute, not a feature (slices)."),
    ] = None,
    on_error: Annotated[str, typer.Option(help="A malformed row: 'stop' or 'skip'.")] = "stop",
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="key=value[,value...]: override a config key; several values make a grid "
            "(the cross product of every --set), e.g. --set gating.margin=0.01,0.05.",
        ),
    ] = None,
    reviewer: Annotated[
        str | None,
        typer.Option(
            help="Answer review requests without people: simulated:accuracy=0.95,delay=2s,seed=1 "
            "(answers are read at their event time)."
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="Worker processes, each running its share of the configs over one reading "
            "of the source; with fewer configs than jobs, one more process reads it for them "
            "[default: one per core]."
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help='Write {"runs": [one report per config]} as JSON here.')
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(help="Write a page with every config's learning curve overlaid here."),
    ] = None,
) -> None:
    """Run each config over the same history in-process (no broker, no Redis) and compare."""
    from pipeline.cli.compare_jobs import reads_apart, run_all
    from pipeline.compare import expand, parse_setting, summary_row
    from pipeline.config import ConfigError
    from pipeline.models import SpecError
    from producers.reviewer import parse_reviewer
    from producers.schedule import parse_delay
    from producers.sources import NoLabelColumn, SourceError, SourceOptions, open_source

    try:
        delay = None if label_delay.strip().lower() == "none" else parse_delay(label_delay)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--label-delay") from None
    try:
        reviewer_spec = parse_reviewer(reviewer) if reviewer is not None else None
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--reviewer") from None
    try:
        grid = expand(configs, [parse_setting(text) for text in set_ or ()])
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--set") from None
    if on_error not in ("stop", "skip"):
        raise typer.BadParameter("'stop' or 'skip'", param_hint="--on-error")
    options = SourceOptions(
        id_column=id_column,
        ts_column=ts_column,
        # Without ground truth nor a reviewer (who needs them), the labels are not read.
        label_column=None if delay is None and reviewer_spec is None else label_column,
        key_column=key_column,
        attribute_columns=tuple(attribute or ()),
        limit=limit,
        on_error=on_error,  # type: ignore[arg-type]
    )
    if jobs is not None and jobs < 1:
        raise typer.BadParameter("at least 1", param_hint="--jobs")
    with friendly_errors():
        # Every config is checked before any run starts: a bad one is named at once.
        built = []
        for one in grid:
            try:
                built.append(build_config(one.path, extra=one.overrides()))
            except (ConfigError, SpecError) as e:
                raise ConfigError(f"{one.name}: {e}" if len(grid) > 1 else str(e)) from None
    jobs = jobs or os.cpu_count() or 1
    workers = min(jobs, len(grid))
    try:
        # A source that cannot be opened is said once, here, not by every worker.
        next(open_source(source, replace(options, limit=1)), None)
    except SourceError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        raise typer.Exit(2 if isinstance(e, NoLabelColumn) else 1) from None
    console.print(
        f"comparing {len(grid)} config{'s' if len(grid) > 1 else ''} on {source} "
        f"(label delay {label_delay}), {workers} at a time"
        + (", the history read in a process of its own" if reads_apart(jobs, len(grid)) else ""),
        highlight=False,
    )
    try:
        reports = run_all(built, source, delay, options, reviewer_spec, jobs)
    except SourceError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        raise typer.Exit(1) from None
    for one, cfg, run in zip(grid, built, reports, strict=True):
        run["compare"] = {
            "name": one.name,
            "config": one.path,
            "settings": one.settings,
            "model": cfg.model.spec,
            "source": source,
            "label_delay": label_delay,
            "limit": limit,
        }
    rows = [summary_row(one.name, run) for one, run in zip(grid, reports, strict=True)]
    stdout_console().print(comparison_table(rows))
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps({"runs": reports}, indent=2, default=str) + "\n")
        console.print(f"wrote {report}", highlight=False)
    if html is not None:
        from pipeline.compare_page import write_comparison

        png, page = write_comparison(reports, html)
        console.print(f"wrote {page} and {png}", highlight=False)
