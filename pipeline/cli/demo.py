"""`riverline demo`: replay and consume on the embedded broker, then explain what happened."""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

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
    console,
    friendly_errors,
    kafka_bootstrap,
    print_error,
    setup_logging,
)
from pipeline.cli.summary import print_summary
from pipeline.config import default_topics
from pipeline.kafka.embedded import free_port
from pipeline.state.redis_client import connect, resolve_redis_url


@app.command()
def demo(
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
    source: Annotated[
        str, typer.Option(help="river:<Dataset>, .csv or .jsonl.")
    ] = "river:Phishing",
    model: ModelOpt = None,
    metric: MetricOpt = None,
    label_delay: Annotated[
        str, typer.Option(help="Events (50), event time (30s), or none (no ground truth).")
    ] = "50",
    reviewer: Annotated[
        str | None,
        typer.Option(
            help="Answer review requests without people: "
            "simulated:accuracy=0.95,delay=2s,seed=1 (needs a review policy in the config)."
        ),
    ] = None,
    review_web: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Keep the review page open for people on 127.0.0.1:PORT (prints its URL and "
            "token; RIVERLINE_REVIEW_TOKEN if set) and run until Ctrl-C; with or without "
            "--reviewer.",
            show_default=False,
        ),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            help="With --reviewer or --review-web: event seconds replayed per wall second, so "
            "answers interleave with events (default 50 with --reviewer, else 1: people's pace).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    partitions: Annotated[int | None, typer.Option(help="Partitions per topic.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for the learning-curve PNG and HTML.")] = Path(
        "reports"
    ),
    keep_state: Annotated[bool, typer.Option(help="Keep the demo's Redis keys.")] = False,
    metrics_port: MetricsPortOpt = None,
    log_level: LogOpt = "WARNING",
) -> None:
    """Replay a dataset through the broker and the consumer, then print what happened."""
    from consumers.run import Consumer, write_report
    from consumers.signals import StopFlag
    from pipeline.checkpointing.store import CheckpointStore
    from pipeline.cli.demo_review import run_review_demo
    from producers.replay import replay as do_replay
    from producers.reviewer import parse_reviewer
    from producers.schedule import parse_delay
    from producers.sources import NoLabelColumn, SourceError, SourceOptions

    setup_logging(log_level)
    try:
        delay = None if label_delay.strip().lower() == "none" else parse_delay(label_delay)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--label-delay") from None
    try:
        reviewer_spec = parse_reviewer(reviewer) if reviewer is not None else None
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--reviewer") from None
    with friendly_errors():
        base = build_config(config, name, bootstrap, redis_url, model, metric)
        # A fresh pipeline each run: its own Redis prefix and topics, so nothing old is resumed
        # (the demo's topics are always the run's own, even where the file pins names).
        run_name = f"{base.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        topics = default_topics(run_name)
        one_off_secret = base.checkpoint.secret_bytes() is None
        secret = base.checkpoint.secret_bytes() or secrets.token_hex(16).encode()
        if metrics_port == 0:
            # Chosen here rather than by the server, so that it can be printed before consuming.
            metrics_port = free_port()
        extra: dict[str, Any] = {
            "name": run_name,
            "kafka": {"topics": topics, "partitions": partitions},
            "checkpoint": {"secret": secret.decode()},
            "telemetry": {"prometheus_port": metrics_port},
        }
        cfg = build_config(config, name, bootstrap, redis_url, model, metric, extra)
        url = resolve_redis_url(cfg.redis.url)
        client = connect(url)
        stop = StopFlag()
        stop.install()
        with kafka_bootstrap(cfg, embedded_ok=True) as servers:
            console.print(
                f"pipeline {run_name}: replaying {source} (label delay {label_delay})",
                highlight=False,
            )
            if reviewer_spec is not None or review_web is not None:
                result = run_review_demo(
                    cfg,
                    servers,
                    client,
                    stop,
                    source,
                    delay,
                    limit,
                    reviewer_spec,
                    speed if speed is not None else 50.0 if reviewer_spec is not None else 1.0,
                    web_port=review_web,
                )
            else:
                try:
                    published = do_replay(
                        cfg, servers, source, delay, options=SourceOptions(limit=limit)
                    )
                except SourceError as e:
                    print_error(e)
                    raise typer.Exit(2 if isinstance(e, NoLabelColumn) else 1) from None
                console.print(
                    f"published {published.events} events, {published.labels} labels; consuming...",
                    highlight=False,
                )
                if metrics_port is not None:
                    console.print(
                        f"metrics on http://127.0.0.1:{metrics_port}/metrics", highlight=False
                    )
                consumer = Consumer(cfg, servers, client, until_idle=2.0, stop=stop)
                result = consumer.run()
        if not keep_state:
            CheckpointStore(client, cfg.name, secret).delete_all()
        if report is not None:
            write_report(result, report)
        print_summary(result, replayed_first=reviewer_spec is None and review_web is None)
        from pipeline.reporting import write_learning_curve

        png, page = write_learning_curve(result, out, stem=f"{run_name}-learning-curve")
        stdout = Console(highlight=False)
        stdout.print("learning curve:")
        stdout.print(f"  {png}", soft_wrap=True)
        stdout.print(f"  {page}", soft_wrap=True)
        stdout.print(f"pipeline name: {run_name}", soft_wrap=True)
        if keep_state:
            stdout.print(
                f"its state is kept in Redis: riverline status --name {run_name}, "
                f"riverline report --name {run_name}",
                soft_wrap=True,
            )
            if one_off_secret:
                stdout.print(
                    "its checkpoints are signed with a one-off secret; to read them, first "
                    f"export RIVERLINE_CHECKPOINT_SECRET={secret.decode()}",
                    soft_wrap=True,
                )
        else:
            stdout.print(
                "its state was deleted from Redis; rerun with --keep-state to keep it for "
                "`riverline status` and `riverline report`",
                soft_wrap=True,
            )
