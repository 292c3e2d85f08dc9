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
