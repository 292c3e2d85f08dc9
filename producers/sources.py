"""Where replayed records come from: a River dataset, a CSV file or a JSONL file.

``river:<Name>`` yields the dataset's ``(x, y)`` pairs untouched (same dicts, same key order, same
Python types), so that a model fed from the replay learns bit for bit what it learns in River.
Files are parsed into flat scalar features; a malformed row is a :class:`SourceError` naming its
line, which ``on_error="skip"`` turns into a call to ``on_skip``.

>>> first = next(open_source("river:Phishing"))
>>> first.id, first.ts, first.label, list(first.features)[:2]
('0', 1700000000.0, True, ['empty_server_form_handler', 'popup_window'])

>>> try:
...     open_source("kafka://elsewhere")
... except SourceError as e:
...     print(e)
unknown source 'kafka://elsewhere': use river:<Dataset>, a .csv file (or csv:PATH) or a
.jsonl/.ndjson file (or jsonl:PATH)
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import IO, Any, Literal, cast

Scalar = bool | int | float | str | None
_SCALARS = (bool, int, float, str, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)
_INT = re.compile(r"[+-]?\d+", re.ASCII)
_FLOAT = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|nan|inf|infinity)", re.ASCII | re.IGNORECASE
)
_ABSENT: Any = object()


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One row: ``features`` feed the model, ``attributes`` (say a group) do not."""

    id: str
    ts: float
    features: dict[str, Scalar]
    label: Scalar
    key: str | None = None
    attributes: dict[str, Scalar] = field(default_factory=dict)


class SourceError(ValueError):
    """A source that cannot be read; for a bad row the message starts with its line number.

    >>> e = SourceError("2 fields where the header has 3", line=7)
    >>> str(e), e.line
    ('line 7: 2 fields where the header has 3', 7)
    """

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


class NoLabelColumn(SourceError):
    """The label column is in no row: a misspelt name would publish no labels and send the
    real labels as a feature, so this is a usage error (exit 2), not a bad row."""

    def __init__(self, column: str, found: Iterable[str]) -> None:
        names = ", ".join(repr(c) for c in found) or "none"
        super().__init__(
            f"no label column {column!r}; the columns are {names}. Name it with "
            "--label-column, or pass --no-labels for a source without labels"
        )
        self.column = column


@dataclass
class SourceOptions:
    """How to read a source; the columns and ``on_error`` only concern files.

    A missing id column numbers the rows (0-based, blank lines excepted, malformed rows included
    so that ids do not depend on ``on_error``); a missing time column spaces them ``interval``
    seconds apart from ``start``. A label column that no row has is a :class:`NoLabelColumn`
    error; ``label_column=None`` says the source has no labels on purpose. A row whose label
    cell is empty is an event without a label.
    """

    id_column: str | None = "id"
    ts_column: str | None = "ts"
    label_column: str | None = "label"
    key_column: str | None = None
    attribute_columns: tuple[str, ...] = ()
    start: float = 1_700_000_000.0
    interval: float = 1.0
    limit: int | None = None
    on_error: Literal["skip", "stop"] = "stop"
    on_skip: Callable[[SourceError], None] | None = None


def parse_scalar(text: str) -> Scalar:
    """A CSV cell: empty is null, then bool, int, float (``nan``/``inf`` included), else text.

    >>> [parse_scalar(t) for t in ["", "TRUE", " 3", "-1.5e2", "nan", "1_000", "Lyon"]]
    [None, True, 3, -150.0, nan, '1_000', 'Lyon']
    """
    if text == "":
        return None
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    # Stricter than int()/float(), which also take "1_000" and non-ASCII digits.
    if _INT.fullmatch(stripped):
        try:
            return int(stripped)
        except ValueError:  # beyond sys.get_int_max_str_digits(): not a number anyone meant
            return text
    if _FLOAT.fullmatch(stripped):
        return float(stripped)
    return text


