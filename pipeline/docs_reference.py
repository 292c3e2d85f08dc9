"""The reference pages, generated from the code so that they cannot drift from it.

Four Markdown pages: every config field (from the pydantic models in :mod:`pipeline.config`),
every command and option (from the Typer app), every Prometheus metric (from the metrics
classes in :mod:`pipeline.telemetry`) and every dead-letter code (:data:`pipeline.validation.
REASONS`). Plain Markdown, no site generator needed: a docs site may include the files as they
are.

    python -m pipeline.docs_reference            # writes docs/reference/*.md
    python -m pipeline.docs_reference --check    # exit 1 when a page differs from the code
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipeline.config import RiverlineConfig

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "docs" / "reference"
HEADER = (
    "<!-- Generated from the code by `python -m pipeline.docs_reference`: do not edit, "
    "run it again. -->\n\n"
)


@dataclass(frozen=True)
class ConfigField:
    """One config field: its dotted path (``[]`` for the items of a list), type and default."""

    path: str
    type: str
    default: str
    description: str
    section: str


def _section_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if found := _section_model(arg):
            return found
    return None


def type_name(annotation: Any) -> str:
    """A type as a config file's author reads it.

    >>> type_name(int | None), type_name(tuple[str, ...]), type_name(Literal["a", "b"])
    ('int | null', 'list of str', '"a" | "b"')
    """
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section" if annotation.__name__.endswith("Config") else annotation.__name__.lower()
    if annotation is SecretStr:
        return "str (secret)"
    if annotation is Any:
        return "any"
    origin = get_origin(annotation)
    if origin is Annotated:  # the type under its validators
        return type_name(get_args(annotation)[0])
    if origin is Literal:
        return " | ".join(f'"{v}"' if isinstance(v, str) else repr(v) for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        # Scalar-or-null unions read as in YAML; each member once (bool | int | ... | None).
        names = [type_name(arg) for arg in get_args(annotation)]
        return " | ".join(dict.fromkeys(names))
    if origin in (tuple, list):
        item = type_name(get_args(annotation)[0])
        return f"list of ({item})" if " | " in item else f"list of {item}"
    if origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    """The default as it would be written in YAML; ``required`` when there is none."""
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    return yaml_value(value)


def yaml_value(value: Any) -> str:
    """
    >>> yaml_value(None), yaml_value(True), yaml_value(()), yaml_value(""), yaml_value(0.5)
    ('null', 'true', '[]', '""', '0.5')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _constraints(field: FieldInfo) -> str:
    """Bounds and patterns (``>= 1``), from the field's pydantic metadata."""
    parts = []
    for item in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(item, attr, None)
            if bound is not None:
                parts.append(f"{sign} {bound}")
        pattern = getattr(item, "pattern", None)
        if pattern is not None:
            parts.append(f"matches `{pattern}`")
    return ", ".join(parts)


def config_fields(
    model: type[BaseModel] = RiverlineConfig, prefix: str = "", section: str = ""
) -> Iterator[ConfigField]:
    """Every field of the config, depth first in the models' order; sections before fields.

    >>> [f.path for f in config_fields()][:3]
    ['name', 'kafka', 'kafka.bootstrap']
    >>> next(f for f in config_fields() if f.path == "fallback.rules[].op").default
    'required'
    """
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        sub = _section_model(field.annotation)
        is_list = get_origin(field.annotation) in (tuple, list)
        description = field.description or ""
        if limits := _constraints(field):
            description = f"{description} ({limits})" if description else limits
        default = "" if sub is not None and not is_list else default_text(field)
        yield ConfigField(path, type_name(field.annotation), default, description, section)
        if sub is not None:
            yield from config_fields(sub, f"{path}[]." if is_list else f"{path}.", section or name)


def _cell(text: str) -> str:
    # A pipe inside a cell (model specs, union types) would end the cell.
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    # A pipe escaped inside a code span shows its backslash in Python-Markdown (MkDocs), and an
    # unescaped one ends the cell on GitHub: such a cell stays plain text, its pipes escaped.
    if "|" in text:
        return text.replace("<", "&lt;")
    return f"`{text}`" if text else ""


