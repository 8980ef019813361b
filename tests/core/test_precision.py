"""Precision in the inference plan: the decision (capabilities faked) and the bf16 check on the model.

Where the CPU has no native bf16, autocast is emulated (slow but correct), so the models here
are tiny (32 px, a few channels) and the check stays fast on any machine. Speed is never asserted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import fgfem.perf as perf
from fgfem.aus import NUM_AUS
from fgfem.devices import DeviceChoice, cpu_has_bf16, describe_cpu, resolve_device
from fgfem.errors import FgfemError
from fgfem.nets import Generator, NetConfig
from fgfem.perf import (
    BF16_MIN_PSNR,
    Capabilities,
    FastGenerator,
    PrecisionCheck,
    check_bf16,
    check_precision_name,
    choose_plan,
    precision_cache_key,
    probe_inputs,
    psnr_db,
    select_plan,
    settle_precision,
)

CPU = torch.device("cpu")
NATIVE = Capabilities(native_bf16=True, compiler=False)
EMULATED = Capabilities(native_bf16=False, compiler=False)


def tiny_generator(seed: int = 0, residual: bool = False) -> Generator:
    """A 32 px generator with non-trivial norm affines (as after training), cheap even in emulated bf16."""
    torch.manual_seed(seed)
    cfg = NetConfig(name="tiny-precision", conv_dim=4, critic_dim=4, image_size=32, critic_layers=4,
                    residual_output=residual)
    generator = Generator(cfg).eval()
    for module in generator.modules():
        if isinstance(module, torch.nn.InstanceNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    return generator


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own precision cache: nothing is read from or left in the user's."""
    folder = tmp_path / "precision-cache"
    monkeypatch.setenv("FGFEM_PRECISION_CACHE", str(folder))
    return folder


def fake_capabilities(monkeypatch: pytest.MonkeyPatch, caps: Capabilities) -> None:
    monkeypatch.setattr(perf, "probe_capabilities", lambda device: caps)


# ---------------------------------------------------------------------------------------------- the decision


def test_auto_on_a_native_bf16_cpu_is_bf16_pending_the_check() -> None:
    plan = select_plan(CPU, NATIVE)
    assert plan.autocast == torch.bfloat16 and plan.check_precision and plan.precision == "bf16"
    assert not plan.channels_last and not plan.cuda_graphs
    which = plan.reason.split("; ")[0]
    assert "AVX512-BF16/AMX" in which and f"{BF16_MIN_PSNR:g} dB" in which and "else fp32" in which


def test_auto_without_native_bf16_is_fp32_and_says_why() -> None:
    plan = select_plan(CPU, EMULATED)
    assert plan.autocast is None and not plan.check_precision and plan.precision == "fp32"
    assert plan.reason.startswith("fp32 (no native bf16 here")


def test_asked_for_precisions_are_honoured_unchecked() -> None:
    forced = select_plan(CPU, EMULATED, bf16=True)
    assert forced.autocast == torch.bfloat16 and not forced.check_precision
    assert forced.reason.startswith("bf16 autocast (asked for, slower without native bf16)")
    native_fp32 = select_plan(CPU, NATIVE, bf16=False)
    assert native_fp32.autocast is None and native_fp32.reason.startswith("fp32 (asked for)")
    assert select_plan(CPU, NATIVE, bf16=True).reason.startswith("bf16 autocast (asked for)")


def test_cuda_auto_checks_bf16_too_and_mps_stays_fp32() -> None:
    cuda = select_plan(torch.device("cuda", 0), NATIVE)
    assert cuda.autocast == torch.bfloat16 and cuda.check_precision and cuda.reason.startswith("bf16 autocast")
    older = select_plan(torch.device("cuda", 0), EMULATED)
    assert older.autocast is None and not older.check_precision
    mps = select_plan(torch.device("mps"), NATIVE)
    assert mps.autocast is None and not mps.check_precision and mps.reason.startswith("fp32")


def test_every_reason_starts_with_its_precision() -> None:
    """``fgfem info`` splits the reason at the first "; ": that part must be the precision alone."""
    for device in (CPU, torch.device("cuda", 0), torch.device("mps")):
        for caps in (NATIVE, EMULATED):
            for bf16 in (None, True, False):
                which = select_plan(device, caps, bf16=bf16).reason.split("; ")[0]
                assert which.startswith(("bf16 autocast", "fp32")), which