def parse_ts(value: object) -> float:
    """Epoch seconds (a number, or text that reads as one) or ISO-8601, naive meaning UTC.

    >>> parse_ts(1_700_000_000), parse_ts("1700000000.5"), parse_ts("2023-11-14T23:13:20+01:00")
    (1700000000.0, 1700000000.5, 1700000000.0)
    >>> parse_ts("2023-11-14 22:13:20") == parse_ts("2023-11-14T22:13:20Z")
    True
    """
    try:
        if isinstance(value, str):
            try:
                seconds = float(value)
            except ValueError:
                parsed = datetime.fromisoformat(value.strip())
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                seconds = parsed.timestamp()
        elif isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            raise ValueError(f"timestamp {value!r} is not a time")
    except (ValueError, OverflowError):
        raise ValueError(f"timestamp {value!r} is neither epoch seconds nor ISO-8601") from None
    if not math.isfinite(seconds):
        raise ValueError(f"timestamp {value!r} is not finite")
    return seconds


def _scalar(value: Any, what: str, line: int) -> Scalar:
    if not isinstance(value, _SCALARS):
        raise SourceError(f"{what} is nested ({type(value).__name__}); values must be flat", line)
    return value


def _ident(value: Any, what: str, line: int) -> str:
    # Only text and integers: str(1.0) or str(True) would make an id nobody wrote.
    if (isinstance(value, str) and value) or (isinstance(value, int) and type(value) is not bool):
        return str(value)
    raise SourceError(f"{what} {value!r} is not a non-empty string or an integer", line)


def _record(
    row: dict[str, Any], index: int, line: int, options: SourceOptions, *, nested: bool = False
) -> SourceRecord:
    """Take id, time, label, key and attributes out of ``row``; the rest are the features."""
    o = options
    rid = row.pop(o.id_column, _ABSENT) if o.id_column is not None else _ABSENT
    raw_ts = row.pop(o.ts_column, _ABSENT) if o.ts_column is not None else _ABSENT
    raw_label = row.pop(o.label_column, None) if o.label_column is not None else None
    label = _scalar(raw_label, "label", line)
    key = row.pop(o.key_column, None) if o.key_column is not None else None
    attributes = {
        c: _scalar(row.pop(c, None), f"attribute {c!r}", line) for c in o.attribute_columns
    }
    features = row.pop("features") if nested and isinstance(row.get("features"), dict) else row
    for name, value in features.items():
        _scalar(value, f"feature {name!r}", line)
    try:
        ts = o.start + index * o.interval if raw_ts is _ABSENT else parse_ts(raw_ts)
    except ValueError as e:
        raise SourceError(str(e), line) from None
    return SourceRecord(
        id=str(index) if rid is _ABSENT else _ident(rid, "id", line),
        ts=ts,
        features=features,
        label=label,
        key=None if key is None or key == "" else _ident(key, "key", line),
        attributes=attributes,
    )


def _open(path: Path, newline: str | None) -> IO[str]:
    # utf-8-sig drops a spreadsheet's BOM; surrogateescape defers bad bytes to the row that has
    # them, which can then be reported (or skipped) with its line number.
    try:
        return path.open(encoding="utf-8-sig", errors="surrogateescape", newline=newline)
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e.strerror}") from None


def _check_utf8(text: str, line: int) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise SourceError("not valid UTF-8", line) from None


