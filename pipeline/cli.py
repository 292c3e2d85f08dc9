"""The ``riverline`` command line."""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pipeline.checkpointing.store import CheckpointError, CheckpointStore, Fenced
from pipeline.config import ConfigError, RiverlineConfig, load_config
from pipeline.kafka.embedded import BrokerUnavailable, EmbeddedBroker
from pipeline.models import SpecError
from pipeline.state.lease import LeaseLost
from pipeline.state.redis_client import RedisUnavailable, connect, resolve_redis_url

app = typer.Typer(
    help="Continual learning on Kafka with River: serve a fallback until the model earns trust.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "configs/demo.yaml"

ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="YAML config file.")]
NameOpt = Annotated[str | None, typer.Option(help="Pipeline name: Redis key prefix, group id.")]
BootstrapOpt = Annotated[
    str | None,
    typer.Option(help="Kafka host:port (env RIVERLINE_KAFKA_BOOTSTRAP).", show_default=False),
]
RedisOpt = Annotated[
    str | None, typer.Option("--redis-url", help="Redis URL (env RIVERLINE_REDIS_URL).")
]
ModelOpt = Annotated[
    str | None, typer.Option(help="River model spec, e.g. 'tree.HoeffdingTreeClassifier'.")
]
MetricOpt = Annotated[str | None, typer.Option(help="River metric name, e.g. ROCAUC, MAE.")]
LogOpt = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING.")]
MetricsPortOpt = Annotated[
    int | None, typer.Option(help="Serve Prometheus /metrics on this port (0: any).")
]


def config_path(path: str) -> Path:
    """The default config also resolves from the repository when run elsewhere."""
    candidate = Path(path)
    if not candidate.exists() and path == DEFAULT_CONFIG and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    return candidate


