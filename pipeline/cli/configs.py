"""`riverline config schema|check`: the config file's JSON Schema, and a check before a start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pipeline.cli.app import app
from pipeline.cli.common import build_config, console, friendly_errors

config_app = typer.Typer(help="Check a config file; print its JSON Schema for editors.")
app.add_typer(config_app, name="config")

OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write it to this file, not stdout.", show_default=False),
]


def write_text(text: str, output: Path | None) -> None:
    """``text`` to stdout, or to ``output`` with one error line (exit 1) when it cannot be."""
    if output is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    try:
        output.write_text(text)
    except OSError as e:
        console.print(
            f"[red]error:[/red] cannot write {escape(str(output))}: {escape(e.strerror or str(e))}",
            markup=True,
            highlight=False,
        )
        raise typer.Exit(1) from None


@config_app.command("schema")
def config_schema(output: OutputOpt = None) -> None:
    """Print the JSON Schema of the config file: every field, its type, default and meaning.

    Editors that speak the YAML language server complete and check a config against it: put
    `# yaml-language-server: $schema=riverline.schema.json` at the top of the YAML file.
    """
    from pipeline.config import config_schema as schema

    write_text(json.dumps(schema(), indent=2) + "\n", output)


@config_app.command("check")
def config_check(
    path: Annotated[str, typer.Argument(metavar="FILE", help="The YAML config file to check.")],
) -> None:
    """Validate a config file; each bad field is named, a misspelt one with the name meant.

    The file is loaded as `run`, `learner` and `predictor` load it (RIVERLINE_* environment
    variables included). Exit 0 and one line when it is valid, 2 otherwise.
    """
    with friendly_errors():
        cfg = build_config(path)
    rules = len(cfg.fallback.rules)
    typer.echo(
        f"{path}: OK: pipeline {cfg.name}, model {cfg.model.spec}, metric "
        f"{cfg.evaluation.metric}, {rules} fallback rule{'' if rules == 1 else 's'}, "
        f"{cfg.kafka.partitions} partition{'' if cfg.kafka.partitions == 1 else 's'}, "
        f"review {cfg.review.policy}"
    )
