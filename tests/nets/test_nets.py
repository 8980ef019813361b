"""The networks: exact sizes of the paper preset, shapes at 128 and 256 px, conditioning, presets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fgfem.aus import AU_SCALE, NUM_AUS
from fgfem.errors import FgfemError
from fgfem.nets import PRESETS, Critic, Generator, NetConfig, count_parameters, get_preset, use_cpu_rewrites
from fgfem.nets.blocks import TINY_MAP_PIXELS, ConvNormAct, TinyMapConv2d, concat_aus
from fgfem.nets.generator import FLOW_BLOCK, au_weighted_change, au_weighted_conv, smooth_flow, warp_change

# Counted from the reference UNet_MSF_Generator / Discriminator_Plus (ngf = ndf = 64, 17 AUs, 128 px).
PAPER_GENERATOR_PARAMS = 57_632_768
PAPER_CRITIC_PARAMS = 44_858_048


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lite_generator() -> Generator:
    """A lite generator whose output layer is random too (a fresh one is the identity)."""
    torch.manual_seed(0)
    generator = Generator(get_preset("lite")).eval()
    torch.nn.init.normal_(generator.to_rgb.weight, 0.0, 0.02)
    return generator


def random_faces(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1


def test_paper_parameter_counts_match_the_reference():
    with torch.device("meta"):
        generator = Generator(PRESETS["paper"])
        critic = Critic(PRESETS["paper"])
    assert count_parameters(generator) == PAPER_GENERATOR_PARAMS
    assert count_parameters(critic) == PAPER_CRITIC_PARAMS


def test_lite_is_much_smaller_than_paper():
    with torch.device("meta"):
        lite = count_parameters(Generator(PRESETS["lite"])) + count_parameters(Critic(PRESETS["lite"]))
    assert lite < (PAPER_GENERATOR_PARAMS + PAPER_CRITIC_PARAMS) / 3


def test_paper_generator_forward_keeps_shape_and_range():
    torch.manual_seed(1)
    generator = Generator(PRESETS["paper"]).eval()
    x = random_faces(1, 128)
    with torch.inference_mode():
        y = generator(x, torch.full((1, NUM_AUS), 0.2))
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert y.abs().max() <= 1.0
    # A freshly initialised generator is not constant: the output varies over the image.
    assert y.std() > 1e-3


@pytest.mark.parametrize("size", [128, 256])
def test_lite_generator_any_multiple_of_64(lite_generator, size):
    x = random_faces(2, size)
    with torch.inference_mode():
        y = lite_generator(x, torch.zeros(2, NUM_AUS))
    assert y.shape == (2, 3, size, size)
    assert y.abs().max() <= 1.0


def test_generator_output_depends_on_the_aus(lite_generator):
    x = random_faces(1, 128)
    with torch.inference_mode():
        neutral = lite_generator(x, torch.zeros(1, NUM_AUS))
        smile = lite_generator(x, torch.eye(NUM_AUS)[8:9] * (2.0 / AU_SCALE))  # AU12 +2
    assert (neutral - smile).abs().max() > 1e-4


def test_residual_generator_is_the_identity_for_a_zero_edit_and_the_paper_one_is_not():
    x = random_faces(2, 64)
    rel = torch.eye(NUM_AUS)[[8, 3]] * (2.0 / AU_SCALE)
    torch.manual_seed(3)
    residual = Generator(get_preset("lite")).eval()
    torch.nn.init.normal_(residual.to_rgb.weight, 0.0, 0.05)  # any weights: identity is built in
    paper_style = Generator(dataclasses.replace(get_preset("lite"), residual_output=False, au_warp=False)).eval()
    with torch.inference_mode():
        assert torch.equal(residual(x, torch.zeros_like(rel)), x)
        assert (residual(x, rel) - x).abs().mean() > 0.01
        assert (paper_style(x, torch.zeros_like(rel)) - x).abs().mean() > 0.1
    assert get_preset("lite").residual_output and not get_preset("paper").residual_output


def test_residual_change_is_the_au_weighted_sum_of_per_au_maps():
    maps = torch.randn(2, 3 * NUM_AUS, 8, 8)
    rel = torch.randn(2, NUM_AUS)
    expected = sum(rel[:, k, None, None, None] * maps[:, 3 * k : 3 * k + 3] for k in range(NUM_AUS))
    torch.testing.assert_close(au_weighted_change(maps, rel), expected, rtol=1e-5, atol=1e-5)



def test_per_face_kernels_give_the_per_au_maps_sum_and_its_gradients():
    """The CPU form (one AU-weighted kernel per face) must be the same function as the per-AU maps."""
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(4, 3 * NUM_AUS, 7, padding=3, bias=False)
    y = torch.randn(3, 4, 16, 16, requires_grad=True)
    rel = torch.randn(3, NUM_AUS)
    rel[1] = 0.0
    fast = au_weighted_conv(conv, y, rel, per_face=True)
    plain = au_weighted_conv(conv, y, rel, per_face=False)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast[1], torch.zeros_like(fast[1]))  # a zero edit: exactly no change
    grads_fast = torch.autograd.grad(fast.square().sum(), (conv.weight, y))
    grads_plain = torch.autograd.grad(plain.square().sum(), (conv.weight, y))
    for got, expected in zip(grads_fast, grads_plain, strict=True):  # sums over many pixels: relative to scale
        assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize(("size", "stride", "tiny"), [(4, 2, True), (8, 2, True), (16, 2, False), (3, 1, True)])
def test_tiny_map_convolution_is_the_same_function_through_a_double_backward(size, stride, tiny, monkeypatch):
    """The matrix-product form must match oneDNN's convolution, including the gradient penalty's second
    derivative, and be taken only where the output map is tiny."""
    torch.manual_seed(4)
    kernel = 4 if stride == 2 else 3
    conv = TinyMapConv2d(8, 6, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False)
    unfolds = []
    real_unfold = torch.nn.functional.unfold
    monkeypatch.setattr(torch.nn.functional, "unfold", lambda *a, **k: unfolds.append(1) or real_unfold(*a, **k))
    x = torch.randn(3, 8, size, size, requires_grad=True)

    def penalty(module):
        out = module(x)
        (grad,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        return out, grad, torch.autograd.grad(grad.square().sum(), module.weight)[0]

    fast = penalty(conv)
    assert bool(unfolds) is tiny and (fast[0].shape[-1] ** 2 <= TINY_MAP_PIXELS) is tiny
    use_cpu_rewrites(conv, False)
    unfolds.clear()
    plain = penalty(conv)
    assert not unfolds
    for got, expected in zip(fast, plain, strict=True):
        assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()

def test_warp_moves_pixels_by_the_flow_and_a_zero_flow_changes_nothing():
    x = random_faces(2, 64)
    assert torch.equal(warp_change(x, torch.zeros(2, 2, 64, 64)), torch.zeros_like(x))
    # One pixel to the right in [-1, 1] units (align_corners=False): sampling from x+1 shifts the image left.
    flow = torch.zeros(2, 2, 64, 64)
    flow[:, 0] = 2.0 / 64
    moved = x + warp_change(x, flow)
    torch.testing.assert_close(moved[..., :-1], x[..., 1:], rtol=0, atol=1e-4)
    # The field is smoothed over blocks: a single-pixel spike spreads over about a block.
    spike = torch.zeros(1, 2, 64, 64)
    spike[0, 0, 32, 32] = 1.0
    touched = warp_change(x[:1], smooth_flow(spike)).abs().amax(1)[0] > 0
    assert touched.sum() >= FLOW_BLOCK**2


def test_warp_generator_is_the_identity_for_a_zero_edit_and_moves_with_the_aus():
    cfg = dataclasses.replace(get_preset("lite"), au_warp=True)
    torch.manual_seed(5)
    generator = Generator(cfg).eval()
    assert generator.to_flow is not None and torch.count_nonzero(generator.to_flow.weight) == 0
    torch.nn.init.normal_(generator.to_flow.weight, 0.0, 0.05)
    x, rel = random_faces(2, 64), torch.eye(NUM_AUS)[[9, 3]] * (2.0 / AU_SCALE)
    colour_only = Generator(dataclasses.replace(get_preset("lite"), au_warp=False)).eval()
    colour_only.load_state_dict({k: v for k, v in generator.state_dict().items() if k != "to_flow.weight"})
    with torch.inference_mode():
        assert torch.equal(generator(x, torch.zeros_like(rel)), x)
        assert (generator(x, rel) - colour_only(x, rel)).abs().mean() > 0.01
    with pytest.raises(FgfemError, match="au_warp needs residual_output"):
        dataclasses.replace(get_preset("paper"), au_warp=True)
    assert get_preset("lite").au_warp and not get_preset("paper").au_warp


def test_residual_output_stays_in_range_and_moves_with_the_aus(lite_generator):
    x = random_faces(2, 64)
    with torch.inference_mode():
        y = lite_generator(x, torch.eye(NUM_AUS)[[8, 3]] * (2.0 / AU_SCALE))
    assert y.abs().max() <= 1.0 and (y - x).abs().mean() > 1e-3


def test_every_au_reaches_the_output(lite_generator):
    x = random_faces(1, 128)
    rel = torch.zeros(1, NUM_AUS, requires_grad=True)
    lite_generator(x, rel).square().mean().backward()
    assert (rel.grad.abs() > 0).all()


@pytest.mark.parametrize(("size", "patch"), [(128, 2), (256, 4)])
def test_critic_output_shapes(size, patch):
    torch.manual_seed(2)
    critic = Critic(get_preset("lite", size))
    with torch.inference_mode():
        scores, aus = critic(random_faces(3, size))
    assert scores.shape == (3, 1, patch, patch)
    assert aus.shape == (3, NUM_AUS)


def test_paper_critic_output_shapes():
    torch.manual_seed(3)
    with torch.inference_mode():
        scores, aus = Critic(PRESETS["paper"])(random_faces(1, 128))
    assert scores.shape == (1, 1, 2, 2)
    assert aus.shape == (1, NUM_AUS)


def test_init_is_normal_002_and_norms_are_identity():
    torch.manual_seed(4)
    generator = Generator(PRESETS["lite"])
    critic = Critic(PRESETS["lite"])
    for weight in (generator.skip2.in_conv.conv.weight, critic.trunk[3].conv.weight):
        assert abs(weight.mean().item()) < 1e-3
        assert weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert torch.equal(generator.stem.norm.weight, torch.ones_like(generator.stem.norm.weight))
    assert torch.equal(generator.stem.norm.bias, torch.zeros_like(generator.stem.norm.bias))
    assert not any(name.endswith("bias") for name, _ in critic.named_parameters())


def test_bad_inputs_fail_with_one_clear_error(lite_generator):
    with pytest.raises(FgfemError, match="multiples of 16"):
        lite_generator(random_faces(1, 100), torch.zeros(1, NUM_AUS))
    with pytest.raises(FgfemError, match="relative AUs"):
        lite_generator(random_faces(1, 128), torch.zeros(1, 13))
    with pytest.raises(FgfemError, match="critic input"):
        Critic(PRESETS["lite"])(random_faces(1, 256))


def test_presets_and_sizes():
    assert get_preset("paper").conv_dim == 64 and get_preset("paper").critic_dim == 64
    assert get_preset("Lite", 256).image_size == 256
    assert PRESETS["lite"].image_size == 128  # the preset itself is not changed
    with pytest.raises(FgfemError, match="unknown network preset 'huge'.*paper, lite"):
        get_preset("huge")
    with pytest.raises(FgfemError, match="not a multiple of 64"):
        get_preset("paper", 160)
    with pytest.raises(FgfemError, match="positive"):
        NetConfig(name="bad", conv_dim=0, critic_dim=8)


def test_config_dict_round_trip():
    cfg = get_preset("lite", 192)
    assert NetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(FgfemError, match="unknown fields"):
        NetConfig.from_dict({**cfg.to_dict(), "attention": True})
    with pytest.raises(FgfemError, match="lacks"):
        NetConfig.from_dict({"name": "x"})


def test_real_faces_through_both_networks(samples: Path):
    """Real 128 px aligned crops (vipermu) with their real AUs go through G and D."""
    folder = samples / "vipermu"
    rows = [line.split() for line in (folder / "attributes.txt").read_text().splitlines() if line.strip()][:2]
    images = [np.asarray(Image.open(folder / "attribute_images" / row[0]).convert("RGB").resize((128, 128)))
              for row in rows]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    aus = torch.tensor([[float(v) for v in row[1:]] for row in rows]) / AU_SCALE
    assert aus.shape == (2, NUM_AUS)
    torch.manual_seed(5)
    cfg = PRESETS["lite"]
    with torch.inference_mode():
        y = Generator(cfg).eval()(x, aus[[1, 0]] - aus)
        scores, predicted = Critic(cfg)(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert scores.shape == (2, 1, 2, 2) and predicted.shape == (2, NUM_AUS)
    assert torch.isfinite(predicted).all()


def test_instance_norm_cancels_constant_au_channels_but_not_the_au_modulation():
    """Why lite has AUModulation: inside the image, IN removes what constant AU channels add."""
    torch.manual_seed(0)
    concat_only = ConvNormAct(8 + NUM_AUS, 8, 3)
    modulated = ConvNormAct(8 + NUM_AUS, 8, 3, film_aus=NUM_AUS)
    modulated.conv.load_state_dict(concat_only.conv.state_dict())
    torch.nn.init.normal_(modulated.film.linear.weight, 0.0, 0.5)
    x = random_faces(1, 32)[:, :1].expand(1, 8, 32, 32).contiguous()
    r0, r1 = torch.zeros(1, NUM_AUS), torch.eye(NUM_AUS)[[8]] * 0.4
    with torch.no_grad():
        plain_change = concat_only(concat_aus(x, r1)) - concat_only(concat_aus(x, r0))
        film_change = modulated(concat_aus(x, r1), r1) - modulated(concat_aus(x, r0), r0)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    assert plain_change[inner].abs().mean() < 0.2 * film_change[inner].abs().mean()
    fresh = ConvNormAct(8 + NUM_AUS, 8, 3, film_aus=NUM_AUS)  # zero-initialised: same as without it
    fresh.conv.load_state_dict(concat_only.conv.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(concat_aus(x, r1), r1), concat_only(concat_aus(x, r1)))
    with pytest.raises(ValueError, match="pass the AUs"):
        fresh(concat_aus(x, r1))