def test_choose_plan_reads_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_capabilities(monkeypatch, NATIVE)
    cpu = resolve_device("cpu")
    assert choose_plan(cpu).check_precision
    assert choose_plan(cpu, precision="fp32").autocast is None
    bf16 = choose_plan(cpu, precision="BF16")
    assert bf16.autocast == torch.bfloat16 and not bf16.check_precision
    assert choose_plan(cpu, bf16=False).autocast is None  # the older spelling still works
    # A CPU choice that carries bf16 autocast asked for it; --precision fp32 still wins.
    asked = DeviceChoice(CPU, torch.bfloat16)
    assert not choose_plan(asked).check_precision and choose_plan(asked).autocast == torch.bfloat16
    assert choose_plan(asked, precision="fp32").autocast is None
    fake_capabilities(monkeypatch, EMULATED)
    assert choose_plan(cpu).autocast is None


def test_unknown_precision_is_a_one_line_error() -> None:
    assert check_precision_name(" Auto ") == "auto"
    with pytest.raises(FgfemError, match="--precision 'fp16': choose auto .* fp32 or bf16"):
        check_precision_name("fp16")
    with pytest.raises(FgfemError, match="--precision"):
        choose_plan(resolve_device("cpu"), precision="half")


def test_cpu_flags_are_read_and_described() -> None:
    assert cpu_has_bf16({"avx2", "avx512_bf16"}) and cpu_has_bf16({"amx_bf16"}) and not cpu_has_bf16({"avx2"})
    line = describe_cpu()
    assert "cores" in line and "flags:" in line and "\n" not in line


# ---------------------------------------------------------------------------------------------- the check


def test_probe_is_fixed_and_leaves_the_global_seed_alone() -> None:
    torch.manual_seed(7)
    state = torch.get_rng_state()
    first, second = probe_inputs(32, NUM_AUS), probe_inputs(32, NUM_AUS)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert torch.equal(torch.get_rng_state(), state)
    x, rel = first
    assert x.shape == (perf.PROBE_FACES, 3, 32, 32) and x.abs().max() <= 1 and rel.shape == (perf.PROBE_FACES, 17)
    assert rel.abs().max() > 0  # a zero edit would tell nothing for a residual generator


def test_psnr_handles_equal_and_non_finite_outputs() -> None:
    a = torch.zeros(1, 3, 4, 4)
    assert psnr_db(a, a) == math.inf
    assert psnr_db(a + 0.02, a) == pytest.approx(10 * math.log10(4 / 0.0004))
    assert psnr_db(a + float("nan"), a) == -math.inf
    assert not PrecisionCheck(psnr=float("nan")).passed and not PrecisionCheck(psnr=-math.inf).passed


