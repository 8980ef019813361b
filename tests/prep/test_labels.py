"""AU label importers on the real sample files, the restricted unpickler, and aus.csv round trips."""

from __future__ import annotations

import csv
import io
import os
import pickle
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fgfem.aus import AU_CODES, NUM_AUS
from fgfem.errors import FgfemError
from fgfem.prep.labels import (
    AUS_CSV_HEADER,
    AURow,
    load_restricted_pickle,
    read_au_txt,
    read_aus_csv,
    read_expression_manipulator_pkl,
    read_ganimation_pkl,
    read_labels,
    read_openface_csv,
    read_openface_landmarks,
    write_aus_csv,
)


def test_openface_csv_reads_all_frames_by_name(samples: Path) -> None:
    path = samples / "open_dbm" / "subj01_timepoint01_openface.csv"
    aus = read_openface_csv(path)
    assert len(aus) == 158
    first = aus["1"]
    assert first.shape == (NUM_AUS,) and first.dtype == np.float32
    # Cross-check one value against the raw file, found independently by its padded name.
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        row = next(reader)
    assert first[AU_CODES.index("AU04")] == pytest.approx(float(row[header.index(" AU04_r")]))
    landmarks = read_openface_landmarks(path)
    assert landmarks["1"].shape == (68, 2)
    assert landmarks["1"][0, 0] == pytest.approx(float(row[header.index(" x_0")]))


def test_openface_csv_pyfeat_and_dispatch(samples: Path) -> None:
    path = samples / "pyfeat" / "OpenFace_Test.csv"
    aus = read_labels(path)
    assert len(aus) == 100
    assert np.all((np.stack(list(aus.values())) >= 0) & (np.stack(list(aus.values())) <= 5))


def test_openface_csv_missing_columns_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "of.csv"
    path.write_text("frame, AU01_r, AU02_r\n1, 0.1, 0.2\n")
    with pytest.raises(FgfemError, match="AU04_r"):
        read_openface_csv(path)


def test_ganimation_pickle(samples: Path) -> None:
    path = samples / "ganimation" / "aus_openface.pkl"
    with pytest.warns(UserWarning, match="trust"):
        aus = read_ganimation_pkl(path)
    assert sorted(aus) == sorted(p.stem for p in (samples / "ganimation" / "imgs").glob("*.jpg"))
    assert aus["N_0000000437_00540"][AU_CODES.index("AU17")] == pytest.approx(3.37, abs=0.01)
    with pytest.warns(UserWarning):
        assert read_labels(path).keys() == aus.keys()


def test_expression_manipulator_sample_has_11_values_and_says_so(samples: Path) -> None:
    path = samples / "expression_manipulator" / "aus_dataset.pkl"
    with pytest.warns(UserWarning), pytest.raises(FgfemError, match="11 AU values"):
        read_expression_manipulator_pkl(path)


def test_expression_manipulator_17_values_round_trip(tmp_path: Path) -> None:
    items = [{"path": "imgs/a.jpg", "aus": np.arange(17) / 4}, {"file_path": "imgs/b.png", "aus": np.ones(17)}]
    path = tmp_path / "aus_dataset.pkl"
    path.write_bytes(pickle.dumps(items))
    with pytest.warns(UserWarning):
        aus = read_labels(path)
    assert list(aus) == ["imgs/a.jpg", "imgs/b.png"]
    np.testing.assert_allclose(aus["imgs/a.jpg"], np.arange(17) / 4)


class _Evil:
    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": _Evil()}))
    with pytest.warns(UserWarning), pytest.raises(FgfemError, match="refusing to load"):
        load_restricted_pickle(path)
    with pytest.warns(UserWarning), pytest.raises(FgfemError):
        read_ganimation_pkl(path)


def test_vipermu_attributes_txt(samples: Path) -> None:
    aus = read_au_txt(samples / "vipermu" / "attributes.txt")
    assert len(aus) == 81
    assert aus["22.jpg"][AU_CODES.index("AU12")] == pytest.approx(2.54)


def test_aus_csv_round_trip_any_column_order(tmp_path: Path) -> None:
    rows = [AURow("faces/a.png", "openface", 0.98, np.linspace(0, 5, 17, dtype=np.float32)),
            AURow("faces/b.png", "estimator", 0.5, np.zeros(17, np.float32))]
    path = tmp_path / "aus.csv"
    write_aus_csv(path, rows)
    assert path.read_text().splitlines()[0] == ",".join(AUS_CSV_HEADER)
    back = read_aus_csv(path)
    assert [r.path for r in back] == ["faces/a.png", "faces/b.png"]
    np.testing.assert_allclose(back[0].aus, rows[0].aus, atol=1e-4)
    # Reordered columns plus an unknown extra column read the same.
    order = list(reversed(AUS_CSV_HEADER)) + ["note"]
    with open(path, newline="") as handle:
        records = list(csv.DictReader(handle))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=order)
    writer.writeheader()
    for rec in records:
        writer.writerow({**rec, "note": "x"})
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text(buffer.getvalue())
    again = read_aus_csv(shuffled)
    np.testing.assert_allclose(again[0].aus, back[0].aus)
    assert again[1].source == "estimator"


def test_aus_csv_missing_au_column(tmp_path: Path) -> None:
    path = tmp_path / "aus.csv"
    header = [c for c in AUS_CSV_HEADER if c != "AU26"]
    path.write_text(",".join(header) + "\n" + ",".join(["a.png", "s", "1"] + ["0"] * 16) + "\n")
    with pytest.raises(FgfemError, match="AU26"):
        read_aus_csv(path)


_cell = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(string.printable, max_size=6))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    order=st.permutations(list(AUS_CSV_HEADER)),
    extra=st.lists(st.text(string.ascii_letters, min_size=1, max_size=5), max_size=3),
    drop=st.one_of(st.none(), st.sampled_from(AUS_CSV_HEADER)),
    cells=st.lists(st.lists(_cell, min_size=0, max_size=25), max_size=4),
    valid=st.booleans(),
)
def test_read_aus_csv_fuzz(tmp_path: Path, order, extra, drop, cells, valid) -> None:
    header = [c for c in order if c != drop] + extra
    lines = [header]
    for row in cells:
        if valid:
            known = {"path": "p.png", "source": "src", "score": "0.5"}
            row = [known.get(c, "1.5" if c in AU_CODES else "e") for c in header]
        lines.append(row)
    buffer = io.StringIO()
    csv.writer(buffer).writerows(lines)
    path = tmp_path / "fuzz.csv"
    path.write_text(buffer.getvalue())
    try:
        rows = read_aus_csv(path)
    except FgfemError:
        return
    for row in rows:
        assert row.aus.shape == (NUM_AUS,) and np.isfinite(row.aus).all()
