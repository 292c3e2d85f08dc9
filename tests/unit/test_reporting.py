from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from pipeline.reporting import write_learning_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _report(metric: str = "ROCAUC", bigger_is_better: bool = True) -> dict[str, Any]:
    history = []
    served = {"heuristic": 0, "model": 0, "default": 0}
    for i in range(1, 51):
        label = i * 10
        serving = 120 <= label < 305 or label >= 400
        served["model" if serving else "heuristic"] += 8
        served["default"] += 1
        good, bad = 0.9, 0.7
        if not bigger_is_better:
            good, bad = 1.0, 2.0
        history.append(
            {
                "label": label,
                "model": good if serving else bad,
                "fallback": 0.8 if bigger_is_better else 1.5,
                "mode": "serving" if serving else "shadow",
                "served": dict(served),
            }
        )

    def decision(kind: str, index: int) -> dict[str, Any]:
        return {
            "kind": kind,
            "label_index": index,
            "model_metric": 0.9,
            "fallback_metric": 0.8,
            "reason": f"{kind} <by margin>",
        }

    return {
        "metric": metric,
        "bigger_is_better": bigger_is_better,
        "history": history,
        "promotions": [decision("promotion", 400), decision("promotion", 120)],
        "demotions": [decision("demotion", 305)],
        "drift": [{"label_index": 300, "detector": "ADWIN"}],
        "events": 600,
        "labels": 500,
        "mode": "serving",
        "metrics": {
            "model": {metric: 0.9, "Accuracy": 0.85},
            "fallback": {metric: 0.8},
            "served": {metric: 0.88},
        },
        "predictions_by_source": dict(served),
    }


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_writes_png_and_html(tmp_path: Path) -> None:
    png, page = write_learning_curve(_report(), tmp_path / "out")
    assert png.exists() and page.exists()
    assert png == tmp_path / "out" / "learning-curve.png"
    assert _png_size(png) == (1200, 800)
    text = page.read_text(encoding="utf-8")
    assert '<img src="data:image/png;base64,' in text
    for needle in ("promotion", "demotion", "drift", "ADWIN", "ROCAUC", "Accuracy"):
        assert needle in text
    for source in ("heuristic", "model", "default"):
        assert source in text
    # Decisions are sorted by label index whatever the input order.
    assert text.index("<td>120</td>") < text.index("<td>300</td>") < text.index("<td>305</td>")
    assert text.index("<td>305</td>") < text.index("<td>400</td>")
    # Reasons are escaped, not injected as markup.
    assert "&lt;by margin&gt;" in text and "<by margin>" not in text
    assert "<script" not in text


def test_empty_history(tmp_path: Path) -> None:
    report = _report()
    report.update(history=[], promotions=[], demotions=[], drift=[], mode="cold")
    report.update(events=0, labels=0, metrics={}, predictions_by_source={})
    png, page = write_learning_curve(report, tmp_path, stem="empty")
    assert png.name == "empty.png" and page.name == "empty.html"
    assert _png_size(png) == (1200, 800)
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "data:image/png;base64," in text


def test_lower_is_better_metric(tmp_path: Path) -> None:
    png, page = write_learning_curve(_report("MAE", bigger_is_better=False), str(tmp_path))
    assert _png_size(png) == (1200, 800)
    assert "MAE" in page.read_text(encoding="utf-8")


def test_intervals_without_predictions_are_skipped(tmp_path: Path) -> None:
    report = _report()
    # Repeat a sample: a zero-diff interval must not divide by zero.
    report["history"].insert(5, dict(report["history"][4]))
    png, _ = write_learning_curve(report, tmp_path)
    assert _png_size(png) == (1200, 800)


def _payments_like() -> dict[str, Any]:
    """Promotion at 50, demotion at 55, promotion at 66 (the payments example of issue 19),
    sampled every 10 labels, with people answering some of them."""
    modes = {10: "shadow", 20: "shadow", 30: "shadow", 40: "shadow", 50: "serving"}
    modes |= {60: "shadow", 70: "serving", 80: "serving", 90: "serving", 100: "serving"}
    history = [
        {
            "label": label,
            "model": 0.5 + label / 400,
            "fallback": 0.6,
            "mode": mode,
            "served": {"heuristic": label, "model": max(0, label - 50)},
            "learned_by": {"ground_truth": label - label // 5, "human": label // 5},
        }
        for label, mode in modes.items()
    ]

    def decision(kind: str, label: int) -> dict[str, Any]:
        return {"kind": kind, "label_index": label, "model_metric": 0.7, "fallback_metric": 0.6}

    return {
        "pipeline": "payments",
        "metric": "ROCAUC",
        "bigger_is_better": True,
        "mode": "serving",
        "events": 120,
        "labels": 100,
        "predictions_by_source": {"heuristic": 100, "model": 50},
        "metrics": {"model": {"ROCAUC": 0.8}, "fallback": {"ROCAUC": 0.6}, "served": {}},
        "history": history,
        "promotions": [decision("promotion", 50), decision("promotion", 66)],
        "demotions": [decision("demotion", 55)],
        "drift": [],
        "dead_letters": {"not_json": 2, "label_orphaned": 1},
    }


def test_model_serving_shade_starts_at_the_promotion_and_skips_demoted_spans() -> None:
    from pipeline.reporting import _figure

    figure = _figure(_payments_like())
    top = figure.axes[0]
    shades = sorted((p.get_x(), p.get_x() + p.get_width()) for p in top.patches)
    assert shades == [(50.0, 55.0), (66.0, 100.0)]


def test_labels_from_people_have_their_own_axis(tmp_path: Path) -> None:
    from pipeline.reporting import _figure

    figure = _figure(_payments_like())
    by_label = {ax.get_ylabel(): ax for ax in figure.axes}
    served = by_label["share of predictions served"]
    people = by_label["share of labels learned from people"]
    assert people is not served
    assert [line.get_label() for line in people.get_lines()] == ["labels from people"]
    assert "labels from people" not in [line.get_label() for line in served.get_lines()]


def test_html_names_the_pipeline_and_lists_dead_letters(tmp_path: Path) -> None:
    _png, page = write_learning_curve(_payments_like(), tmp_path)
    text = page.read_text()
    assert "<title>riverline learning curve: payments, ROCAUC</title>" in text
    assert "<td>dead letters: not_json</td><td>2</td>" in text
    assert "<td>dead letters: label_orphaned</td><td>1</td>" in text
