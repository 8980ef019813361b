"""``fgfem train --init``: a new run starts from earlier weights, including a generator with a new head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fgfem.cli import run as cli_run
from fgfem.errors import FgfemError
from fgfem.nets import Critic, Generator
from fgfem.train import TrainConfig, train
from fgfem.train.checkpoint import latest_checkpoint, load_checkpoint
from fgfem.train.warm_start import warm_start

TINY = {"preset": "lite", "conv_dim": 8, "critic_dim": 8, "image_size": 64, "batch": 4, "warp": False}


@pytest.fixture(scope="module")
def first_run(tiny_train_data: Path, tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    cfg = TrainConfig(**TINY, max_steps=3, critic_steps=1, save_every=3, preview_every=100)
    return train(tiny_train_data, tmp_path_factory.mktemp("runs") / "first", cfg, show_progress=False)


def _nets(cfg: TrainConfig) -> tuple[Generator, Critic]:
    net_cfg = cfg.net_config()
    return Generator(net_cfg), Critic(net_cfg)


def test_checkpoint_loads_both_networks_and_a_new_warp_head_stays_fresh(first_run) -> None:
    generator, critic = _nets(TrainConfig(**{**TINY, "warp": True}))
    flow_before = generator.to_flow.weight.clone()
    started = warm_start(first_run.run_dir, generator=generator, critic=critic)
    trained = load_checkpoint(latest_checkpoint(first_run.run_dir)).tensors
    assert started.critic and started.fresh == ("to_flow.weight",) and not started.ignored
    assert torch.equal(generator.to_rgb.weight, trained["G/to_rgb.weight"])
    assert torch.equal(critic.state_dict()["trunk.0.conv.weight"], trained["D/trunk.0.conv.weight"])
    assert torch.equal(generator.to_flow.weight, flow_before)  # zero: starts as the colour-only model
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    rel = torch.zeros(2, 17)
    rel[:, 9] = 0.4
    with torch.no_grad():
        plain, _ = _nets(TrainConfig(**TINY))
        warm_start(first_run.run_dir, generator=plain, critic=Critic(TrainConfig(**TINY).net_config()))
        assert torch.equal(generator.eval()(x, rel), plain.eval()(x, rel))
    assert "1 new (to_flow.weight)" in started.summary()


def test_exported_generator_warm_starts_the_generator_only(first_run) -> None:
    generator, critic = _nets(TrainConfig(**TINY))
    critic_before = critic.state_dict()["trunk.0.conv.weight"].clone()
    started = warm_start(first_run.exported, generator=generator, critic=critic)
    assert not started.critic and "critic from scratch" in started.summary()
    assert torch.equal(critic.state_dict()["trunk.0.conv.weight"], critic_before)
    trained = load_checkpoint(latest_checkpoint(first_run.run_dir)).tensors
    assert torch.equal(generator.to_rgb.weight, trained["G/to_rgb.weight"])


def test_weights_of_another_width_are_refused(first_run, tmp_path: Path) -> None:
    generator, critic = _nets(TrainConfig(**{**TINY, "conv_dim": 16}))
    with pytest.raises(FgfemError, match="none of its tensors fits"):
        warm_start(first_run.run_dir, generator=generator, critic=critic)
    with pytest.raises(FgfemError, match="does not exist"):
        warm_start(tmp_path / "missing.safetensors", generator=generator, critic=critic)
    with pytest.raises(FgfemError, match="no checkpoints"):
        warm_start(tmp_path, generator=generator, critic=critic)
    text = tmp_path / "notes.safetensors"
    text.write_text("not weights")
    with pytest.raises(FgfemError, match="not a .safetensors"):
        warm_start(text, generator=generator, critic=critic)


def test_cli_init_starts_a_warp_run_from_step_zero(first_run, tiny_train_data: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "warp"
    code = cli_run(["train", str(tiny_train_data), "--run", str(run_dir), "--preset", "lite", "--conv-dim", "8",
                    "--critic-dim", "8", "--size", "64", "--batch", "4", "--max-steps", "2", "--critic-steps", "1",
                    "--init", str(first_run.run_dir), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "tensors loaded" in captured.err and "to_flow.weight" in captured.err
    checkpoint = load_checkpoint(latest_checkpoint(run_dir))
    assert checkpoint.step == 2 and checkpoint.meta["net"]["au_warp"] is True
    assert checkpoint.meta["config"]["nets"]["init"] == str(first_run.run_dir)
    # Two generator steps moved the fresh head off zero: the flow is trained, not dead.
    assert checkpoint.tensors["G/to_flow.weight"].abs().max() > 0
    code = cli_run(["train", str(tiny_train_data), "--run", str(tmp_path / "bad"), "--init", str(tmp_path / "none"),
                    "--preset", "lite", "--max-steps", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "does not exist" in err and "Traceback" not in err


def test_warp_needs_a_residual_generator() -> None:
    with pytest.raises(FgfemError, match="au_warp needs residual_output"):
        TrainConfig(preset="paper", warp=True).net_config()
