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


def test_prep_takes_face_like_every_command_and_still_reads_faces(capsys, tmp_path) -> None:
    assert run(["prep", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--face" in help_text and "--faces" not in help_text  # the old spelling is hidden
    assert run(["prep", str(tmp_path / "raw"), str(tmp_path / "data"), "--face", "2"]) == 1
    assert "--face '2'" in capsys.readouterr().err
    # The deprecated --faces still works (here it gets as far as the missing input), with a warning.
    assert run(["prep", str(tmp_path / "raw"), str(tmp_path / "data"), "--faces", "all"]) == 1
    err = capsys.readouterr().err
    assert "--faces is deprecated" in err and "input not found" in err
    assert run(["prep", str(tmp_path / "raw"), str(tmp_path / "data"), "--face", "all", "--faces", "largest"]) == 1
    assert "disagree" in capsys.readouterr().err


def test_shared_option_choices_are_the_librarys() -> None:
    """The Enums typer checks are spelled out (so `--help` imports no torch): they must be what the library takes."""
    from fgfem.cli.options import Backend, Mode, Precision
    from fgfem.editor import MODES
    from fgfem.faces import BACKENDS
    from fgfem.perf import PRECISIONS

    assert tuple(p.value for p in Precision) == PRECISIONS
    assert tuple(m.value for m in Mode) == MODES
    assert {b.value for b in Backend} == {"auto", "dlib-cnn", *BACKENDS}


def test_a_refused_shared_option_is_one_line_before_any_work(tmp_path, capsys) -> None:
    for argv, option in ((["edit", "x.jpg", "--au", "12=+1", "--backend", "openface"], "--backend"),
                         (["render", "x.mp4", "--au", "12=+1", "-o", "y.mp4", "--face", "left"], "--face"),
                         (["aus", "x.jpg", "--backend", "fan2"], "--backend")):
        assert run(argv) == 1
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("error:") and option in err[0], err
