"""The CLI shell: help, info, and the one-line error policy."""

from __future__ import annotations

import subprocess
import sys

from fgfem.cli import run


def test_help_lists_subcommands(capsys) -> None:
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    assert "info" in out


def test_info_runs_and_names_the_device(capsys) -> None:
    assert run(["info", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "cpu" in out


def test_bad_device_is_one_line_and_nonzero() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fgfem", "info", "--device", "tpu"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "tpu" in lines[0]


def test_cuda_without_gpu_is_a_clear_error(capsys) -> None:
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present; this checks the message shown where there is none")
    assert run(["info", "--device", "cuda"]) == 1
    assert "no CUDA GPU" in capsys.readouterr().err
