"""Resuming: bit-exact continuation, and survival of kill -9 and SIGTERM in the middle of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import build_tiny_dataset

from fgfem.train import TrainConfig, read_metrics, train
from fgfem.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

TINY = {"preset": "lite", "conv_dim": 8, "critic_dim": 8, "image_size": 64, "batch": 2}
CLI_TINY = ["--preset", "lite", "--conv-dim", "8", "--critic-dim", "8", "--size", "64", "--batch", "2",
            "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def data_dir(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dataset(samples, tmp_path_factory.mktemp("resume-data"), vipermu=4)


def test_resumed_run_equals_uninterrupted_run(data_dir: Path, tmp_path: Path) -> None:
    """8 faces / batch 2 = 4 steps per epoch: stopping at 5 resumes mid-epoch, after a G step (critic_steps 2)."""
    torch.set_num_threads(1)
    cfg = TrainConfig(**TINY, max_steps=7, critic_steps=2, lr_g=1e-3, lr_d=1e-3, epochs=2, decay_epochs=1,
                      seed=3, preview_every=100, save_every=100)
    full = train(data_dir, tmp_path / "full", cfg, show_progress=False, export=False).history
    first = train(data_dir, tmp_path / "part", cfg.with_resume_overrides({"max_steps": 5}), show_progress=False,
                  export=False).history
    rest = train(data_dir, tmp_path / "part", resume=True, overrides={"max_steps": 7}, show_progress=False,
                 export=False).history
    assert [h["step"] for h in first + rest] == list(range(7))
    assert first + rest == full  # every loss term, bit for bit, and the learning-rate decay in epoch 1
    assert full[4]["lr_g"] < full[3]["lr_g"]
    assert [line["step"] for line in read_metrics(tmp_path / "part")] == list(range(7))


# The config exactly as checkpoints held it before the settings were grouped (one flat object),
# for the run of test_checkpoint_with_a_flat_config_resumes.
OLD_FLAT_CONFIG = {
    "preset": "lite", "image_size": 64, "conv_dim": 8, "critic_dim": 8, "warp": None, "init": None, "batch": 2,
    "limit": None, "holdout": None, "num_workers": 0, "lr_g": 0.001, "lr_d": 0.001, "beta1": 0.5, "beta2": 0.999,
    "epochs": 2, "decay_epochs": 1, "final_lr": 1e-05, "critic_steps": 2, "max_steps": 2, "lambda_d_cond": 150.0,
    "lambda_gp": 10.0, "lambda_g_cond": 150.0, "lambda_idt": 30.0, "lambda_cyc": 30.0, "lambda_tv": 1e-05,
    "lambda_cond_changed": 0.0, "lambda_pair": 0.0, "pair_pattern": None, "pair_batch": 4, "lambda_flow": 0.0,
    "lambda_warp_au": 0.0, "regularizer": "wgan-gp", "r1_gamma": 10.0, "r1_every": 16, "target_jitter": 0.1,
    "source_jitter": 0.02, "single_au_targets": 0.0, "single_au_change": 2.0, "hflip": True, "pad_crop": True,
    "seed": 3, "save_every": 100, "keep_last": 3, "preview_every": 100, "log_every": 1, "device": "cpu",
    "bf16": False, "channels_last": True,
}


def test_checkpoint_with_a_flat_config_resumes(data_dir: Path, tmp_path: Path) -> None:
    """A checkpoint whose config is flat (written before the grouping) resumes as the uninterrupted run goes on."""
    import json

    import safetensors.torch

    from fgfem.train.checkpoint import _digest

    torch.set_num_threads(1)
    settings = {k: v for k, v in OLD_FLAT_CONFIG.items() if v is not None}
    cfg = TrainConfig(**settings)
    flat = cfg.flat()  # the same settings, nothing lost by the grouping; what came later at its default
    assert {key: flat[key] for key in OLD_FLAT_CONFIG} == OLD_FLAT_CONFIG
    assert {key: flat[key] for key in flat.keys() - OLD_FLAT_CONFIG.keys()} == {"rig": None}
    full = train(data_dir, tmp_path / "full", cfg.with_resume_overrides({"max_steps": 4}), show_progress=False,
                 export=False).history
    first = train(data_dir, tmp_path / "old", cfg, show_progress=False, export=False).history
    path = latest_checkpoint(tmp_path / "old")
    saved = load_checkpoint(path)
    assert saved.meta["config"] == cfg.to_dict()  # this fgfem stores it grouped
    header = json.dumps(dict(saved.meta, config=OLD_FLAT_CONFIG), sort_keys=True)
    safetensors.torch.save_file(saved.tensors, str(path),
                                metadata={"fgfem_checkpoint": header, "sha256": _digest(header, saved.tensors)})
    assert load_checkpoint(path).meta["config"] == OLD_FLAT_CONFIG
    rest = train(data_dir, tmp_path / "old", resume=True, overrides={"max_steps": 4}, show_progress=False,
                 export=False).history
    assert first + rest == full


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "fgfem", "train", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoints(run_dir: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(list_checkpoints(run_dir / "checkpoints")) < count:
        if proc.poll() is not None:
            pytest.fail(f"training ended early: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint appeared in time")
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_then_resume(data_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _start([str(data_dir), "--run", str(run_dir), *CLI_TINY, "--save-every", "1", "--keep-last", "2",
                   "--max-steps", "200"], tmp_path)
    _wait_for_checkpoints(run_dir, 2, proc)
    time.sleep(0.3)  # land somewhere inside a step or a checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(latest_checkpoint(run_dir))  # verifies the SHA-256: no torn file is ever `latest`
    assert saved.step >= 2

    resumed = _start([str(data_dir), "--run", str(run_dir), "--resume", "--max-steps", str(saved.step + 2),
                      "--quiet"], tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"trained {saved.step + 2} steps" in out
    steps = [line["step"] for line in read_metrics(run_dir)]
    assert steps == list(range(saved.step + 2))  # nothing lost, nothing logged twice
    assert not list((run_dir / "checkpoints").glob(".*partial*"))


@pytest.mark.slow
def test_sigterm_finishes_the_step_saves_and_exits(data_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _start([str(data_dir), "--run", str(run_dir), *CLI_TINY, "--save-every", "1000", "--max-steps", "500",
                   "--preview-every", "1000"], tmp_path)
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.jsonl").is_file() or not read_metrics(run_dir):
        assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in out
    saved = load_checkpoint(latest_checkpoint(run_dir))
    assert 1 <= saved.step < 500 and saved.step == len(read_metrics(run_dir))
