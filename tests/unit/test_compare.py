"""``riverline compare``'s logic: the in-process run equals the core fed directly, and River."""

from __future__ import annotations

import json
import multiprocessing
import os
from typing import Any

import pytest
from river import datasets, evaluate

from pipeline.compare import Setting, expand, parse_setting, simulate, summary_row
from pipeline.config import load_config
from pipeline.core import LearningCore
from pipeline.models import make_metric, parse_model_spec
from pipeline.schemas import Event, Label
from producers.reviewer import SimulatedAnswers, parse_reviewer, true_labels
from producers.schedule import LabelDelay, parse_delay, schedule
from producers.sources import SourceError, SourceOptions, open_source

LOGREG = "preprocessing.StandardScaler | linear_model.LogisticRegression"


def config_for(**overrides: Any) -> Any:
    return load_config(None, {"name": "unit-compare", **overrides}, environ={})


def test_plain_model_equals_progressive_val_score() -> None:
    cfg = config_for(model={"spec": LOGREG}, evaluation={"metric": "ROCAUC"})
    report = simulate(cfg, open_source("river:Phishing"), LabelDelay(events=50))
    expected = evaluate.progressive_val_score(
        datasets.Phishing(), parse_model_spec(LOGREG), make_metric("ROCAUC"), delay=50
    )
    assert report["labels"] == 1250
    assert report["metrics"]["model"]["ROCAUC"] == expected.get()  # the same float


def test_partitions_merged_back_equal_river() -> None:
    """Three partitions per topic: the merge gives River's order back, as the consumer's does."""
    spec = "preprocessing.StandardScaler | linear_model.LinearRegression(intercept_lr=0.05)"
    cfg = config_for(
        model={"spec": spec},
        evaluation={"metric": "MAE"},
        kafka={"partitions": 3},
        fallback={"default": 40.0},
    )
    report = simulate(cfg, open_source("river:TrumpApproval"), LabelDelay(events=20))
    expected = evaluate.progressive_val_score(
        datasets.TrumpApproval(), parse_model_spec(spec), make_metric("MAE"), delay=20
    )
    assert report["events"] == report["labels"] == 1001
    assert report["metrics"]["model"]["MAE"] == expected.get()


def test_equals_the_core_fed_directly() -> None:
    """Every learning field of the report equals a core fed the replay's order by hand."""
    overrides = {
        "evaluation": {"metric": "Accuracy", "extra_metrics": ["F1"]},
        "gating": {"min_labels": 50, "window": 100, "margin": 0.01},
        "fallback": {
            "rules": [{"feature": "popup_window", "op": ">=", "value": 1.0, "prediction": False}],
            "default": True,
        },
    }
    cfg = config_for(**overrides)
    options = SourceOptions(limit=600)
    report = simulate(cfg, open_source("river:Phishing", options), parse_delay("25"))
    core = LearningCore.from_config(cfg)
    for kind, record, ts, _ in schedule(open_source("river:Phishing", options), parse_delay("25")):
        if kind == "event":
            core.on_event(Event(id=record.id, ts=ts, features=record.features))
        else:
            core.on_label(Label(id=record.id, ts=ts, label=record.label))  # type: ignore[arg-type]
    direct = core.report()
    assert report["promotions"], "the case must exercise the gating"
    assert {k: v for k, v in report.items() if k not in ("run", "checkpoint_version")} == direct


def test_invalid_records_are_dead_lettered_not_fatal(tmp_path: Any) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(
        '{"id": "a", "ts": 1, "x": 1.0, "label": true}\n'
        '{"id": "b", "ts": 2, "x": 1e400, "label": false}\n'
        '{"id": "c", "ts": 3, "x": 2.0, "label": true}\n'
    )
    report = simulate(config_for(), open_source(str(path)), LabelDelay(events=1))
    assert report["dead_letters"] == {"not_finite": 1}
    assert report["events"] == 2 and report["labels"] == 2  # b's label found no event
    assert report["pending_events"] == 0


def test_slice_gap_from_an_attribute_column() -> None:
    cfg = config_for(
        evaluation={"metric": "Accuracy", "slice_by": "channel"},
        fallback={"default": False},
        gating={"min_labels": 20, "window": 50},
    )
    options = SourceOptions(attribute_columns=("channel",))
    report = simulate(cfg, open_source("configs/payments.csv", options), LabelDelay(events=20))
    gap = report["slices"]["gap"]["served"]
    assert gap > 0 and summary_row("s", report)["slice_gap"] == gap


