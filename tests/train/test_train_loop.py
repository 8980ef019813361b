"""The training loop on real faces: it learns, logs, previews, checkpoints, exports and refuses misuse.

Small networks (``conv_dim``/``critic_dim`` 8) at 64 px keep this file to seconds per test on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fgfem.cli import run as cli_run
from fgfem.errors import FgfemError
from fgfem.train import TrainConfig, export_generator, read_metrics, train
from fgfem.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from fgfem.train.losses import CriticLoss, GeneratorLoss, changed_au_error, total_variation
from fgfem.train.preview import PREVIEW_EDITS
from fgfem.train.terms import ChangedAUCondition

TINY = {"preset": "lite", "conv_dim": 8, "critic_dim": 8, "image_size": 64, "batch": 4}
# The paper's topology at the same tiny widths: its generator must first learn to copy faces.
TINY_PAPER = {**TINY, "preset": "paper"}


@pytest.fixture(scope="module")
def short_run(tiny_train_data: Path, tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    cfg = TrainConfig(**TINY_PAPER, max_steps=12, critic_steps=1, lr_g=5e-4, lr_d=5e-4, save_every=6, keep_last=1,
                      preview_every=6)
    return train(tiny_train_data, tmp_path_factory.mktemp("runs") / "short", cfg, show_progress=False)


def test_identity_and_cycle_losses_fall(short_run) -> None:
    """With the paper's loss weights the L1 terms dominate: G must learn to reproduce faces."""
    log = read_metrics(short_run.run_dir)
    assert [line["step"] for line in log] == list(range(12))
    for name in ("g_idt", "g_cyc"):
        values = [line[name] for line in log]
        first, last = np.mean(values[:3]), np.mean(values[-3:])
        assert last < 0.8 * first, f"{name} did not fall: {first:.3f} -> {last:.3f}"


def test_residual_lite_run_is_the_identity_for_zero_edits(short_run, tiny_train_data: Path, tmp_path: Path) -> None:
    """lite's residual generator reproduces faces from step 0, where the paper's must first learn to."""
    torch.set_num_threads(1)
    cfg = TrainConfig(**TINY, max_steps=8, critic_steps=1, lr_g=2e-4, lr_d=2e-4, save_every=8, preview_every=8)
    result = train(tiny_train_data, tmp_path / "residual", cfg, show_progress=False, export=False)
    log = read_metrics(tmp_path / "residual")
    paper_start = read_metrics(short_run.run_dir)[0]["g_idt"]
    assert cfg.net_config().residual_output and not TrainConfig(**TINY_PAPER).net_config().residual_output
    assert paper_start > 0.1 and all(line["g_idt"] == 0.0 for line in log)  # identity is built in
    assert all(line["g_cyc"] < 0.25 * paper_start for line in log)
    assert result.images_seen == 8 * 4


def test_run_writes_log_previews_checkpoints_and_export(short_run) -> None:
    run_dir = short_run.run_dir
    line = read_metrics(run_dir)[0]
    for key in ("d_real", "d_fake", "d_cond", "d_gp", "d_total", "g_adv", "g_cond", "g_idt", "g_cyc", "g_tv",
                "g_total", "lr_g", "lr_d", "img_per_s"):
        assert np.isfinite(line[key]), key
    previews = sorted((run_dir / "previews").glob("*.png"))
    assert [p.name for p in previews] == ["step-00000006.png", "step-00000012.png"]
    with Image.open(previews[-1]) as grid:
        assert grid.size[0] == 64 * (1 + len(PREVIEW_EDITS)) and grid.size[1] > 64 * 4
    # keep_last=1: only the final checkpoint survives, and `latest` names it.
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step-00000012.safetensors"]
    assert latest_checkpoint(run_dir).name == "step-00000012.safetensors"
    assert short_run.images_seen == 12 * 4

    from fgfem.weights import load_generator

    generator, info = load_generator(short_run.exported)
    assert info.cfg.conv_dim == 8 and info.training["steps"] == 12 and info.training["images_seen"] == 48
    assert info.training["data"]["train_faces"] == 20
    # The exported generator is the checkpoint's.
    state = load_checkpoint(latest_checkpoint(run_dir)).tensors
    torch.testing.assert_close(generator.state_dict()["to_rgb.weight"], state["G/to_rgb.weight"])


