"""`riverline status`: what a pipeline is doing, from Redis."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

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


@app.command()
def status(
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    redis_url: RedisOpt = None,
    explain: Annotated[
        bool,
        typer.Option("--explain", help="Global importance; a linear model's weights."),
    ] = False,
) -> None:
    """What a pipeline is doing now, from Redis: mode, metrics, decisions, drift, lag."""

    with friendly_errors():
        cfg = build_config(config, name, None, redis_url)
        store = open_store(config, name, redis_url)
        raw = store.client.get(store.key("status"))
        out = stdout_console()
        latest = store.latest_version()
        meta = store.meta(latest) if latest is not None else None
        if raw is None and meta is None:
            print_error(
                f"pipeline {cfg.name}: nothing in Redis yet (no status "
                "and no checkpoint under that name)"
            )
            raise typer.Exit(1)
        info = json_mapping(raw) or {}  # unreadable (whoever can write Redis chose it): none
        table = Table(title=literal(f"pipeline {cfg.name}"), show_header=False)
        table.add_column("what")
        table.add_column("value")

        def row(label: str, value: Any) -> None:
            # Slice values, reasons, owners: from records and Redis, shown never obeyed.
            table.add_row(literal(label), literal(value))

        row("mode", info.get("mode", meta and meta.get("mode")))
        row("model", info.get("model", cfg.model.spec))
        row(
            "model version (labels learned)",
            info.get("model_version", meta and meta.get("labels")),
        )
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
        explained = info.get("explain")
        if explained:
            share = explained.get("share")
            row(
                "explained",
                f"{explained['explained']} predictions, {explained['ms_each']:.2f} ms each"
                + (f", {share:.1%} of the time" if share is not None else ""),
            )
        if info.get("importance"):
            row(
                "importance (top features)",
                ", ".join(f"{f} {v:+.4f}" for f, v in list(info["importance"].items())[:5]),
            )
        for value, top in sorted((info.get("importance_by_slice") or {}).items()):
            row(
                f"slice {attribute}={value} relies on",
                ", ".join(f"{f} {v:+.4f}" for f, v in top.items()),
            )
        for label, value in review_rows(info.get("review") or {}):
            row(label, value)
        for entry in info.get("challengers") or ():
            row(
                f"{entry['role']} {entry['name']}",
                f"windowed {entry['windowed']:.4f}, run {entry['metric']:.4f} "
                f"({entry['scored']} scored)",
            )
        for partition, lag in (info.get("lag") or {}).items():
            row(f"lag {partition}", lag)
        if meta is not None:
            written = float(meta.get("written_at", 0))
            row("checkpoint", f"version {latest}, {time.time() - written:.0f}s ago")
        if "updated_at" in info:
            row("status age", f"{time.time() - info['updated_at']:.0f}s")
            row("Redis healthy", info.get("redis_healthy"))
        if info.get("role"):
            row("role", info["role"])
        for predictor in predictor_statuses(store.client, store.key("predictor:")):
            age = time.time() - float(predictor.get("updated_at", 0))
            row(
                f"predictor {predictor.get('owner')}",
                f"model version {predictor.get('model_version')} ({predictor.get('mode')}), "
                f"{predictor.get('events')} events, "
                f"{'ready' if predictor.get('ready') else 'not ready'}, {age:.0f}s ago",
            )
        out.print(table)
        if explain:
            from pipeline.core import LearningCore
            from pipeline.explain import global_weights

            if latest is None:
                console.print("no checkpoint to explain yet", highlight=False)
                raise typer.Exit(1)
            state = LearningCore.from_config(cfg, store.load(latest).state).state
            model = state.model
            if state.importance is not None and state.importance.values:
                importance_table = Table(
                    title=f"global importance at model version {state.learned} "
                    "(incremental permutation: the loss's rise when the feature is replaced)"
                )
                importance_table.add_column("feature")
                importance_table.add_column("importance", justify="right")
                for feature, value in state.importance.top().items():
                    importance_table.add_row(feature, f"{value:+.4f}")
                out.print(importance_table)
            weights = global_weights(model)
            if weights is None:
                out.print(
                    f"{type(model).__name__} is not linear: no global weights to show "
                    "(see docs/concepts/explanations.md; explain.importance for any model)"
                )
                return
            weights_table = Table(title="global weights (on the scaled inputs)")
            weights_table.add_column("feature")
            weights_table.add_column("weight", justify="right")
            for feature, weight in weights.items():
                weights_table.add_row(literal(feature), f"{weight:+.4f}")
            out.print(weights_table)


def predictor_statuses(client: Any, prefix: str) -> list[dict[str, Any]]:
    """The live predictors' statuses (each expires a while after its process stops)."""

    found = []
    for key in sorted(client.scan_iter(match=prefix + "*", count=500)):
        status = json_mapping(client.get(key))
        if status is not None:  # an unreadable one is left out, the others still shown
            found.append(status)
    return found


def json_mapping(raw: bytes | None) -> dict[str, Any] | None:
    """A status written to Redis as a JSON object; None if absent or not one.

    >>> json_mapping(b'{"mode": "shadow"}'), json_mapping(b"\\xff{"), json_mapping(b"[1]")
    ({'mode': 'shadow'}, None, None)
    """
    import json

    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return None
    return value if isinstance(value, dict) else None


def review_rows(review: dict[str, Any]) -> list[tuple[str, str]]:
    """Humans in the loop for the status table; nothing when nobody was asked.

    >>> review_rows({"sent": 3, "answered": 2, "expired": 0, "skipped_budget": 1,
    ...     "skipped_pending": 0, "pending": 1, "held": 0, "labels_by_source": {"human": 2},
    ...     "human_scored": 0, "human_metrics": {}, "time_to_answer_s": {"count": 0}})[0]
    ('review sent / answered / expired', '3 / 2 / 0')
    """
    if not review.get("sent") and not review.get("labels_by_source", {}).get("human"):
        return []
    rows = [
        (
            "review sent / answered / expired",
            f"{review['sent']} / {review['answered']} / {review['expired']}",
        ),
        (
            "review skipped: budget / max_pending",
            f"{review['skipped_budget']} / {review['skipped_pending']}",
        ),
        ("review pending (held)", f"{review['pending']} ({review['held']})"),
        (
            "labels learned by source",
            ", ".join(f"{s} {n}" for s, n in review.get("labels_by_source", {}).items()),
        ),
    ]
    if review.get("human_scored"):
        rows.append(
            (
                f"people vs ground truth (n={review['human_scored']})",
                ", ".join(f"{k} {v:.4f}" for k, v in review["human_metrics"].items()),
            )
        )
    answer = review.get("time_to_answer_s", {})
    if answer.get("count"):
        rows.append(
            (
                "time to answer s p50/p90/p99",
                f"{answer['p50']:.1f} / {answer['p90']:.1f} / {answer['p99']:.1f}",
            )
        )
    return rows