def render_config() -> str:
    """The config reference: one table per section, every field with type, default, meaning."""
    fields = list(config_fields())
    lines = [
        HEADER + "# Configuration reference\n",
        "Every field of the YAML config file. Environment variables "
        "`RIVERLINE_<SECTION>__<FIELD>` override the file, command-line flags override both. "
        "`riverline config check FILE` validates a file; `riverline config schema` prints the "
        "JSON Schema of the same fields for editors.\n",
    ]
    groups: dict[str, list[ConfigField]] = {}
    for field in fields:
        groups.setdefault(field.section, []).append(field)
    for section, members in groups.items():
        if section:
            model = _section_model(RiverlineConfig.model_fields[section].annotation)
            doc = inspect.cleandoc(model.__doc__ or "") if model else ""
            lines.append(f"## `{section}`\n")
            if doc:
                lines.append(doc.replace("\n", " ") + "\n")
            members = [f for f in members if f.path != section]
        else:
            lines.append("## Top level\n")
        lines.append("| field | type | default | description |")
        lines.append("| --- | --- | --- | --- |")
        for f in members:
            default = f.default if f.default == "required" else _code(f.default)
            row = [_code(f.path), _code(f.type), default, f.description]
            lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
        lines.append("")
    return "\n".join(lines)


@dataclass(frozen=True)
class CommandDoc:
    """One command of the CLI: its full name, help text and parameters."""

    name: str
    help: str
    params: tuple[ParamDoc, ...]
    group: bool


@dataclass(frozen=True)
class ParamDoc:
    """One option (``--config, -c``) or argument (``FILE``) of a command."""

    names: str
    type: str
    default: str
    help: str
    required: bool


def _param(param: Any) -> ParamDoc:
    if getattr(param, "param_type_name", "option") == "argument":
        names = param.metavar or param.name.upper()
    else:
        names = ", ".join([*param.opts, *param.secondary_opts])
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None and descriptor.is_choice:
        kind = " | ".join(str(choice) for choice in descriptor.choices or ())
    else:
        bare = getattr(param, "bare_type", None)
        kind = bare() if callable(bare) else ""
    shown = param.show_default is not False and param.default is not None
    default = yaml_value(param.default) if shown and not param.required else ""
    return ParamDoc(names, kind, default, param.help or "", bool(param.required))


def cli_commands(command: Any, prefix: str = "riverline") -> Iterator[CommandDoc]:
    """Every visible command and group of a (Typer-made) click command tree, depth first."""
    params = tuple(_param(p) for p in command.params if not getattr(p, "hidden", False))
    subcommands = getattr(command, "commands", None)
    yield CommandDoc(
        prefix, inspect.cleandoc(command.help or ""), params, group=subcommands is not None
    )
    for name, sub in (subcommands or {}).items():
        if not sub.hidden:
            yield from cli_commands(sub, f"{prefix} {name}")


def typer_command(app: Any) -> Any:
    """The click command tree Typer builds from ``app``, as ``riverline`` runs it."""
    import typer.main

    return typer.main.get_command(app)


def render_cli(app: Any) -> str:
    """The command reference: each command's help and a table of its options and arguments."""
    lines = [
        HEADER + "# Command-line reference\n",
        "Every `riverline` command with its options, as `riverline COMMAND --help` prints them. "
        "Exit statuses: 0 done; 1 a backend or checkpoint problem; 2 a bad config or usage; "
        "3 fenced (another writer took the pipeline); 130 interrupted.\n",
    ]
    for command in cli_commands(typer_command(app)):
        level = "#" * min(2 + command.name.count(" "), 4)
        lines.append(f"{level} `{command.name}`\n")
        if command.help:
            lines.append(command.help + "\n")
        if command.params:
            lines.append("| option | type | default | description |")
            lines.append("| --- | --- | --- | --- |")
            for p in command.params:
                default = "required" if p.required else _code(p.default)
                row = [_code(p.names), _code(p.type), default, p.help]
                lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
            lines.append("")
    return "\n".join(lines)


