"""Quantized layers: STE forward/backward properties, spec validation, model quantization, INQ."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dse.errors import SpecError
from dse.robust.attacks import pgd
from dse.models import build_model
from dse.compress.inq import INQSchedule
from dse.compress.quant import QUANT_MODES, QConv2d, QLinear, QuantSpec, layer_bits, quantize_model
from dse.compress.quantizers import (
    LSQClipQuant,
    PACTQuant,
    Pow2Quant,
    RoundSTE,
    SignSTE,
    dorefa_weight,
    inq_exponent_range,
    mbn_activation,
    mbn_weight,
    pact,
    pact_alpha_init,
    pow2_weight,
)

TINY = {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2}

SPECS = {
    "fixed4": QuantSpec(mode="fixed", weight_bits=4, act_bits=4),
    "fixed1x2": QuantSpec(mode="fixed", weight_bits=1, act_bits=2),
    "mbn3x1": QuantSpec(mode="mbn", weight_bases=3, act_bases=1),
    "xnor": QuantSpec(mode="mbn", weight_bases=1, act_bases=1),
    "mbn2x3": QuantSpec(mode="mbn", weight_bases=2, act_bases=3),
    "pow2_5": QuantSpec(mode="pow2", weight_bits=5),
    "pow2_3a4": QuantSpec(mode="pow2", weight_bits=3, act_bits=4),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add contention on shared CPU cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def tiny_mobilenet() -> nn.Module:
    return build_model(TINY, in_channels=1, num_classes=10, mean=(0.5,), std=(0.3,))


def qlayers(model: nn.Module) -> list[QConv2d | QLinear]:
    return [m for m in model.modules() if isinstance(m, (QConv2d, QLinear))]


def body_layers(model: nn.Module) -> list[QConv2d | QLinear]:
    """Quantized layers other than the first conv and the last linear."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return [m for m in layers[1:-1] if isinstance(m, (QConv2d, QLinear))]


def input_grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(model(x).sum(), x)
    return g


# --------------------------------------------------------------------------- #
# STE functions
# --------------------------------------------------------------------------- #


def test_round_ste_forward_rounds_backward_is_identity():
    x = torch.randn(100, requires_grad=True) * 3
    x.retain_grad()
    y = RoundSTE.apply(x)
    assert torch.equal(y, torch.round(x))
    g = torch.randn(100)
    (gx,) = torch.autograd.grad(y, x, g)
    assert torch.equal(gx, g)


