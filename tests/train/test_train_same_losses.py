"""A fixed-seed 2-step run logs the losses it logged before the loss terms became objects.

The numbers were recorded with fgfem's training code before its generator terms (pairs,
landmark flow, warp AUs, the changed-AU condition) moved out of the loop into objects, on
a 2-core AMD EPYC in fp32; there they still match bit for bit. The tolerance leaves room
for another CPU's float rounding only (CI's machine, with other SIMD kernels, gave g_cyc 1.05e-4
relative off after two steps): a changed term, weight, draw or order is off by far more than 1e-3.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import VIPERMU, build_tiny_dataset, write_landmark_journal

from fgfem.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"preset": "lite", "conv_dim": 8, "critic_dim": 8, "image_size": 64, "batch": 4, "device": "cpu",
        "bf16": False, "max_steps": 2, "save_every": 100, "preview_every": 100}
CONFIGS = {
    "paper": {**TINY, "preset": "paper", "critic_steps": 1, "lr_g": 5e-4, "lr_d": 5e-4},
    "r1": {**TINY, "critic_steps": 1, "regularizer": "r1", "r1_every": 2},
    "all_terms": {**TINY, "critic_steps": 1, "warp": True, "lambda_pair": 30.0, "pair_pattern": VIPERMU,
                  "pair_batch": 2, "lambda_flow": 1.0, "lambda_warp_au": 10.0, "lambda_cond_changed": 20.0,
                  "single_au_targets": 0.5},
}
RECORDED = {
    "paper": [
        {"d_real": 1.3498050066118594e-05, "d_fake": -5.862629677721998e-06, "d_cond": 0.03731200098991394,
         "d_gp": 0.9999263286590576, "d_total": 15.596071243286133, "g_adv": 1.5085866834851913e-05,
         "g_cond": 0.04626224935054779, "g_idt": 0.4987487494945526, "g_cyc": 0.4977223575115204,
         "g_tv": 23656.853515625, "g_total": 37.0700569152832},
        {"d_real": -6.5284466472803615e-06, "d_fake": -7.544801974290749e-06, "d_cond": 0.03051808290183544,
         "d_gp": 0.9999165534973145, "d_total": 14.576864242553711, "g_adv": 7.216108315333258e-06,
         "g_cond": 0.04274093359708786, "g_idt": 0.4894828498363495, "g_cyc": 0.4904477894306183,
         "g_tv": 21507.19921875, "g_total": 36.024139404296875},
    ],
    "r1": [
        {"d_real": -7.661880772502627e-06, "d_fake": 6.214805580384564e-06, "d_cond": 0.03730699047446251,
         "d_r1": 1.423835049862987e-09, "d_total": 5.5960469245910645, "g_adv": -3.3764279123715824e-06,
         "g_cond": 0.04626336321234703, "g_idt": 0.0, "g_cyc": 0.024813709780573845, "g_tv": 8693.0048828125,
         "g_total": 7.770843029022217},
        {"d_real": -6.075161309126997e-06, "d_fake": 5.9286580835760105e-06, "d_cond": 0.030527759343385696,
         "d_total": 4.579164028167725, "g_adv": -2.3314105419558473e-06, "g_cond": 0.042745135724544525, "g_idt": 0.0,
         "g_cyc": 0.04109624773263931, "g_tv": 8135.9462890625, "g_total": 7.726014614105225},
    ],
    "all_terms": [
        {"d_real": -7.661880772502627e-06, "d_fake": 7.558534889540169e-06, "d_cond": 0.03730699047446251,
         "d_gp": 0.9999226927757263, "d_total": 15.595274925231934, "g_adv": -5.259402314550243e-06,
         "g_cond": 0.05151674896478653, "g_idt": 0.0, "g_cyc": 0.01034777332097292, "g_tv": 7182.3447265625,
         "g_cond_changed": 0.09580587595701218, "g_total": 21.72899627685547, "g_pair": 0.08863575011491776,
         "g_flow": 1.5110293626785278, "g_warp_au": 0.7533012628555298},
        {"d_real": -7.083889158820966e-06, "d_fake": 7.88825946074212e-06, "d_cond": 0.030527865514159203,
         "d_gp": 0.9999160766601562, "d_total": 14.578341484069824, "g_adv": -5.0333251238043886e-06,
         "g_cond": 0.042745191603899, "g_idt": 0.0, "g_cyc": 0.039462167769670486, "g_tv": 8193.4423828125,
         "g_cond_changed": 0.06642165780067444, "g_total": 28.07387924194336, "g_pair": 0.1389666646718979,
         "g_flow": 2.648458480834961, "g_warp_au": 1.225041389465332},
    ],
}


@pytest.fixture(scope="module")
def data(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny real-face set with its crops' dlib landmarks (the flow and warp-AU terms need them)."""
    root = build_tiny_dataset(samples, tmp_path_factory.mktemp("same-losses") / "data")
    write_landmark_journal(root)
    return root


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fixed_seed_run_logs_the_recorded_losses(name: str, data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    history = train(data, tmp_path / name, TrainConfig(**CONFIGS[name]), show_progress=False, export=False).history
    logged = [{k: v for k, v in line.items() if k not in ("step", "epoch", "lr_g", "lr_d")} for line in history]
    assert [set(line) for line in logged] == [set(line) for line in RECORDED[name]]
    for line, expected in zip(logged, RECORDED[name], strict=True):
        assert line == pytest.approx(expected, rel=1e-3, abs=1e-7)
