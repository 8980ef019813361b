"""The fast inference path: same outputs as the plain model, the right plan per device, clean fallbacks."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fgfem.aus import AU_SCALE, NUM_AUS
from fgfem.devices import DeviceChoice, resolve_device
from fgfem.errors import FgfemError
from fgfem.nets import Generator, get_preset
from fgfem.perf import (
    Capabilities,
    FastGenerator,
    choose_plan,
    describe_fast_path,
    select_plan,
)

CPU = torch.device("cpu")


def _vipermu_batch(samples: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real aligned 128 px faces and relative AUs between consecutive frames (from their labels)."""
    folder = samples / "vipermu"
    labels: dict[str, np.ndarray] = {}
    for line in (folder / "attributes.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 1 + NUM_AUS:
            labels[parts[0]] = np.array([float(v) for v in parts[1:]], dtype=np.float32)
    names = [n for n in sorted(labels) if next(folder.rglob(n), None) is not None][: count + 1]
    if len(names) < count + 1:
        pytest.skip("too few labelled vipermu frames")
    images = [np.asarray(Image.open(next(folder.rglob(n))).convert("RGB").resize((128, 128)), dtype=np.float32)
              for n in names[:count]]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 127.5 - 1
    rel = np.stack([labels[b] - labels[a] for a, b in zip(names[:-1], names[1:], strict=True)]) / AU_SCALE
    return x.contiguous(), torch.from_numpy(rel)


@pytest.fixture(scope="module")
def lite() -> Generator:
    torch.manual_seed(0)
    generator = Generator(get_preset("lite")).eval()
    for module in generator.modules():  # non-trivial affines, as after training
        if isinstance(module, torch.nn.InstanceNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    return generator


def test_fast_generator_matches_eager_fp32(lite: Generator, samples: Path) -> None:
    x, rel = _vipermu_batch(samples, 2)
    with torch.no_grad():
        expected = lite(x, rel)
    before = {k: v.clone() for k, v in lite.state_dict().items()}
    fast = FastGenerator(lite, choose_plan(resolve_device("cpu"), compile=False, bf16=False))
    y = fast(x.double(), rel)  # any float dtype in, fp32 out
    assert y.dtype == torch.float32 and y.shape == x.shape and y.device == CPU
    assert (y - expected).abs().max().item() < 1e-4
    assert y.abs().max().item() <= 1.0
    y += 1  # an ordinary tensor, not an inference tensor: in-place use downstream works
    # A single face and a batch agree too (the batch is not padded or mixed on CPU).
    assert (fast(x[1:2], rel[1:2]) - expected[1:2]).abs().max().item() < 1e-4
    for key, value in lite.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} was modified"


def test_fast_generator_rejects_bad_shapes(lite: Generator) -> None:
    fast = FastGenerator(lite, choose_plan(resolve_device("cpu"), compile=False))
    with pytest.raises(FgfemError, match="relative AUs"):
        fast(torch.zeros(2, 3, 64, 64), torch.zeros(1, NUM_AUS))


def test_plan_cuda_with_native_bf16() -> None:
    plan = select_plan(torch.device("cuda", 0), Capabilities(native_bf16=True, compiler=True))
    assert plan.channels_last and plan.cudnn_benchmark
    assert plan.autocast == torch.bfloat16
    assert not plan.compile and plan.cuda_graphs  # graphs measured 1.6-3.6x faster at batch 8 on an H200
    assert "CUDA graphs" in plan.reason and "CPU layer rewrites" not in plan.reason
    compiled = select_plan(torch.device("cuda"), Capabilities(native_bf16=True, compiler=True), compile=True)
    assert compiled.compile and not compiled.cuda_graphs  # not both unless asked for
    assert not select_plan(torch.device("cuda"), Capabilities(native_bf16=True, compiler=True),
                           cuda_graphs=False).cuda_graphs
    older = select_plan(torch.device("cuda"), Capabilities(native_bf16=False, compiler=False),
                        compile=True, cuda_graphs=True)
    assert older.autocast is None and not older.compile and older.cuda_graphs
    assert "triton is missing" in older.reason


def test_plan_cpu_avx2_and_native_bf16_cpu() -> None:
    plain = select_plan(CPU, Capabilities(native_bf16=False, compiler=True))
    assert (plain.channels_last, plain.autocast, plain.compile, plain.cuda_graphs) == (False, None, False, False)
    assert "CPU layer rewrites" in plain.reason  # what `fgfem info` says the CPU runs (fgfem.nets.use_cpu_rewrites)
    # Native bf16 on the CPU: bf16, pending the model's PSNR check (tests/core/test_precision.py).
    native = select_plan(CPU, Capabilities(native_bf16=True, compiler=True))
    assert native.autocast == torch.bfloat16 and native.check_precision
    forced = select_plan(CPU, Capabilities(native_bf16=False, compiler=True), bf16=True, compile=True)
    assert forced.autocast == torch.bfloat16 and forced.compile and "slower" in forced.reason
    assert not select_plan(CPU, Capabilities(native_bf16=False, compiler=False), compile=True).compile


def test_plan_mps_is_plain_fp32() -> None:
    plan = select_plan(torch.device("mps"), Capabilities(native_bf16=True, compiler=True), bf16=True, compile=True)
    assert (plan.channels_last, plan.autocast, plan.compile, plan.cuda_graphs) == (False, None, False, False)


def test_choose_plan_reads_env_and_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FGFEM_COMPILE", "1")
    cpu = resolve_device("cpu")
    assert choose_plan(cpu).compile == choose_plan(cpu, compile=True).compile
    assert not choose_plan(cpu, compile=False).compile
    monkeypatch.delenv("FGFEM_COMPILE")
    assert not choose_plan(cpu).compile
    assert choose_plan(DeviceChoice(CPU, torch.bfloat16)).autocast == torch.bfloat16
    line = describe_fast_path(cpu)
    assert "\n" not in line and "fp32" in line and "compile off" in line


def test_choose_plan_cuda_graphs_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """FGFEM_CUDA_GRAPHS=0 turns the default graphs off on CUDA; nothing turns them on elsewhere."""
    import fgfem.perf as perf

    monkeypatch.setattr(perf, "probe_capabilities", lambda device: Capabilities(native_bf16=True, compiler=True))
    cuda = DeviceChoice(torch.device("cuda", 0), torch.bfloat16)
    assert choose_plan(cuda).cuda_graphs
    monkeypatch.setenv("FGFEM_CUDA_GRAPHS", "0")
    assert not choose_plan(cuda).cuda_graphs
    monkeypatch.setenv("FGFEM_CUDA_GRAPHS", "1")
    assert choose_plan(cuda).cuda_graphs
    assert not choose_plan(resolve_device("cpu")).cuda_graphs


def test_compile_failure_falls_back_to_eager_once(lite: Generator) -> None:
    calls = []

    def broken_compile(module: torch.nn.Module):
        def run(*args: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            raise RuntimeError("inductor: no working C++ compiler\nlong log")

        return run

    plan = select_plan(CPU, Capabilities(native_bf16=False, compiler=True), compile=True)
    fast = FastGenerator(lite, plan, compile_fn=broken_compile)
    assert fast.compiled
    x, rel = torch.rand(1, 3, 64, 64) * 2 - 1, torch.zeros(1, NUM_AUS)
    with torch.no_grad():
        expected = lite(x, rel)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = fast(x, rel), fast(x, rel)
    assert [str(w.message) for w in caught] == [
        "torch.compile failed (RuntimeError: inductor: no working C++ compiler); running the generator eagerly"]
    assert len(calls) == 1 and not fast.compiled
    assert (first - expected).abs().max().item() < 1e-4 and torch.equal(first, second)


def test_compile_that_raises_at_wrap_time_also_falls_back(lite: Generator) -> None:
    def refuse(module: torch.nn.Module):
        raise RuntimeError("torch.compile is not supported on this Python")

    plan = select_plan(CPU, Capabilities(native_bf16=False, compiler=True), compile=True)
    with pytest.warns(RuntimeWarning, match="not supported"):
        fast = FastGenerator(lite, plan, compile_fn=refuse)
    assert not fast.compiled
    assert fast(torch.zeros(1, 3, 32, 32), torch.zeros(1, NUM_AUS)).shape == (1, 3, 32, 32)
