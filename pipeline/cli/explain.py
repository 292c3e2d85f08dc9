"""`riverline explain`: why the model (or the fallback) answered an event as it did, or what it
would answer, and why, to features a person makes up."""

from __future__ import annotations

import json
from contextlib import nullcontext
from typing import Annotated, Any

import typer
from rich.table import Table

from pipeline.cli.app import app
from pipeline.cli.common import (
    DEFAULT_CONFIG,
    BootstrapOpt,
    ConfigOpt,
    NameOpt,
    RedisOpt,
    build_config,
    console,
    friendly_errors,
    kafka_bootstrap,
    open_store,
    stdout_console,
)
from pipeline.config import RiverlineConfig


def _find(cfg: RiverlineConfig, servers: str, topic: str, scan: int, event_id: str) -> Any:
    """The last record of ``topic`` (among its last ``scan`` records) whose id is ``event_id``."""
    from pipeline.cli.tail import NoSuchTopic, read_tail

    found = None
    try:
        for _, _, raw in read_tail(cfg.kafka, servers, topic, scan, lambda: False):
            try:
                record = json.loads(raw or b"")
            except ValueError:
                continue
            if isinstance(record, dict) and str(record.get("id")) == event_id:
                found = record
    except NoSuchTopic:
        return None
    return found


def _recent_events(cfg: RiverlineConfig, servers: str, count: int) -> list[dict[str, Any]]:
    """The features of the last ``count`` events: the background of a sampled explanation."""
    from pipeline.cli.tail import NoSuchTopic, read_tail

    events = []
    try:
        for _, _, raw in read_tail(cfg.kafka, servers, cfg.kafka.topics.events, count, bool):
            try:
                record = json.loads(raw or b"")
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("features"), dict):
                features = record["features"]
                events.append({k: v for k, v in features.items() if v is not None})
    except NoSuchTopic:
        pass
    return events


def _model(
    cfg: RiverlineConfig, config: str, name: str | None, redis_url: str | None, version: int | None
) -> tuple[Any, bool, str, list[dict[str, Any]]]:
    """(model, classifier, where it came from, background): the model of version ``version``
    where it is still kept (a learner's published model versions, else a kept checkpoint made
    at that version), else the newest checkpoint's model (the current one). A checkpoint's
    background is the recent events its explainer kept (empty from a model version)."""
    from pipeline.core import LearningCore
    from pipeline.models import is_classifier

    if version is not None:
        from pipeline.cli.model import open_model_store

        versions = open_model_store(config, name, redis_url)
        if any(meta.get("version") == version for meta in versions.list()):
            snapshot = versions.load(version)
            return snapshot.model, snapshot.classifier, f"model version {version}", []
    store = open_store(config, name, redis_url)
    latest = store.latest_version()
    if latest is None:
        console.print(f"pipeline {cfg.name}: no model in Redis yet", highlight=False)
        raise typer.Exit(1)
    chosen, note = latest, ""
    if version is not None:
        # Newest first; the metadata is JSON, so only the checkpoint chosen is unpickled.
        kept = [v for v in reversed(store.versions()) if v != latest]
        made_then = next((v for v in [latest, *kept] if _version_of(store, v) == version), None)
        if made_then is not None:
            chosen = made_then
        else:
            note = f"; model version {version} is no longer kept: the current one"
    core = LearningCore.from_config(cfg, store.load(chosen).state)
    model = core.state.model
    where = f"checkpoint {chosen} (model version {core.model_version}{note})"
    memory = core.state.explain_memory
    background = list(memory.background) if memory is not None else []
    return model, is_classifier(model), where, background


def _version_of(store: Any, checkpoint: int) -> int | None:
    """The model version a checkpoint holds, from its metadata (None: not said, or unreadable:
    checkpoints from before it was written there)."""
    from pipeline.checkpointing.trust import CheckpointError

    try:
        found = (store.meta(checkpoint) or {}).get("model_version")
    except CheckpointError:
        return None
    return found if isinstance(found, int) else None


