"""`riverline checkpoint list|show|rollback`."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from pipeline.checkpointing.trust import CheckpointError
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
    print_error,
    stdout_console,
)
from pipeline.display import literal

checkpoint_app = typer.Typer(help="Inspect and roll back a pipeline's checkpoints in Redis.")
app.add_typer(checkpoint_app, name="checkpoint")


@checkpoint_app.command("list")
def checkpoint_list(
    config: ConfigOpt = DEFAULT_CONFIG, name: NameOpt = None, redis_url: RedisOpt = None
) -> None:
    """The kept versions, newest last; the latest is marked (*), so are pinned ones.

    Reads metadata only: nothing is unpickled.
    """
    with friendly_errors():
        store = open_store(config, name, redis_url)
        latest = store.latest_version()
        if not store.versions():
            print_error(
                f"no checkpoint exists under {store.prefix} (is the pipeline's name right?)"
            )
            raise typer.Exit(1)
        table = Table(title=literal(f"checkpoints of {store.prefix}"))
        for column in (
            "version",
            "latest",
            "written",
            "reason",
            "events",
            "labels",
            "mode",
            "bytes",
        ):
            table.add_column(column)
        pinned = store.pinned()
        for version in store.versions():
            try:
                meta = store.meta(version) or {}
            except CheckpointError:  # listed as unreadable; the others are still shown
                meta = {"reason": "unreadable metadata"}
            written = time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime(float(meta.get("written_at") or 0))
            )
            table.add_row(
                str(version),
                ("*" if version == latest else "") + (" pinned" if version in pinned else ""),
                written,
                # Metadata read from Redis: shown as text, whoever wrote it.
                *(literal(meta.get(k, "")) for k in ("reason", "events", "labels", "mode")),
                literal(meta.get("bytes", "")),
            )
        stdout_console().print(table)


@checkpoint_app.command("show")
def checkpoint_show(
    version: int,
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    redis_url: RedisOpt = None,
) -> None:
    """Verify one version's signature, then print its metadata, provenance, offsets and report."""
    import json

    from pipeline.core import LearningCore
    from pipeline.provenance import provenance_of

    with friendly_errors():
        cfg = build_config(config, name, None, redis_url)
        store = open_store(config, name, redis_url)
        signature = store.verify(version)  # refused here unless verified or insecure on purpose
        checkpoint = store.load(version)
        core = LearningCore.from_config(cfg, checkpoint.state)
        shown: dict[str, object] = {"meta": checkpoint.meta}
        if made_of := provenance_of(checkpoint.meta):  # checkpoints from before it have none
            shown["provenance"] = made_of
        shown |= {
            "offsets": {f"{t}[{p}]": o for (t, p), o in sorted(checkpoint.offsets.items())},
            "signature": signature,
            "report": core.report(),
        }
        print(json.dumps(shown, indent=2, default=str))


@checkpoint_app.command("rollback")
def checkpoint_rollback(
    version: int,
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    redis_url: RedisOpt = None,
    force: Annotated[bool, typer.Option(help="Even while a consumer holds the lease.")] = False,
) -> None:
    """Make VERSION the latest: the next start resumes from it and re-reads from its offsets."""
    from pipeline.state.lease import Lease

    with friendly_errors():
        store = open_store(config, name, redis_url)
        cfg = build_config(config, name, None, redis_url)
        holder = Lease(store.client, cfg.name, cfg.checkpoint.lease_ttl_ms).holder()
        if holder and not force:
            print_error(
                f"pipeline is running (lease held by {holder}); stop it first "
                "or pass --force (its next checkpoint would supersede the rollback)"
            )
            raise typer.Exit(1)
        store.rollback(version)
        console.print(
            f"latest checkpoint of {store.prefix} is now version {version}", highlight=False
        )
