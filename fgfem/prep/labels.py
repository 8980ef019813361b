"""Read and write AU label files: OpenFace CSVs, GANimation / Expression-manipulator pickles, our aus.csv.

Every reader returns ``dict[str, np.ndarray]``: an id (file name, frame number) to
a float32 17-vector on OpenFace's 0-5 scale in ``fgfem.aus.AU_CODES`` order.
Columns are always found by name, never by position, because OpenFace pads its
names with spaces and different tools write different column sets.

Pickles can run code when loaded. They are only read from paths the user names,
every read warns, and a restricted unpickler admits nothing but the numpy array
machinery and plain containers, so a hostile file fails with ``FgfemError``
instead of executing.
"""

from __future__ import annotations

import csv
import io
import math
import os
import pickle
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fgfem.atomic import write_text
from fgfem.aus import AU_CODES, NUM_AUS, OPENFACE_COLUMNS
from fgfem.errors import FgfemError

PathLike = str | os.PathLike[str]

# The reference Expression-manipulator sample stores 11 values per image, and its
# code does not say which AUs they are; we refuse to guess an order.
EXPRESSION_MANIPULATOR_NOTE = (
    "expects 17 OpenFace AU intensities per image in fgfem.aus order; the reference sample's 11-value "
    "vectors are random placeholders with no documented AU order, so they cannot be imported"
)

PICKLE_WARNING = (
    "reading a pickle runs code from the file; fgfem only allows numpy arrays and plain containers, "
    "but read pickles only from sources you trust"
)

AUS_CSV_FIXED = ("path", "source", "score")
AUS_CSV_HEADER: tuple[str, ...] = (*AUS_CSV_FIXED, *AU_CODES)


# ----------------------------------------------------------------------------- OpenFace CSV


