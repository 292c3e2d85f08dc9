"""What every command shares: options, config loading, error handling, backends."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from pipeline.checkpointing.store import CheckpointError, CheckpointStore, Fenced
from pipeline.config import ConfigError, RiverlineConfig, load_config
from pipeline.display import literal, shown
from pipeline.kafka.embedded import BrokerUnavailable, EmbeddedBroker
from pipeline.kafka.transport import TransportError
from pipeline.models import SpecError
from pipeline.state.lease import LeaseLost
from pipeline.state.redis_client import RedisUnavailable, connect, ping, unreachable

# soft_wrap: an error stays one line in a pipe or a log (no wrapping at 80 columns).
console = Console(stderr=True, soft_wrap=True)
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = "configs/demo.yaml"


def print_error(message: object, kind: str = "error", style: str = "red") -> None:
    """``kind: message`` on stderr: messages quote ids, paths, values, so they are printed as
    text (never Rich markup, control characters escaped), each of their lines kept."""
    console.print(
        Text.assemble((f"{kind}:", style), " ", literal(message, newlines=True)), highlight=False
    )


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
    """Known failures print one clear message and a distinct exit status, never a traceback.

    0 ok; 1 a backend or checkpoint problem; 2 bad config or usage; 3 fenced; 130 interrupted.
    """
    import redis
    from kafka.errors import KafkaError

    try:
        yield
    except KeyboardInterrupt:
        console.print("interrupted", highlight=False)
        raise typer.Exit(130) from None
    except (ConfigError, SpecError) as e:
        print_error(e)
        raise typer.Exit(2) from None
    except (LeaseLost, Fenced) as e:
        print_error(e, "fenced")
        raise typer.Exit(3) from None
    except (BrokerUnavailable, TransportError, RedisUnavailable, CheckpointError) as e:
        print_error(e)
        raise typer.Exit(1) from None
    except redis.RedisError as e:
        # redis-py names the host and port in connection errors.
        print_error(f"Redis: {e}")
        raise typer.Exit(1) from None
    except KafkaError as e:
        print_error(f"Kafka: {e}")
        raise typer.Exit(1) from None


class _ShownFormatter(logging.Formatter):
    """Log messages quote ids and records: their control characters are escaped (no terminal
    escape, no forged log line); a traceback, formatted apart, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return shown(super().formatMessage(record))


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ShownFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("librdkafka").setLevel(logging.WARNING)


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
        from pipeline.kafka.probe import probe_bootstrap

        probe_bootstrap(config.kafka.bootstrap)
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


def open_store(config: str, name: str | None, redis_url: str | None) -> CheckpointStore:
    """The pipeline's checkpoints, for a short command: Redis must answer now (one try)."""
    cfg = build_config(config, name, None, redis_url)
    if not ping(cfg.redis.url, timeout=2.0):
        raise unreachable(cfg.redis.url)
    return CheckpointStore.for_config(connect(cfg.redis.url), cfg)


def stdout_console() -> Console:
    """Tables for people go to stdout, at full width on a terminal, 120 columns in a pipe.

    ``COLUMNS`` set in the environment wins in a pipe too (rich reads it), so a script or the
    docs' tests get the lines a terminal that wide shows.
    """
    wide = sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit()
    return Console(width=None if wide else 120)