@pytest.mark.parametrize("residual", [False, True])
def test_check_measures_bf16_against_fp32_and_caches_it(private_cache: Path, residual: bool) -> None:
    generator = tiny_generator(residual=residual)
    first = check_bf16(generator, CPU)
    assert not first.cached and math.isfinite(first.psnr) and first.passed  # bf16 rounding, not garbage
    assert first.psnr < 200  # it really ran in bf16 (emulated where not native)
    files = list(private_cache.glob("*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["psnr_db"] == first.psnr and record["torch"] == torch.__version__
    again = check_bf16(generator, CPU)
    assert again.cached and again.psnr == first.psnr
    assert "cached check" in again.describe() and "checked now" in first.describe()


def test_cache_key_follows_the_weights_not_the_object() -> None:
    a, same = tiny_generator(seed=0), tiny_generator(seed=0)
    assert precision_cache_key(a, CPU) == precision_cache_key(same, CPU)
    with torch.no_grad():
        next(same.parameters()).view(-1)[0] += 1e-3
    assert precision_cache_key(a, CPU) != precision_cache_key(same, CPU)


def test_damaged_or_disabled_cache_measures_again(private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generator = tiny_generator()
    key = precision_cache_key(generator, CPU)
    private_cache.mkdir(parents=True)
    (private_cache / f"{key}.json").write_text("{not json")
    assert not check_bf16(generator, CPU).cached
    assert check_bf16(generator, CPU).cached  # the damaged file was replaced
    monkeypatch.setenv("FGFEM_PRECISION_CACHE", "off")
    assert not check_bf16(generator, CPU).cached
    assert not check_bf16(generator, CPU, cache_dir=None).cached


def test_settle_keeps_bf16_only_when_the_check_passes() -> None:
    plan = select_plan(CPU, NATIVE)
    kept = settle_precision(plan, PrecisionCheck(psnr=52.0))
    assert kept.autocast == torch.bfloat16 and not kept.check_precision
    assert kept.reason.startswith("bf16 autocast: native, and this model keeps 52.0 dB >= 40 dB")
    dropped = settle_precision(plan, PrecisionCheck(psnr=31.5, cached=True))
    assert dropped.autocast is None and dropped.precision == "fp32"
    assert dropped.reason.startswith("fp32: under bf16 this model keeps only 31.5 dB < 40 dB")
    assert kept.reason.split("; ")[1:] == plan.reason.split("; ")[1:] == dropped.reason.split("; ")[1:]


def test_fast_generator_settles_an_automatic_bf16_plan_on_the_model() -> None:
    generator = tiny_generator(residual=True)
    fast = FastGenerator(generator, select_plan(CPU, NATIVE))
    assert fast.precision_check is not None and fast.precision_check.passed
    assert fast.plan.autocast == torch.bfloat16 and not fast.plan.check_precision
    x, rel = probe_inputs(32, NUM_AUS)
    with torch.no_grad():
        expected = generator(x, rel)
    y = fast(x, rel)
    assert y.dtype == torch.float32 and psnr_db(y, expected) >= BF16_MIN_PSNR


def test_a_model_that_fails_the_check_runs_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perf, "BF16_MIN_PSNR", 1000.0)  # no model passes: the fallback must be exact fp32
    generator = tiny_generator()
    fast = FastGenerator(generator, select_plan(CPU, NATIVE))
    assert fast.precision_check is not None and not fast.precision_check.passed
    assert fast.plan.autocast is None and fast.plan.reason.startswith("fp32: under bf16")
    x, rel = probe_inputs(32, NUM_AUS)
    with torch.no_grad():
        expected = generator(x, rel)
    assert (fast(x, rel) - expected).abs().max().item() < 1e-5


def test_asked_for_plans_run_no_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perf, "check_bf16", lambda *a, **k: pytest.fail("an asked-for precision is not checked"))
    generator = tiny_generator()
    assert FastGenerator(generator, select_plan(CPU, NATIVE, bf16=True)).precision_check is None
    assert FastGenerator(generator, select_plan(CPU, EMULATED)).precision_check is None


# ---------------------------------------------------------------------------------------------- editor and CLI


def test_editor_takes_the_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    from fgfem.editor import Editor

    fake_capabilities(monkeypatch, NATIVE)
    generator = tiny_generator(residual=True)
    fp32 = Editor(generator, image_size=32, device="cpu", backend="dlib", precision="fp32")
    assert fp32._fast.plan.precision == "fp32" and fp32._fast.precision_check is None
    auto = Editor(generator, image_size=32, device="cpu", backend="dlib")
    assert auto._fast.plan.precision == "bf16" and auto._fast.precision_check is not None
    with pytest.raises(FgfemError, match="--precision"):
        Editor(generator, image_size=32, device="cpu", backend="dlib", precision="int8")


def test_load_editor_passes_precision_to_the_shipped_model() -> None:
    from fgfem.cli.options import load_editor
    from fgfem.paths import find_default_weights

    if find_default_weights() is None:
        pytest.skip("no default weights in this checkout")
    editor = load_editor(None, "cpu", "dlib", "fp32")
    assert editor._fast.plan.precision == "fp32" and editor._fast.plan.reason.startswith("fp32 (asked for)")


def test_edit_with_an_unknown_precision_fails_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fgfem.cli import run

    photo = Path(__file__).resolve().parents[2] / "examples" / "astronaut.png"
    if not photo.is_file():
        pytest.skip("examples/astronaut.png is not in this checkout")
    out = tmp_path / "out.png"
    assert run(["edit", str(photo), "--au", "12=+1", "--precision", "fp16", "-o", str(out)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "'--precision': 'fp16'" in err[0] and not out.exists()


def test_info_says_which_precision_and_why(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from fgfem.cli import run
    from fgfem.paths import find_default_weights

    monkeypatch.setenv("COLUMNS", "400")  # one table row per line

    assert run(["info", "--device", "cpu", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "fp32 (asked for)" in out and "flags:" in out
    fake_capabilities(monkeypatch, EMULATED)
    assert run(["info", "--device", "cpu"]) == 0
    assert "no native bf16 here" in capsys.readouterr().out
    # Native bf16: the default model's check decides (stubbed: the real one is tested above).
    fake_capabilities(monkeypatch, NATIVE)
    monkeypatch.setattr(perf, "check_bf16", lambda *a, **k: PrecisionCheck(psnr=33.0, cached=True))
    assert run(["info", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    if find_default_weights() is not None:
        assert "fp32: under bf16 this model keeps only 33.0 dB < 40 dB" in out
    assert run(["info", "--precision", "fp16"]) == 1


# ---------------------------------------------------------------------------------------------- training


def test_training_autocast_follows_native_bf16_unless_asked() -> None:
    from fgfem.train.config import TrainConfig
    from fgfem.train.loop import training_device

    auto = TrainConfig(preset="lite", device="cpu")
    assert training_device(auto, native_cpu_bf16=True).autocast_dtype == torch.bfloat16
    assert training_device(auto, native_cpu_bf16=False).autocast_dtype is None
    off = TrainConfig(preset="lite", device="cpu", bf16=False)
    assert training_device(off, native_cpu_bf16=True).autocast_dtype is None
    on = TrainConfig(preset="lite", device="cpu", bf16=True)
    assert training_device(on, native_cpu_bf16=False).autocast_dtype == torch.bfloat16


def _train_steps(bf16: bool, steps: int = 2) -> list[dict[str, float]]:
    """``steps`` training steps of tiny lite networks on a fixed batch (G on step 0)."""
    from fgfem.train import distributed
    from fgfem.train.config import TrainConfig
    from fgfem.train.loop import build_nets, train_step
    from fgfem.train.losses import CriticLoss, GeneratorLoss

    cfg = TrainConfig(preset="lite", image_size=64, batch=2, conv_dim=4, critic_dim=4, device="cpu", bf16=bf16,
                      channels_last=False)
    choice = DeviceChoice(CPU, torch.bfloat16 if bf16 else None)
    torch.manual_seed(0)
    nets = build_nets(cfg.net_config(), cfg, CPU, distributed.DistInfo())
    critic_loss = CriticLoss(lambda_cond=cfg.lambda_d_cond, regularizer=cfg.regularizer, lambda_gp=cfg.lambda_gp,
                             r1_gamma=cfg.r1_gamma, r1_every=cfg.r1_every)
    generator_loss = GeneratorLoss(lambda_cond=cfg.lambda_g_cond, lambda_idt=cfg.lambda_idt,
                                   lambda_cyc=cfg.lambda_cyc, lambda_tv=cfg.lambda_tv)
    data = torch.Generator().manual_seed(1)
    aus = torch.rand(2, NUM_AUS, generator=data) * 0.4
    batch = {"x": torch.rand(2, 3, 64, 64, generator=data) * 2 - 1, "a_x": aus, "a_t": aus.roll(1, 0),
             "rel": aus.roll(1, 0) - aus}
    return [train_step(nets, batch, step, cfg, critic_loss, generator_loss, CPU, choice.autocast)
            for step in range(steps)]


def test_bf16_training_steps_have_finite_losses_close_to_fp32() -> None:
    """What the default bf16 training on native CPUs relies on (emulated where not native: tiny nets)."""
    fp32, bf16 = _train_steps(False), _train_steps(True)
    assert set(bf16[0]) == set(fp32[0]) and "g_total" in bf16[0]  # step 0 trains G too
    for terms in bf16:
        assert all(math.isfinite(value) for value in terms.values())
    for key, value in fp32[0].items():  # the first step: same weights, same batch, only the rounding differs
        assert bf16[0][key] == pytest.approx(value, rel=0.1, abs=0.05), key
