"""The Typer application every command module registers on."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="Continual learning on Kafka with River: serve a fallback until the model earns trust.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"riverline {version('riverline')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Continual learning on Kafka with River: serve a fallback until the model earns trust."""