def build_config(
    path: str,
    name: str | None = None,
    bootstrap: str | None = None,
    redis_url: str | None = None,
    model: str | None = None,
    metric: str | None = None,
    extra: dict[str, Any] | None = None,
) -> RiverlineConfig:
    overrides: dict[str, Any] = {
        "name": name,
        "kafka": {"bootstrap": bootstrap},
        "redis": {"url": redis_url},
        "model": {"spec": model},
        "evaluation": {"metric": metric},
    }
    if metric is not None:
        # A metric chosen on the command line replaces the file's, extras included.
        overrides["evaluation"]["extra_metrics"] = []
    if extra:
        from pipeline.config import _deep_merge

        overrides = _deep_merge(overrides, extra)
    return load_config(config_path(path), overrides)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Known failures print one clear message and a distinct exit status, never a traceback."""
    try:
        yield
    except (ConfigError, SpecError) as e:
        console.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
        raise typer.Exit(2) from None
    except (LeaseLost, Fenced) as e:
        console.print(f"[red]fenced:[/red] {e}", markup=True, highlight=False)
        raise typer.Exit(3) from None
    except (BrokerUnavailable, RedisUnavailable, CheckpointError) as e:
        console.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
        raise typer.Exit(1) from None


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)


def parse_speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter("a positive number (times real time) or 'max'") from None
    if value <= 0:
        raise typer.BadParameter("a positive number (times real time) or 'max'")
    return value


@contextmanager
def kafka_bootstrap(config: RiverlineConfig, embedded_ok: bool) -> Iterator[str]:
    """The configured broker, or the embedded one where allowed."""
    if config.kafka.bootstrap:
        yield config.kafka.bootstrap
        return
    if not embedded_ok:
        raise ConfigError(
            "invalid configuration:\n  kafka.bootstrap: not set; pass --bootstrap host:port or "
            "set RIVERLINE_KAFKA_BOOTSTRAP"
        )
    with EmbeddedBroker() as broker:
        console.print(f"embedded broker (Tansu) on {broker.bootstrap}", highlight=False)
        yield broker.bootstrap


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


@app.command()
def replay(
    source: Annotated[str, typer.Option(help="river:<Dataset>, a .csv or a .jsonl file.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
    label_delay: Annotated[
        str, typer.Option(help="Events (50) or event time (30s, 5m, 1h) before a label is known.")
    ] = "0",
    speed: Annotated[str, typer.Option(help="Times real time (e.g. 10), or 'max'.")] = "max",
    limit: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    id_column: Annotated[str, typer.Option(help="CSV/JSONL id column.")] = "id",
    ts_column: Annotated[str, typer.Option(help="CSV/JSONL event-time column.")] = "ts",
    label_column: Annotated[str, typer.Option(help="CSV/JSONL label column.")] = "label",
    key_column: Annotated[str | None, typer.Option(help="Partitioning key column.")] = None,
    attribute: Annotated[
        list[str] | None, typer.Option(help="A column that is an attribute, not a feature.")
    ] = None,
    on_error: Annotated[str, typer.Option(help="A malformed row: 'stop' or 'skip'.")] = "stop",
    metrics_port: MetricsPortOpt = None,
    log_level: LogOpt = "WARNING",
) -> None:
    """Publish a dataset to the events and labels topics, labels delayed as River would."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from pipeline.telemetry import ReplayMetrics, serve_registry
    from producers.replay import replay as do_replay
    from producers.schedule import Emission, parse_delay
    from producers.sources import SourceError, SourceOptions

    setup_logging(log_level)
    if on_error not in ("stop", "skip"):
        raise typer.BadParameter("'stop' or 'skip'", param_hint="--on-error")
    try:
        delay = parse_delay(label_delay)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--label-delay") from None
    pace = parse_speed(speed)
    with friendly_errors():
        cfg = build_config(config, name, bootstrap, redis_url)
        options = SourceOptions(
            id_column=id_column,
            ts_column=ts_column,
            label_column=label_column,
            key_column=key_column,
            attribute_columns=tuple(attribute or ()),
            limit=limit,
            on_error=on_error,  # type: ignore[arg-type]
        )
        metrics = ReplayMetrics()
        options.on_skip = lambda _error: metrics.skipped.inc()
        if metrics_port is not None:
            port = serve_registry(metrics.registry, metrics_port)
            console.print(f"metrics on http://127.0.0.1:{port}/metrics", highlight=False)

        def emitted(emission: Emission) -> None:
            metrics.emitted(emission.kind, emission.ts)
            if emission.kind == "event":
                progress.advance(task)

        with kafka_bootstrap(cfg, embedded_ok=False) as servers:
            columns = [
                *Progress.get_default_columns()[:1],
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            ]
            with Progress(*columns, console=console, transient=False) as progress:
                task = progress.add_task("events", total=limit)
                try:
                    result = do_replay(
                        cfg,
                        servers,
                        source,
                        delay,
                        options=options,
                        speed=pace,
                        on_emission=emitted,
                    )
                except SourceError as e:
                    console.print(f"[red]error:[/red] {e}", highlight=False)
                    raise typer.Exit(1) from None
    console.print(
        f"published {result.events} events and {result.labels} labels in {result.seconds:.2f}s"
        + (f"; skipped {result.skipped} malformed rows" if result.skipped else ""),
        highlight=False,
    )


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
    label_delay: Annotated[str, typer.Option(help="Events (50) or event time (30s).")] = "50",
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
    from producers.replay import replay as do_replay
    from producers.schedule import parse_delay
    from producers.sources import SourceError, SourceOptions

    setup_logging(log_level)
    try:
        delay = parse_delay(label_delay)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--label-delay") from None
    with friendly_errors():
        base = build_config(config, name, bootstrap, redis_url, model, metric)
        # A fresh pipeline each run: its own Redis prefix and topics, so nothing old is resumed.
        run_name = f"{base.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        topics = {k: f"{run_name}.{v}" for k, v in base.kafka.topics.model_dump().items()}
        secret = base.checkpoint.secret_bytes() or secrets.token_hex(16).encode()
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
            try:
                published = do_replay(
                    cfg, servers, source, delay, options=SourceOptions(limit=limit)
                )
            except SourceError as e:
                console.print(f"[red]error:[/red] {e}", highlight=False)
                raise typer.Exit(1) from None
            console.print(
                f"published {published.events} events, {published.labels} labels; consuming...",
                highlight=False,
            )
            consumer = Consumer(cfg, servers, client, until_idle=2.0, stop=stop)
            result = consumer.run()
        if not keep_state:
            CheckpointStore(client, cfg.name, secret).delete_all()
        if report is not None:
            write_report(result, report)
        print_summary(result)
        from pipeline.reporting import write_learning_curve

        png, page = write_learning_curve(result, out, stem=f"{run_name}-learning-curve")
        Console().print(f"learning curve: {png} and {page}", highlight=False)


checkpoint_app = typer.Typer(help="Inspect and roll back a pipeline's checkpoints in Redis.")
app.add_typer(checkpoint_app, name="checkpoint")


