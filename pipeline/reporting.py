"""A learning curve a person can read: when did the model take over, and why?

The JSON report says everything, but not at a glance. This module draws it: the windowed model
metric against the fallback's, the decisions the gate took, drift detections, and who actually
served the predictions, as a PNG plus a self-contained HTML page with the numbers beside it.

>>> import tempfile
>>> report = {
...     "metric": "ROCAUC", "bigger_is_better": True, "mode": "serving",
...     "events": 30, "labels": 20, "predictions_by_source": {"heuristic": 10, "model": 20},
...     "metrics": {"model": {"ROCAUC": 0.9}, "fallback": {"ROCAUC": 0.7}, "served": {}},
...     "history": [
...         {"label": 10, "model": 0.6, "fallback": 0.7, "mode": "shadow",
...          "served": {"heuristic": 10}},
...         {"label": 20, "model": 0.9, "fallback": 0.7, "mode": "serving",
...          "served": {"heuristic": 10, "model": 20}},
...     ],
...     "promotions": [{"kind": "promotion", "label_index": 15, "model_metric": 0.8,
...                     "fallback_metric": 0.7, "reason": "model ahead"}],
...     "demotions": [], "drift": [],
... }
>>> png, page = write_learning_curve(report, tempfile.mkdtemp())
>>> png.name, page.name
('learning-curve.png', 'learning-curve.html')
>>> png.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
>>> "data:image/png;base64," in page.read_text()
True
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["write_learning_curve"]

WIDTH, HEIGHT, DPI = 12, 8, 100
SOURCES = ("model", "heuristic", "callable", "default", "none", "human")
# Fixed colours per source so the same source looks the same in every report.
SOURCE_COLOURS = {
    "model": "tab:blue",
    "heuristic": "tab:orange",
    "callable": "tab:purple",
    "default": "tab:gray",
    "none": "lightgray",
    "human": "tab:brown",
}


MARKER_STYLES = {"promotion": ("green", "-"), "demotion": ("red", "-"), "drift": ("orange", "--")}


def _markers(report: dict[str, Any]) -> list[tuple[int, str]]:
    """(label index, kind) for every promotion, demotion and drift detection."""
    marks = [(int(d["label_index"]), "promotion") for d in report.get("promotions", [])]
    marks += [(int(d["label_index"]), "demotion") for d in report.get("demotions", [])]
    marks += [(int(d["label_index"]), "drift") for d in report.get("drift", [])]
    return marks


def _draw_markers(ax: Axes, marks: list[tuple[int, str]], legend: bool = False) -> None:
    named: set[str] = set()
    for x, kind in marks:
        colour, style = MARKER_STYLES[kind]
        # One legend entry per kind, so a reader can tell a promotion from a drift at a glance.
        label = kind if legend and kind not in named else None
        named.add(kind)
        ax.axvline(x, color=colour, linestyle=style, linewidth=1.2, alpha=0.9, label=label)


def _serving_spans(report: dict[str, Any]) -> list[tuple[float, float]]:
    """Label ranges during which the gate had the model serving: from each promotion's label to
    the next demotion's (or the last label), from the decisions themselves, so the shade starts
    exactly at the promotion line and a demoted stretch stays unshaded.

    >>> _serving_spans({"labels": 80, "history": [], "promotions": [
    ...     {"label_index": 50}, {"label_index": 66}], "demotions": [{"label_index": 55}]})
    [(50.0, 55.0), (66.0, 80.0)]
    """
    decisions = sorted(
        [(float(d["label_index"]), "promotion") for d in report.get("promotions", [])]
        + [(float(d["label_index"]), "demotion") for d in report.get("demotions", [])]
    )
    history = report.get("history", [])
    last = max(
        [float(report.get("labels") or 0)] + [float(s["label"]) for s in history], default=0.0
    )
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for label, kind in decisions:
        if kind == "promotion" and start is None:
            start = label
        elif kind == "demotion" and start is not None:
            spans.append((start, label))
            start = None
    if start is not None:
        spans.append((start, max(start, last)))
    return spans


def _source_shares(
    history: list[dict[str, Any]],
) -> tuple[list[float], dict[str, list[float]]]:
    """Share of predictions served by each source per interval between consecutive samples.

    >>> xs, shares = _source_shares([
    ...     {"label": 1, "served": {"heuristic": 4}},
    ...     {"label": 2, "served": {"heuristic": 6, "model": 2}},
    ...     {"label": 3, "served": {"heuristic": 6, "model": 2}},
    ...     {"label": 4, "served": {"heuristic": 6, "model": 5}},
    ... ])
    >>> xs, shares
    ([1.0, 2.0, 4.0], {'model': [0.0, 0.5, 1.0], 'heuristic': [1.0, 0.5, 0.0]})
    """
    names = sorted(
        {name for sample in history for name in sample.get("served", {})},
        key=lambda name: (SOURCES.index(name) if name in SOURCES else len(SOURCES), name),
    )
    xs: list[float] = []
    shares: dict[str, list[float]] = {name: [] for name in names}
    previous: dict[str, int] = {}
    for sample in history:
        served = sample.get("served", {})
        diffs = {name: max(int(served.get(name, 0)) - previous.get(name, 0), 0) for name in names}
        previous = {name: int(served.get(name, 0)) for name in names}
        total = sum(diffs.values())
        if total == 0:
            # Nothing served in this interval: no mix to show, and no division by zero.
            continue
        xs.append(float(sample["label"]))
        for name in names:
            shares[name].append(diffs[name] / total)
    return xs, shares


def _human_share(history: list[dict[str, Any]]) -> tuple[list[int], list[float]] | None:
    """Share of the labels learned so far that people gave; None when no person answered.

    >>> _human_share([{"label": 10, "learned_by": {"ground_truth": 10}},
    ...               {"label": 20, "learned_by": {"ground_truth": 15, "human": 5}}])
    ([10, 20], [0.0, 0.25])
    """
    if not any(sample.get("learned_by", {}).get("human") for sample in history):
        return None
    xs, share = [], []
    for sample in history:
        learned = sample.get("learned_by", {})
        total = sum(learned.values())
        xs.append(sample["label"])
        share.append(learned.get("human", 0) / total if total else 0.0)
    return xs, share


def _review_rows(report: dict[str, Any]) -> list[list[Any]]:
    """The humans-in-the-loop numbers for the page (empty when nobody was asked)."""
    review: dict[str, Any] = report.get("review") or {}
    if not review.get("sent") and not review.get("labels_by_source", {}).get("human"):
        return []
    rows: list[list[Any]] = [
        [name.replace("_", " "), review.get(name, 0)]
        for name in ("sent", "answered", "expired", "skipped_budget", "skipped_pending")
    ]
    rows += [
        [f"labels learned from {source}", n]
        for source, n in review.get("labels_by_source", {}).items()
    ]
    if review.get("human_scored"):
        rows += [
            [f"people's {name} (vs ground truth, n={review['human_scored']})", value]
            for name, value in review.get("human_metrics", {}).items()
        ]
    answer = review.get("time_to_answer_s", {})
    if answer.get("count"):
        rows += [[f"time to answer {q} (s)", answer[q]] for q in ("p50", "p90", "p99")]
    return rows


def _figure(report: dict[str, Any]) -> Figure:
    fig = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI)
    FigureCanvasAgg(fig)
    history: list[dict[str, Any]] = report.get("history", [])
    metric = str(report.get("metric", "metric"))
    if not history:
        fig.text(0.5, 0.5, "no labels yet", ha="center", va="center", fontsize=24)
        fig.suptitle(f"Windowed {metric}: model vs fallback")
        return fig

    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    marks = _markers(report)
    labels = [sample["label"] for sample in history]

    for i, (start, end) in enumerate(_serving_spans(report)):
        top.axvspan(
            start, end, color="tab:green", alpha=0.1, label="model serving" if not i else None
        )
    top.plot(labels, [s["model"] for s in history], color="tab:blue", label="model")
    top.plot(labels, [s["fallback"] for s in history], color="tab:orange", label="fallback")
    _draw_markers(top, marks, legend=True)
    top.set_title(f"Windowed {metric}: model vs fallback")
    direction = "" if report.get("bigger_is_better", True) else " (lower is better)"
    top.set_ylabel(metric + direction)
    top.grid(alpha=0.3)
    top.legend(loc="best")

    xs, shares = _source_shares(history)
    if xs:
        bottom.stackplot(
            xs,
            *shares.values(),
            labels=list(shares),
            colors=[SOURCE_COLOURS.get(name, "black") for name in shares],
            step="pre",
            alpha=0.8,
        )
        bottom.legend(loc="upper left", fontsize="small", ncols=min(len(shares), 6))
    people = _human_share(history)
    if people is not None:
        # A share of labels, not of predictions: its own axis, on the right.
        learned = bottom.twinx()
        learned.plot(*people, color="black", linestyle="--", label="labels from people")
        learned.set_ylim(0, 1)
        learned.set_ylabel("share of labels learned from people")
        learned.legend(loc="upper right", fontsize="small")
    _draw_markers(bottom, marks)
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("share of predictions served")
    bottom.set_xlabel("labels learned")
    bottom.set_title("Who served the predictions")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _challenger_section(report: dict[str, Any]) -> str:
    """The leaderboard of the champion and its challengers (none configured: nothing).

    >>> board = {"leaderboard": [{"name": "a", "role": "champion", "spec": "s", "windowed": 0.9,
    ...     "metric": 0.8, "scored": 10, "errors": 0}], "promotions": []}
    >>> "<td>champion</td>" in _challenger_section({"challengers": board})
    True
    """
    board = report.get("challengers") or {}
    if not board.get("leaderboard"):
        return ""
    rows = [
        [e["role"], e["name"], e["windowed"], e["metric"], e["scored"], e["spec"]]
        for e in board["leaderboard"]
    ]
    promotions = [
        [p["label_index"], p["name"], p["previous"], p["reason"]] for p in board["promotions"]
    ]
    return (
        "\n<h2>Challengers</h2>\n"
        + _table(["role", "name", "windowed", "whole run", "scored", "spec"], rows)
        + (_table(["label index", "promoted", "over", "reason"], promotions) if promotions else "")
    )


def _importance_section(report: dict[str, Any]) -> str:
    """Global importance over time (explain.importance): a line per feature among those ever
    in a sample's top, against the labels learned, so a change in what the model relies on
    shows; then the last values. Empty when the report has none."""
    history = [s for s in report.get("history", []) if s.get("importance")]
    last = (report.get("importance") or {}).get("values") or {}
    if not history and not last:
        return ""
    parts = ["\n<h2>Global importance (incremental permutation)</h2>\n"]
    if history:
        features = sorted({f for s in history for f in s["importance"]})
        fig = Figure(figsize=(WIDTH, HEIGHT / 2), dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        xs = [s["label"] for s in history]
        for feature in features:
            ax.plot(xs, [s["importance"].get(feature) for s in history], label=feature)
        _draw_markers(ax, _markers(report))
        ax.set_xlabel("labels learned")
        ax.set_ylabel("loss rise when replaced")
        ax.set_title("What the model relies on, as it learns")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize="small", ncols=min(len(features), 4))
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        image = base64.b64encode(buffer.getvalue()).decode("ascii")
        parts.append(
            f'<img src="data:image/png;base64,{image}" width="{WIDTH * DPI}" '
            f'height="{HEIGHT * DPI // 2}" alt="global importance over time">\n'
        )
    parts.append(_table(["feature", "importance now"], [[f, v] for f, v in last.items()]))
    by_slice = (report.get("importance") or {}).get("by_slice") or {}
    if by_slice:
        parts.append("\n<h3>What each slice is judged on (top features)</h3>\n")
        rows = [
            [value, ", ".join(f"{f} {v:+.4f}" for f, v in top.items())]
            for value, top in by_slice.items()
        ]
        parts.append(_table(["slice", "top features"], rows))
    return "".join(parts)


def _html(report: dict[str, Any], png: bytes) -> str:
    metric = str(report.get("metric", "metric"))
    metrics: dict[str, dict[str, Any]] = report.get("metrics", {})
    roles = ("model", "fallback", "served")
    names = sorted({name for role in roles for name in metrics.get(role, {})})
    name = report.get("pipeline") or (report.get("run") or {}).get("pipeline")
    summary = [
        ["pipeline", name],
        ["events", report.get("events")],
        ["labels", report.get("labels")],
        ["mode", report.get("mode")],
    ]
    summary += [
        [f"served by {source}", count]
        for source, count in report.get("predictions_by_source", {}).items()
    ]
    dead = report.get("dead_letters") or {}
    summary += [[f"dead letters: {reason}", n] for reason, n in dead.items()] or [
        ["dead letters", 0]
    ]
    metric_rows = [[name] + [metrics.get(role, {}).get(name) for role in roles] for name in names]
    decisions = [
        [
            d.get("kind", "promotion"),
            d["label_index"],
            d.get("model_metric"),
            d.get("fallback_metric"),
            d.get("reason", ""),
        ]
        for d in report.get("promotions", []) + report.get("demotions", [])
    ]
    decisions += [
        ["drift", d["label_index"], None, None, f"detector: {d.get('detector', '')}"]
        for d in report.get("drift", [])
    ]
    decisions.sort(key=lambda row: row[1])
    title = html.escape(f"riverline learning curve: {name + ', ' if name else ''}{metric}")
    image = base64.b64encode(png).decode("ascii")
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}img{max-width:100%}"
    )
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body>\n<h1>{title}</h1>\n"
        f'<img src="data:image/png;base64,{image}" width="1200" height="800" '
        f'alt="{title}">\n<h2>Summary</h2>\n'
        + _table(["", "value"], summary)
        + "\n"
        + _table(["metric", "model", "fallback", "served"], metric_rows)
        + (
            "\n<h2>Humans in the loop</h2>\n" + _table(["", "value"], _review_rows(report))
            if _review_rows(report)
            else ""
        )
        + _challenger_section(report)
        + _importance_section(report)
        + "\n<h2>Decisions</h2>\n"
        + _table(["kind", "label index", "model", "fallback", "reason"], decisions)
        + "\n</body></html>\n"
    )


def write_learning_curve(
    report: dict[str, Any], out_dir: str | Path, stem: str = "learning-curve"
) -> tuple[Path, Path]:
    """Write ``<stem>.png`` and ``<stem>.html`` into ``out_dir`` (created if missing).

    Parameters
    ----------
    report
        The JSON report riverline writes (``Pipeline.report()``).
    out_dir
        Directory to write into.
    stem
        File name without the extension.

    Returns
    -------
    The paths of the PNG (exactly 1200x800 pixels) and of the self-contained HTML page.

    Examples
    --------
    >>> import tempfile
    >>> empty = {"metric": "MAE", "bigger_is_better": False, "history": [], "promotions": [],
    ...          "demotions": [], "drift": [], "events": 0, "labels": 0, "mode": "cold",
    ...          "metrics": {}, "predictions_by_source": {}}
    >>> png, page = write_learning_curve(empty, tempfile.mkdtemp(), stem="empty")
    >>> header = png.read_bytes()
    >>> int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    (1200, 800)

    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    # No bbox_inches="tight": it crops, and the size must stay exactly 1200x800.
    _figure(report).savefig(buffer, format="png", dpi=DPI)
    png = buffer.getvalue()
    png_path, html_path = out / f"{stem}.png", out / f"{stem}.html"
    png_path.write_bytes(png)
    html_path.write_text(_html(report, png), encoding="utf-8")
    return png_path, html_path