def test_export_in_half_precision(short_run, tmp_path: Path) -> None:
    from fgfem.weights import load_generator, read_weights_info

    full = export_generator(short_run.run_dir, tmp_path / "fp32.safetensors")
    half = export_generator(short_run.run_dir, tmp_path / "fp16.safetensors", dtype="float16")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert read_weights_info(half).dtype == "float16"
    state32, state16 = load_generator(full)[0].state_dict(), load_generator(half)[0].state_dict()
    for key, value in state32.items():
        torch.testing.assert_close(state16[key], value, rtol=1e-3, atol=1e-4)
    with pytest.raises(FgfemError, match="unknown export dtype"):
        export_generator(short_run.run_dir, tmp_path / "x.safetensors", dtype="int8")


def test_export_carries_the_shipped_rig_unless_asked_not_to(short_run, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fgfem.cli import app
    from fgfem.paths import find_default_weights
    from fgfem.rig.model import load_rig

    shipped = find_default_weights()
    if shipped is None or load_rig(shipped) is None:
        pytest.skip("the shipped weights with their rig are absent in this checkout")
    runner = CliRunner()
    with_rig, without = tmp_path / "with.safetensors", tmp_path / "without.safetensors"
    assert runner.invoke(app, ["export", str(short_run.run_dir), "-o", str(with_rig)]).exit_code == 0
    assert runner.invoke(app, ["export", str(short_run.run_dir), "-o", str(without), "--no-rig"]).exit_code == 0
    assert load_rig(without) is None
    exported = load_rig(with_rig)
    assert exported is not None and (exported.patterns == load_rig(shipped).patterns).all()


def test_corrupt_checkpoint_is_refused(short_run, tmp_path: Path) -> None:
    damaged = tmp_path / "step-00000012.safetensors"
    data = bytearray(latest_checkpoint(short_run.run_dir).read_bytes())
    data[-100] ^= 0xFF  # one flipped byte inside a tensor
    damaged.write_bytes(bytes(data))
    with pytest.raises(FgfemError, match="is corrupt"):
        load_checkpoint(damaged)
    damaged.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(FgfemError, match="is corrupt"):
        load_checkpoint(damaged)


def test_non_empty_run_folder_is_refused(tiny_train_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(FgfemError, match="not empty"):
        train(tiny_train_data, run_dir, TrainConfig(**TINY, max_steps=1), show_progress=False)
    code = cli_run(["train", str(tiny_train_data), "--run", str(run_dir), "--preset", "lite", "--max-steps", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "--resume" in err and "--force" in err and "Traceback" not in err
    assert cli_run(["train", str(tiny_train_data), "--run", str(tmp_path / "empty"), "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err


def test_lazy_r1_runs_every_n_steps(tiny_train_data: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(**TINY, max_steps=3, critic_steps=4, regularizer="r1", r1_every=2, preview_every=100)
    result = train(tiny_train_data, tmp_path / "r1", cfg, show_progress=False, export=False)
    assert ["d_r1" in line for line in result.history] == [True, False, True]
    assert all("d_gp" not in line for line in result.history)
    assert ["g_total" in line for line in result.history] == [True, False, False]


def test_gradient_penalty_and_losses_on_known_critics() -> None:
    """A linear critic has input gradient w everywhere: the penalty must be (|w| - 1)^2."""
    weight = torch.full((1, 3, 4, 4), 0.5)  # |w| = sqrt(48) / 2

    def critic(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x * weight).sum(dim=(1, 2, 3)).view(-1, 1, 1, 1), torch.zeros(x.shape[0], 17)

    real, fake = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    loss = CriticLoss(lambda_cond=150, lambda_gp=10)
    total, terms = loss(critic, real, fake, torch.full((2, 17), 0.2), step=0, generator=torch.Generator())
    assert float(terms["d_gp"]) == pytest.approx((48**0.5 / 2 - 1) ** 2, rel=1e-5)
    assert float(terms["d_cond"]) == pytest.approx(0.04)
    assert float(total) == pytest.approx(float(terms["d_real"] + terms["d_fake"] + 150 * 0.04 + 10 * terms["d_gp"]),
                                         rel=1e-5)

    def identity_generator(x: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        return x

    _, g_terms = GeneratorLoss()(identity_generator, critic, real, real, torch.zeros(2, 17), torch.zeros(2, 17))
    assert float(g_terms["g_idt"]) == 0 and float(g_terms["g_cyc"]) == 0
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    assert float(total_variation(ramp)) == 12.0  # 4 rows x 3 unit steps, no vertical change


def test_config_json_is_written(short_run) -> None:
    stored = json.loads((short_run.run_dir / "config.json").read_text())
    assert stored["train"]["data"]["batch"] == 4 and stored["net"]["conv_dim"] == 8
    assert stored["data"]["layout"] == "fgfem"


def test_exported_config_keeps_no_machine_paths() -> None:
    from fgfem.train.loop import _shareable_config

    config = {"holdout": "/home/someone/data/held_out.txt", "init": "/home/someone/runs/stage2", "batch": 16}
    assert _shareable_config(config) == {"holdout": "held_out.txt", "init": "stage2", "batch": 16}
    assert _shareable_config({"holdout": None, "init": None}) == {"holdout": None, "init": None}


def test_decay_epochs_option_sets_the_schedule(tiny_train_data: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    """--decay-epochs 0 keeps the learning rate constant to the end; a negative value is a one-line error."""
    args = ["train", str(tiny_train_data), "--preset", "lite", "--conv-dim", "8", "--critic-dim", "8", "--size", "64",
            "--batch", "4", "--lr", "0.001", "--epochs", "1", "--max-steps", "1", "--preview-every", "100", "--quiet"]
    assert cli_run([*args, "--run", str(tmp_path / "flat"), "--decay-epochs", "0"]) == 0
    config = json.loads((tmp_path / "flat" / "config.json").read_text())["train"]
    assert config["optim"]["decay_epochs"] == 0
    assert [row["lr_g"] for row in read_metrics(tmp_path / "flat")] == [pytest.approx(1e-3)]
    # Default (20 decay epochs of 1): the only epoch already runs at the final rate.
    assert cli_run([*args, "--run", str(tmp_path / "decayed")]) == 0
    assert [row["lr_g"] for row in read_metrics(tmp_path / "decayed")] == [pytest.approx(1e-5)]
    capsys.readouterr()
    assert cli_run([*args, "--run", str(tmp_path / "bad"), "--decay-epochs", "-1"]) == 1
    err = capsys.readouterr().err
    assert "--decay-epochs" in err and "Traceback" not in err


def test_single_au_targets_left_the_command_line_but_reach_the_run(tiny_train_data: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """--single-au-targets / --single-au-change (a tried experiment) are refused with a pointer to --set, which
    still sets them and keeps them in the run's config (so --resume keeps them)."""
    args = ["train", str(tiny_train_data), "--preset", "lite", "--conv-dim", "8", "--critic-dim", "8", "--size", "64",
            "--batch", "4", "--epochs", "1", "--max-steps", "1", "--preview-every", "100", "--quiet"]
    for flag, key in (("--single-au-targets", "single_au_targets"), ("--single-au-change", "single_au_change")):
        assert cli_run([*args, "--run", str(tmp_path / "refused"), flag, "0.5"]) == 1
        err = capsys.readouterr().err
        assert f"{flag} is no longer an option" in err and f"--set {key}=0.5" in err and "MODEL_CARD" in err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "refused").exists()
    assert cli_run([*args, "--run", str(tmp_path / "single"), "--set", "single_au_targets=0.5",
                    "--set", "single_au_change=1.5"]) == 0
    config = json.loads((tmp_path / "single" / "config.json").read_text())["train"]
    assert config["data"]["single_au_targets"] == 0.5 and config["data"]["single_au_change"] == 1.5
    capsys.readouterr()
    assert cli_run([*args, "--run", str(tmp_path / "bad"), "--set", "single_au_targets=2"]) == 1
    err = capsys.readouterr().err
    assert "single_au_targets" in err and "Traceback" not in err


def test_changed_au_error_weighs_the_aus_a_target_moves() -> None:
    """One moved AU: its squared error alone; several: weighted by |rel|; none: exactly zero."""
    pred, target = torch.rand(3, 17), torch.rand(3, 17)
    one = torch.zeros(3, 17)
    one[:, 3] = -0.2
    single = float((pred[:, 3] - target[:, 3]).square().mean())
    assert float(changed_au_error(pred, target, one)) == pytest.approx(single)
    two = torch.zeros(1, 17)
    two[0, 2], two[0, 9] = 0.3, 0.1
    expected = (0.3 * (pred[0, 2] - target[0, 2]) ** 2 + 0.1 * (pred[0, 9] - target[0, 9]) ** 2) / 0.4
    assert float(changed_au_error(pred[:1], target[:1], two)) == pytest.approx(float(expected))
    assert float(changed_au_error(pred, target, torch.zeros(3, 17))) == 0.0


def test_changed_au_term_joins_the_generator_loss_only_when_asked() -> None:
    """Off by default (the paper's loss, no extra term); on, the total grows by lambda x the term."""
    def critic(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1), x.mean(dim=(2, 3)).repeat(1, 6)[:, :17]

    def generator(x: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        return x + rel[:, :3, None, None]

    real = torch.rand(2, 3, 8, 8)
    rel = torch.zeros(2, 17)
    rel[:, 1] = 0.2
    target = torch.full((2, 17), 0.3)
    fake = generator(real, rel)
    plain_total, plain = GeneratorLoss()(generator, critic, real, fake, rel, target)
    assert "g_cond_changed" not in plain
    total, terms = GeneratorLoss(extra=[ChangedAUCondition(50.0)])(generator, critic, real, fake, rel, target)
    _, pred = critic(fake)
    assert float(terms["g_cond_changed"]) == pytest.approx(float((pred[:, 1] - 0.3).square().mean()))
    assert float(total) == pytest.approx(float(plain_total + 50.0 * terms["g_cond_changed"]), rel=1e-6)


def test_lambda_cond_changed_left_the_command_line_but_reaches_the_run(tiny_train_data: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """--lambda-cond-changed (a tried experiment) is refused with a pointer to --set; --set lambda_cond_changed
    is kept in the run's config and logged; a negative value is a one-line error."""
    args = ["train", str(tiny_train_data), "--preset", "lite", "--conv-dim", "8", "--critic-dim", "8", "--size", "64",
            "--batch", "4", "--epochs", "1", "--max-steps", "1", "--critic-steps", "1", "--preview-every", "100",
            "--quiet"]
    assert cli_run([*args, "--run", str(tmp_path / "refused"), "--lambda-cond-changed", "20"]) == 1
    err = capsys.readouterr().err
    assert "--lambda-cond-changed is no longer an option" in err and "--set lambda_cond_changed=20" in err
    assert cli_run([*args, "--run", str(tmp_path / "focus"), "--set", "lambda_cond_changed=20"]) == 0
    stored = json.loads((tmp_path / "focus" / "config.json").read_text())["train"]
    assert stored["loss"]["lambda_cond_changed"] == 20
    assert "g_cond_changed" in read_metrics(tmp_path / "focus")[0]
    capsys.readouterr()
    assert cli_run([*args, "--run", str(tmp_path / "bad"), "--set", "lambda_cond_changed=-1"]) == 1
    err = capsys.readouterr().err
    assert "lambda" in err and "Traceback" not in err
