"""`riverline promote`: make a challenger the champion of a running pipeline, by hand."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape

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


@app.command()
def promote(
    challenger: Annotated[str, typer.Argument(help="The challenger's name (model.challengers).")],
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    redis_url: RedisOpt = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the pipeline's writer to apply it.")
    ] = 30.0,
) -> None:
    """Ask the pipeline's writer (run or learner) to promote CHALLENGER; it does so between two
    checkpoints, and the old champion stays on as a challenger."""
    from consumers import promotion

    with friendly_errors():
        pipeline = build_config(config, name, None, redis_url).name
        store = open_store(config, name, redis_url)
        request_id = promotion.request(store, challenger)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            answer = promotion.result(store, request_id)
            if answer is not None:
                if answer["applied"]:
                    print(answer["message"])
                    return
                console.print(f"[red]error:[/red] {escape(answer['message'])}", highlight=False)
                raise typer.Exit(1)
            time.sleep(0.2)
    console.print(
        f"[red]error:[/red] no writer of pipeline {escape(pipeline)} applied it within "
        f"{wait:g}s; the request stays until one does",
        highlight=False,
    )
    raise typer.Exit(1)
