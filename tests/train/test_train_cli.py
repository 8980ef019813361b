"""`fgfem train`'s options come from the settings' declarations: what --help lists, hides and refuses,
``--set KEY=VALUE`` and ``--config FILE``; and the declarations themselves (one default each)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fgfem.cli import run as cli_run
from fgfem.errors import FgfemError
from fgfem.train import TrainConfig
from fgfem.train.config import SETTINGS
from fgfem.train.settings import HIDDEN, REMOVED, SHOWN, parse_assignments

# What the shipped model's recipe (weights/MODEL_CARD.md, "Reproduce") and the README's documented uses
# need, plus the options that are not settings.
LISTED = {"--run", "--run-dir", "--config", "--set", "--resume", "--force", "--quiet", "--help", "--preset", "--warp",
          "--no-warp", "--init", "--size", "--batch", "--holdout", "--workers", "--lambda-cyc", "--lambda-pair",
          "--pair-pattern", "--pair-batch", "--lambda-flow", "--regularizer", "--lr", "--epochs", "--decay-epochs",
          "--critic-steps", "--max-steps", "--save-every", "--device", "--bf16", "--no-bf16", "--channels-last",
          "--no-channels-last", "--rig"}
HIDDEN_FLAGS = {"--conv-dim", "--critic-dim", "--limit", "--keep-last", "--preview-every", "--seed", "--lambda-d-cond",
                "--lambda-gp", "--lambda-g-cond", "--lambda-idt", "--lambda-tv"}
REFUSED = {"--lambda-warp-au", "--single-au-targets", "--single-au-change", "--lambda-cond-changed"}
TINY = ["--preset", "lite", "--conv-dim", "8", "--critic-dim", "8", "--size", "64", "--batch", "4", "--max-steps", "1",
        "--preview-every", "100", "--device", "cpu", "--quiet"]


def _help(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "250")
    assert cli_run(["train", "--help"]) == 0
    return capsys.readouterr().out


def test_help_lists_the_recipe_and_documented_options_only(capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    text = _help(capsys, monkeypatch)
    column = {flag for line in text.splitlines() for flag in re.findall(r"(?<![\w-])--[a-z0-9-]+", line[:40])}
    assert column == LISTED
    for flag in HIDDEN_FLAGS | REFUSED:
        assert flag not in text
    assert "Default: 16." in text and "Default: 0.0001." in text  # --batch and --lr, from the declarations


def test_every_setting_is_declared_once_with_a_place_on_the_command_line() -> None:
    flags = {s.flag for s in SETTINGS.values() if s.cli is not None}
    assert len(flags) == len([s for s in SETTINGS.values() if s.cli is not None])  # no flag twice
    shown = {s.flag for s in SETTINGS.values() if s.cli == SHOWN}
    assert {f.split("/")[0] for f in shown} <= LISTED
    assert {s.flag for s in SETTINGS.values() if s.cli == HIDDEN} == HIDDEN_FLAGS
    assert {s.flag for s in SETTINGS.values() if s.cli == REMOVED} == REFUSED
    assert all(s.help for s in SETTINGS.values())


def test_hidden_flags_still_set_their_settings(tiny_train_data: Path, tmp_path: Path) -> None:
    assert cli_run(["train", str(tiny_train_data), "--run", str(tmp_path / "run"), *TINY, "--seed", "7",
                    "--lambda-idt", "20", "--keep-last", "1"]) == 0
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert stored["run"]["seed"] == 7 and stored["loss"]["lambda_idt"] == 20 and stored["run"]["keep_last"] == 1
    assert stored["nets"]["conv_dim"] == 8


@pytest.mark.parametrize("flag", sorted(REFUSED))
def test_removed_experiments_are_refused_with_a_pointer(flag: str, tiny_train_data: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert cli_run(["train", str(tiny_train_data), "--run", str(tmp_path / "run"), *TINY, flag, "1"]) == 1
    err = capsys.readouterr().err
    key = flag[2:].replace("-", "_")
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert f"--set {key}=1" in err and "MODEL_CARD" in err and not (tmp_path / "run").exists()


def test_set_and_config_start_a_run_from_another_run_settings(tiny_train_data: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert cli_run(["train", str(tiny_train_data), "--run", str(first), *TINY, "--set", "lambda_cyc=60",
                    "--set", "hflip=false", "--set", "lr_d=3e-4", "--lr", "1e-3"]) == 0
    stored = TrainConfig.from_dict(json.loads((first / "config.json").read_text())["train"])
    assert (stored.lambda_cyc, stored.hflip, stored.lr_g, stored.lr_d) == (60.0, False, 1e-3, 3e-4)
    second = tmp_path / "second"
    assert cli_run(["train", str(tiny_train_data), "--run", str(second), "--config", str(first / "config.json"),
                    "--set", "seed=5", "--batch", "2", "--quiet"]) == 0
    again = TrainConfig.from_dict(json.loads((second / "config.json").read_text())["train"])
    assert again == TrainConfig.from_cli({"seed": 5, "batch": 2}, stored)


@pytest.mark.parametrize("args, message", [
    (["--set", "nosuch=1"], "no training setting 'nosuch'"),
    (["--set", "batch"], "expected KEY=VALUE"),
    (["--set", "batch=four"], "batch takes an integer"),
    (["--set", "hflip=maybe"], "hflip takes true or false"),
    (["--set", "batch=2", "--batch", "2"], "--batch and --set batch=... are both given"),
    (["--set", "batch=2", "--set", "batch=3"], "--set batch is given twice"),
    (["--set", "lambda_gp=-1"], "--lambda-gp must be a number >= 0"),
    (["--config", "missing.json"], "--config missing.json: cannot read it"),
    (["--resume", "--config", "x.json"], "--config is for starting a run"),
    (["--device", "GPU"], "'GPU' is not auto, cpu, cuda, cuda:N or mps"),  # the shared --device's own check
])
def test_bad_settings_are_one_line_errors(args: list[str], message: str, tiny_train_data: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").mkdir()
    assert cli_run(["train", str(tiny_train_data), "--run", str(tmp_path / "run"), *TINY[:-1], *args]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_config_files_grouped_flat_or_a_run_folder_config(tmp_path: Path) -> None:
    cfg = TrainConfig(preset="lite", batch=8, lambda_pair=30.0, pair_pattern="(?P<p>x)", seed=2)
    grouped, flat, run = tmp_path / "grouped.json", tmp_path / "flat.json", tmp_path / "config.json"
    grouped.write_text(cfg.to_json())
    flat.write_text(json.dumps(cfg.flat()))
    run.write_text(json.dumps({"train": cfg.to_dict(), "net": {}, "data": {}}))
    assert TrainConfig.from_file(grouped) == TrainConfig.from_file(flat) == TrainConfig.from_file(run) == cfg
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FgfemError, match="not valid JSON"):
        TrainConfig.from_file(tmp_path / "bad.json")
    with pytest.raises(FgfemError, match="unknown fields \\['bach'\\]"):
        TrainConfig.from_dict({"bach": 8})
    with pytest.raises(FgfemError, match="training config's data has unknown fields"):
        TrainConfig.from_dict({"data": {"lambda_pair": 1.0}})
    with pytest.raises(FgfemError, match="mixes groups"):
        TrainConfig.from_dict({"data": {"batch": 8}, "seed": 1})
    with pytest.raises(FgfemError, match="--batch must be an integer, got .8."):
        TrainConfig.from_dict({"data": {"batch": "8"}})


def test_settings_by_key_and_groups_are_one_config() -> None:
    cfg = TrainConfig(batch=8, lambda_cyc=60.0, seed=4)
    assert cfg.data.batch == cfg.batch == 8 and cfg.loss.lambda_cyc == 60.0 and cfg.run.seed == 4
    assert TrainConfig(data=cfg.data, loss=cfg.loss, run=cfg.run) == cfg
    assert parse_assignments(["max_steps=none", "bf16=on", "pair_pattern=a=b"], SETTINGS) == {
        "max_steps": None, "bf16": True, "pair_pattern": "a=b"}
    with pytest.raises(FgfemError, match="unknown training settings \\['lr'\\]"):
        TrainConfig(lr=1e-3)  # a command-line shorthand, not a setting
    with pytest.raises(AttributeError):
        _ = cfg.no_such_setting


def test_reading_the_declarations_loads_no_torch() -> None:
    """`fgfem --help` and the other commands build the train command's options at start-up."""
    code = "import sys, fgfem.train.config, fgfem.train.settings; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