def _csv(path: Path, options: SourceOptions) -> Iterator[SourceRecord | SourceError]:
    with _open(path, newline="") as handle:
        reader = csv.reader(handle, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise SourceError(f"{path} is empty; a CSV source starts with a header row") from None
        except csv.Error as e:
            raise SourceError(f"header: {e}", 1) from None
        _check_utf8("".join(header), 1)
        if duplicates := sorted({h for h in header if header.count(h) > 1}):
            raise SourceError(f"duplicate columns {duplicates}", 1)
        if options.label_column is not None and options.label_column not in header:
            raise NoLabelColumn(options.label_column, header)
        wanted = [options.key_column, *options.attribute_columns]
        if missing := [c for c in wanted if c is not None and c not in header]:
            raise SourceError(f"no column {', '.join(map(repr, missing))} in the header", 1)
        # Ids, keys and times keep their text: "007" is an id, not the number 7.
        verbatim = {options.id_column, options.ts_column, options.key_column}
        for index, (line, cells) in enumerate(_csv_rows(reader)):
            try:
                if isinstance(cells, csv.Error):
                    raise SourceError(str(cells), line)
                if len(cells) != len(header):
                    raise SourceError(
                        f"{len(cells)} fields where the header has {len(header)}", line
                    )
                _check_utf8("".join(cells), line)
                row = {
                    h: c if h in verbatim else parse_scalar(c)
                    for h, c in zip(header, cells, strict=True)
                }
                result: SourceRecord | SourceError = _record(row, index, line, options)
            except SourceError as e:
                result = e
            yield result


def _csv_rows(reader: Any) -> Iterator[tuple[int, list[str] | csv.Error]]:
    """Non-blank rows with the line each starts on (a quoted field can span lines)."""
    end = reader.line_num
    while True:
        line = end + 1
        try:
            cells: list[str] | csv.Error = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # strict mode: a stray quote, an unterminated field
            cells = e
        end = reader.line_num
        if cells != []:
            yield line, cells


def _jsonl_columns(path: Path, label_column: str) -> tuple[bool, list[str]]:
    """Whether some line has the label column (usually the first does), and the names seen."""
    seen: dict[str, None] = {}
    with _open(path, newline=None) as handle:
        for text in handle:
            try:
                row = json.loads(text)
            except (ValueError, RecursionError):
                continue  # reported with its line number when the rows are read
            if isinstance(row, dict):
                if label_column in row:
                    return True, list(seen)
                seen.update(dict.fromkeys(map(str, row)))
    return False, list(seen)


def _jsonl(path: Path, options: SourceOptions) -> Iterator[SourceRecord | SourceError]:
    with _open(path, newline=None) as handle:
        index = 0
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                _check_utf8(text, line)
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as e:
                    raise SourceError(
                        f"not valid JSON: {e.msg} at column {e.colno}", line
                    ) from None
                except (ValueError, RecursionError) as e:
                    raise SourceError(f"not valid JSON: {e}", line) from None
                if not isinstance(row, dict):
                    raise SourceError(f"not a JSON object but {type(row).__name__}", line)
                result: SourceRecord | SourceError = _record(row, index, line, options, nested=True)
            except SourceError as e:
                result = e
            index += 1
            yield result


def _river(name: str, options: SourceOptions) -> Iterator[SourceRecord]:
    from river import datasets  # slow to import: only river: sources pay for it

    base = datasets.base
    found = getattr(datasets, name, None) if name.isidentifier() else None
    if not (isinstance(found, type) and issubclass(found, base.Dataset)):
        shipped = [
            n
            for n in datasets.__all__
            if isinstance(c := getattr(datasets, n), type)
            and issubclass(c, base.Dataset)
            and not issubclass(c, base.RemoteDataset)
        ]
        raise SourceError(
            f"river:{name} is not a dataset in river.datasets; "
            f"those shipped with river are {', '.join(shipped)}"
        )
    try:
        dataset = cast(Any, found)()  # mypy sees base.Dataset.__init__
    except TypeError as e:
        raise SourceError(f"river:{name} cannot be built without arguments ({e})") from None
    # Iterating a RemoteDataset that is not on disk downloads it: fail fast instead.
    if isinstance(dataset, base.RemoteDataset):
        # is_downloaded creates River's data home (RIVER_DATA, else ~/river_data) when it is
        # absent; an absent home already means "no", and answering it should write nothing.
        home = Path(os.environ.get("RIVER_DATA", "~/river_data")).expanduser()
        try:
            downloaded = home.is_dir() and bool(dataset.is_downloaded)
        except OSError:
            downloaded = False
        if not downloaded:
            raise SourceError(
                f"river:{name} is not shipped with river and must be downloaded first (run "
                f'`python -c "from river import datasets; datasets.{name}().download()"` where '
                "the network allows, RIVER_DATA choosing where), or replay a CSV/JSONL file"
            )
    return _river_records(dataset, name, options)


def _river_records(dataset: Any, name: str, options: SourceOptions) -> Iterator[SourceRecord]:
    for i, (x, y) in enumerate(dataset):
        # Exact types first, in C (nearly every row); a subclass or a non-scalar looks closer.
        if not (type(y) in _SCALAR_TYPES and _SCALAR_TYPES.issuperset(map(type, x.values()))):
            bad = next((k for k, v in x.items() if not isinstance(v, _SCALARS)), _ABSENT)
            if bad is not _ABSENT or not isinstance(y, _SCALARS):
                what, value = (f"feature {bad!r}", x[bad]) if bad is not _ABSENT else ("label", y)
                raise SourceError(
                    f"river:{name}, record {i}: the {what} is a {type(value).__name__}, but "
                    "riverline replays flat scalar features and labels"
                )
        yield SourceRecord(str(i), options.start + i * options.interval, x, y)


_Opener = Callable[[str, SourceOptions], Iterator[SourceRecord]]


def _csv_header(path: Path) -> list[str] | None:
    """The header row, or None where reading it fails (the rows' reader reports why)."""
    try:
        with _open(path, newline="") as handle:
            return next(csv.reader(handle, strict=True), None)
    except (SourceError, csv.Error):
        return None


def _check_label_column(path: Path, kind: str, options: SourceOptions) -> None:
    """Up front, so that a misnamed label column fails before anything is published."""
    column = options.label_column
    if column is None:
        return
    if kind == "csv":
        header = _csv_header(path)
        # A header with other faults is left to the rows' reader, which reports those first.
        clean = header is not None and len(set(header)) == len(header)
        if clean and header is not None and column not in header:
            try:
                "".join(header).encode()
            except UnicodeEncodeError:
                return
            raise NoLabelColumn(column, header)
    else:
        found, columns = _jsonl_columns(path, column)
        if not found:
            raise NoLabelColumn(column, columns)


def _file(reader: Callable[[Path, SourceOptions], Iterator[SourceRecord | SourceError]]) -> _Opener:
    kind = "csv" if reader is _csv else "jsonl"

    def checked(spec: str, options: SourceOptions) -> Iterator[SourceRecord]:
        path = Path(spec)
        if not path.is_file():
            raise SourceError(f"source file {path} does not exist")
        _check_label_column(path, kind, options)
        return _handle_errors(reader(path, options), options)

    return checked


def _handle_errors(
    rows: Iterator[SourceRecord | SourceError], options: SourceOptions
) -> Iterator[SourceRecord]:
    for row in rows:
        if isinstance(row, SourceRecord):
            yield row
        elif options.on_error == "stop":
            raise row
        elif options.on_skip is not None:
            options.on_skip(row)


# scheme -> opener; a `synth:` scheme for river.datasets.synth would slot in here.
_SCHEMES: dict[str, _Opener] = {
    "river": _river,
    "csv": _file(_csv),
    "jsonl": _file(_jsonl),
}
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def open_source(spec: str, options: SourceOptions | None = None) -> Iterator[SourceRecord]:
    """Records of ``river:<Dataset>``, a ``.csv`` (``csv:PATH``) or ``.jsonl`` (``jsonl:PATH``).

    ``synth:<Generator>[:key=value,...]`` is a drifting synthetic stream, see
    :mod:`producers.synth`.

    A bad spec, a missing file or a River dataset that is not on disk raise :class:`SourceError`
    here; problems inside a file surface while iterating.

    >>> [(r.id, r.ts, r.label) for r in open_source("river:TrumpApproval", SourceOptions(limit=2))]
    [('0', 1700000000.0, 43.75505), ('1', 1700000001.0, 43.71027)]
    """
    options = options or SourceOptions()
    if options.limit is not None and options.limit < 0:
        raise SourceError(f"limit must be at least 0, not {options.limit}")
    scheme, _, rest = spec.partition(":")
    if scheme == "synth":  # imported here: producers.synth imports this module
        from producers.synth import open_synth

        records = open_synth(rest, options)
    elif scheme in _SCHEMES and rest:
        records = _SCHEMES[scheme](rest, options)
    elif (kind := _SUFFIXES.get(Path(spec).suffix.lower())) is not None:
        records = _SCHEMES[kind](spec, options)
    else:
        raise SourceError(
            f"unknown source {spec!r}: use river:<Dataset>, a .csv file (or csv:PATH) or a "
            ".jsonl/.ndjson file (or jsonl:PATH)"
        )
    return islice(records, options.limit)
