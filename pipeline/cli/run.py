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
from pipeline.state.redis_client import connect, wait_for_redis


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
    wait_redis: Annotated[
        float | None,
        typer.Option(
            "--wait-redis",
            help="Seconds to wait for a Redis that does not answer, then exit 1 "
            "(redis.wait_seconds, default 30).",
            show_default=False,
        ),
    ] = None,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="Start untrained, even with another model or metric than the checkpoint's; "
            "the previous version is kept for `checkpoint rollback`.",
        ),
    ] = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Consume events and labels; predict, serve, learn and checkpoint until stopped."""
    from consumers.run import Consumer, require_secret, write_report
    from consumers.signals import StopFlag

    setup_logging(log_level)
    with friendly_errors():
        extra = {
            "telemetry": {"prometheus_port": metrics_port},
            "redis": {"wait_seconds": wait_redis},
        }
        cfg = build_config(config, name, bootstrap, redis_url, model, metric, extra)
        require_secret(cfg)  # a config problem is said before any wait for a backend
        # Never a private Redis here: checkpoints must land where the next start finds them.
        wait_for_redis(cfg.redis.url, cfg.redis.wait_seconds)
        with kafka_bootstrap(cfg, embedded_ok=False) as servers:
            # Only now: until here Ctrl-C interrupts the waits at once (KeyboardInterrupt).
            stop = StopFlag()
            stop.install()
            consumer = Consumer(
                cfg, servers, connect(cfg.redis.url), until_idle=until_idle, stop=stop, reset=reset
            )
            result = consumer.run()
        if report is not None:
            write_report(result, report)
        print_summary(result)