def test_sign_ste_values_and_clipped_gradient():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 1.5], requires_grad=True)
    y = SignSTE.apply(x)
    assert y.tolist() == [-1, -1, -1, -1, 1, 1, 1]
    (gx,) = torch.autograd.grad(y.sum(), x)
    assert gx.tolist() == [0, 1, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_pact_unsigned_levels_and_gradients(bits):
    torch.manual_seed(0)
    alpha = torch.tensor(2.0, requires_grad=True)
    x = (torch.randn(4000) * 1.5).requires_grad_()
    q = PACTQuant.apply(x, alpha, torch.tensor(0.0), bits)
    steps = 2**bits - 1
    expected = torch.round(x.detach().clamp(0, 2.0) / (2.0 / steps)) * (2.0 / steps)
    torch.testing.assert_close(q.detach(), expected)
    assert q.unique().numel() <= 2**bits
    assert q.min() >= 0 and q.max() <= 2.0 + 1e-6
    gx, ga = torch.autograd.grad(q.sum(), (x, alpha))
    inside = (x > 0) & (x < 2.0)
    assert torch.equal(gx, inside.float())
    assert ga.item() == pytest.approx(float((x >= 2.0).sum()))


@pytest.mark.parametrize("bits", [1, 3])
def test_pact_signed_is_symmetric(bits):
    torch.manual_seed(0)
    alpha = torch.tensor(1.0, requires_grad=True)
    x = (torch.randn(4000) * 1.5).requires_grad_()
    q = PACTQuant.apply(x, alpha, torch.tensor(1.0), bits)
    levels = q.detach().unique()
    assert levels.numel() <= 2**bits
    assert levels.min() == pytest.approx(-1.0) and levels.max() == pytest.approx(1.0)
    torch.testing.assert_close(levels, -levels.flip(0))
    gx, ga = torch.autograd.grad(q.sum(), (x, alpha))
    assert torch.equal(gx, (x.abs() < 1.0).float())
    assert ga.item() == pytest.approx(float((x >= 1).sum() - (x <= -1).sum()))


@pytest.mark.parametrize("signed", [0.0, 1.0])
@pytest.mark.parametrize("bits", [2, 4])
def test_lsq_clip_gradient_is_lsq_with_pact_values_and_input_gradient(bits, signed):
    torch.manual_seed(0)
    x = (torch.randn(8, 3, 5, 5) * 1.5).requires_grad_()
    alpha = torch.tensor(1.3, requires_grad=True)
    sgn = torch.tensor(signed)
    q = LSQClipQuant.apply(x, alpha, sgn, bits)
    torch.testing.assert_close(q, PACTQuant.apply(x, alpha, sgn, bits))
    w = torch.randn_like(x)  # a generic upstream gradient
    gx, ga = torch.autograd.grad((q * w).sum(), (x, alpha))
    gx_pact, ga_pact = torch.autograd.grad((PACTQuant.apply(x, alpha, sgn, bits) * w).sum(), (x, alpha))
    assert torch.equal(gx, gx_pact)
    # Reference: LSQ is the derivative with round's straight-through estimator (d round(u)/du = 1),
    # times the gradient scale 1 / sqrt(inputs per sample * top level index).
    a = alpha.detach().clone().requires_grad_()
    lo = -a * signed
    s = (a - lo) / (2**bits - 1)
    y = torch.minimum(torch.maximum(x.detach(), lo), a)
    u = (y - lo) / s
    ref_q = y + (torch.round(u) - u).detach() * s
    torch.testing.assert_close(ref_q, q.detach())
    (ref,) = torch.autograd.grad((ref_q * w).sum(), a)
    g = 1.0 / math.sqrt(3 * 5 * 5 * (2**bits - 1) / (1 + signed))
    assert ga.item() == pytest.approx(ref.item() * g, rel=1e-5)
    inside = (torch.rand(4, 10) * 0.8 + 0.1).mul(1.3)  # every input strictly inside [0, alpha): nothing clipped
    (ga_in,) = torch.autograd.grad(LSQClipQuant.apply(inside, alpha, sgn, bits).sum(), alpha)
    (gp_in,) = torch.autograd.grad(PACTQuant.apply(inside, alpha, sgn, bits).sum(), alpha)
    assert gp_in.item() == 0 and ga_in.item() != 0, "LSQ also learns from unclipped inputs"


def test_pact_wrapper_selects_the_clip_gradient():
    alpha = nn.Parameter(torch.tensor(0.5))
    x = torch.linspace(-1, 2, 31).reshape(1, -1)
    (ga_lsq,) = torch.autograd.grad(pact(x, alpha, 2, clip_grad="lsq").sum(), alpha)
    (ga_pact,) = torch.autograd.grad(pact(x, alpha, 2).sum(), alpha)
    assert ga_pact.item() == pytest.approx(float((x >= 0.5).sum()))
    assert ga_lsq.item() != pytest.approx(ga_pact.item())
    with pytest.raises(ValueError, match="clip_grad"):
        pact(x, alpha, 2, clip_grad="bogus")


def test_pact_wrapper_passes_gradient_to_alpha_parameter():
    alpha = nn.Parameter(torch.tensor(0.5))
    x = torch.linspace(-1, 2, 31, requires_grad=True)
    q = pact(x, alpha, 4, signed=False)
    gx, ga = torch.autograd.grad((q * 2).sum(), (x, alpha))
    assert ga.item() == pytest.approx(2 * float((x >= 0.5).sum()))
    assert torch.isfinite(gx).all() and gx.abs().sum() > 0


@pytest.mark.parametrize("bits", [2, 3, 5, 8])
def test_pow2_levels_are_powers_of_two_and_nearest(bits):
    torch.manual_seed(0)
    w = (torch.randn(5000) * 0.1).requires_grad_()
    s = float(w.detach().abs().max())
    n1, n2 = inq_exponent_range(s, bits)
    assert 2**n1 <= 4 * s / 3 < 2 ** (n1 + 1)
    assert n1 - n2 + 1 == 2 ** (bits - 2)  # 2^(b-1)/2 exponents, one bit codes zero
    q = Pow2Quant.apply(w, n1, n2)
    levels = torch.tensor([0.0] + [sgn * 2.0**k for k in range(n2, n1 + 1) for sgn in (1, -1)])
    assert torch.isin(q.detach(), levels).all()
    assert q.detach().unique().numel() <= min(2**bits, 2 ** (bits - 1) + 1)
    # INQ's rule is rounding to the nearest level of {0, +-2^n2..2^n1}.
    dist = (w.detach()[:, None] - levels[None, :]).abs()
    torch.testing.assert_close((w.detach() - q.detach()).abs(), dist.min(dim=1).values)
    (g,) = torch.autograd.grad((q * 3).sum(), w)
    assert torch.equal(g, torch.full_like(w, 3.0))


def test_inq_exponent_range_matches_paper_example():
    # INQ (Zhou et al. 2017): s = max|W|, n1 = floor(log2(4s/3)); b = 5 -> 8 exponents.
    assert inq_exponent_range(1.0, 5) == (0, -7)
    assert inq_exponent_range(0.2, 3) == (-2, -3)
    assert pow2_weight(torch.tensor([0.2, -0.11, 0.07, 0.06]), 3).tolist() == [0.25, -0.125, 0.125, 0.0]


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_dorefa_weight_levels_scale_and_gradient(bits):
    torch.manual_seed(0)
    w = (torch.randn(64, 32) * 0.1).requires_grad_()
    q = dorefa_weight(w, bits)
    assert q.detach().unique().numel() <= 2**bits
    if bits == 1:
        torch.testing.assert_close(q.detach(), w.detach().abs().mean() * torch.where(w > 0, 1.0, -1.0))
    else:
        assert q.detach().abs().max() == pytest.approx(float(w.detach().abs().max()), rel=1e-5)
    if bits == 8:
        torch.testing.assert_close(q.detach(), w.detach(), atol=5e-3, rtol=0.05)
    (g,) = torch.autograd.grad(q.sum(), w)
    assert torch.isfinite(g).all() and (g != 0).float().mean() > 0.99


@pytest.mark.parametrize("bases", [1, 2, 3, 5])
def test_mbn_weight_bases_and_least_squares_alpha(bases):
    torch.manual_seed(0)
    w = (torch.randn(32, 16, 3, 3) * 0.1).requires_grad_()
    approx, alpha = mbn_weight(w, bases)
    assert alpha.shape == (bases,)
    assert approx.detach().unique().numel() <= 2**bases
    if bases == 1:  # XNOR-Net: mean|W| * sign(W)
        torch.testing.assert_close(approx.detach(), w.detach().abs().mean() * torch.where(w > 0, 1.0, -1.0))
    # least squares: the residual is orthogonal to every base
    shifts = [0.0] if bases == 1 else torch.linspace(-1, 1, bases).tolist()
    wd = w.detach()
    centre = torch.zeros(()) if bases == 1 else wd.mean()
    scale = torch.zeros(()) if bases == 1 else wd.std()
    signs = [torch.where(wd - centre + u * scale > 0, 1.0, -1.0) for u in shifts]
    resid = wd - approx.detach()
    for s in signs:
        assert abs(float((resid * s).sum())) < 1e-3 * float(wd.abs().sum())
    # ABC-Net eq. 3: gradient sum_m alpha_m 1_{|x_m| <= 1} (all |x_m| <= 1 here)
    (g,) = torch.autograd.grad(approx.sum(), w)
    torch.testing.assert_close(g, torch.full_like(w, float(alpha.sum())))


def test_mbn_weight_error_decreases_with_bases():
    torch.manual_seed(0)
    w = torch.randn(64, 64) * 0.1
    errors = [float((mbn_weight(w, m)[0] - w).norm()) for m in (1, 2, 3, 5)]
    assert errors == sorted(errors, reverse=True)


def test_mbn_activation_values_and_gradients():
    scale = torch.tensor([0.5, 0.25], requires_grad=True)
    shift = torch.tensor([0.5, -0.5], requires_grad=True)  # thresholds 0 and 1
    x = torch.tensor([-3.0, -0.5, 0.0, 0.5, 1.5, 3.0], requires_grad=True)
    y = mbn_activation(x, scale, shift)
    # H_v(x) = +1 iff clip(x + v, 0, 1) > 0.5
    h0 = [-1, -1, -1, 1, 1, 1]
    h1 = [-1, -1, -1, -1, 1, 1]
    assert y.tolist() == [0.5 * a + 0.25 * b for a, b in zip(h0, h1)]
    gx, gs, gv = torch.autograd.grad(y.sum(), (x, scale, shift))
    win0 = [(abs(v - 0.0) <= 1) for v in x.tolist()]
    win1 = [(abs(v - 1.0) <= 1) for v in x.tolist()]
    assert gx.tolist() == [0.5 * a + 0.25 * b for a, b in zip(win0, win1)]
    assert gs.tolist() == [sum(h0), sum(h1)]
    assert gv.tolist() == [0.5 * sum(win0), 0.25 * sum(win1)]


# --------------------------------------------------------------------------- #
# QuantSpec
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mode": "ternary"}, "mode"),
        ({"mode": "mbn", "weight_bases": 0, "act_bases": 1}, "weight_bases"),
        ({"mode": "mbn", "weight_bases": 2, "act_bases": 9}, "act_bases"),
        ({"mode": "mbn", "weight_bases": 2}, "act_bases"),
        ({"mode": "mbn", "weight_bases": 2, "act_bases": 2, "weight_bits": 4}, "weight_bits"),
        ({"mode": "fixed", "weight_bits": 9, "act_bits": 4}, "weight_bits"),
        ({"mode": "fixed", "weight_bits": 4, "act_bits": 0}, "act_bits"),
        ({"mode": "fixed", "weight_bits": 4}, "act_bits"),
        ({"mode": "fixed", "weight_bits": 4, "act_bits": 4, "weight_bases": 2}, "weight_bases"),
        ({"mode": "fixed", "weight_bits": 4.0, "act_bits": 4}, "weight_bits"),
        ({"mode": "fixed", "weight_bits": True, "act_bits": 4}, "weight_bits"),
        ({"mode": "pow2"}, "weight_bits"),
        ({"mode": "pow2", "weight_bits": 1}, "weight_bits"),
        ({"mode": "pow2", "weight_bits": 4, "act_bases": 1}, "act_bases"),
        ({"mode": "none", "weight_bits": 4}, "weight_bits"),
        ({"mode": "fixed", "weight_bits": 4, "act_bits": 4, "first_last_bits": 0}, "first_last_bits"),
        ({"mode": "fixed", "weight_bits": 4, "act_bits": 4, "first_last_bits": 24}, "first_last_bits"),
    ],
)
def test_spec_rejects_impossible_combinations(kwargs, field):
    with pytest.raises(SpecError, match=field) as info:
        QuantSpec(**kwargs)
    assert "\n" not in str(info.value)


