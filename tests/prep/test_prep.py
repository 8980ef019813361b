"""`fgfem prep` and `fgfem aus` on real photos and videos."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgfem.cli import run
from fgfem.prep.dataset import JOURNAL_NAME, PrepOptions, build_dataset
from fgfem.prep.labels import read_aus_csv


@pytest.fixture()
def raw_folder(shared: Path, tmp_path: Path) -> Path:
    """A few real faces, a photo with no face, and two broken files."""
    raw = tmp_path / "raw"
    (raw / "people").mkdir(parents=True)
    for pattern in ("0101a*.jpg", "0111b*.jpg", "0201a*.jpg"):
        first = sorted((shared / "data" / "taiwanese").glob(pattern))[0]
        shutil.copy(first, raw / "people" / first.name)
    shutil.copy(shared / "data" / "samples" / "pyfeat" / "free-mountain-vector-01.jpg", raw / "mountain.jpg")
    (raw / "empty.jpg").write_bytes(b"")
    (raw / "notes.jpg").write_text("this is not a picture")
    return raw


def test_prep_builds_a_dataset_and_resumes(raw_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    first = build_dataset(raw_folder, out, PrepOptions(size=128))
    assert first.sources == 6
    assert first.faces == 3
    assert first.rejects == 3
    rows = read_aus_csv(out / "aus.csv")
    assert len(rows) == 3
    for row in rows:
        crop = Image.open(out / row.path)
        assert crop.size == (128, 128) and crop.mode == "RGB"
        assert row.aus.shape == (17,) and np.all((row.aus >= 0) & (row.aus <= 5))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["size"] == 128 and manifest["counts"]["faces"] == 3
    reasons = {r["source"]: r["reason"] for r in manifest["rejects"]}
    assert set(reasons) == {"mountain.jpg", "empty.jpg", "notes.jpg"}
    assert "no face" in reasons["mountain.jpg"]

    second = build_dataset(raw_folder, out, PrepOptions(size=128))
    assert second.processed == 0 and second.done_before == 6
    assert len(read_aus_csv(out / "aus.csv")) == 3


def test_prep_survives_a_torn_journal(raw_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    build_dataset(raw_folder, out, PrepOptions(size=128))
    journal = out / JOURNAL_NAME
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a kill mid-append
    (out / "aus.csv").unlink()
    again = build_dataset(raw_folder, out, PrepOptions(size=128))
    assert again.processed == 1
    assert len(read_aus_csv(out / "aus.csv")) == 3


def test_prep_refuses_to_mix_sizes(raw_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    build_dataset(raw_folder, out, PrepOptions(size=128, limit=1))
    assert run(["prep", str(raw_folder), str(out), "--size", "256"]) == 1


def test_prep_samples_video_frames(samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "video_data"
    summary = build_dataset(samples / "pyfeat" / "single_face.mp4", out, PrepOptions(size=128, fps=2.0))
    assert summary.faces >= 1
    rows = read_aus_csv(out / "aus.csv")
    assert all("#frame=" in row.source for row in rows)


def test_aus_cli_writes_csv_for_every_face(samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "aus.csv"
    assert run(["aus", str(samples / "pyfeat" / "multi_face.jpg"), "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("source,frame,time_s,face") and "AU12" in lines[0]
    assert len(lines) == 1 + 5
    assert run(["aus", str(samples / "pyfeat" / "multi_face.jpg"), "-o", str(out)]) == 1  # no clobber


def test_aus_cli_no_face_is_one_line(samples: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fgfem", "aus", str(samples / "pyfeat" / "free-mountain-vector-01.jpg")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "no face" in proc.stderr


def test_happy_face_measures_more_au12_than_neutral(shared: Path, tmp_path: Path) -> None:
    """Same performers, neutral vs posed happy (Ekman-FACS performances): AU12 must rise for each."""
    taiwanese = shared / "data" / "taiwanese"
    folder = tmp_path / "pairs"
    folder.mkdir()
    performers = ("02", "03", "05")
    for performer in performers:
        shutil.copy(sorted(taiwanese.glob(f"{performer}??a*.jpg"))[0], folder / f"{performer}_a_neutral.jpg")
        shutil.copy(sorted(taiwanese.glob(f"{performer}21b*.jpg"))[0], folder / f"{performer}_b_happy.jpg")
    out = tmp_path / "aus.json"
    assert run(["aus", str(folder), "-o", str(out)]) == 0
    au12 = {Path(face["source"]).stem: face["aus"]["AU12"] for face in json.loads(out.read_text())["faces"]}
    for performer in performers:
        assert au12[f"{performer}_b_happy"] > au12[f"{performer}_a_neutral"] + 1.0, performer