def test_simulated_reviewer_teaches_without_ground_truth() -> None:
    cfg = config_for(
        review={"policy": "uncertain", "confidence_below": 0.9, "budget_per_minute": None},
        # People are asked for a class before any label: the classes are known up front.
        validation={"labels": [False, True]},
        evaluation={"metric": "Accuracy"},
    )
    options = SourceOptions(limit=300)
    spec = parse_reviewer("simulated:accuracy=1,delay=2s,seed=1")
    answers = SimulatedAnswers(spec, true_labels("river:Phishing", 300))
    report = simulate(cfg, open_source("river:Phishing", options), None, answer=answers.answer)
    review = report["review"]
    assert review["sent"] > 0 and review["answered"] == report["run"]["reviewer_answers"] > 0
    assert review["labels_by_source"] == {"human": report["labels"]}
    # The same run again asks the same questions: the comparison is reproducible.
    again = simulate(cfg, open_source("river:Phishing", options), None, answer=answers.answer)
    assert again["review"]["sent"] == review["sent"]
    assert summary_row("r", report)["asked"] == review["sent"]


def test_grid_names_by_what_differs() -> None:
    grid = expand(
        ["configs/demo.yaml"],
        [
            parse_setting("model.spec=dummy.NoChangeClassifier," + LOGREG),
            parse_setting("gating.margin=0.01,0.05"),
        ],
    )
    assert [g.name for g in grid] == [
        "model.spec=dummy.NoChangeClassifier gating.margin=0.01",
        "model.spec=dummy.NoChangeClassifier gating.margin=0.05",
        f"model.spec={LOGREG} gating.margin=0.01",
        f"model.spec={LOGREG} gating.margin=0.05",
    ]
    assert grid[3].overrides() == {"model": {"spec": LOGREG}, "gating": {"margin": 0.05}}
    with pytest.raises(ValueError, match="once"):
        expand(["x.yaml"], [Setting("a.b", (1,)), Setting("a.b", (2,))])


# The command docs/how-to/compare-models.md shows (reports written into the test's folder
# instead of reports/; test_the_docs_show_this_command keeps the page and this list alike).
DOCS_COMMAND = [
    "compare",
    "configs/demo.yaml",
    "--source",
    "river:Phishing",
    "--label-delay",
    "50",
    "--set",
    "model.spec=naive_bayes.GaussianNB,tree.HoeffdingTreeClassifier,"
    "preprocessing.StandardScaler | linear_model.LogisticRegression",
]


DOCS_PAGE = "docs/how-to/compare-models.md"


def test_the_docs_show_this_command() -> None:
    """The page's command is the one test_docs_command runs (its --html aside)."""
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / DOCS_PAGE).read_text()
    lines = text.split("$ riverline compare ", 1)[1].splitlines()
    command = lines[0].rstrip("\\") + " " + lines[1]
    words = ["compare", *shlex.split(command)]
    html = words.index("--html")
    del words[html : html + 2]
    assert words == DOCS_COMMAND


