import math
from pathlib import Path

import pytest
from river import datasets

from producers.sources import (
    SourceError,
    SourceOptions,
    SourceRecord,
    open_source,
    parse_scalar,
    parse_ts,
)

START = 1_700_000_000.0


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def read(spec: str, **options: object) -> tuple[list[SourceRecord], list[SourceError]]:
    """Records and skipped errors in skip mode."""
    errors: list[SourceError] = []
    opts = SourceOptions(on_error="skip", on_skip=errors.append, **options)  # type: ignore[arg-type]
    return list(open_source(spec, opts)), errors


# River datasets


def test_river_dataset_matches_river_exactly() -> None:
    ours = list(open_source("river:Phishing"))
    theirs = list(datasets.Phishing())
    assert len(ours) == 1250
    for record, (x, y) in zip(ours, theirs, strict=True):
        assert record.features == x and list(record.features) == list(x)
        assert [type(v) for v in record.features.values()] == [type(v) for v in x.values()]
        assert record.label == y and type(record.label) is type(y)
        assert record.key is None and record.attributes == {}
    assert [r.id for r in ours[:3]] == ["0", "1", "2"]
    assert [r.ts for r in ours[:3]] == [START, START + 1, START + 2]


def test_river_regression_dataset_with_synthetic_times() -> None:
    options = SourceOptions(start=10.0, interval=0.5, limit=10)
    rows = list(open_source("river:TrumpApproval", options))
    theirs = list(datasets.TrumpApproval())[:10]
    assert [(r.features, r.label) for r in rows] == theirs
    assert [r.ts for r in rows] == [10.0 + i * 0.5 for i in range(10)]


@pytest.mark.parametrize("name", ["NoSuchDataset", "synth", "base", "synth.Agrawal", ""])
def test_not_a_river_dataset(name: str) -> None:
    with pytest.raises(SourceError, match=r"not a dataset in river\.datasets.*Phishing"):
        open_source(f"river:{name}" if name else "river:x y")


def test_remote_dataset_that_is_not_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIVER_DATA", str(tmp_path))  # an empty data home
    with pytest.raises(SourceError, match="river:Elec2 is not shipped with river and must be"):
        open_source("river:Elec2")  # raised at once, before any iteration
    home = tmp_path / "absent"
    monkeypatch.setenv("RIVER_DATA", str(home))
    with pytest.raises(SourceError, match="must be downloaded"):
        open_source("river:Bikes")
    assert not home.exists()  # checking wrote nothing


def test_river_dataset_with_values_that_are_not_scalars() -> None:
    with pytest.raises(SourceError, match="AirlinePassengers, record 0: the feature 'month' is a"):
        next(open_source("river:AirlinePassengers"))
    with pytest.raises(SourceError, match="Yeast, record 0: the label is a dict"):
        next(open_source("river:Yeast"))


# CSV


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("true", True),
        ("FALSE", False),
        ("0", 0),
        ("-12", -12),
        ("+3", 3),
        ("007", 7),
        ("1.5", 1.5),
        ("1e-3", 0.001),
        ("-.5", -0.5),
        ("3.", 3.0),
        ("inf", math.inf),
        ("-Infinity", -math.inf),
        ("1_000", "1_000"),
        ("9" * 5000, "9" * 5000),  # too long for int()
        ("١٢", "١٢"),
        ("Lyon", "Lyon"),
        ("truth", "truth"),
        ("1.2.3", "1.2.3"),
        (" ", " "),
    ],
)
def test_parse_scalar(text: str, expected: object) -> None:
    got = parse_scalar(text)
    assert got == expected and type(got) is type(expected)


def test_parse_scalar_nan() -> None:
    got = parse_scalar("NaN")
    assert isinstance(got, float) and math.isnan(got)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_700_000_000, START),
        ("1700000000.25", START + 0.25),
        ("2023-11-14T22:13:20", START),  # naive is UTC
        ("2023-11-14 22:13:20Z", START),
        ("2023-11-14T23:13:20+01:00", START),
        ("2023-11-14T22:13:20.5+00:00", START + 0.5),
    ],
)
def test_parse_ts(value: object, expected: float) -> None:
    assert parse_ts(value) == expected


@pytest.mark.parametrize("value", ["", "soon", "nan", "inf", True, None, [1], "2023-13-01"])
def test_parse_ts_errors(value: object) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        parse_ts(value)


