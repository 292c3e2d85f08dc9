"""The ``riverline`` command line: one module per group of commands, all on one Typer app."""

from __future__ import annotations

import os

from pipeline.cli import (  # noqa: F401  (registers the commands)
    broker,
    checkpoints,
    compare,
    configs,
    demo,
    explain,
    model,
    pipelines,
    promote,
    replay,
    report,
    review,
    roles,
    run,
    status,
    tail,
    topics,
)
from pipeline.cli.app import app


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


__all__ = ["app", "main"]