def _store(config: str, name: str | None, redis_url: str | None) -> CheckpointStore:
    cfg = build_config(config, name, None, redis_url)
    return CheckpointStore(
        connect(cfg.redis.url), cfg.name, cfg.checkpoint.secret_bytes(), cfg.checkpoint.keep
    )


@checkpoint_app.command("list")
def checkpoint_list(
    config: ConfigOpt = DEFAULT_CONFIG, name: NameOpt = None, redis_url: RedisOpt = None
) -> None:
    """The kept versions, newest last; the latest is marked."""
    with friendly_errors():
        store = _store(config, name, redis_url)
        latest = store.latest_version()
        table = Table(title=f"checkpoints of {store.prefix}")
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
        for version in store.versions():
            meta = store.meta(version) or {}
            written = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(meta.get("written_at", 0)))
            table.add_row(
                str(version),
                "*" if version == latest else "",
                written,
                str(meta.get("reason", "")),
                str(meta.get("events", "")),
                str(meta.get("labels", "")),
                str(meta.get("mode", "")),
                str(meta.get("bytes", "")),
            )
        Console(width=None if sys.stdout.isatty() else 120).print(table)


@checkpoint_app.command("show")
def checkpoint_show(
    version: int,
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    redis_url: RedisOpt = None,
) -> None:
    """Verify one version's signature and print its metadata, offsets and report."""
    import json

    from pipeline.core import LearningCore

    with friendly_errors():
        cfg = build_config(config, name, None, redis_url)
        store = _store(config, name, redis_url)
        checkpoint = store.load(version)
        core = LearningCore.from_config(cfg, checkpoint.state)
        shown = {
            "meta": checkpoint.meta,
            "offsets": {f"{t}[{p}]": o for (t, p), o in sorted(checkpoint.offsets.items())},
            "signature": "verified" if store.secret else "not checked (insecure)",
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
        store = _store(config, name, redis_url)
        cfg = build_config(config, name, None, redis_url)
        holder = Lease(store.client, cfg.name, cfg.checkpoint.lease_ttl_ms).holder()
        if holder and not force:
            console.print(
                f"[red]error:[/red] pipeline is running (lease held by {holder}); stop it first "
                "or pass --force (its next checkpoint would supersede the rollback)",
                highlight=False,
            )
            raise typer.Exit(1)
        store.rollback(version)
        console.print(
            f"latest checkpoint of {store.prefix} is now version {version}", highlight=False
        )


@app.command()
def status(
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    redis_url: RedisOpt = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show the model's global weights (linear models).")
    ] = False,
) -> None:
    """What a pipeline is doing now, from Redis: mode, metrics, decisions, drift, lag."""
    import json

    with friendly_errors():
        cfg = build_config(config, name, None, redis_url)
        store = _store(config, name, redis_url)
        raw = store.client.get(store.key("status"))
        out = Console(width=None if sys.stdout.isatty() else 120)
        latest = store.latest_version()
        meta = store.meta(latest) if latest is not None else None
        if raw is None and meta is None:
            console.print(f"pipeline {cfg.name}: nothing in Redis yet", highlight=False)
            raise typer.Exit(1)
        info = json.loads(raw) if raw is not None else {}
        table = Table(title=f"pipeline {cfg.name}", show_header=False)
        table.add_column("what")
        table.add_column("value")

        def row(label: str, value: Any) -> None:
            table.add_row(label, str(value))

        row("mode", info.get("mode", meta and meta.get("mode")))
        row("model", info.get("model", cfg.model.spec))
        row("model version (labels learned)", info.get("model_version", meta and meta["labels"]))
        row("events / labels", f"{info.get('events', '?')} / {info.get('labels', '?')}")
        windowed = info.get("windowed") or {}
        if windowed:
            row(
                f"windowed {info.get('metric', '')} model vs fallback",
                f"{windowed['model']:.4f} vs {windowed['fallback']:.4f} (n={windowed['size']})",
            )
        for decision in (info.get("promotions", []) + info.get("demotions", []))[-5:]:
            row(decision["kind"], f"label {decision['label_index']}: {decision['reason']}")
        for drift in info.get("drift", []):
            row("drift", f"label {drift['label_index']} ({drift['detector']})")
        attribute = info.get("slices_attribute")
        for value, roles in sorted((info.get("slices") or {}).items()):
            row(
                f"slice {attribute}={value} ({info.get('metric', '')})",
                " / ".join(f"{role} {metric:.4f}" for role, metric in roles.items()),
            )
        if info.get("slices_gap"):
            row(
                "slice gap, best - worst",
                " / ".join(f"{role} {gap:.4f}" for role, gap in info["slices_gap"].items()),
            )
        latency = info.get("latency_ms") or {}
        if latency.get("count"):
            row(
                "latency ms p50/p90/p99",
                f"{latency['p50']:.1f} / {latency['p90']:.1f} / {latency['p99']:.1f}",
            )
        for partition, lag in (info.get("lag") or {}).items():
            row(f"lag {partition}", lag)
        if meta is not None:
            row("checkpoint", f"version {latest}, {time.time() - meta['written_at']:.0f}s ago")
        if "updated_at" in info:
            row("status age", f"{time.time() - info['updated_at']:.0f}s")
            row("Redis healthy", info.get("redis_healthy"))
        out.print(table)
        if explain:
            from pipeline.core import LearningCore
            from pipeline.explain import global_weights

            if latest is None:
                console.print("no checkpoint to explain yet", highlight=False)
                raise typer.Exit(1)
            model = LearningCore.from_config(cfg, store.load(latest).state).state.model
            weights = global_weights(model)
            if weights is None:
                out.print(
                    f"{type(model).__name__} is not linear: no global weights to show "
                    "(see README, Explanations)"
                )
                return
            weights_table = Table(title="global weights (on the scaled inputs)")
            weights_table.add_column("feature")
            weights_table.add_column("weight", justify="right")
            for feature, weight in weights.items():
                weights_table.add_row(feature, f"{weight:+.4f}")
            out.print(weights_table)