def test_spec_accepts_valid_combinations():
    assert QUANT_MODES == ("none", "fixed", "mbn", "pow2")
    QuantSpec()
    QuantSpec(mode="fixed", weight_bits=1, act_bits=8, first_last_bits=32)
    QuantSpec(mode="mbn", weight_bases=8, act_bases=1)
    QuantSpec(mode="pow2", weight_bits=8, act_bits=2)
    with pytest.raises(TypeError):
        QuantSpec("fixed")  # type: ignore[misc]  # keyword-only


# --------------------------------------------------------------------------- #
# quantize_model
# --------------------------------------------------------------------------- #


def expected_body_bits(spec: QuantSpec) -> tuple[int, int, int]:
    if spec.mode == "fixed":
        return spec.weight_bits, spec.act_bits, 1  # type: ignore[return-value]
    if spec.mode == "mbn":
        return 1, 1, spec.weight_bases * spec.act_bases  # type: ignore[operator]
    return spec.weight_bits, spec.act_bits or 32, 1  # type: ignore[return-value]


def check_weights(layer: QConv2d | QLinear, spec: QuantSpec) -> None:
    w = layer.quantized_weight().detach()
    distinct = w.unique()
    if spec.mode == "fixed":
        assert distinct.numel() <= 2**spec.weight_bits  # type: ignore[operator]
    elif spec.mode == "mbn":
        assert distinct.numel() <= 2**spec.weight_bases  # type: ignore[operator]
    else:
        nonzero = distinct[distinct != 0].abs()
        assert torch.equal(torch.exp2(torch.round(torch.log2(nonzero))), nonzero)
        assert distinct.numel() <= 2**spec.weight_bits  # type: ignore[operator]