def test_csv_with_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "d.csv",
        "id,ts,a,city,flag,n,label\n"
        "e1,2024-01-01T00:00:00,1.5,Lyon,true,3,1\n"
        "007,2024-01-01T00:00:10Z,,Paris,FALSE,-2,no\n",
    )
    rows = list(open_source(path))
    assert [r.id for r in rows] == ["e1", "007"]  # ids keep their text
    assert rows[1].ts - rows[0].ts == 10.0
    assert rows[0].ts == parse_ts("2024-01-01T00:00:00+00:00")
    assert rows[0].features == {"a": 1.5, "city": "Lyon", "flag": True, "n": 3}
    assert list(rows[0].features) == ["a", "city", "flag", "n"]
    assert [type(v) for v in rows[0].features.values()] == [float, str, bool, int]
    assert rows[1].features["a"] is None
    assert (rows[0].label, rows[1].label) == (1, "no")


def test_csv_without_id_ts_or_label_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "x,y\n1,a\n2,b\n")
    options = SourceOptions(start=100.0, interval=2.0, label_column=None)  # --no-labels
    rows = list(open_source(f"csv:{path}", options))
    assert [(r.id, r.ts, r.label, r.features) for r in rows] == [
        ("0", 100.0, None, {"x": 1, "y": "a"}),
        ("1", 102.0, None, {"x": 2, "y": "b"}),
    ]


def test_csv_columns_switched_off_become_features(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "id,ts,label\n5,7,1\n")
    (row,) = open_source(path, SourceOptions(id_column=None, ts_column=None))
    assert (row.id, row.ts, row.features, row.label) == ("0", START, {"id": 5, "ts": 7}, 1)


def test_csv_key_attributes_and_other_column_names(tmp_path: Path) -> None:
    path = write(
        tmp_path, "d.csv", "uid,when,x,group,user,y\na,5,1.0,g1,0042,yes\nb,6,2.0,g2,,no\n"
    )
    options = SourceOptions(
        id_column="uid",
        ts_column="when",
        label_column="y",
        key_column="user",
        attribute_columns=("group",),
    )
    rows = list(open_source(path, options))
    assert [(r.id, r.ts, r.features, r.label, r.key, r.attributes) for r in rows] == [
        ("a", 5.0, {"x": 1.0}, "yes", "0042", {"group": "g1"}),
        ("b", 6.0, {"x": 2.0}, "no", None, {"group": "g2"}),
    ]


def test_csv_quoting_bom_and_line_numbers(tmp_path: Path) -> None:
    text = 'id,x,label\r\n1,"two\r\nlines",a\r\n\r\n2,"a,b",b\r\n3,4\r\n'
    path = write(tmp_path, "d.csv", b"\xef\xbb\xbf" + text.encode())
    rows, errors = read(path)
    assert [(r.id, r.features) for r in rows] == [("1", {"x": "two\r\nlines"}), ("2", {"x": "a,b"})]
    assert [str(e) for e in errors] == ["line 6: 2 fields where the header has 3"]


def test_csv_malformed_rows_stop_or_skip_with_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "d.csv",
        "id,ts,x,label\n"
        "1,0,1,a\n"
        "2,0,1\n"  # line 3: too few fields
        "3,notatime,1,a\n"  # line 4: bad time
        "\n"
        '4,1,"x"y,a\n'  # line 6: stray quote
        "5,,1,a\n"  # line 7: empty time
        ",1,1,a\n"  # line 8: empty id
        "6,3,1,b\n",
    )
    with pytest.raises(SourceError, match="line 3: 3 fields where the header has 4") as caught:
        list(open_source(path))
    assert caught.value.line == 3
    rows, errors = read(path)
    assert [r.id for r in rows] == ["1", "6"]
    assert [e.line for e in errors] == [3, 4, 6, 7, 8]
    assert "notatime" in str(errors[1]) and "id ''" in str(errors[4])


def test_csv_bad_bytes_and_unterminated_quotes(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", b'id,x\n1,caf\xe9\n2,ok\n3,"open\n4,x\n')
    rows, errors = read(path, label_column=None)
    assert [r.id for r in rows] == ["2"]
    assert [str(e) for e in errors] == [
        "line 2: not valid UTF-8",
        "line 4: unexpected end of data",  # where the quoted field opened
    ]


def test_synthetic_ids_and_times_count_skipped_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "x,label\n1,a\n2\n3,c\n")
    rows, errors = read(path)
    assert [(r.id, r.ts) for r in rows] == [("0", START), ("2", START + 2)]
    assert [e.line for e in errors] == [3]


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("", {}, "is empty"),
        ("a,b,a\n1,2,3\n", {}, r"line 1: duplicate columns \['a'\]"),
        ("a,label\n1,2\n", {"key_column": "user"}, "line 1: no column 'user'"),
        ("a,label\n1,2\n", {"attribute_columns": ("g",)}, "line 1: no column 'g'"),
    ],
)
def test_csv_bad_files(tmp_path: Path, text: str, options: dict[str, object], message: str) -> None:
    path = write(tmp_path, "d.csv", text)
    with pytest.raises(SourceError, match=message):
        read(path, **options)  # not a row problem: raised even when skipping


