"""A label column that no row has is an error naming the columns; an empty cell is no label."""

from pathlib import Path

import pytest

from producers.sources import NoLabelColumn, SourceOptions, open_source


def test_csv_default_label_column_missing_names_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,amount,outcome\n1,3.5,yes\n")
    with pytest.raises(NoLabelColumn) as caught:
        open_source(str(path))  # up front: before anything is read or published
    assert "no label column 'label'" in str(caught.value)
    assert "'id', 'amount', 'outcome'" in str(caught.value)


def test_csv_given_label_column_missing(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,amount,outcome\n1,3.5,yes\n")
    with pytest.raises(NoLabelColumn, match="no label column 'outcomes'"):
        list(open_source(str(path), SourceOptions(label_column="outcomes")))
    (row,) = open_source(str(path), SourceOptions(label_column="outcome"))
    assert (row.label, row.features) == ("yes", {"amount": 3.5})


def test_csv_empty_label_cells_are_events_without_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,x,label\n1,1.0,\n2,2.0,true\n")
    rows = list(open_source(str(path)))
    assert [(r.id, r.label, r.features) for r in rows] == [
        ("1", None, {"x": 1.0}),
        ("2", True, {"x": 2.0}),
    ]


def test_no_labels_keeps_every_other_column_a_feature(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,x,city\n1,1.0,Lyon\n")
    (row,) = open_source(str(path), SourceOptions(label_column=None))
    assert (row.label, row.features) == (None, {"x": 1.0, "city": "Lyon"})


def test_jsonl_label_column_in_no_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "1", "x": 1, "y": true}\nnot json\n{"id": "2", "x": 2, "z": 3}\n')
    with pytest.raises(NoLabelColumn) as caught:
        list(open_source(str(path)))
    assert "'id', 'x', 'y', 'z'" in str(caught.value)
    rows = list(open_source(str(path), SourceOptions(label_column="y", on_error="skip")))
    assert [r.label for r in rows] == [True, None]


def test_jsonl_label_in_a_later_line_is_enough(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "1", "x": 1}\n{"id": "2", "x": 2, "label": "a"}\n')
    assert [r.label for r in open_source(str(path))] == [None, "a"]