@pytest.mark.parametrize("name", list(SPECS))
def test_quantize_small_cnn(name):
    spec = SPECS[name]
    torch.manual_seed(0)
    model = small_cnn()
    keys = set(model.state_dict())
    assert quantize_model(model, spec) is model
    first, mid, last = model[0], model[3], model[8]
    assert isinstance(first, QConv2d) and isinstance(mid, QConv2d) and isinstance(last, QLinear)
    assert isinstance(first, nn.Conv2d) and isinstance(last, nn.Linear)
    assert keys <= set(model.state_dict())
    assert layer_bits(first) == (8, 8, 1) and layer_bits(last) == (8, 8, 1)
    assert not first.quantize_input and last.quantize_input
    assert layer_bits(mid) == expected_body_bits(spec)
    assert (mid.quant_mode, mid.weight_bases, mid.act_bases) == (spec.mode, spec.weight_bases, spec.act_bases)
    for layer in (first, mid, last):
        check_weights(layer, spec if layer is mid else QuantSpec(mode="fixed", weight_bits=8, act_bits=8))
    x = torch.rand(4, 1, 8, 8)
    assert torch.isfinite(model(x)).all()
    g = input_grad(model, x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("name", ["fixed4", "mbn3x1", "xnor", "pow2_3a4"])
def test_quantize_mobilenet_tiny(name):
    spec = SPECS[name]
    torch.manual_seed(0)
    model = tiny_mobilenet()
    n_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    quantize_model(model, spec)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == n_layers and all(isinstance(m, (QConv2d, QLinear)) for m in layers)
    assert layers[0] is model.conv_stem and layers[-1] is model.classifier
    assert layer_bits(model.conv_stem) == (8, 8, 1) and layer_bits(model.classifier) == (8, 8, 1)
    body = body_layers(model)
    assert len(body) == n_layers - 2
    for layer in body:
        assert layer_bits(layer) == expected_body_bits(spec)
        check_weights(layer, spec)
    x = torch.rand(2, 1, 12, 12)
    assert torch.isfinite(model(x)).all()
    g = input_grad(model, x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    model.eval()
    g = input_grad(model, x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    if spec.act_bits is not None:  # block inputs (linear bottlenecks) are signed, post-ReLU inputs are not
        assert bool(model.blocks[1].conv_pw.act_signed) and not bool(model.blocks[1].conv_dw.act_signed)


def test_first_last_full_precision_and_none_mode():
    model = quantize_model(small_cnn(), QuantSpec(mode="fixed", weight_bits=2, act_bits=2, first_last_bits=32))
    assert type(model[0]) is nn.Conv2d and type(model[8]) is nn.Linear and isinstance(model[3], QConv2d)
    assert layer_bits(model[0]) == (32, 32, 1) and layer_bits(model[3]) == (2, 2, 1)
    plain = small_cnn()
    assert quantize_model(plain, QuantSpec()) is plain and not qlayers(plain)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model, QuantSpec(mode="fixed", weight_bits=2, act_bits=2))
    with pytest.raises(TypeError):
        layer_bits(nn.ReLU())


def test_signed_flag_is_sticky_and_safe_between_forward_and_backward():
    torch.manual_seed(0)
    layer = quantize_model(nn.Sequential(nn.Conv2d(2, 2, 1), nn.Conv2d(2, 4, 1), nn.Linear(4, 2)), SPECS["fixed4"])[1]
    assert layer.act_alpha.item() == pact_alpha_init(4) == 3.0 and not bool(layer.act_signed)
    pos = torch.rand(2, 2, 3, 3, requires_grad=True)
    out_pos = layer(pos)  # unsigned: levels on [0, alpha]
    assert not bool(layer.act_signed)
    out_neg = layer(pos - 0.5)  # flips the flag in place while out_pos's graph is alive (TRADES-like)
    assert bool(layer.act_signed)
    (g,) = torch.autograd.grad((out_pos + out_neg).sum(), pos)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    layer(pos)
    assert bool(layer.act_signed)  # sticky
    q = layer.quantize_input_(pos - 0.5)
    assert q.min() < 0 and q.unique().numel() <= 16


def test_first_last_bits_custom():
    model = quantize_model(small_cnn(), QuantSpec(mode="mbn", weight_bases=2, act_bases=2, first_last_bits=6))
    assert layer_bits(model[0]) == (6, 6, 1) and layer_bits(model[8]) == (6, 6, 1)
    assert layer_bits(model[3]) == (1, 1, 4)
    assert model[8].quantized_weight().detach().unique().numel() <= 2**6


@pytest.mark.parametrize("name", ["fixed4", "xnor", "mbn3x1", "pow2_3a4"])
def test_pgd_goes_through_the_ste_path(name):
    torch.manual_seed(0)
    model = quantize_model(small_cnn(), SPECS[name])
    model.train()
    model(torch.rand(32, 1, 8, 8))  # BN statistics and signedness flags
    model.eval()
    x = torch.rand(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    x_adv = pgd(model, x, y, eps=0.3, step_size=0.05, steps=10, random_start=False)
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
        adv = F.cross_entropy(model(x_adv), y)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    assert adv > clean


@pytest.mark.parametrize("name", ["fixed4", "mbn3x1"])
def test_training_decreases_loss(name):
    torch.manual_seed(0)
    model = quantize_model(small_cnn(), SPECS[name]).train()
    x = torch.rand(32, 1, 8, 8)
    y = torch.randint(0, 10, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5


# --------------------------------------------------------------------------- #
# INQ
# --------------------------------------------------------------------------- #


def is_pow2_or_zero(w: torch.Tensor) -> bool:
    nz = w[w != 0].abs()
    return bool(torch.equal(torch.exp2(torch.round(torch.log2(nz))), nz))


def test_inq_schedule_freezes_largest_weights_incrementally():
    torch.manual_seed(0)
    model = quantize_model(small_cnn(), QuantSpec(mode="pow2", weight_bits=5))
    mid = model[3]
    x = torch.rand(8, 1, 8, 8)
    y = torch.randint(0, 10, (8,))
    schedule = INQSchedule(model)
    assert schedule.layers == [mid] and not bool(torch.isnan(mid.inq_n1))
    # INQ has started: unfrozen weights train in full precision
    torch.testing.assert_close(mid.quantized_weight().detach(), mid.weight.detach())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for i, fraction in enumerate(schedule.fractions):
        before_mag = mid.weight.detach().abs().clone()
        prev_frozen = mid.inq_frozen.clone()
        schedule.step(i)
        frozen = mid.inq_frozen
        assert frozen.float().mean().item() == pytest.approx(fraction, abs=1.0 / frozen.numel())
        assert schedule.frozen_fraction() == pytest.approx(fraction, abs=1e-2)
        assert (frozen | ~prev_frozen).all()  # frozen weights stay frozen
        new = frozen & ~prev_frozen
        if (~frozen).any() and new.any():  # largest magnitudes first
            assert before_mag[new].min() >= before_mag[~frozen].max()
        assert is_pow2_or_zero(mid.weight.detach()[frozen])
        frozen_values = mid.weight.detach()[frozen].clone()
        other = mid.weight.detach()[~frozen].clone()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        assert (mid.weight.grad[frozen] == 0).all()
        opt.step()
        assert torch.equal(mid.weight.detach()[frozen], frozen_values)
        if other.numel():
            assert not torch.equal(mid.weight.detach()[~frozen], other)
    assert frozen.all() and is_pow2_or_zero(mid.quantized_weight().detach())
    g = input_grad(model, x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_inq_schedule_validation():
    with pytest.raises(ValueError, match="pow2"):
        INQSchedule(quantize_model(small_cnn(), SPECS["fixed4"]))
    model = quantize_model(small_cnn(), SPECS["pow2_5"])
    with pytest.raises(ValueError, match="fractions"):
        INQSchedule(model, fractions=(0.5, 0.4))
    with pytest.raises(ValueError, match="fractions"):
        INQSchedule(model, fractions=(0.5, 1.5))


# --------------------------------------------------------------------------- #
# state_dict
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["fixed4", "mbn2x3", "pow2_3a4"])
def test_state_dict_round_trip(name):
    spec = SPECS[name]
    torch.manual_seed(0)
    model = quantize_model(tiny_mobilenet(), spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.rand(4, 1, 12, 12)
    loss = model(x).logsumexp(1).mean()
    loss.backward()
    opt.step()
    if spec.mode == "pow2":
        INQSchedule(model).step(0)
    model.eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    torch.manual_seed(1)
    fresh = quantize_model(tiny_mobilenet(), spec)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf), strict=True)
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


def test_inq_hook_freezes_nothing_at_initialisation_and_everything_by_the_end():
    """INQ quantizes a trained network: the first fraction is frozen after epochs / n epochs, not at
    initialisation (random weights frozen for the whole run trained to 0.56 on digits)."""
    from dse.compress.hooks import INQHook

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    quantize_model(model, QuantSpec(mode="pow2", weight_bits=5))
    hook = INQHook(model, epochs=8)
    frozen = lambda: sum(int(m.inq_frozen.sum()) for m in model.modules() if hasattr(m, "inq_frozen"))  # noqa: E731
    assert hook.done == 0 and frozen() == 0
    done = []
    for epoch in range(1, 9):
        hook.on_epoch_end(epoch)
        done.append(hook.done)
    assert done == [0, 1, 1, 2, 2, 3, 3, 4]
    total = sum(m.inq_frozen.numel() for m in model.modules() if hasattr(m, "inq_frozen"))
    hook.finalize()
    assert frozen() == total
