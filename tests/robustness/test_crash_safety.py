"""`fgfem train` and `fgfem prep` killed with SIGKILL at random moments, again and again, then resumed.

Each loop starts the real CLI in a subprocess, kills it after a seeded random delay (during
the torch import, a step, a checkpoint or crop write, the journal append...), checks that
what is on disk is still sound, and starts it again. After the kills the command runs to
the end, and the result must equal that of an uninterrupted run: nothing lost, nothing
doubled, nothing corrupt.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import build_tiny_dataset

from fgfem.prep.dataset import JOURNAL_NAME, read_journal
from fgfem.prep.labels import read_aus_csv
from fgfem.train import read_metrics
from fgfem.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

KILLS = 10
TRAIN_STEPS = 40
TRAIN_ARGS = ["--preset", "lite", "--conv-dim", "8", "--critic-dim", "8", "--size", "64", "--batch", "2",
              "--device", "cpu", "--quiet", "--save-every", "1", "--keep-last", "2", "--preview-every", "1000",
              "--max-steps", str(TRAIN_STEPS)]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="100")


def _fgfem(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fgfem", *args], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_after(proc: subprocess.Popen, delay: float, *, once: Callable[[], bool] | None = None,
                timeout: float = 120) -> bool:
    """SIGKILL ``proc`` ``delay`` s after ``once()`` turns true (at once if None); False if it finished first.

    Waiting for a sign of work (a new metrics line, a new journal line) lands the kills inside
    steps, checkpoint writes and crop writes rather than always in the 5 s of imports.
    """
    deadline = time.monotonic() + timeout
    while once is not None and not once():
        if proc.poll() is not None:
            proc.communicate()
            return False
        assert time.monotonic() < deadline, "the command never got going"
        time.sleep(0.02)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            proc.communicate()
            return False
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return True


def _grows(path: Path) -> Callable[[], bool]:
    """True once ``path`` is longer than it is now (a line was appended)."""
    start = path.stat().st_size if path.exists() else 0
    return lambda: path.exists() and path.stat().st_size > start


def _moment(rng: random.Random, working: Path) -> tuple[float, Callable[[], bool] | None, str]:
    """Where the next kill lands: a third during start-up, the rest at a random point of the work."""
    if rng.random() < 0.3:
        delay = rng.uniform(0.2, 4.0)
        return delay, None, f"{delay:.2f} s after start"
    delay = rng.uniform(0.0, 1.5)
    return delay, _grows(working), f"{delay:.2f} s into the work"


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ train
@pytest.mark.slow
def test_train_survives_repeated_sigkill(samples: Path, tmp_path: Path) -> None:
    data = build_tiny_dataset(samples, tmp_path / "data", vipermu=4)
    run_dir = tmp_path / "run"
    rng = random.Random(20240917)
    kills, log, steps = 0, [], []
    while kills < KILLS:
        saved = latest_checkpoint(run_dir)
        if saved is None:  # killed before the first checkpoint: the folder has only config/metrics, start over
            args = [str(data), "--run", str(run_dir), *TRAIN_ARGS, *(["--force"] if run_dir.exists() else [])]
        else:
            args = [str(data), "--run", str(run_dir), "--resume"]
        delay, once, when = _moment(rng, run_dir / "metrics.jsonl")
        if not _kill_after(_fgfem("train", *args, cwd=tmp_path), delay, once=once):
            pytest.fail(f"training finished before the kill; raise TRAIN_STEPS ({TRAIN_STEPS}) so kills land mid-run")
        kills += 1
        latest = latest_checkpoint(run_dir)
        step = load_checkpoint(latest).step if latest is not None else 0  # verifies the SHA-256
        for path in list_checkpoints(run_dir / "checkpoints"):
            load_checkpoint(path)  # every kept checkpoint, not only the newest, is whole
        steps.append(step)
        log.append(f"kill {kills} {when}: checkpoint at step {step}")
    final = _fgfem("train", str(data), "--run", str(run_dir), "--resume", cwd=tmp_path)
    out, err = final.communicate(timeout=600)
    print("\n".join(log))
    assert final.returncode == 0, err
    assert "Traceback" not in err
    assert f"trained {TRAIN_STEPS} steps" in out
    last = load_checkpoint(latest_checkpoint(run_dir))
    assert last.step == TRAIN_STEPS
    assert [line["step"] for line in read_metrics(run_dir)] == list(range(TRAIN_STEPS))  # none lost or doubled
    from fgfem.weights import load_generator

    load_generator(run_dir / "generator.safetensors")
    assert not list((run_dir / "checkpoints").glob(".*partial*"))
    assert len(set(steps)) >= 4  # the kills landed at many different points of the run


# ------------------------------------------------------------------------------------------ prep
def _raw_photos(shared: Path, root: Path) -> Path:
    """Eight real faces of different people, a photo without a face and a broken file."""
    raw = root / "raw"
    (raw / "people").mkdir(parents=True)
    people = sorted((shared / "data" / "taiwanese").glob("*.jpg"))
    for path in people[:: max(1, len(people) // 8)][:8]:
        shutil.copy(path, raw / "people" / path.name)
    shutil.copy(shared / "data" / "samples" / "pyfeat" / "free-mountain-vector-01.jpg", raw / "mountain.jpg")
    (raw / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return raw


@pytest.mark.slow
def test_prep_survives_repeated_sigkill(shared: Path, tmp_path: Path) -> None:
    raw = _raw_photos(shared, tmp_path)
    reference = tmp_path / "reference"
    whole = _fgfem("prep", str(raw), str(reference), "--backend", "dlib", cwd=tmp_path)
    _, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err

    killed = tmp_path / "killed"
    rng = random.Random(7)
    kills, finished_early, log = 0, 0, []
    while kills < KILLS:
        delay, once, when = _moment(rng, killed / JOURNAL_NAME)
        if _kill_after(_fgfem("prep", str(raw), str(killed), "--backend", "dlib", cwd=tmp_path), delay, once=once):
            kills += 1
            done = read_journal(killed) if killed.is_dir() else {}
            if (killed / "aus.csv").exists():
                read_aus_csv(killed / "aus.csv")  # whatever is there parses
            log.append(f"kill {kills} {when}: {len(done)} of 10 sources journaled")
        else:  # it finished: start over so that later kills land in a fresh run again
            finished_early += 1
            shutil.rmtree(killed)
            assert finished_early < KILLS, "prep always finished before the kill; lengthen the input"
    final = _fgfem("prep", str(raw), str(killed), "--backend", "dlib", cwd=tmp_path)
    out, err = final.communicate(timeout=600)
    print("\n".join(log))
    assert final.returncode == 0, err
    assert (killed / "aus.csv").read_bytes() == (reference / "aus.csv").read_bytes()
    crops_ref, crops_killed = _digests(reference / "crops"), _digests(killed / "crops")
    assert crops_killed == crops_ref  # same crops, byte for byte, and no stray half-written file
    assert not [p for p in killed.rglob("*") if ".partial-" in p.name]
