"""`riverline learner` and `riverline predictor`: the roles of a split deployment.

``run`` stays the all-in-one default; when traffic outgrows one process, start one learner (plus
standbys: the lease decides) and any number of predictors on the same config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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
    stdout_console,
)
from pipeline.config import ConfigError, RiverlineConfig
from pipeline.state.redis_client import connect, wait_for_redis

UntilIdleOpt = Annotated[
    float | None, typer.Option(help="Exit once nothing new arrived for this many seconds.")
]
ReportOpt = Annotated[Path | None, typer.Option(help="Write the JSON report here.")]
WaitRedisOpt = Annotated[
    float | None,
    typer.Option(
        "--wait-redis",
        help="Seconds to wait for a Redis that does not answer, then exit 1 "
        "(redis.wait_seconds, default 30).",
        show_default=False,
    ),
]


def split_mode_config(cfg: RiverlineConfig) -> None:
    """What the split roles cannot do yet, said before anything starts."""
    if cfg.review.policy != "none":
        raise ConfigError(
            f"invalid configuration:\n  review.policy: {cfg.review.policy!r} runs only in "
            "`riverline run` (the review loop needs the served prediction and the learning "
            "state in one process); set review.policy: none for learner and predictors"
        )


def _config(
    config: str,
    name: str | None,
    bootstrap: str | None,
    redis_url: str | None,
    model: str | None,
    metric: str | None,
    metrics_port: int | None,
    wait_redis: float | None,
) -> RiverlineConfig:
    from consumers.checkpointer import require_secret

    extra = {"telemetry": {"prometheus_port": metrics_port}, "redis": {"wait_seconds": wait_redis}}
    cfg = build_config(config, name, bootstrap, redis_url, model, metric, extra)
    split_mode_config(cfg)
    require_secret(cfg)  # a config problem is said before any wait for a backend
    return cfg


def _serve(role: Any, cfg: RiverlineConfig, until_idle: float | None) -> dict[str, Any]:
    """Wait for the backends (never a private Redis: state must land where the next start
    finds it), then run the role until stopped; its report."""
    from consumers.signals import StopFlag

    wait_for_redis(cfg.redis.url, cfg.redis.wait_seconds)
    with kafka_bootstrap(cfg, embedded_ok=False) as servers:
        # Only now: until here Ctrl-C interrupts the waits at once (KeyboardInterrupt).
        stop = StopFlag()
        stop.install()
        process = role(cfg, servers, connect(cfg.redis.url), until_idle=until_idle, stop=stop)
        result: dict[str, Any] = process.run()
    return result


def _write(report: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")


@app.command()
def learner(
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
    model: ModelOpt = None,
    metric: MetricOpt = None,
    until_idle: UntilIdleOpt = None,
    report: ReportOpt = None,
    metrics_port: MetricsPortOpt = None,
    wait_redis: WaitRedisOpt = None,
    log_level: LogOpt = "INFO",
) -> None:
    """Learn, evaluate, gate and checkpoint; publish model versions for the predictors."""
    from consumers.learner import Learner
    from pipeline.cli.summary import print_summary

    setup_logging(log_level)
    with friendly_errors():
        cfg = _config(config, name, bootstrap, redis_url, model, metric, metrics_port, wait_redis)
        result = _serve(Learner, cfg, until_idle)
        _write(result, report)
        print_summary(result)


@app.command()
def predictor(
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
    model: ModelOpt = None,
    metric: MetricOpt = None,
    until_idle: UntilIdleOpt = None,
    report: ReportOpt = None,
    metrics_port: MetricsPortOpt = None,
    wait_redis: WaitRedisOpt = None,
    log_level: LogOpt = "INFO",
) -> None:
    """Serve predictions on the newest model version; any number of these share the events."""
    from consumers.predictor import Predictor

    setup_logging(log_level)
    with friendly_errors():
        cfg = _config(config, name, bootstrap, redis_url, model, metric, metrics_port, wait_redis)
        result = _serve(Predictor, cfg, until_idle)
        _write(result, report)
        out = stdout_console()
        out.print(
            f"predictor: {result['events']} events, predictions by source "
            f"{result['predictions_by_source']}, model version {result['model_version']} "
            f"({result['model_swaps']} swaps), dead letters {result['dead_letters']}"
        )
