"""The generated reference names every command, option, config field, metric and dead-letter
code the code has, and the committed pages in docs/reference are what the code generates."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, get_args, get_origin

import pytest
import typer.main
from pydantic import BaseModel

from pipeline.cli import app
from pipeline.config import RiverlineConfig
from pipeline.docs_reference import REFERENCE_DIR, render_all, stale_pages
from pipeline.telemetry import PipelineMetrics, ReplayMetrics
from pipeline.validation import REASONS


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return render_all(app)


def commands(command: Any, name: str = "riverline") -> Iterator[tuple[str, Any]]:
    """(full name, command) of every visible command, walked here apart from the generator."""
    yield name, command
    for sub_name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            yield from commands(sub, f"{name} {sub_name}")


def section(page: str, heading: str) -> str:
    """The text under a ``#... `heading``` line, up to the next heading."""
    match = re.search(rf"^#+ `{re.escape(heading)}`\n(.*?)(?=^#|\Z)", page, re.M | re.S)
    assert match, f"no heading for `{heading}`"
    return match.group(1)


def test_every_command_and_option_is_in_the_cli_reference(pages: dict[str, str]) -> None:
    found = list(commands(typer.main.get_command(app)))
    assert {"riverline run", "riverline config check", "riverline checkpoint list"} <= {
        name for name, _ in found
    }
    for name, command in found:
        text = section(pages["cli.md"], name)
        for param in command.params:
            if param.hidden:
                continue
            for opt in [*param.opts, *param.secondary_opts]:
                if param.param_type_name == "argument":
                    opt = param.metavar or param.name.upper()
                assert f"`{opt}" in text or f" {opt}" in text, (name, opt)


def config_paths(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, field in model.model_fields.items():
        yield prefix + name, field
        annotation = field.annotation
        inner = get_args(annotation)[0] if get_origin(annotation) in (tuple, list) else annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield from config_paths(
                inner, f"{prefix}{name}{'[]' if inner is not annotation else ''}."
            )


def test_every_config_field_is_in_the_config_reference_with_a_description(
    pages: dict[str, str],
) -> None:
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\| `([^`]+)` \|.*$", pages["config.md"], re.M)
    }
    paths = list(config_paths(RiverlineConfig))
    assert len(paths) > 80
    for path, field in paths:
        assert path in rows, path
        # A field nobody described is a field nobody can use: config.py describes each one.
        assert field.description, f"{path} has no description in pipeline/config.py"
        assert field.description.replace("|", "\\|") in rows[path], path


def test_every_metric_and_dead_letter_code_is_in_the_reference(pages: dict[str, str]) -> None:
    for metrics in (PipelineMetrics(), ReplayMetrics()):
        for family in metrics.registry.collect():
            exposed = family.name + ("_total" if family.type == "counter" else "")
            assert f"| `{exposed}` |" in pages["metrics.md"], exposed
    for code in REASONS:
        assert f"| `{code}` |" in pages["dead-letters.md"], code


def test_the_committed_reference_is_what_the_code_generates(pages: dict[str, str]) -> None:
    stale = stale_pages(pages, REFERENCE_DIR)
    assert not stale, (
        f"docs/reference/{', '.join(stale)} out of date: run `python -m pipeline.docs_reference`"
    )


def test_every_wire_field_is_in_the_wire_formats_reference(pages: dict[str, str]) -> None:
    from pipeline.docs_reference import WIRE_NOTES, wire_models

    models = {model.__name__: model for model in wire_models()}
    assert {"Event", "Label", "Prediction", "ReviewRequest", "DeadLetter"} <= set(models)
    for name, model in models.items():
        text = section(pages["wire-formats.md"], name)
        for field in model.model_fields:
            assert f"| `{field}` |" in text, (name, field)
    # A note for a field that no longer exists would describe nothing.
    for model_name, field in WIRE_NOTES:
        assert field in models[model_name].model_fields, (model_name, field)
