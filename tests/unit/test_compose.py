"""docker-compose.yml, checked without Docker against the code it deploys.

Every riverline service's command parses with the real CLI; every RIVERLINE_* variable is a
real config field; every service reads the same topics and partitions as the `topics` job
creates; Prometheus scrapes compose services on their metrics ports; Grafana's queries name only
metrics the code exports; health checks ask the port the service serves.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import typer
import yaml

from pipeline.cli import app
from pipeline.config import RiverlineConfig, _env_values, load_config
from pipeline.telemetry import PipelineMetrics, ReplayMetrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
# The config the riverline services read, as the repository holds it.
COMPOSE_CONFIG = ROOT / "configs" / "compose.yaml"


# -- reading the compose file ------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    # PyYAML resolves the anchors and `<<` merge keys (x-riverline) as compose does.
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, Any]:
    return dict(compose()["services"])


def riverline_services() -> dict[str, Any]:
    """The services that run the riverline image (built from this repository)."""
    return {name: s for name, s in services().items() if "build" in s}


def interpolate(value: str, environ: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``$$``, with the demo defaults.

    >>> interpolate("redis://:${PW:-secret}@redis:6379/0")
    'redis://:secret@redis:6379/0'
    >>> interpolate("${PW:-secret}", {"PW": "mine"}), interpolate("$$HOME")
    ('mine', '$HOME')
    """
    env = environ or {}

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group("name"), match.group("default")
        return env.get(name) or (default if default is not None else "")

    return re.sub(r"\$\$|\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}", one, value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def dockerfile_instruction(name: str) -> list[str]:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    found = [line for line in lines if line.startswith(f"{name} ")]
    assert len(found) == 1, (name, found)
    value = json.loads(found[0].split(" ", 1)[1])
    assert isinstance(value, list)
    return [str(v) for v in value]


def argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: the image's entrypoint, then the service's command."""
    entrypoint = service.get("entrypoint") or dockerfile_instruction("ENTRYPOINT")
    command = service.get("command") or dockerfile_instruction("CMD")
    return [str(v) for v in (*entrypoint, *command)]


# -- the real CLI, parsed but never invoked ------------------------------------------------------


def parse_cli(args: list[str]) -> Any:
    """The click context ``riverline ARGS`` would run with; a click error if the CLI refuses them.

    Typer >= 0.22 ships its own copy of click (``typer._click``), so groups are told apart by
    what they do, not by ``isinstance(..., click.Group)``.

    >>> parse_cli(["topics", "create", "--config", "x.yaml"]).params["config"]
    'x.yaml'
    >>> parse_cli(["topics", "create", "--no-such-flag"])  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    click.exceptions.NoSuchOption: No such option: --no-such-flag
    >>> parse_cli(["no-such-command"])  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    click.exceptions.UsageError: No such command 'no-such-command'.
    """
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("riverline", list(args))
    while hasattr(command, "resolve_command"):  # a group: on to its subcommand
        # Click >= 8.2 keeps the subcommand's name in _protected_args, older ones without "_".
        protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
        rest = [*protected, *ctx.args]
        name, sub, rest = command.resolve_command(ctx, rest)
        assert name is not None and sub is not None
        command, ctx = sub, sub.make_context(name, rest, parent=ctx)
    return ctx


def container_path_on_host(service: dict[str, Any], path: str) -> Path:
    """The repository file a container path is mounted from (``./configs:/configs:ro``)."""
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith(".") and PurePosixPath(path).is_relative_to(target):
            return ROOT / source / PurePosixPath(path).relative_to(target)
    raise AssertionError(f"{path} is not mounted from the repository")


def effective_config(service: dict[str, Any]) -> RiverlineConfig:
    """The config a riverline service runs with: its file, its environment, its flags."""
    params = parse_cli(argv(service)[1:]).params
    overrides = {
        "name": params.get("name"),
        "kafka": {"bootstrap": params.get("bootstrap")},
        "redis": {"url": params.get("redis_url")},
    }
    path = container_path_on_host(service, params["config"])
    return load_config(path, overrides, environ=environment(service))


def metrics_port(service: dict[str, Any]) -> int:
    port = parse_cli(argv(service)[1:]).params.get("metrics_port")
    assert isinstance(port, int), f"{argv(service)}: no --metrics-port"
    return port


# -- the tests ---------------------------------------------------------------------------------


def test_the_compose_file_has_the_deployment() -> None:
    found = services()
    for name in ("kafka", "redis", "topics", "learner", "learner-standby", "predictor"):
        assert name in found
    assert {"replay", "prometheus", "grafana"} <= set(found)
    assert found["predictor"]["deploy"]["replicas"] == 2
    assert found["replay"]["profiles"] == ["demo"]
    assert "profiles" not in found["learner"]
    assert found["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert found["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert found["kafka"]["image"].startswith("apache/kafka:")
    # The lease decides which learner writes: both run the same command.
    assert argv(found["learner"]) == argv(found["learner-standby"])
    assert argv(found["topics"])[1:3] == ["topics", "create"]
    assert found["topics"]["restart"] == "no"


def test_the_image_runs_riverline_and_no_service_replaces_its_entrypoint() -> None:
    assert dockerfile_instruction("ENTRYPOINT") == ["riverline"]
    parse_cli(dockerfile_instruction("CMD"))  # the image's default command parses too
    for name, service in riverline_services().items():
        assert "entrypoint" not in service, name
        assert argv(service)[0] == "riverline"


@pytest.mark.parametrize("service_name", sorted(riverline_services()))
def test_each_riverline_command_parses_with_the_real_cli(service_name: str) -> None:
    service = riverline_services()[service_name]
    ctx = parse_cli(argv(service)[1:])
    assert ctx.params["config"] == "/configs/compose.yaml"
    assert container_path_on_host(service, ctx.params["config"]) == COMPOSE_CONFIG


def test_redis_has_aof_and_the_password_riverline_uses() -> None:
    redis = services()["redis"]
    command = [interpolate(str(part)) for part in redis["command"]]
    assert command[command.index("--appendonly") + 1] == "yes"
    password = command[command.index("--requirepass") + 1]
    assert password
    assert environment(redis)["REDISCLI_AUTH"] == password  # the health check authenticates
    for name, service in riverline_services().items():
        url = effective_config(service).redis.url
        assert url == f"redis://:{password}@redis:6379/0", name


def check_env_var(var: str, value: str) -> None:
    """``var`` is a config field (through the config's own mapping) and its value lands there."""
    mapped = _env_values({var: value})
    assert mapped, f"{var} maps to no config section"
    cfg = load_config(COMPOSE_CONFIG, environ={var: value})  # ConfigError for an unknown field
    ((section, fields),) = mapped.items()
    node: Any = getattr(cfg, section)
    while isinstance(fields, dict):
        ((field, fields),) = fields.items()
        node = getattr(node, field)
    got = node.get_secret_value() if hasattr(node, "get_secret_value") else node
    assert got == fields, (var, got, fields)


def test_the_env_check_can_fail() -> None:
    from pipeline.config import ConfigError

    with pytest.raises(AssertionError, match="maps to no config section"):
        check_env_var("RIVERLINE_KAFAK__CLIENT", "confluent")
    with pytest.raises(ConfigError, match=r"kafka\.clien"):
        check_env_var("RIVERLINE_KAFKA__CLIEN", "confluent")


@pytest.mark.parametrize("service_name", sorted(riverline_services()))
def test_every_riverline_env_var_is_a_config_field(service_name: str) -> None:
    env = environment(riverline_services()[service_name])
    names = [var for var in env if var.startswith("RIVERLINE_")]
    assert "RIVERLINE_REDIS_URL" in names and "RIVERLINE_KAFKA_BOOTSTRAP" in names
    for var in names:
        check_env_var(var, env[var])
    assert all(var.startswith("RIVERLINE_") for var in env), env  # nothing else is read


def test_topics_and_partitions_agree_with_the_config() -> None:
    config = load_config(COMPOSE_CONFIG, environ={})
    assert config.kafka.partitions == 4
    created = effective_config(services()["topics"])
    for name, service in riverline_services().items():
        cfg = effective_config(service)
        assert cfg.name == config.name, name
        assert cfg.kafka.topics == config.kafka.topics == created.kafka.topics, name
        assert cfg.kafka.partitions == config.kafka.partitions, name
        assert cfg.kafka.bootstrap == "kafka:19092", name
    kafka = services()["kafka"]["environment"]
    assert "PLAINTEXT://kafka:19092" in kafka["KAFKA_ADVERTISED_LISTENERS"]


def healthcheck_url(service: dict[str, Any]) -> str | None:
    check = service.get("healthcheck") or {}
    if check.get("disable"):
        return None
    test = check["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    compile(test[3], "healthcheck", "exec")  # the one-liner is valid Python
    match = re.search(r"http://[\w.]+:(\d+)(/\w+)", test[3])
    assert match, test
    return match.group(0)


def test_health_checks_ask_the_metrics_port_of_their_service() -> None:
    long_running = ("learner", "learner-standby", "predictor")
    for name, service in riverline_services().items():
        url = healthcheck_url(service)
        if name in long_running:
            assert url == f"http://127.0.0.1:{metrics_port(service)}/readyz", name
        elif url is not None:
            assert url.endswith(("/readyz", "/healthz")), name
            assert f":{metrics_port(service)}/" in url, name


def test_depends_on_conditions_can_be_met() -> None:
    found = services()
    for name, service in found.items():
        for other, rule in (service.get("depends_on") or {}).items():
            assert other in found, (name, other)
            condition = rule["condition"]
            if condition == "service_healthy":
                assert found[other].get("healthcheck"), (name, other)
                assert not found[other]["healthcheck"].get("disable"), (name, other)
            elif condition == "service_completed_successfully":
                assert found[other].get("restart") == "no", (name, other)
            # A service in a profile is absent from a plain `up`: nothing else may need it.
            if found[other].get("profiles"):
                assert found[name].get("profiles"), (name, other)


# -- Prometheus and Grafana ----------------------------------------------------------------------


def test_prometheus_scrapes_compose_services_on_their_metrics_ports() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    scraped: dict[str, int] = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for host in sd["names"]:
                scraped[host] = int(sd["port"])
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                scraped[host] = int(port)
    found = riverline_services()
    assert {"learner", "learner-standby", "predictor"} <= set(scraped)
    for host, port in scraped.items():
        assert host in found, f"Prometheus scrapes {host}, which is no riverline service"
        assert port == metrics_port(found[host]), host
    prometheus = services()["prometheus"]
    mounted = [str(v).split(":")[0] for v in prometheus["volumes"]]
    assert "./deploy/prometheus/prometheus.yml" in mounted


PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Functions and aggregations (a name before ``(``), label names in ``by (...)`` and
    ``{...}``, durations, strings, numbers and keywords are not metrics.

    >>> sorted(promql_metrics(
    ...     'histogram_quantile(0.99, sum by (le, job) (rate(a_bucket{clock="wall"}[5m])))'
    ...     ' / on (job) group_left b_total offset 5m'))
    ['a_bucket', 'b_total']
    >>> promql_metrics('max(riverline_mode{job="learner", mode=~"serv.*"}) * 1e3')
    {'riverline_mode'}
    >>> promql_metrics('{__name__="c_total"}')
    {'c_total'}
    """
    names = set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries
    # Label lists: by (...), without (...), on (...), ignoring (...), group_left (...).
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)\s*(\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


@cache
def exported_metrics() -> frozenset[str]:
    """Every sample name the code's registries can export, suffixes included."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
    }
    names: set[str] = set()
    for registry in (PipelineMetrics().registry, ReplayMetrics().registry):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return frozenset(names)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every provisioned dashboard."""
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for nested in [panel, *panel.get("panels", [])]:
                for target in nested.get("targets", []):
                    queries.append((nested["title"], target["expr"]))
    return queries


def test_the_metric_check_can_fail() -> None:
    assert "riverline_events_total" in exported_metrics()
    assert "riverline_event_to_prediction_seconds_bucket" in exported_metrics()
    assert "riverline_events" not in exported_metrics()  # a counter's samples end in _total
    assert not promql_metrics("rate(riverline_event_total[1m])") <= exported_metrics()


def test_every_dashboard_query_names_exported_metrics() -> None:
    queries = dashboard_queries()
    assert queries
    used: set[str] = set()
    for title, expr in queries:
        names = promql_metrics(expr)
        assert names, (title, expr)
        unknown = names - exported_metrics()
        assert not unknown, f"panel {title!r}: {sorted(unknown)} not exported by the code"
        used |= names
    # What the dashboard must show: throughput, latency quantiles, mode, windowed metrics,
    # lag, dead letters, review counts.
    for needed in (
        "riverline_events_total",
        "riverline_predictions_total",
        "riverline_event_to_prediction_seconds_bucket",
        "riverline_mode",
        "riverline_windowed_metric",
        "riverline_consumer_lag",
        "riverline_dead_letters_total",
        "riverline_review_requests_total",
    ):
        assert needed in used, needed
    assert any(expr.startswith("histogram_quantile(0.99") for _, expr in queries)


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboards() -> None:
    grafana = services()["grafana"]
    mounts = dict(str(v).split(":")[:2] for v in grafana["volumes"])
    provisioning = ROOT / mounts["./deploy/grafana/provisioning"].replace(
        "/etc/grafana/provisioning", "deploy/grafana/provisioning"
    )
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "riverline.yml").read_text())[
        "providers"
    ]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    for path in DASHBOARDS.glob("*.json"):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
