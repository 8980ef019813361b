"""Two CPU processes under torchrun (gloo): training runs, and only rank 0 writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import build_tiny_dataset

from fgfem.train import read_metrics
from fgfem.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_training(samples: Path, tmp_path: Path) -> None:
    data = build_tiny_dataset(samples, tmp_path / "data", vipermu=4)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(_free_port()), "-m", "fgfem", "train", str(data), "--run-dir", str(run_dir), "--preset", "lite",
               "--conv-dim", "8", "--critic-dim", "8", "--size", "64", "--batch", "2", "--max-steps", "3",
               "--save-every", "2", "--critic-steps", "2", "--device", "cpu", "--quiet"]
    done = subprocess.run(command, cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 3 steps (12 images seen)") == 1  # rank 0 reports; 2 ranks x batch 2 x 3
    assert [line["step"] for line in read_metrics(run_dir)] == [0, 1, 2]  # one writer, one line per step
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step-00000002.safetensors",
                                                                           "step-00000003.safetensors"]
    final = load_checkpoint(latest_checkpoint(run_dir))
    assert final.meta["images_seen"] == 12
    assert (run_dir / "generator.safetensors").is_file()
    assert not list(run_dir.rglob("*partial*"))
