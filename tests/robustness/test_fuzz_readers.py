"""Fuzzing the file readers: arbitrary bytes or rows give rows or an FgfemError, never another exception.

Covered: our ``aus.csv`` reader, the OpenFace CSV readers (AUs and landmarks), the prep
journal reader together with what prep does next with its result (rebuild ``aus.csv`` and
``manifest.json``), and the dataset manifest check. The ``--au`` parser has its own property
tests in ``tests/core/test_aus.py``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fgfem.aus import AU_CODES, NUM_AUS, OPENFACE_COLUMNS
from fgfem.errors import FgfemError
from fgfem.prep.dataset import JOURNAL_NAME, PrepOptions, _check_compatible, read_journal, write_outputs
from fgfem.prep.labels import AUS_CSV_HEADER, read_aus_csv, read_labels, read_openface_csv, read_openface_landmarks

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCRATCH = Path(tempfile.mkdtemp(prefix="fgfem-fuzz-"))

cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10, 10).map(str),
    st.text(max_size=12),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e309", "0x10", "1,5", "\x00", "\ufeff1", " 2.5 "]),
)


def _write(name: str, data: bytes) -> Path:
    path = SCRATCH / name
    path.write_bytes(data)
    return path


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8", "surrogatepass")


def _rows_or_fgfem_error(reader, path: Path) -> object:
    try:
        return reader(path)
    except FgfemError as problem:
        assert str(problem).strip() and "\n" not in str(problem).strip()  # one line
        return None


# ------------------------------------------------------------------------------------------ aus.csv
@FUZZ
@given(st.binary(max_size=3000))
def test_aus_csv_arbitrary_bytes(data: bytes) -> None:
    _rows_or_fgfem_error(read_aus_csv, _write("aus.csv", data))


@FUZZ
@given(
    columns=st.lists(st.one_of(st.sampled_from(AUS_CSV_HEADER), st.text(max_size=6)), max_size=24),
    keep_all=st.booleans(),
    rows=st.lists(st.lists(cells, max_size=26), max_size=6),
)
def test_aus_csv_structured_rows(columns: list[str], keep_all: bool, rows: list[list[str]]) -> None:
    header = [*AUS_CSV_HEADER, *columns] if keep_all else columns
    result = _rows_or_fgfem_error(read_aus_csv, _write("aus.csv", _csv_bytes(header, rows)))
    for row in result or []:
        assert row.path and row.aus.shape == (NUM_AUS,) and row.aus.dtype == np.float32
        assert np.all(np.isfinite(row.aus)) and math.isfinite(row.score)


def test_aus_csv_good_rows_come_back() -> None:
    """The positive control for the fuzzing above: a well-formed file is read exactly."""
    rows = [["crops/a.png", "x.jpg", "0.9", *[f"{i / 4:.2f}" for i in range(NUM_AUS)]]]
    result = read_aus_csv(_write("aus.csv", _csv_bytes(list(AUS_CSV_HEADER), rows)))
    assert len(result) == 1 and result[0].path == "crops/a.png"
    assert np.allclose(result[0].aus, [i / 4 for i in range(NUM_AUS)])


# ------------------------------------------------------------------------------------------ OpenFace
openface_columns = st.lists(
    st.one_of(st.sampled_from([*OPENFACE_COLUMNS, "frame", "face_id", "success", "confidence", "timestamp",
                               *(f"x_{i}" for i in range(0, 68, 17)), *(f"y_{i}" for i in range(0, 68, 17))]),
              st.text(max_size=5)),
    max_size=10,
)


@FUZZ
@given(st.binary(max_size=3000))
def test_openface_arbitrary_bytes(data: bytes) -> None:
    path = _write("openface.csv", data)
    _rows_or_fgfem_error(read_openface_csv, path)
    _rows_or_fgfem_error(read_openface_landmarks, path)
    _rows_or_fgfem_error(read_labels, path)


@FUZZ
@given(extra=openface_columns, full=st.booleans(), rows=st.lists(st.lists(cells, max_size=30), max_size=5),
       landmarks=st.booleans())
def test_openface_structured_rows(extra: list[str], full: bool, rows: list[list[str]], landmarks: bool) -> None:
    header = ["frame", " face_id", " success", *extra]
    if full:
        header += [f" {c}" for c in OPENFACE_COLUMNS]
    if landmarks:
        header += [f" x_{i}" for i in range(68)] + [f" y_{i}" for i in range(68)]
    path = _write("openface.csv", _csv_bytes(header, rows))
    for reader in (read_openface_csv, read_openface_landmarks, read_labels):
        result = _rows_or_fgfem_error(reader, path)
        for key, value in (result or {}).items():
            assert isinstance(key, str) and np.all(np.isfinite(value))


# ------------------------------------------------------------------------------------------ journal
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
row_dicts = st.fixed_dictionaries(
    {},
    optional={
        "path": st.one_of(st.just("crops/a.png"), st.just("crops/missing.png"), st.just("/etc/hostname"),
                          st.just("../outside.png"), json_values),
        "source": st.one_of(st.text(max_size=8), json_values),
        "score": st.one_of(st.floats(allow_nan=False), json_values),
        "aus": st.one_of(st.lists(st.floats(0, 5), min_size=NUM_AUS, max_size=NUM_AUS), json_values),
        "landmarks": json_values,
    },
)
units = st.fixed_dictionaries(
    {},
    optional={"source": st.one_of(st.text(max_size=8), json_values),
              "rows": st.one_of(st.lists(row_dicts, max_size=3), json_values),
              "reject": st.one_of(st.none(), st.text(max_size=10), json_values)},
)
journal_lines = st.one_of(units.map(json.dumps), json_values.map(json.dumps), st.binary(max_size=40).map(
    lambda b: b.decode("latin-1")))


def _journal_folder(data: bytes) -> Path:
    folder = SCRATCH / "dataset"
    (folder / "crops").mkdir(parents=True, exist_ok=True)
    (folder / "crops" / "a.png").write_bytes(b"a crop")
    (folder / JOURNAL_NAME).write_bytes(data)
    return folder


def _read_and_rebuild(folder: Path) -> None:
    """What prep does with a journal at start-up and in its ``finally``: read it, rewrite the outputs."""
    try:
        done = read_journal(folder)
        write_outputs(folder, done, PrepOptions(), seconds=0.0, processed=0)
    except FgfemError as problem:
        assert str(problem).strip()
        return
    rows = read_aus_csv(folder / "aus.csv")  # what was rebuilt is itself readable
    assert all(row.path and (folder / row.path).is_file() for row in rows)
    json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


@FUZZ
@given(st.binary(max_size=2000))
def test_journal_arbitrary_bytes(data: bytes) -> None:
    _read_and_rebuild(_journal_folder(data))


@FUZZ
@given(st.lists(journal_lines, max_size=6), st.booleans())
def test_journal_structured_lines(lines: list[str], torn: bool) -> None:
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    _read_and_rebuild(_journal_folder(data[:-3] if torn else data + b"\n"))


def test_journal_good_lines_come_back() -> None:
    """The positive control: a well-formed journal line is read and rebuilt into aus.csv."""
    unit = {"source": "a.jpg", "rows": [{"path": "crops/a.png", "source": "a.jpg", "score": 0.9,
                                         "aus": [1.0] * NUM_AUS}], "reject": None}
    folder = _journal_folder((json.dumps(unit) + "\n").encode())
    _read_and_rebuild(folder)
    assert [row.path for row in read_aus_csv(folder / "aus.csv")] == ["crops/a.png"]


@FUZZ
@given(st.one_of(st.binary(max_size=500), json_values.map(lambda v: json.dumps(v).encode()),
                 st.fixed_dictionaries({}, optional={"size": json_values, "template": json_values})
                 .map(lambda v: json.dumps(v).encode())))
def test_manifest_check_arbitrary_content(data: bytes) -> None:
    folder = SCRATCH / "manifest"
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_bytes(data)
    try:
        _check_compatible(folder, PrepOptions())
    except FgfemError as problem:
        assert str(problem).strip()


def test_au_codes_are_the_csv_columns() -> None:
    assert tuple(AUS_CSV_HEADER[3:]) == AU_CODES