@app.command("report")
def report_command(
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    redis_url: RedisOpt = None,
    from_json: Annotated[
        Path | None, typer.Option(help="A report written by run/demo, instead of Redis.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the PNG and HTML.")] = Path("reports"),
) -> None:
    """Write the learning curve (PNG and HTML) from a JSON report or the latest checkpoint."""
    import json

    from pipeline.reporting import write_learning_curve

    with friendly_errors():
        if from_json is not None:
            data = json.loads(from_json.read_text())
            stem = from_json.stem + "-learning-curve"
        else:
            from pipeline.core import LearningCore

            cfg = build_config(config, name, None, redis_url)
            checkpoint = _store(config, name, redis_url).load_latest()
            if checkpoint is None:
                console.print(f"pipeline {cfg.name} has no checkpoint yet", highlight=False)
                raise typer.Exit(1)
            data = LearningCore.from_config(cfg, checkpoint.state).report()
            stem = f"{cfg.name}-learning-curve"
        png, page = write_learning_curve(data, out, stem=stem)
        Console().print(f"wrote {png} and {page}", highlight=False)


def print_summary(report: dict[str, Any]) -> None:
    out = Console(width=None if sys.stdout.isatty() else 120)
    out.print(
        f"\n[bold]{report['events']}[/bold] events, [bold]{report['labels']}[/bold] labels "
        f"learned, mode now [bold]{report['mode']}[/bold]"
    )
    out.print("\n[bold]Predictions served by source[/bold]")
    sources = Table()
    sources.add_column("source")
    sources.add_column("predictions", justify="right")
    for source, count in report["predictions_by_source"].items():
        sources.add_row(source, str(count))
    out.print(sources)
    out.print("\n[bold]Metrics on the same labels[/bold]")
    metrics = Table()
    metrics.add_column("metric")
    for role in ("model", "fallback", "served"):
        metrics.add_column(role, justify="right")
    for metric_name in report["metrics"]["model"]:
        metrics.add_row(
            metric_name,
            *(
                f"{report['metrics'][role][metric_name]:.4f}"
                for role in ("model", "fallback", "served")
            ),
        )
    out.print(metrics)
    decisions = sorted(report["promotions"] + report["demotions"], key=lambda d: d["label_index"])
    for decision in decisions:
        out.print(
            f"{decision['kind']} at label {decision['label_index']}: windowed model "
            f"{decision['model_metric']:.4f} vs fallback {decision['fallback_metric']:.4f}"
        )
    if not report["promotions"]:
        out.print("the model was not promoted: the fallback served throughout")
    latency = report.get("run", {}).get("latency_ms", {}).get("event_to_prediction")
    if latency and latency["count"]:
        out.print(
            f"event-to-prediction latency ms: p50 {latency['p50']:.1f}  p90 {latency['p90']:.1f}  "
            f"p99 {latency['p99']:.1f}"
        )
    for drift in report.get("drift", []):
        out.print(f"drift detected at label {drift['label_index']} ({drift['detector']})")
    if report["dead_letters"]:
        out.print(f"dead letters: {report['dead_letters']}")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
