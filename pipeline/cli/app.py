"""The Typer application every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Continual learning on Kafka with River: serve a fallback until the model earns trust.",
    no_args_is_help=True,
    add_completion=False,
)