def test_docs_command(tmp_path: Any) -> None:
    import json
    from pathlib import Path

    from tests.integration.cli import cli_env, riverline

    report, page = tmp_path / "compare.json", tmp_path / "compare.html"
    result = riverline(
        [*DOCS_COMMAND, "--report", str(report), "--html", str(page)],
        cli_env(secret=None),
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert "3 configs on river:Phishing" in result.stderr
    runs = json.loads(report.read_text())["runs"]
    names = [run["compare"]["name"] for run in runs]
    assert names == [
        "model.spec=naive_bayes.GaussianNB",
        "model.spec=tree.HoeffdingTreeClassifier",
        f"model.spec={LOGREG}",
    ]
    for run in runs:
        assert run["events"] == run["labels"] == 1250 and run["run"]["role"] == "compare"
    # The plain model's ROCAUC is River's, and the table shows it in the order given.
    expected = evaluate.progressive_val_score(
        datasets.Phishing(), parse_model_spec(LOGREG), make_metric("ROCAUC"), delay=50
    )
    assert runs[2]["metrics"]["model"]["ROCAUC"] == expected.get()
    row = next(line for line in result.stdout.splitlines() if "StandardScaler" in line)
    assert f"{expected.get():.4f}" in row
    assert result.stdout.index("GaussianNB") < result.stdout.index("HoeffdingTree")
    assert page.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert all(name in page.read_text() for name in names)


def test_a_bad_grid_value_names_the_run_and_the_field() -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(
        app,
        [
            *("compare", "configs/demo.yaml", "--source", "river:Phishing"),
            *("--set", "gating.margin=0.01,-1", "--set", "gating.window=0,100"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "gating.window" in result.output and "Traceback" not in result.output


def test_challenger_takeover_in_the_comparison_row() -> None:
    cfg = load_config("configs/challengers.yaml", {}, environ={})
    report = simulate(cfg, open_source("river:Phishing"), LabelDelay(events=50))
    row = summary_row("c", report)
    assert (row["champion"], row["takeovers"]) == ("logreg", 1)


def test_shared_history_and_workers_give_each_config_its_own_run() -> None:
    """run_all over shares of configs (one reading of the source per worker and history)
    equals each config simulated alone, the reviewer's answers included, whatever --jobs."""
    from pipeline.cli.compare_jobs import run_all

    review = {"policy": "uncertain", "confidence_below": 0.9, "budget_per_minute": None}
    configs = [
        config_for(validation={"labels": [False, True]}, review=review),
        config_for(validation={"labels": [False, True]}, model={"spec": LOGREG}),
        # Another history (the merge over two partitions): read on its own.
        config_for(validation={"labels": [False, True]}, kafka={"partitions": 2}, review=review),
    ]
    options = SourceOptions(limit=300)
    reviewer = parse_reviewer("simulated:accuracy=0.9,delay=2s,seed=3")
    answers = SimulatedAnswers(reviewer, true_labels("river:Phishing", 300))
    alone = [
        simulate(c, open_source("river:Phishing", options), None, answer=answers.answer)
        for c in configs
    ]

    def learned(report: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in report.items() if k != "run"}

    assert alone[0]["review"]["answered"] > 0
    # 1: all here; 2: two workers reading for themselves, one with a config of each history;
    # 4: three workers and a process reading for them; one config read beside its worker.
    for jobs, chosen in ((1, configs), (2, configs), (4, configs), (2, configs[1:2])):
        runs = run_all(chosen, "river:Phishing", None, options, reviewer, jobs)
        expected = alone if len(chosen) == 3 else alone[1:2]
        assert [learned(r) for r in runs] == [learned(r) for r in expected]
        assert [r["run"]["records"] for r in runs] == [r["run"]["records"] for r in expected]
        # Each run's CPU includes its share of the reading, wherever that was done.
        assert all(r["run"]["cpu_us_per_event"] > 0 for r in runs)


def bananas_file(tmp_path: Any, rows: int, bad_line: int | None = None) -> str:
    path = tmp_path / "bananas.jsonl"
    lines = []
    for i, (x, y) in zip(range(rows), datasets.Bananas(), strict=False):
        lines.append(json.dumps({"id": str(i), "ts": float(i), **x, "label": y}))
    if bad_line is not None:
        lines[bad_line - 1] = '{"id": "bad", "ts": '
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_bad_row_read_in_the_reader_process_stops_the_comparison(tmp_path: Any) -> None:
    """A SourceError (--on-error stop) reaches the caller as it would from a run here, naming
    the line, whoever read it (2: the workers; 3: a process reading for them); no process is
    left behind."""
    from pipeline.cli.compare_jobs import run_all

    source = bananas_file(tmp_path, 3000, bad_line=2500)
    configs = [config_for(), config_for(model={"spec": LOGREG})]
    for jobs in (1, 2, 3):
        with pytest.raises(SourceError, match="line 2500: not valid JSON"):
            run_all(configs, source, LabelDelay(events=10), SourceOptions(), None, jobs)
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("who", ["reader", "worker"])
def test_a_process_that_dies_stops_the_comparison_with_its_name(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, who: str
) -> None:
    """A reader or worker killed mid-run (here: leaving with exit code 3, as the OOM killer
    would with its own) is an error naming it, not a hang or a report short of records."""
    from pipeline.cli import compare_jobs

    def leave(*args: Any, **kwargs: Any) -> Any:
        os._exit(3)

    # Patched here, inherited by the forked children: only the one that calls it leaves.
    monkeypatch.setattr(compare_jobs._Plan, "chunks" if who == "reader" else "run", leave)
    source = bananas_file(tmp_path, 2000)
    expected = (
        "the process reading the history stopped"
        if who == "reader"
        else r"compare worker \d of 2 stopped \(exit code 3\)"
    )
    with pytest.raises(RuntimeError, match=expected):
        compare_jobs.run_all(
            [config_for(), config_for(model={"spec": LOGREG})],
            source,
            LabelDelay(events=10),
            SourceOptions(),
            None,
            3,  # two workers and a reader
        )
    assert multiprocessing.active_children() == []