def _read_csv_rows(path: PathLike) -> tuple[list[str], list[list[str]]]:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise FgfemError(f"label file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FgfemError(f"cannot read {path} as CSV: {exc}") from None
    if not rows:
        raise FgfemError(f"{path} is empty; expected a header row")
    return [name.strip() for name in rows[0]], rows[1:]


def _column_index(header: list[str], names: Iterable[str], path: PathLike) -> list[int]:
    names = list(names)
    missing = [n for n in names if n not in header]
    if missing:
        raise FgfemError(f"{path} lacks the columns {', '.join(missing)}")
    return [header.index(n) for n in names]


def _float(text: str, path: PathLike, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FgfemError(f"{path} line {line}: {column} is {text.strip()!r}, not a number") from None
    if not math.isfinite(value):
        raise FgfemError(f"{path} line {line}: {column} is not a finite number")
    return value


def _openface_row_id(header: list[str], row: list[str], line: int) -> str:
    """``frame`` (video) or the row number, with ``_face<i>`` when several faces share a frame."""
    key = str(line - 1)
    if "frame" in header:
        key = row[header.index("frame")].strip()
    for face_column in ("face_id", "face"):
        if face_column in header and row[header.index(face_column)].strip() not in ("", "0"):
            key += f"_face{row[header.index(face_column)].strip()}"
            break
    return key


def read_openface_csv(path: PathLike) -> dict[str, np.ndarray]:
    """AUs of every row of an OpenFace FeatureExtraction / FaceLandmarkImg CSV, keyed by frame.

    Rows where OpenFace says it failed (``success`` 0) are skipped: their AUs are zeros, not
    measurements.
    """
    header, rows = _read_csv_rows(path)
    au_idx = _column_index(header, OPENFACE_COLUMNS, path)
    success = header.index("success") if "success" in header else None
    out: dict[str, np.ndarray] = {}
    for line, row in enumerate(rows, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise FgfemError(f"{path} line {line}: {len(row)} fields, the header has {len(header)}")
        if success is not None and _float(row[success], path, line, "success") == 0:
            continue
        values = [_float(row[i], path, line, OPENFACE_COLUMNS[k]) for k, i in enumerate(au_idx)]
        out[_openface_row_id(header, row, line)] = np.asarray(values, dtype=np.float32)
    return out


def read_openface_landmarks(path: PathLike) -> dict[str, np.ndarray]:
    """OpenFace's own 68 landmarks (``x_0..x_67``, ``y_0..y_67``, pixels) per row, keyed like the AUs."""
    header, rows = _read_csv_rows(path)
    names = [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
    idx = _column_index(header, names, path)
    success = header.index("success") if "success" in header else None
    out: dict[str, np.ndarray] = {}
    for line, row in enumerate(rows, start=2):
        if not row or len(row) != len(header):
            continue
        if success is not None and _float(row[success], path, line, "success") == 0:
            continue
        values = np.asarray([_float(row[i], path, line, names[k]) for k, i in enumerate(idx)], np.float32)
        out[_openface_row_id(header, row, line)] = np.stack([values[:68], values[68:]], axis=1)
    return out


# ----------------------------------------------------------------------------- pickles


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only what numpy arrays and plain containers need; everything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "tuple"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("__builtin__", "list"),
        ("__builtin__", "dict"),
        ("__builtin__", "tuple"),
        ("__builtin__", "set"),
        ("__builtin__", "frozenset"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_restricted_pickle(path: PathLike) -> object:
    """Unpickle ``path`` with only numpy arrays and containers allowed (warns: pickles can run code)."""
    path = Path(path)
    warnings.warn(f"{path}: {PICKLE_WARNING}", UserWarning, stacklevel=2)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FgfemError(f"label file not found: {path}") from None
    except OSError as exc:
        raise FgfemError(f"cannot read {path}: {exc}") from None
    try:
        # latin1 lets Python-2 pickles (GANimation's) restore their numpy byte strings.
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise FgfemError(f"{path}: unsafe or corrupt pickle ({exc}); only numpy arrays are allowed") from None
    except Exception as exc:  # a malformed pickle can raise almost anything
        raise FgfemError(f"{path} is not a readable pickle: {type(exc).__name__}: {exc}") from None


def _au_vector(value: object, where: str) -> np.ndarray:
    try:
        vector = np.asarray(value, dtype=np.float32).ravel()
    except (TypeError, ValueError):
        raise FgfemError(f"{where}: AUs are not numbers") from None
    if vector.size != NUM_AUS:
        raise FgfemError(f"{where}: {vector.size} AU values, expected {NUM_AUS} ({' '.join(AU_CODES)})")
    if not np.isfinite(vector).all():
        raise FgfemError(f"{where}: AU values must be finite")
    return vector


def read_ganimation_pkl(path: PathLike) -> dict[str, np.ndarray]:
    """GANimation ``aus_openface.pkl``: a dict image id -> 17 OpenFace intensities."""
    return _ganimation_labels(load_restricted_pickle(path), path)


def _ganimation_labels(data: object, path: PathLike) -> dict[str, np.ndarray]:
    if not isinstance(data, Mapping):
        raise FgfemError(f"{path}: expected a dict of image id -> AU vector, got {type(data).__name__}")
    return {str(key): _au_vector(value, f"{path} [{key}]") for key, value in data.items()}


def read_expression_manipulator_pkl(path: PathLike) -> dict[str, np.ndarray]:
    """Expression-manipulator ``aus_dataset.pkl``: a list of dicts with ``path``/``file_path`` and ``aus``.

    Keys are the stored paths. Vectors must hold 17 values; see ``EXPRESSION_MANIPULATOR_NOTE``.
    """
    return _expression_manipulator_labels(load_restricted_pickle(path), path)


def _expression_manipulator_labels(data: object, path: PathLike) -> dict[str, np.ndarray]:
    if not isinstance(data, list | tuple):
        raise FgfemError(f"{path}: expected a list of {{'path', 'aus'}} dicts, got {type(data).__name__}")
    out: dict[str, np.ndarray] = {}
    for i, item in enumerate(data):
        if not isinstance(item, Mapping) or "aus" not in item:
            raise FgfemError(f"{path} item {i}: expected a dict with 'path' (or 'file_path') and 'aus'")
        key = item.get("path", item.get("file_path"))
        if key is None:
            raise FgfemError(f"{path} item {i}: no 'path' or 'file_path'")
        size = np.asarray(item["aus"]).size
        if size != NUM_AUS:
            raise FgfemError(f"{path} item {i}: {size} AU values; fgfem {EXPRESSION_MANIPULATOR_NOTE}")
        out[str(key)] = _au_vector(item["aus"], f"{path} item {i}")
    return out


# ----------------------------------------------------------------------------- plain text


def read_au_txt(path: PathLike) -> dict[str, np.ndarray]:
    """Whitespace-separated ``name v1 ... v17`` lines (the ``attributes.txt`` layout of GANimation ports)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FgfemError(f"label file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FgfemError(f"cannot read {path}: {exc}") from None
    out: dict[str, np.ndarray] = {}
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != NUM_AUS + 1:
            raise FgfemError(f"{path} line {number}: expected a name and {NUM_AUS} AU values")
        out[parts[0]] = np.asarray(
            [_float(v, path, number, code) for v, code in zip(parts[1:], AU_CODES, strict=True)], np.float32
        )
    return out


# ----------------------------------------------------------------------------- our aus.csv


@dataclass(frozen=True)
class AURow:
    """One face of a dataset's ``aus.csv``: image path (relative to the file), label source, score."""

    path: str
    source: str
    score: float
    aus: np.ndarray


def read_aus_csv(path: PathLike) -> list[AURow]:
    """Rows of an fgfem ``aus.csv``; columns by name in any order, unknown extra columns ignored."""
    header, rows = _read_csv_rows(path)
    missing = [name for name in AUS_CSV_HEADER if name not in header]
    if missing:
        raise FgfemError(f"{path} lacks the columns {', '.join(missing)} (header: {','.join(AUS_CSV_HEADER)})")
    if len(set(header)) != len(header):
        raise FgfemError(f"{path}: a column name appears twice in the header")
    col = {name: header.index(name) for name in AUS_CSV_HEADER}
    out: list[AURow] = []
    for line, row in enumerate(rows, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise FgfemError(f"{path} line {line}: {len(row)} fields, the header has {len(header)}")
        image = row[col["path"]].strip()
        if not image:
            raise FgfemError(f"{path} line {line}: empty path")
        aus = np.asarray([_float(row[col[c]], path, line, c) for c in AU_CODES], dtype=np.float32)
        score = _float(row[col["score"]], path, line, "score")
        out.append(AURow(path=image, source=row[col["source"]].strip(), score=score, aus=aus))
    return out


def write_aus_csv(path: PathLike, rows: Iterable[AURow]) -> None:
    """Write ``rows`` as an ``aus.csv`` (atomically), AUs with 4 decimals."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(AUS_CSV_HEADER)
    for row in rows:
        aus = _au_vector(row.aus, f"row {row.path!r}")
        writer.writerow([row.path, row.source, f"{float(row.score):.4f}", *(f"{float(v):.4f}" for v in aus)])
    write_text(path, buffer.getvalue())


# ----------------------------------------------------------------------------- dispatch


def read_labels(path: PathLike) -> dict[str, np.ndarray]:
    """Read any supported label file, chosen by its suffix (and, for CSVs, by its header)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header, _ = _read_csv_rows(path)
        if all(name in header for name in AUS_CSV_HEADER):
            return {row.path: row.aus for row in read_aus_csv(path)}
        return read_openface_csv(path)
    if suffix in (".pkl", ".pickle"):
        data = load_restricted_pickle(path)
        if isinstance(data, Mapping):
            return _ganimation_labels(data, path)
        return _expression_manipulator_labels(data, path)
    if suffix == ".txt":
        return read_au_txt(path)
    raise FgfemError(
        f"unknown label file type {path.name!r}: expected an OpenFace or fgfem .csv, "
        "a GANimation / Expression-manipulator .pkl, or a name+17-values .txt"
    )