# JSONL


def test_jsonl(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "d.jsonl",
        '{"id": "a", "ts": 5, "features": {"x": 1, "y": 0.5}, "label": true, "group": "g1"}\n'
        "\n"
        '{"id": 7, "ts": "1970-01-01T00:00:06Z", "x": 2, "label": "no", "group": "g2"}\n'
        '{"z": null, "group": "g3"}\n',
    )
    rows = list(open_source(path, SourceOptions(attribute_columns=("group",))))
    assert [(r.id, r.ts, r.features, r.label, r.attributes) for r in rows] == [
        ("a", 5.0, {"x": 1, "y": 0.5}, True, {"group": "g1"}),
        ("7", 6.0, {"x": 2}, "no", {"group": "g2"}),
        ("2", START + 2, {"z": None}, None, {"group": "g3"}),  # the third object
    ]
    assert [type(v) for v in rows[0].features.values()] == [int, float]


def test_jsonl_errors_with_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "d.jsonl",
        '{"id": "a", "x": 1}\n'
        "[1, 2]\n"
        "{broken\n"
        "   \n"
        '{"id": "c", "x": {"nested": 1}}\n'
        '{"id": "d", "features": {"x": [1]}}\n'
        '{"id": "e", "label": {"a": 1}}\n'
        '{"id": "f", "ts": null}\n'
        '{"id": 1.5}\n'
        '{"id": "g", "x": 2}\n',
    )
    with pytest.raises(SourceError, match="line 2: not a JSON object") as caught:
        list(open_source(path))
    assert caught.value.line == 2
    rows, errors = read(path)
    assert [r.id for r in rows] == ["a", "g"]
    assert [str(e) for e in errors] == [
        "line 2: not a JSON object but list",
        "line 3: not valid JSON: Expecting property name enclosed in double quotes at column 2",
        "line 5: feature 'x' is nested (dict); values must be flat",
        "line 6: feature 'x' is nested (list); values must be flat",
        "line 7: label is nested (dict); values must be flat",
        "line 8: timestamp None is neither epoch seconds nor ISO-8601",
        "line 9: id 1.5 is not a non-empty string or an integer",
    ]


@pytest.mark.parametrize("name", ["d.ndjson", "d.JSONL", "d.txt"])
def test_jsonl_spellings(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, '{"x": 1}\n')
    spec = f"jsonl:{path}" if name.endswith(".txt") else path
    assert [r.features for r in open_source(spec, SourceOptions(label_column=None))] == [{"x": 1}]


# Limits and specs


def test_limit_stops_reading(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "x,label\n1,a\n2,b\n3,too,many\n")
    assert [r.id for r in open_source(path, SourceOptions(limit=2))] == ["0", "1"]  # no error
    assert list(open_source(path, SourceOptions(limit=0))) == []
    assert len(list(open_source("river:Phishing", SourceOptions(limit=5)))) == 5
    rows, errors = read(path, limit=2)
    assert (len(rows), errors) == (2, [])
    with pytest.raises(SourceError, match="limit"):
        open_source(path, SourceOptions(limit=-1))


def test_limit_counts_records_not_skipped_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", '{"x": 1}\n[]\n{"x": 2}\n{"x": 3}\n')
    rows, errors = read(path, limit=2, label_column=None)
    assert [r.features for r in rows] == [{"x": 1}, {"x": 2}] and len(errors) == 1


@pytest.mark.parametrize("spec", ["kafka://somewhere", "data.parquet", "csv:", "river"])
def test_unknown_spec(spec: str) -> None:
    with pytest.raises(SourceError, match=f"unknown source '{spec}': use river:<Dataset>"):
        open_source(spec)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "none.csv"))
    with pytest.raises(SourceError, match="does not exist"):
        open_source(f"jsonl:{tmp_path}")  # a directory


def test_river_rows_are_checked_whatever_the_types() -> None:
    """Exact scalar types take the shortcut; subclasses pass, non-scalars are refused."""
    from enum import IntEnum

    from producers.sources import _river_records

    class Level(IntEnum):
        LOW = 1

    rows = [({"a": 1, "b": 2.5, "c": "x", "d": None, "e": True}, 1), ({"a": Level.LOW}, Level.LOW)]
    got = list(_river_records(rows, "Fake", SourceOptions()))
    assert [(r.features, r.label) for r in got] == [(x, y) for x, y in rows]
    for x, y, what in [({"a": [1]}, 1, "feature 'a' is a list"), ({"a": 1}, {}, "label is a dict")]:
        with pytest.raises(SourceError, match=f"river:Fake, record 0: the {what}, but riverline"):
            list(_river_records([(x, y)], "Fake", SourceOptions()))
