"""`riverline run`: the all-in-one consumer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app
from pipeline.cli.common import (
    DEFAULT_CONFIG,
    BootstrapOpt,
    ConfigOpt,
    LogOpt,
    MetricOpt,
    MetricsPortOpt,
    ModelOpt,
    NameOpt,
    RedisOpt,
    build_config,
    friendly_errors,
    kafka_bootstrap,
    setup_logging,
)
from pipeline.cli.summary import print_summary
from pipeline.state.redis_client import connect, resolve_redis_url


@app.command()
def run(
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
    model: ModelOpt = None,
    metric: MetricOpt = None,
    until_idle: Annotated[
        float | None, typer.Option(help="Exit once nothing new arrived for this many seconds.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    metrics_port: MetricsPortOpt = None,
    log_level: LogOpt = "INFO",
) -> None:
    """Consume events and labels; predict, serve, learn and checkpoint until stopped."""
    from consumers.run import Consumer, write_report
    from consumers.signals import StopFlag

    setup_logging(log_level)
    with friendly_errors():
        extra = {"telemetry": {"prometheus_port": metrics_port}}
        cfg = build_config(config, name, bootstrap, redis_url, model, metric, extra)
        url = resolve_redis_url(cfg.redis.url)
        stop = StopFlag()
        stop.install()
        with kafka_bootstrap(cfg, embedded_ok=False) as servers:
            consumer = Consumer(cfg, servers, connect(url), until_idle=until_idle, stop=stop)
            result = consumer.run()
        if report is not None:
            write_report(result, report)
        print_summary(result)
