"""`riverline report`: the learning curve from a report or the latest checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.cli.app import app
from pipeline.cli.common import (
    DEFAULT_CONFIG,
    ConfigOpt,
    NameOpt,
    RedisOpt,
    build_config,
    console,
    friendly_errors,
    open_store,
)


@app.command("report")
def report_command(
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    redis_url: RedisOpt = None,
    from_json: Annotated[
        Path | None, typer.Option(help="A report written by run/demo, instead of Redis.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the PNG and HTML.")] = Path("reports"),
) -> None:
    """Write the learning curve (PNG and HTML) from a JSON report or the latest checkpoint."""
    import json

    from pipeline.reporting import write_learning_curve

    with friendly_errors():
        if from_json is not None:
            data = json.loads(from_json.read_text())
            stem = from_json.stem + "-learning-curve"
        else:
            from pipeline.core import LearningCore

            cfg = build_config(config, name, None, redis_url)
            checkpoint = open_store(config, name, redis_url).load_latest()
            if checkpoint is None:
                console.print(f"pipeline {cfg.name} has no checkpoint yet", highlight=False)
                raise typer.Exit(1)
            data = LearningCore.from_config(cfg, checkpoint.state).report()
            stem = f"{cfg.name}-learning-curve"
        png, page = write_learning_curve(data, out, stem=stem)
        Console().print(f"wrote {png} and {page}", highlight=False)