@dataclass(frozen=True)
class MetricDoc:
    """One Prometheus metric as /metrics exposes it."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str
    served_by: str


# The metrics classes, and which processes serve each on --metrics-port.
METRIC_SOURCES = (
    ("PipelineMetrics", "`run`, `learner`, `predictor`"),
    ("ReplayMetrics", "`replay`"),
)


def metrics() -> list[MetricDoc]:
    """Every metric the metrics classes register, in their order of definition."""
    from prometheus_client.metrics import MetricWrapperBase

    from pipeline import telemetry

    found: list[MetricDoc] = []
    for class_name, served_by in METRIC_SOURCES:
        instance = getattr(telemetry, class_name)()
        for value in vars(instance).values():
            if not isinstance(value, MetricWrapperBase):
                continue
            # No public accessor for these; the family name lacks the _total a counter is
            # exposed with.
            kind = value._type or "untyped"
            name = value._name + ("_total" if kind == "counter" else "")
            labels = tuple(value._labelnames)
            found.append(MetricDoc(name, kind, labels, value._documentation, served_by))
    return found


def render_metrics() -> str:
    """The metrics reference: name, type, labels, meaning and which process serves it."""
    lines = [
        HEADER + "# Prometheus metrics\n",
        "Served on `/metrics` by a process started with `--metrics-port P` (or "
        "`telemetry.prometheus_port`), beside `/healthz` and `/readyz`. A histogram is exposed "
        "as its `_bucket`, `_sum` and `_count` series.\n",
        "| metric | type | labels | served by | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for m in metrics():
        labels = ", ".join(f"`{label}`" for label in m.labels)
        row = [_code(m.name), m.type, labels, m.served_by, m.help]
        lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
    return "\n".join(lines) + "\n"


def render_dead_letters() -> str:
    """The dead-letter codes: every ``reason`` a dead letter may carry, with its meaning."""
    from pipeline.validation import REASONS

    lines = [
        HEADER + "# Dead-letter codes\n",
        "A record that cannot be used goes to the pipeline's dead-letter topic with one of these "
        "codes as its `reason`, its original bytes and where it came from; the pipeline goes "
        "on. `riverline tail dead-letters` prints them; `riverline_dead_letters_total{reason}` "
        "counts them.\n",
        "| reason | meaning |",
        "| --- | --- |",
    ]
    lines += [f"| `{code}` | {_cell(meaning)} |" for code, meaning in REASONS.items()]
    return "\n".join(lines) + "\n"


# What a field of a wire record means, where its name and type do not say it all. A note for a
# field the model no longer has fails tests/unit/test_docs_reference.py.
WIRE_NOTES: dict[tuple[str, str], str] = {
    ("Event", "id"): "Unique per event; its label names it.",
    ("Event", "ts"): "Event time: epoch seconds, or ISO-8601 text.",
    ("Event", "features"): "Name to number, string, bool or null (null: missing).",
    ("Event", "key"): "Partitioning key; unset: the id. An event and its label share it.",
    ("Event", "attributes"): "Not features: e.g. a group for fairness slices.",
    ("Label", "id"): "The event's id.",
    ("Label", "label"): "A class (validation.labels, type-exact) or a regressor's number.",
    ("Label", "ts"): "When the label became known (event-time order of the merge).",
    ("Label", "source"): "A person's answer is `human`, with `reviewer` and `answered_at`.",
    ("Prediction", "source"): "Who served it.",
    ("Prediction", "model_version"): "The model version used (labels learned, plus one per "
    "challenger promoted by hand).",
    ("Prediction", "mode"): "The gating mode at that moment.",
    ("Prediction", "explanation"): "With explain.enabled: each feature's contribution, and for "
    "non-linear models a last entry with the method, target, base and prediction.",
    ("Prediction", "deadline_passed"): "Defer mode: nobody answered in time, the fallback served.",
    ("ReviewRequest", "classes"): "The answers a person may give (validation.labels, the "
    "fallback's, the model's, those seen).",
    ("ReviewRequest", "neighbours"): "The most similar recently labelled events, nearest first "
    "(review.neighbours).",
    ("DeadLetter", "value_b64"): "The original value (base64), cut to fit "
    "kafka.max_message_bytes when `value_truncated`.",
    ("DeadLetter", "value_sha256"): "Of the whole original value.",
}


def wire_models() -> list[type[BaseModel]]:
    """The records riverline reads and writes, in the order a record travels."""
    from pipeline.schemas import (
        DeadLetter,
        Event,
        Label,
        ModelOpinion,
        Neighbour,
        Prediction,
        ReviewRequest,
        RulesOpinion,
    )

    return [
        Event,
        Label,
        Prediction,
        ReviewRequest,
        ModelOpinion,
        RulesOpinion,
        Neighbour,
        DeadLetter,
    ]


def render_wire_formats() -> str:
    """Every wire record's fields, type and default, from the pydantic models that parse them."""
    lines = [
        HEADER + "# Wire formats (JSON)\n",
        "Records on the topics are JSON objects. Events and labels are validated by these models "
        "(unknown fields are refused, and dead-lettered); riverline writes the others.\n",
    ]
    for model in wire_models():
        lines.append(f"## `{model.__name__}`\n")
        doc = inspect.cleandoc(model.__doc__ or "")
        if doc:
            lines.append(doc.replace("\n", " ").replace(":class:", "") + "\n")
        lines.append("| field | type | default | meaning |")
        lines.append("| --- | --- | --- | --- |")
        for name, field in model.model_fields.items():
            row = [
                _code(name),
                _code(type_name(field.annotation)),
                default_text(field) if field.is_required() else _code(default_text(field)),
                WIRE_NOTES.get((model.__name__, name), ""),
            ]
            lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
        lines.append("")
    return "\n".join(lines)