def _print(shown: dict[str, Any]) -> None:
    out = stdout_console()
    for key in ("id", "source", "prediction", "confidence", "model_version", "model", "note"):
        if shown.get(key) is not None:
            out.print(f"{key}: {shown[key]}", highlight=False)
    explanation = shown.get("explanation") or []
    table = Table(title="contributions")
    for column in ("feature", "value", "contribution"):
        table.add_column(column)
    for entry in explanation:
        if "feature" in entry:
            table.add_row(
                str(entry["feature"]), str(entry["value"]), f"{entry['contribution']:+.4f}"
            )
        else:
            out.print(
                f"method {entry.get('method')}: base {entry.get('base'):.4f} + contributions = "
                f"{entry.get('prediction'):.4f} (target {entry.get('target')})",
                highlight=False,
            )
            for step in entry.get("path") or []:
                out.print(f"  {step['test']}{' (missing)' if step.get('missing') else ''}")
            if entry.get("leaf") is not None:
                out.print(f"  leaf {entry['leaf']}", highlight=False)
    if explanation:
        out.print(table)


@app.command()
def explain(
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
    event_id: Annotated[
        str | None, typer.Option("--id", help="The event's id: why it was answered as it was.")
    ] = None,
    features: Annotated[
        str | None,
        typer.Option("--features", help="A what-if event's features (JSON object), explained."),
    ] = None,
    recompute: Annotated[
        bool,
        typer.Option("--recompute", help="Recompute even when the prediction has an explanation."),
    ] = False,
    scan: Annotated[
        int, typer.Option(min=1, help="How many of each topic's last records to search.")
    ] = 100_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Why the model (or the fallback) answered an event as it did, from its prediction record or
    recomputed with the model of that version (where kept, else the current one); or, with
    --features, what the current model answers to a what-if event, and why."""
    from pipeline.explain import ExplainSettings, explain_answer

    if (event_id is None) == (features is None):
        raise typer.BadParameter("give either --id or --features", param_hint="--id/--features")
    with friendly_errors():
        cfg = build_config(config, name, bootstrap, redis_url)
        settings = ExplainSettings.from_config(cfg.explain.model_copy(update={"enabled": True}))
        assert settings is not None
        shown: dict[str, Any] = {}
        x: dict[str, Any] | None = None
        background: list[dict[str, Any]] = []
        version: int | None = None
        # A what-if needs no broker: without one, the explanation has no background of recent
        # events (a tree's, a forest's or a linear model's needs none).
        offline = event_id is None and not cfg.kafka.bootstrap
        broker = nullcontext("") if offline else kafka_bootstrap(cfg, embedded_ok=False)
        with broker as servers:
            if event_id is not None:
                prediction = _find(cfg, servers, cfg.kafka.topics.predictions, scan, event_id)
                event = _find(cfg, servers, cfg.kafka.topics.events, scan, event_id)
                if prediction is None and event is None:
                    console.print(f"no event or prediction with id {event_id!r}", highlight=False)
                    raise typer.Exit(1)
                if event is not None:
                    x = {k: v for k, v in (event.get("features") or {}).items() if v is not None}
                shown = {"id": event_id, "features": x}
                if prediction is not None:
                    version = prediction.get("model_version")
                    shown.update(
                        source=prediction.get("source"),
                        prediction=prediction.get("prediction"),
                        confidence=prediction.get("confidence"),
                        model_version=version,
                        explanation=prediction.get("explanation"),
                    )
                    if prediction.get("source") != "model":
                        # The fallback answered: the model's own answer and why follow.
                        shown["note"] = (
                            f"answered by the fallback ({prediction.get('source')}) in mode "
                            f"{prediction.get('mode')}: below, what the model answers and why"
                        )
                if shown.get("explanation") and not recompute:
                    shown["explained_from"] = "the prediction record"
                    return _show(shown, as_json)
            else:
                try:
                    x = json.loads(features or "")
                except ValueError as e:
                    raise typer.BadParameter(f"not JSON: {e}", param_hint="--features") from None
                if not isinstance(x, dict):
                    raise typer.BadParameter("a JSON object", param_hint="--features")
                shown = {"features": x}
            if x is None:
                console.print(f"no event with id {event_id!r} to recompute from", highlight=False)
                raise typer.Exit(1)
            if not offline:
                background = _recent_events(cfg, servers, settings.background)
        model, classifier, source, kept = _model(cfg, config, name, redis_url, version)
        # The events the checkpoint's explainer kept, where it kept them: the background the
        # model was explained against when it served (the topic's last events otherwise).
        answer = explain_answer(model, x, classifier, settings, kept or background, event_id or "")
        shown.update(
            model=source,
            explained_from="recomputed",
            model_prediction=answer["prediction"],
            model_confidence=answer["confidence"],
            explanation=answer["explanation"],
        )
        if features is not None:
            shown.update(prediction=answer["prediction"], confidence=answer["confidence"])
        _show(shown, as_json)


def _show(shown: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(shown, default=str))
    else:
        _print(shown)
