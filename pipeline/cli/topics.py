"""`riverline topics create`: a pipeline's topics, for clusters that do not create them."""

from __future__ import annotations

import typer

from pipeline.cli.app import app
from pipeline.cli.common import (
    DEFAULT_CONFIG,
    BootstrapOpt,
    ConfigOpt,
    LogOpt,
    NameOpt,
    build_config,
    friendly_errors,
    kafka_bootstrap,
    print_error,
    setup_logging,
)

topics_app = typer.Typer(help="Manage a pipeline's Kafka topics.")
app.add_typer(topics_app, name="topics")


@topics_app.command("create")
def topics_create(
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    bootstrap: BootstrapOpt = None,
    log_level: LogOpt = "WARNING",
) -> None:
    """Create the pipeline's topics with kafka.partitions partitions; existing ones are kept.

    For clusters with auto-create off. Safe to run again: it reports the topics that exist,
    and warns about one whose partition count differs from the config's.
    """
    from pipeline.kafka.topics import create_pipeline_topics

    setup_logging(log_level)
    with friendly_errors():
        cfg = build_config(config, name, bootstrap)
        with kafka_bootstrap(cfg, embedded_ok=False) as servers:
            outcomes = create_pipeline_topics(cfg.kafka, servers)
    for outcome in outcomes:
        if outcome.status == "mismatch":
            print_error(outcome.describe(), "warning", "yellow")
        else:
            typer.echo(outcome.describe())
