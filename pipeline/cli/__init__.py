"""The ``riverline`` command line: one module per group of commands, all on one Typer app."""

from __future__ import annotations

import os

from pipeline.cli import checkpoints, demo, replay, report, review, run, status  # noqa: F401
from pipeline.cli.app import app


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


__all__ = ["app", "main"]
