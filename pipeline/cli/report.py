"""`riverline report`: the learning curve from a report or the latest checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from pipeline.cli.app import app
from pipeline.cli.common import (
    DEFAULT_CONFIG,
    ConfigOpt,
    NameOpt,
    RedisOpt,
    build_config,
    friendly_errors,
    open_store,
    print_error,
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
    from pipeline.reporting import write_learning_curve

    with friendly_errors():
        if from_json is not None:
            data = read_report(from_json)
            stem = from_json.stem + "-learning-curve"
        else:
            from pipeline.core import LearningCore

            cfg = build_config(config, name, None, redis_url)
            checkpoint = open_store(config, name, redis_url).load_latest()
            if checkpoint is None:
                print_error(
                    f"pipeline {cfg.name} has no checkpoint yet (nothing to draw under that name)"
                )
                raise typer.Exit(1)
            data = LearningCore.from_config(cfg, checkpoint.state).report()
            data["pipeline"] = cfg.name
            stem = f"{cfg.name}-learning-curve"
        try:
            png, page = write_learning_curve(data, out, stem=stem)
        except OSError as e:
            print_error(f"cannot write into {out}: {e.strerror}")
            raise typer.Exit(1) from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            # A report that passed read_report's checks but holds odd values further down.
            print_error(
                f"{from_json or 'the checkpoint'} does not hold a report riverline can draw "
                f"({type(e).__name__}: {e})"
            )
            raise typer.Exit(2) from None
        Console().print(f"wrote {png} and {page}", highlight=False)


# The fields the learning curve reads, and their JSON types.
REPORT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "events": int,
    "labels": int,
    "metrics": dict,
    "history": list,
    "promotions": list,
    "demotions": list,
}


def read_report(path: Path) -> dict[str, Any]:
    """A JSON report written by ``run --report`` / ``demo --report``; bad files exit 2."""
    import json

    def refuse(why: str) -> NoReturn:
        print_error(f"--from-json {path}: {why}")
        raise typer.Exit(2)

    try:
        text = path.read_text()
    except OSError as e:
        refuse(f"cannot read it ({e.strerror})")
    except UnicodeDecodeError:
        refuse("not a text file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        refuse(f"not JSON ({e.msg} at line {e.lineno}, column {e.colno})")
    if not isinstance(data, dict):
        refuse(f"not a riverline report (a JSON {type(data).__name__}, not an object)")
    for field, kind in REPORT_FIELDS.items():
        if field not in data:
            refuse(f"not a riverline report (no {field!r} field)")
        if not isinstance(data[field], kind) or isinstance(data[field], bool):
            refuse(f"not a riverline report ({field!r} is a {type(data[field]).__name__})")
    for sample in data["history"]:
        if not isinstance(sample, dict):
            refuse("not a riverline report ('history' holds a non-object)")
    return data