PAGES = {
    "config.md": "Configuration: every field of the YAML file, its type, default and meaning.",
    "cli.md": "Command line: every command and option.",
    "metrics.md": "Prometheus metrics: every metric, its labels and which process serves it.",
    "dead-letters.md": "Dead-letter codes: every reason a record is refused with.",
    "wire-formats.md": "Wire formats: every field of every record on the topics.",
}


def render_index() -> str:
    """The reference's contents page."""
    lines = [HEADER + "# Reference\n", "Generated from the code, so it cannot drift from it.\n"]
    for page, text in PAGES.items():
        title, what = text.split(":", 1)
        lines.append(f"- [{title}]({page}):{what}")
    return "\n".join(lines) + "\n"


def render_all(app: Any) -> dict[str, str]:
    """Every reference page, file name -> Markdown."""
    return {
        "index.md": render_index(),
        "config.md": render_config(),
        "cli.md": render_cli(app),
        "metrics.md": render_metrics(),
        "dead-letters.md": render_dead_letters(),
        "wire-formats.md": render_wire_formats(),
    }


def stale_pages(pages: dict[str, str], directory: Path) -> list[str]:
    """The pages whose file in ``directory`` is missing or differs from ``pages``."""
    return [
        name
        for name, text in pages.items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.docs_reference")
    parser.add_argument("directory", nargs="?", type=Path, default=REFERENCE_DIR)
    parser.add_argument(
        "--check", action="store_true", help="Write nothing; exit 1 if a page is out of date."
    )
    args = parser.parse_args(argv)
    from pipeline.cli import app  # the app with every command registered

    pages = render_all(app)
    stale = stale_pages(pages, args.directory)
    if args.check:
        for name in stale:
            print(f"{args.directory / name} is out of date", file=sys.stderr)
        return 1 if stale else 0
    args.directory.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (args.directory / name).write_text(pages[name])
        print(f"wrote {args.directory / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
