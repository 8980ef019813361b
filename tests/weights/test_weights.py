"""Weights files: bit-exact round trip, fp16 storage, every wrong file a user can pass, and the
converter for the reference implementation's checkpoints.

The reference layout below is written from the reference code (junleen/Expression-manipulator,
``src/networks/generator.py``), independently of ``fgfem.weights.REFERENCE_KEY_MAP``, together with
a functional re-statement of its forward pass: a converted checkpoint must give exactly what the
reference network computes with the same tensors.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fgfem.aus import AU_CODES, NUM_AUS
from fgfem.cli import run
from fgfem.errors import FgfemError
from fgfem.nets import PRESETS, Generator, NetConfig, use_cpu_rewrites
from fgfem.weights import (
    REFERENCE_KEY_MAP,
    convert_reference_checkpoint,
    describe_weights,
    expected_shapes,
    load_generator,
    read_weights_info,
    save_generator,
)

# The reference layout has no residual output, so the conversion tests use the lite widths with
# the paper's tanh output (what convert_reference_checkpoint produces).
LITE = dataclasses.replace(PRESETS["lite"], residual_output=False, au_film=False, au_warp=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lite_generator() -> Generator:
    torch.manual_seed(0)
    generator = Generator(LITE).eval()
    # Non-trivial norm parameters, so that a swapped weight/bias would show.
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if ".norm." in name:
                param.add_(0.1 * torch.randn_like(param))
    return generator


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    rng = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, generator=rng) * 2 - 1  # the generator needs only multiples of 16
    rel = (torch.rand(2, NUM_AUS, generator=rng) - 0.5) * 0.6
    return x, rel


@pytest.fixture(scope="module")
def lite_file(tmp_path_factory, lite_generator) -> Path:
    path = tmp_path_factory.mktemp("weights") / "lite.safetensors"
    save_generator(path, lite_generator, LITE, training={"epochs": 3, "faces": 1200, "data": "utkface"})
    return path


def outputs(generator: torch.nn.Module, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return generator(*inputs)


# ------------------------------------------------------------------------------- round trips


def test_round_trip_is_bit_exact(lite_file, lite_generator, inputs):
    loaded, info = load_generator(lite_file)
    assert torch.equal(outputs(loaded, inputs), outputs(lite_generator, inputs))
    for key, value in lite_generator.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert all(p.requires_grad for p in loaded.parameters())  # usable to resume training
    assert not loaded.training
    assert info.cfg == LITE and info.aus == AU_CODES and info.dtype == "float32"
    assert info.crop_template == "fgfem-crop-v1"
    assert info.training == {"epochs": 3, "faces": 1200, "data": "utkface"}
    assert info.num_params == sum(p.numel() for p in lite_generator.parameters())


def test_metadata_is_json_strings(lite_file):
    from safetensors import safe_open

    with safe_open(str(lite_file), framework="pt") as handle:
        metadata = handle.metadata()
    decoded = {key: json.loads(value) for key, value in metadata.items()}
    assert decoded["fgfem_format"] == "fgfem-generator-v1"
    assert decoded["config"]["conv_dim"] == LITE.conv_dim
    assert decoded["aus"] == list(AU_CODES)
    assert decoded["image_size"] == 128


@pytest.mark.parametrize(("dtype", "name", "tolerance"), [(torch.float16, "float16", 0.01),
                                                          (torch.bfloat16, "bfloat16", 0.08)])
def test_half_precision_storage_is_smaller_and_close(tmp_path, lite_generator, lite_file, inputs, dtype, name,
                                                     tolerance):
    path = tmp_path / f"{name}.safetensors"
    save_generator(path, lite_generator, LITE, dtype=dtype, crop_template="my-crop-v2")
    assert path.stat().st_size < 0.55 * lite_file.stat().st_size
    loaded, info = load_generator(path)
    assert info.dtype == name and info.crop_template == "my-crop-v2"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    difference = (outputs(loaded, inputs) - outputs(lite_generator, inputs)).abs().max().item()
    assert 0 < difference < tolerance


def test_describe_is_one_line(lite_file):
    text = describe_weights(lite_file)
    assert "\n" not in text
    assert "preset lite" in text and "128 px" in text and "float32" in text and "epochs=3" in text


def test_save_rejects_a_generator_of_another_preset(tmp_path, lite_generator):
    with pytest.raises(FgfemError, match="does not fit the 'paper' generator.*look like preset 'lite'"):
        save_generator(tmp_path / "x.safetensors", lite_generator, PRESETS["paper"])
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


# ------------------------------------------------------------------------------- wrong files


def test_missing_file(tmp_path):
    with pytest.raises(FgfemError, match="not found"):
        load_generator(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file(tmp_path, lite_file, keep):
    data = lite_file.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(FgfemError, match="truncated"):
        load_generator(cut)


def test_garbage_file(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"this is not a weights file at all" * 10)
    with pytest.raises(FgfemError, match="not a safetensors file"):
        read_weights_info(path)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    with pytest.raises(FgfemError, match="not a safetensors file"):
        read_weights_info(tiny)


def test_corrupt_header(tmp_path, lite_file):
    data = bytearray(lite_file.read_bytes())
    data[10:20] = b"@@@@@@@@@@"  # inside the JSON header
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(FgfemError, match="not a valid safetensors file"):
        load_generator(path)


def test_pickle_in_disguise_is_never_unpickled(tmp_path, lite_generator):
    path = tmp_path / "renamed.safetensors"
    torch.save(lite_generator.state_dict(), path)
    with pytest.raises(FgfemError, match="pickle checkpoint.*fgfem weights convert"):
        load_generator(path)


def test_file_without_fgfem_metadata(tmp_path, lite_generator):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in lite_generator.state_dict().items()}, str(path))
    with pytest.raises(FgfemError, match="no fgfem metadata"):
        load_generator(path)


def rewrite_metadata(source: Path, target: Path, **changes: object) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    for key, value in changes.items():
        if value is None:
            metadata.pop(key)
        else:
            metadata[key] = json.dumps(value)
    save_file(tensors, str(target), metadata=metadata)
    return target


def test_wrong_au_list(tmp_path, lite_file):
    swapped = list(AU_CODES)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    path = rewrite_metadata(lite_file, tmp_path / "swapped.safetensors", aus=swapped)
    with pytest.raises(FgfemError, match="trained on AUs.*different order"):
        load_generator(path)
    path = rewrite_metadata(lite_file, tmp_path / "fewer.safetensors", aus=list(AU_CODES[:13]))
    with pytest.raises(FgfemError, match=r"missing \['AU23'"):
        read_weights_info(path)


def test_missing_metadata_entry(tmp_path, lite_file):
    path = rewrite_metadata(lite_file, tmp_path / "nocrop.safetensors", crop_template=None)
    with pytest.raises(FgfemError, match="lacks the metadata crop_template"):
        load_generator(path)


def test_weights_of_another_preset(tmp_path, lite_file):
    """Lite tensors in a file that claims to be 'paper': the error names what the file declares."""
    path = rewrite_metadata(lite_file, tmp_path / "liar.safetensors", config=PRESETS["paper"].to_dict())
    with pytest.raises(FgfemError, match="declares preset 'paper'.*look like preset 'lite'"):
        load_generator(path)


def test_asking_for_another_preset(lite_file):
    with pytest.raises(FgfemError, match="holds 'lite' weights.*'paper' was asked for"):
        load_generator(lite_file, preset="paper")


# ------------------------------------------------------------------------------- reference checkpoints


def reference_layout(ngf: int, c_dim: int) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Reference UNet_MSF_Generator tensors: name -> (shape, is a transposed conv), from its source."""
    bottleneck = min(512, ngf * 16)
    layout: dict[str, tuple[tuple[int, ...], bool]] = {}

    def conv(name: str, c_in: int, c_out: int, k: int, transpose: bool = False, norm: bool = True) -> None:
        shape = (c_in, c_out, k, k) if transpose else (c_out, c_in, k, k)
        layout[f"{name}.0.weight"] = (shape, transpose)
        if norm:
            layout[f"{name}.1.weight"] = ((c_out,), False)
            layout[f"{name}.1.bias"] = ((c_out,), False)

    conv("conv0", 3, ngf, 7)
    conv("downconv1", ngf, ngf * 2, 4)
    conv("downconv2", ngf * 2, ngf * 4, 4)
    conv("downconv3", ngf * 4, ngf * 8, 4)
    conv("downconv4", ngf * 8, bottleneck, 4)
    conv("resblock.0", bottleneck + c_dim, bottleneck, 3)
    for unit, (c_in, dconv, c_out) in {"skipu1": (ngf * 2, ngf * 4, ngf * 2), "skipu2": (ngf * 4, ngf * 8, ngf * 4),
                                       "skipu3": (ngf * 8, bottleneck, ngf * 8)}.items():
        conv(f"{unit}.in_conv", c_in + c_dim, c_in, 5)
        conv(f"{unit}.block1.hr_to_hr", c_in, c_in // 2, 3)
        conv(f"{unit}.block1.hr_to_lr", c_in, dconv // 2, 4)
        conv(f"{unit}.block1.lr_to_hr", dconv, c_in - c_in // 2, 4, transpose=True)
        conv(f"{unit}.block1.lr_to_lr", dconv, dconv - dconv // 2, 3)
        lift = min(dconv, c_out)
        conv(f"{unit}.transpose_conv", dconv, lift, 4, transpose=True)
        conv(f"{unit}.out_conv1", lift + c_in, c_out // 2, 3)
        conv(f"{unit}.out_conv2", lift + c_in, c_out - c_out // 2, 5)
    conv("upconv4", bottleneck, ngf * 8, 4, transpose=True)
    conv("upconv3", ngf * 16, ngf * 4, 4, transpose=True)
    conv("upconv2", ngf * 8, ngf * 2, 4, transpose=True)
    conv("upconv1", ngf * 4, ngf, 4, transpose=True)
    conv("out_conv", ngf, 3, 7, norm=False)
    return layout


def random_reference_state(ngf: int, c_dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = torch.Generator().manual_seed(seed)
    state = {}
    for name, (shape, _) in reference_layout(ngf, c_dim).items():
        if name.endswith(".1.weight"):
            state[name] = 1 + 0.1 * torch.randn(shape, generator=rng)
        elif name.endswith(".1.bias"):
            state[name] = 0.1 * torch.randn(shape, generator=rng)
        else:
            state[name] = 0.02 * torch.randn(shape, generator=rng)
    return state


def reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The reference generator's forward pass, restated with torch.nn.functional on its own key names."""

    def block(name: str, h: torch.Tensor, act: str, stride: int = 1, transpose: bool = False) -> torch.Tensor:
        w = sd[f"{name}.0.weight"]
        if transpose:
            h = F.conv_transpose2d(h, w, stride=2, padding=1)
        else:
            h = F.conv2d(h, w, stride=stride, padding={7: 3, 5: 2, 4: 1, 3: 1}[w.shape[-1]])
        h = F.instance_norm(h, weight=sd[f"{name}.1.weight"], bias=sd[f"{name}.1.bias"])
        return F.relu(h) if act == "relu" else F.leaky_relu(h, 0.01)

    def with_c(h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h, c[:, :, None, None].expand(-1, -1, *h.shape[2:])], dim=1)

    def msf(unit: str, hr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        hr = block(f"{unit}.in_conv", with_c(hr), "relu")
        new_hr = torch.cat([block(f"{unit}.block1.hr_to_hr", hr, "relu"),
                            block(f"{unit}.block1.lr_to_hr", lr, "lrelu", transpose=True)], dim=1)
        new_lr = torch.cat([block(f"{unit}.block1.hr_to_lr", hr, "lrelu", stride=2),
                            block(f"{unit}.block1.lr_to_lr", lr, "relu")], dim=1)
        out = torch.cat([new_hr, block(f"{unit}.transpose_conv", new_lr, "lrelu", transpose=True)], dim=1)
        return torch.cat([block(f"{unit}.out_conv1", out, "relu"), block(f"{unit}.out_conv2", out, "relu")], dim=1)

    d1 = block("downconv1", block("conv0", x, "lrelu"), "lrelu", stride=2)
    d2 = block("downconv2", d1, "lrelu", stride=2)
    d3 = block("downconv3", d2, "lrelu", stride=2)
    d4 = block("downconv4", d3, "lrelu", stride=2)
    bottom = block("resblock.0", with_c(d4), "relu")
    s3 = msf("skipu3", d3, bottom)
    s2 = msf("skipu2", d2, s3)
    s1 = msf("skipu1", d1, s2)
    out = block("upconv4", bottom, "relu", transpose=True)
    out = block("upconv3", torch.cat([out, s3], 1), "relu", transpose=True)
    out = block("upconv2", torch.cat([out, s2], 1), "relu", transpose=True)
    out = block("upconv1", torch.cat([out, s1], 1), "relu", transpose=True)
    return torch.tanh(F.conv2d(out, sd["out_conv.0.weight"], padding=3))


@pytest.mark.parametrize("preset", ["paper", "lite"])
def test_key_map_covers_the_reference_layout_with_matching_shapes(preset):
    cfg = dataclasses.replace(PRESETS[preset], residual_output=False, au_film=False, au_warp=False)
    layout = reference_layout(cfg.conv_dim, NUM_AUS)
    ours = expected_shapes(cfg)
    assert set(layout) == set(REFERENCE_KEY_MAP)
    assert set(REFERENCE_KEY_MAP.values()) == set(ours)
    for key, (shape, _) in layout.items():
        assert ours[REFERENCE_KEY_MAP[key]] == shape, key


def test_converted_checkpoint_computes_what_the_reference_computes(tmp_path, inputs):
    state = random_reference_state(LITE.conv_dim, NUM_AUS)
    pth = tmp_path / "net_epoch_30_id_G.pth"
    torch.save(state, pth)
    out = tmp_path / "converted.safetensors"
    info = convert_reference_checkpoint(pth, out, "lite", warn=lambda message: None)
    assert info.cfg == LITE and info.training["converted_from"] == pth.name
    generator, _ = load_generator(out)
    with torch.inference_mode():
        expected = reference_forward(state, *inputs)
    # The CPU rewrites (a 4x4 bottleneck at 64 px runs as one matrix product) round differently.
    torch.testing.assert_close(outputs(generator, inputs), expected, rtol=0, atol=1e-5)
    use_cpu_rewrites(generator, False)
    torch.testing.assert_close(outputs(generator, inputs), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("data_parallel", [False, True])
def test_our_weights_survive_a_trip_through_the_reference_layout(tmp_path, lite_generator, inputs, data_parallel):
    to_reference = {ours: theirs for theirs, ours in REFERENCE_KEY_MAP.items()}
    prefix = "module." if data_parallel else ""
    state = {prefix + to_reference[key]: value for key, value in lite_generator.state_dict().items()}
    pth = tmp_path / "old.pth"
    torch.save(state, pth)
    out = tmp_path / "new.safetensors"
    messages: list[str] = []
    convert_reference_checkpoint(pth, out, "lite", warn=messages.append)
    assert len(messages) == 1 and "trust" in messages[0]
    generator, _ = load_generator(out)
    assert torch.equal(outputs(generator, inputs), outputs(lite_generator, inputs))


def test_converter_errors(tmp_path, lite_file):
    quiet = {"warn": lambda message: None}
    thirteen = tmp_path / "cond13.pth"
    torch.save(random_reference_state(LITE.conv_dim, 13), thirteen)
    with pytest.raises(FgfemError, match="trained with 13 AUs"):
        convert_reference_checkpoint(thirteen, tmp_path / "a.safetensors", "lite", **quiet)
    narrow = tmp_path / "ngf8.pth"
    torch.save(random_reference_state(8, NUM_AUS), narrow)
    with pytest.raises(FgfemError, match="conv_dim \\(ngf\\) 8, preset 'paper' has 64"):
        convert_reference_checkpoint(narrow, tmp_path / "b.safetensors", **quiet)
    wide_for_lite = tmp_path / "ngf64_header_only.pth"
    torch.save({"conv0.0.weight": torch.zeros(64, 3, 7, 7)}, wide_for_lite)
    with pytest.raises(FgfemError, match="missing"):
        convert_reference_checkpoint(wide_for_lite, tmp_path / "c.safetensors", "lite", **quiet)
    critic = tmp_path / "net_epoch_1_id_D.pth"
    torch.save({"main.0.0.weight": torch.zeros(2, 3, 5, 5), "conv1.0.weight": torch.zeros(1, 2, 3, 3)}, critic)
    with pytest.raises(FgfemError, match="reference critic"):
        convert_reference_checkpoint(critic, tmp_path / "d.safetensors", **quiet)
    with pytest.raises(FgfemError, match="not a PyTorch .pth"):
        convert_reference_checkpoint(lite_file, tmp_path / "e.safetensors", **quiet)
    with pytest.raises(FgfemError, match="not found"):
        convert_reference_checkpoint(tmp_path / "none.pth", tmp_path / "f.safetensors", **quiet)
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(thirteen.read_bytes()[:5000])
    with pytest.raises(FgfemError, match="cannot read"):
        convert_reference_checkpoint(damaged, tmp_path / "g.safetensors", **quiet)
    assert not list(tmp_path.glob("*.safetensors"))


def test_converter_refuses_objects_beyond_tensors(tmp_path):
    """weights_only=True: a checkpoint holding arbitrary Python objects is refused, not executed."""
    path = tmp_path / "evil.pth"
    torch.save({"conv0.0.weight": torch.zeros(1), "payload": Path("x")}, path)
    with pytest.raises(FgfemError, match="cannot read"):
        convert_reference_checkpoint(path, tmp_path / "out.safetensors", "lite", warn=lambda message: None)


# ------------------------------------------------------------------------------- CLI


def test_cli_convert_and_show(tmp_path, lite_generator, capsys):
    to_reference = {ours: theirs for theirs, ours in REFERENCE_KEY_MAP.items()}
    pth = tmp_path / "net_epoch_5_id_G.pth"
    torch.save({to_reference[k]: v for k, v in lite_generator.state_dict().items()}, pth)
    out = tmp_path / "lite.safetensors"
    assert run(["weights", "convert", str(pth), str(out), "--preset", "lite"]) == 0
    captured = capsys.readouterr()
    assert "trust" in captured.err and "preset lite" in captured.out
    assert run(["weights", "convert", str(pth), str(out), "--preset", "lite"]) == 1
    assert "--force" in capsys.readouterr().err
    assert run(["weights", "convert", str(pth), str(out), "--preset", "lite", "--force"]) == 0
    capsys.readouterr()
    assert run(["weights", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "lite" in shown and "AU45" in shown and "fgfem-crop-v1" in shown and pth.name in shown
    assert "new image (tanh)" in shown  # a converted reference file is the paper's form of generator


def test_cli_show_reports_a_pickle_in_one_line(tmp_path, lite_generator, capsys):
    path = tmp_path / "model.safetensors"
    torch.save({"x": torch.zeros(2)}, path)
    assert run(["weights", "show", str(path)]) == 1
    err = capsys.readouterr().err
    assert "pickle" in err and "Traceback" not in err


def test_cli_convert_bad_preset(tmp_path, capsys):
    pth = tmp_path / "x.pth"
    shutil.copyfile(__file__, pth)
    assert run(["weights", "convert", str(pth), str(tmp_path / "y.safetensors"), "--preset", "huge"]) == 1
    assert "unknown network preset" in capsys.readouterr().err


def test_size_multiple_from_get_preset_is_kept_in_files(tmp_path, lite_generator):
    cfg = LITE.with_image_size(256)
    path = tmp_path / "lite256.safetensors"
    save_generator(path, lite_generator, cfg)
    info = read_weights_info(path)
    assert info.image_size == 256 and info.cfg == cfg and isinstance(info.cfg, NetConfig)


@pytest.mark.parametrize("warp", [False, True])
def test_residual_flag_travels_with_the_weights(tmp_path, inputs, warp):
    torch.manual_seed(4)
    cfg = dataclasses.replace(PRESETS["lite"], au_warp=warp)
    generator = Generator(cfg).eval()
    torch.nn.init.normal_(generator.to_rgb.weight, 0.0, 0.02)
    if warp:
        torch.nn.init.normal_(generator.to_flow.weight, 0.0, 0.02)
    for name, param in generator.named_parameters():
        if ".film." in name:
            torch.nn.init.normal_(param, 0.0, 0.1)  # the modulation must travel too
    path = tmp_path / "residual.safetensors"
    save_generator(path, generator, cfg)
    loaded, info = load_generator(path)
    assert info.cfg.residual_output and loaded.cfg.residual_output and info.cfg.au_film
    assert info.cfg.au_warp is warp and (loaded.to_flow is not None) is warp
    torch.testing.assert_close(outputs(loaded, inputs), outputs(generator, inputs), rtol=0, atol=0)
    if warp:  # the tensors of a warp generator are recognised as lite's when they fit no preset asked for
        with pytest.raises(FgfemError, match="look like preset 'lite'"):
            save_generator(tmp_path / "x.safetensors", generator, PRESETS["paper"])


def test_files_written_before_the_residual_flag_load_as_tanh_generators(tmp_path):
    """Older files have no residual_output in their config: they are the paper's generator."""
    values = LITE.to_dict()
    del values["residual_output"], values["au_film"], values["au_warp"]
    cfg = NetConfig.from_dict(values)
    assert cfg.residual_output is False and cfg.au_film is False and cfg.au_warp is False
