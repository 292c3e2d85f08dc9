"""`riverline model list|show`: the model versions the learner published for predictors."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from pipeline.checkpointing.model_versions import ModelVersionStore
from pipeline.cli.app import app
from pipeline.cli.common import (
    DEFAULT_CONFIG,
    ConfigOpt,
    NameOpt,
    RedisOpt,
    build_config,
    friendly_errors,
    print_error,
    stdout_console,
)
from pipeline.display import literal

model_app = typer.Typer(help="Inspect the model versions a learner published to Redis.")
app.add_typer(model_app, name="model")


def open_model_store(config: str, name: str | None, redis_url: str | None) -> ModelVersionStore:
    """The pipeline's model versions, for a short command: Redis must answer now (one try)."""
    from pipeline.state.redis_client import connect, ping, unreachable

    cfg = build_config(config, name, None, redis_url)
    if not ping(cfg.redis.url, timeout=2.0):
        raise unreachable(cfg.redis.url)
    return ModelVersionStore.for_config(connect(cfg.redis.url), cfg)


def _when(at: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(at or 0)))


@model_app.command("list")
def model_list(
    config: ConfigOpt = DEFAULT_CONFIG, name: NameOpt = None, redis_url: RedisOpt = None
) -> None:
    """The kept versions, oldest first; the latest is marked (*).

    Reads metadata only: nothing is unpickled.
    """
    with friendly_errors():
        store = open_model_store(config, name, redis_url)
        latest = store.latest_version()
        metas = store.list()
        if not metas:
            print_error(
                f"no model version exists under {store.prefix} "
                "(is the pipeline's name right? only a learner publishes versions)"
            )
            raise typer.Exit(1)
        table = Table(title=literal(f"model versions of {store.prefix}"))
        for column in (
            "version",
            "latest",
            "created",
            "mode",
            "labels",
            "bytes",
            "riverline",
            "config digest",
        ):
            table.add_column(column)
        for meta in metas:
            made_of = meta.get("provenance")
            made_of = made_of if isinstance(made_of, dict) else {}
            # Metadata read from Redis: shown as text, whoever wrote it.
            table.add_row(
                literal(meta.get("version", "")),
                "*" if meta.get("version") == latest else "",
                _when(meta.get("created_at")),
                "unreadable metadata" if "unreadable" in meta else literal(meta.get("mode", "")),
                literal(meta.get("labels", "")),
                literal(meta.get("bytes", "")),
                literal(made_of.get("riverline", "")),
                literal(str(made_of.get("config_digest", ""))[:12]),
            )
        stdout_console().print(table)


@model_app.command("show")
def model_show(
    version: int,
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    redis_url: RedisOpt = None,
    load: Annotated[
        bool, typer.Option("--load", help="Also unpickle it (after the check) and show the model.")
    ] = False,
) -> None:
    """Verify one version's signature, then print its metadata and provenance.

    Nothing is unpickled unless --load; an unverified version is refused either way.
    """
    with friendly_errors():
        store = open_model_store(config, name, redis_url)
        signature = store.verify(version)  # refused here unless verified or insecure on purpose
        meta = store.meta(version) or {}
        shown: dict[str, Any] = {
            "meta": {k: v for k, v in meta.items() if k != "provenance"},
            "provenance": meta.get("provenance", {}),
            "signature": signature,
        }
        if load:
            snapshot = store.load(version)
            shown["model"] = repr(snapshot.model)
            shown["gating"] = {
                "mode": snapshot.gating.mode,
                "decisions": [d.as_dict() for d in snapshot.gating.decisions],
            }
        print(json.dumps(shown, indent=2, default=str))
