"""One picture for ``riverline compare``: every config's learning curve on the same axes.

Top: each config's windowed model metric (solid) and its fallback's (dashed, same colour), a
dot where the gate promoted the model, a cross where it demoted it. Bottom: the share of
predictions the model served, per config. The legend names each config as the table does.

>>> import tempfile
>>> run = {"metric": "Accuracy", "bigger_is_better": True, "events": 20, "labels": 20,
...        "metrics": {"model": {"Accuracy": 0.8}, "fallback": {"Accuracy": 0.6},
...                    "served": {"Accuracy": 0.7}},
...        "predictions_by_source": {"model": 5, "default": 15},
...        "history": [{"label": 10, "model": 0.7, "fallback": 0.6, "served": {"default": 10}},
...                    {"label": 20, "model": 0.8, "fallback": 0.6,
...                     "served": {"default": 15, "model": 5}}],
...        "promotions": [{"label_index": 15, "model_metric": 0.75, "fallback_metric": 0.6}],
...        "demotions": [], "compare": {"name": "a"}}
>>> png, page = write_comparison([run, {**run, "compare": {"name": "b <i>"}}],
...                              tempfile.mkdtemp() + "/cmp.html")
>>> png.name, png.read_bytes()[:4] == b"\\x89PNG", "b &lt;i&gt;" in page.read_text()
('cmp.png', True, True)
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = ["write_comparison"]

WIDTH, HEIGHT, DPI = 12, 8, 100


def _name(run: dict[str, Any], index: int) -> str:
    return str(run.get("compare", {}).get("name") or f"run {index + 1}")


def _model_share(history: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """The model's share of the predictions served between consecutive samples.

    >>> _model_share([{"label": 1, "served": {"default": 4}},
    ...               {"label": 2, "served": {"default": 6, "model": 2}}])
    ([1.0, 2.0], [0.0, 0.5])
    """
    xs: list[float] = []
    shares: list[float] = []
    before_model = before_total = 0
    for sample in history:
        served = sample.get("served", {})
        model, total = int(served.get("model", 0)), sum(int(v) for v in served.values())
        if total > before_total:
            xs.append(float(sample["label"]))
            shares.append((model - before_model) / (total - before_total))
        before_model, before_total = model, total
    return xs, shares


def _point(history: list[dict[str, Any]], label_index: int) -> float | None:
    """The curve's value at the sample nearest to ``label_index`` (where to put a marker)."""
    if not history:
        return None
    nearest = min(history, key=lambda s: abs(float(s["label"]) - label_index))
    value = nearest.get("model")
    return float(value) if isinstance(value, int | float) else None


def _figure(runs: list[dict[str, Any]]) -> Figure:
    # Constrained layout keeps room for the legend outside the axes, on the right.
    fig = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    colours = [f"C{i % 10}" for i in range(len(runs))]
    handles: list[Any] = []
    names: list[str] = []
    metrics = {str(run.get("metric", "metric")) for run in runs}
    metric = metrics.pop() if len(metrics) == 1 else "metric"
    for i, (run, colour) in enumerate(zip(runs, colours, strict=True)):
        history = run.get("history", [])
        name = _name(run, i)
        labels = [s["label"] for s in history]
        (line,) = top.plot(labels, [s["model"] for s in history], color=colour)
        handles.append(line)
        names.append(textwrap.fill(name, 36, break_long_words=False))
        top.plot(
            labels,
            [s["fallback"] for s in history],
            color=colour,
            linestyle="--",
            linewidth=0.9,
            alpha=0.7,
        )
        for kind, marker in (("promotions", "o"), ("demotions", "x")):
            points = [
                (int(d["label_index"]), _point(history, int(d["label_index"])))
                for d in run.get(kind, [])
            ]
            points = [(x, y) for x, y in points if y is not None]
            if points:
                top.scatter(*zip(*points, strict=True), color=colour, marker=marker, zorder=3)
        xs, shares = _model_share(history)
        bottom.step(xs, shares, where="pre", color=colour)
    top.set_title(f"Windowed {metric} per config")
    direction = "" if all(r.get("bigger_is_better", True) for r in runs) else " (lower is better)"
    top.set_ylabel(metric + direction)
    top.grid(alpha=0.3)
    # What the styles mean, then one entry per config (its colour), names wrapped to fit.
    key = [
        Line2D([], [], color="black", label="model"),
        Line2D([], [], color="black", linestyle="--", linewidth=0.9, label="its fallback"),
        Line2D([], [], color="black", marker="o", linestyle="", label="promotion"),
        Line2D([], [], color="black", marker="x", linestyle="", label="demotion"),
    ]
    fig.legend(
        key + handles,
        [str(k.get_label()) for k in key] + names,
        loc="outside right upper",
        fontsize="small",
    )
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_ylabel("share served by the model")
    bottom.set_xlabel("labels learned")
    bottom.grid(alpha=0.3)
    return fig


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def _page(runs: list[dict[str, Any]], png: bytes) -> str:
    from pipeline.compare import summary_row

    columns = [
        ("config", "name"),
        ("model", "model"),
        ("fallback", "fallback"),
        ("served", "served"),
        ("promotions", "promotions"),
        ("demotions", "demotions"),
        ("share by model", "model_share"),
        ("asked", "asked"),
        ("answered", "answered"),
        ("slice gap", "slice_gap"),
        ("CPU µs/event", "cpu_us_per_event"),
        ("champion at the end", "champion"),
        ("challenger takeovers", "takeovers"),
        ("model spec", "spec"),
    ]
    rows = [summary_row(_name(run, i), run) for i, run in enumerate(runs)]
    head = "".join(f"<th>{html.escape(title)}</th>" for title, _ in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row[key]))}</td>" for _, key in columns) + "</tr>"
        for row in rows
    )
    image = base64.b64encode(png).decode("ascii")
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}img{max-width:100%}"
    )
    title = "riverline compare"
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body>\n<h1>{title}</h1>\n"
        f'<img src="data:image/png;base64,{image}" width="1200" height="800" '
        f'alt="learning curves of {len(runs)} configs">\n'
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n</body></html>\n"
    )


def write_comparison(runs: list[dict[str, Any]], page: str | Path) -> tuple[Path, Path]:
    """Write the overlay as ``page`` (HTML, the picture inline, the table below) and the same
    picture beside it as a PNG (1200x800); returns both paths."""
    page_path = Path(page)
    page_path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    _figure(runs).savefig(buffer, format="png", dpi=DPI)
    png = buffer.getvalue()
    png_path = page_path.with_suffix(".png")
    png_path.write_bytes(png)
    page_path.write_text(_page(runs, png), encoding="utf-8")
    return png_path, page_path
