"""`riverline pipeline delete`: remove a pipeline's state (and, if asked, its topics)."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.app import app
from pipeline.cli.common import (
    DEFAULT_CONFIG,
    BootstrapOpt,
    ConfigOpt,
    RedisOpt,
    build_config,
    console,
    friendly_errors,
    kafka_bootstrap,
    open_store,
    print_error,
)
from pipeline.config import KafkaConfig

pipeline_app = typer.Typer(help="Manage pipelines: their Redis state and their topics.")
app.add_typer(pipeline_app, name="pipeline")


def delete_topics(kafka: KafkaConfig, bootstrap: str, names: list[str]) -> list[str]:
    """Delete those of ``names`` that exist; returns the deleted ones."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from pipeline.kafka.embedded import BrokerUnavailable

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), **kafka.client_options)
    except KafkaError as e:
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {e}") from None
    try:
        existing = [n for n in names if n in set(admin.list_topics())]
        if existing:
            admin.delete_topics(existing)
        return existing
    finally:
        admin.close()


@pipeline_app.command("delete")
def pipeline_delete(
    name: Annotated[str, typer.Argument(help="The pipeline's name.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    redis_url: RedisOpt = None,
    bootstrap: BootstrapOpt = None,
    topics: Annotated[
        bool, typer.Option("--topics", help="Also delete its topics ({name}.events, ...).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove NAME's Redis keys (checkpoints, status, lease) and, with --topics, its topics."""
    from pipeline.state.lease import Lease

    with friendly_errors():
        cfg = build_config(config, name, bootstrap, redis_url)
        store = open_store(config, name, redis_url)
        holder = Lease(store.client, cfg.name, cfg.checkpoint.lease_ttl_ms).holder()
        if holder:
            print_error(f"pipeline {name} is running (lease held by {holder}); stop it first")
            raise typer.Exit(1)
        keys = len(list(store.client.scan_iter(match=store.prefix + "*", count=500)))
        names = list(cfg.kafka.topics.model_dump().values())
        what = f"{keys} Redis keys of pipeline {name} ({store.prefix}*)"
        if topics:
            what += f" and its topics {', '.join(names)}"
        if not yes and not typer.confirm(f"delete {what}?"):
            console.print("nothing deleted", highlight=False)
            raise typer.Exit(1)
        deleted = store.delete_all()
        console.print(f"deleted {deleted} Redis keys of pipeline {name}", highlight=False)
        if topics:
            with kafka_bootstrap(cfg, embedded_ok=False) as servers:
                gone = delete_topics(cfg.kafka, servers, names)
            console.print(
                f"deleted topics: {', '.join(gone)}" if gone else "no topics to delete",
                highlight=False,
            )
