"""Recipes for quantized candidates: per-channel scales, depthwise precision, the float warm start,
PACT calibration, BatchNorm re-estimation and the clipping parameters' own learning rate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dse.candidate import validate_candidate
from dse.compress.keys import training_hooks
from dse.compress.quant import QUANT_LAYERS, layer_bits
from dse.compress.quantizers import dorefa_weight, mbn_weight, pact, pact_alpha_init
from dse.compress.warm_start import QuantRecipe, calibrate_pact, reestimate_batchnorm, set_quantizers
from dse.errors import SpecError
from dse.models import build_model
from dse.profile import bops, compressed_bytes, profile_model, size_bytes
from dse.training import Recipe, default_recipe

TINY = {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2}


def _model(**keys):
    torch.manual_seed(0)
    return build_model({**TINY, **keys}, in_channels=1, num_classes=10, mean=(0.5,), std=(0.5,))


@pytest.fixture(scope="module")
def digits_small(digits):
    return digits


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_per_channel_dorefa_has_its_levels_per_channel_and_fits_small_channels_better(bits):
    torch.manual_seed(0)
    w = torch.randn(8, 1, 3, 3) * torch.logspace(-2, 0, 8).reshape(8, 1, 1, 1)  # channels of very different scales
    pt, pc = dorefa_weight(w, bits), dorefa_weight(w, bits, per_channel=True)
    for c in range(8):
        assert pc[c].unique().numel() <= 2**bits
    assert (pc - w).norm() <= (pt - w).norm() + 1e-6
    small = 0  # the smallest channel: per tensor its weights collapse to one level (or sign), per channel they keep more
    assert pc[small].unique().numel() >= pt[small].unique().numel()
    w.requires_grad_(True)
    dorefa_weight(w, bits, per_channel=True).sum().backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


@pytest.mark.parametrize("bases", [1, 2, 3])
def test_per_channel_mbn_solves_least_squares_per_channel(bases):
    torch.manual_seed(1)
    w = torch.randn(6, 4, 3, 3) * torch.linspace(0.1, 2.0, 6).reshape(6, 1, 1, 1)
    approx, alpha = mbn_weight(w, bases, per_channel=True)
    assert alpha.shape == (6, bases)
    tensor_approx, _ = mbn_weight(w, bases)
    assert (approx - w).norm() <= (tensor_approx - w).norm() + 1e-5
    for c in range(6):  # per channel at most 2^M distinct values
        assert approx[c].unique().numel() <= 2**bases


def test_depthwise_bits_keep_depthwise_layers_fixed_point_and_bops_and_size_count_it():
    base = {"quant": "mbn", "weight_bases": 3, "act_bases": 1}
    plain, floored = _model(**base), _model(**base, depthwise_bits=8)
    dw = [n for n, m in floored.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert dw
    mods = dict(floored.named_modules())
    for name in dw:
        assert mods[name].quant_mode == "fixed" and layer_bits(mods[name]) == (8, 8, 1)
        assert dict(plain.named_modules())[name].quant_mode == "mbn"
    prof = profile_model(plain, in_channels=1, image_size=8)
    assert bops(floored, prof) != bops(plain, prof)
    assert size_bytes(floored) != size_bytes(plain)
    fixed = _model(quant="fixed", weight_bits=2, act_bits=2, depthwise_bits=4)
    for name in dw:
        assert layer_bits(dict(fixed.named_modules())[name]) == (4, 4, 1)


def test_per_channel_scales_are_counted_in_size_and_compress():
    pt = _model(quant="fixed", weight_bits=2, act_bits=2)
    pc = _model(quant="fixed", weight_bits=2, act_bits=2, per_channel=True)
    channels = sum(m.weight.shape[0] for m in pc.modules() if isinstance(m, QUANT_LAYERS))
    assert size_bytes(pc) - size_bytes(pt) == pytest.approx(4 * channels, abs=4 * 3)
    assert compressed_bytes(pc) > 0


@pytest.mark.parametrize("keys", [{"per_channel": True}, {"depthwise_bits": 4}])
def test_structural_keys_need_fixed_or_mbn(keys):
    with pytest.raises(SpecError):
        validate_candidate({**TINY, **keys})
    with pytest.raises(SpecError):
        validate_candidate({**TINY, "quant": "pow2", "weight_bits": 4, **keys})


def test_recipe_quant_section_validates_and_round_trips():
    r = Recipe.parse({"quant": {"warm_start_epochs": 3, "clip_lr_mult": 0.1}})
    assert r.quant.warm_start_epochs == 3
    assert Recipe.parse(r.model_dump(mode="json")) == r
    for bad in ({"warm_start_epochs": -1}, {"clip_lr_mult": 0}, {"warmstart": 2}):
        with pytest.raises(SpecError, match="quant"):
            Recipe.parse({"quant": bad})


def test_warm_start_trains_in_float_then_quantizes_with_calibrated_clips(digits_small):
    model = _model(quant="fixed", weight_bits=2, act_bits=2)
    recipe = QuantRecipe(warm_start_epochs=1, bn_reestimate_batches=2)
    hooks = training_hooks(model, validate_candidate({**TINY, "quant": "fixed", "weight_bits": 2, "act_bits": 2}).compression,
                           3, quant_recipe=recipe, data=digits_small.train, batch_size=32)
    layers = [m for m in model.modules() if isinstance(m, QUANT_LAYERS)]
    assert not any(m.quant_enabled for m in layers), "float during the warm start"
    x = digits_small.train.x[:16]
    float_out = model.eval()(x)
    for m in layers:  # computes with the float weights while off
        assert torch.equal(m.quantized_weight(), m.weight)
    hooks[0].on_epoch_end(1)
    assert all(m.quant_enabled for m in layers)
    assert hooks[0].alphas and all(a > 0 for a in hooks[0].alphas.values())
    assert not torch.allclose(model(x), float_out)
    with pytest.raises(SpecError, match="warm_start_epochs"):
        training_hooks(_model(quant="fixed", weight_bits=2, act_bits=2),
                       validate_candidate({**TINY, "quant": "fixed", "weight_bits": 2, "act_bits": 2}).compression,
                       1, quant_recipe=recipe, data=digits_small.train)


def test_lsq_clip_gradient_and_init_calibration_are_recipe_fields(digits_small):
    r = Recipe.parse({"quant": {"clip_grad": "lsq", "calibrate_init": True}})
    assert (r.quant.clip_grad, r.quant.calibrate_init) == ("lsq", True)
    assert Recipe.parse(r.model_dump(mode="json")) == r
    assert (Recipe.parse({}).quant.clip_grad, Recipe.parse({}).quant.calibrate_init) == ("pact", False)
    with pytest.raises(SpecError, match="quant"):
        Recipe.parse({"quant": {"clip_grad": "lsq2"}})
    keys = {**TINY, "quant": "fixed", "weight_bits": 2, "act_bits": 2}
    plain = _model(quant="fixed", weight_bits=2, act_bits=2)  # the same initialisation, uncalibrated
    model = _model(quant="fixed", weight_bits=2, act_bits=2)
    hooks = training_hooks(model, validate_candidate(keys).compression, 3, data=digits_small.train, batch_size=32,
                           quant_recipe=QuantRecipe(clip_grad="lsq", calibrate_init=True, bn_reestimate_batches=2))
    layers = [m for m in model.modules() if isinstance(m, QUANT_LAYERS) and m.uses_pact]
    assert all(m.clip_grad == "lsq" for m in layers) and model.training
    assert hooks[0].alphas and hooks[0].switched_at is None and all(m.quant_enabled for m in layers)
    init = [m.act_alpha.item() for m in plain.modules() if isinstance(m, QUANT_LAYERS) and m.uses_pact]
    assert [m.act_alpha.item() for m in layers] != pytest.approx(init), "clips set from data, not the fixed guess"
    # On the same inputs, the calibrated clips quantize the 2-bit layers' inputs with less error
    # than the fixed initial guess.
    x = digits_small.train.x[:64]
    two_bit = [m for m in layers if m.act_bits == 2]
    seen: dict[nn.Module, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, inp: seen.__setitem__(mod, inp[0].detach())) for m in two_bit]
    with torch.no_grad():
        model.train()(x)
    for h in handles:
        h.remove()
    with torch.no_grad():
        err_cal = sum(float((pact(seen[m], m.act_alpha, 2, signed=m.act_signed) - seen[m]).pow(2).mean()) for m in two_bit)
        err_init = sum(float((pact(seen[m], torch.tensor(pact_alpha_init(2)), 2, signed=m.act_signed) - seen[m]).pow(2).mean())
                       for m in two_bit)
    assert two_bit and err_cal < err_init
    x.requires_grad_(False)
    loss = F.cross_entropy(model(x), digits_small.train.y[:64])
    loss.backward()
    assert all(m.act_alpha.grad is not None and torch.isfinite(m.act_alpha.grad) for m in layers)


def test_calibration_sees_training_statistics_and_leaves_batchnorm_and_mode_alone(digits_small):
    """Regression: calibrating in eval mode with stale running statistics inflated the clips with depth."""
    model = _model(quant="fixed", weight_bits=2, act_bits=2)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:  # running statistics that describe some other network (as after a float warm start)
        bn.running_mean.fill_(0.5)
        bn.running_var.fill_(0.01)
    before = [(bn.running_mean.clone(), bn.running_var.clone(), bn.momentum) for bn in bns]
    model.eval()
    alphas = calibrate_pact(model, digits_small.train.x[:128])
    assert not model.training
    for bn, (mean, var, momentum) in zip(bns, before, strict=True):
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var) and bn.momentum == momentum
    two_bit = [a for n, a in alphas.items() if n.startswith("blocks")]
    assert two_bit and max(two_bit) < 6, "clips stay near the unit-variance inputs' scale at every depth"


def test_calibration_lowers_the_activation_quantization_error(digits_small):
    model = _model(quant="fixed", weight_bits=2, act_bits=2)
    x = digits_small.train.x[:64]
    layer = [m for m in model.modules() if isinstance(m, QUANT_LAYERS) and m.uses_pact][1]
    seen = []
    h = layer.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach()))
    model.eval()(x)
    before = (layer.quantize_input_(seen[-1]) - seen[-1]).pow(2).mean()
    calibrate_pact(model, x)
    model(x)
    h.remove()
    after = (layer.quantize_input_(seen[-1]) - seen[-1]).pow(2).mean()
    assert after <= before


def test_batchnorm_reestimation_matches_the_batch_statistics(digits_small):
    model = _model(quant="fixed", weight_bits=4, act_bits=4)
    set_quantizers(model, True)
    x = digits_small.train.x[:128]
    assert reestimate_batchnorm(model, [x]) == 1
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    seen = []
    h = bn.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach()))
    model.train()(x)
    h.remove()
    assert torch.allclose(bn.running_mean, seen[0].mean((0, 2, 3)), atol=1e-4)
    assert bn.momentum == 0.1


def test_clip_parameters_get_their_own_learning_rate_and_decay(digits_small):
    from dse.training import train

    model = _model(quant="fixed", weight_bits=2, act_bits=2)
    recipe = default_recipe("digits", method="natural", epochs=1, eval_every=0,
                            quant={"clip_lr_mult": 0.01, "clip_weight_decay": 1e-3})
    alpha = next(m.act_alpha for m in model.modules() if getattr(m, "uses_pact", False))
    before = float(alpha.detach())
    train(model, digits_small, recipe, device="cpu")
    slow = abs(float(alpha) - before)
    model2 = _model(quant="fixed", weight_bits=2, act_bits=2)
    alpha2 = next(m.act_alpha for m in model2.modules() if getattr(m, "uses_pact", False))
    train(model2, digits_small, default_recipe("digits", method="natural", epochs=1, eval_every=0), device="cpu")
    assert slow < abs(float(alpha2) - before)


def test_adam_optimizer_is_a_recipe_choice_and_trains(digits_small):
    from dse.training import train

    with pytest.raises(SpecError, match="optimizer"):
        Recipe.parse({"optimizer": "lbfgs"})
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    hist = train(model, digits_small, default_recipe("digits", method="natural", epochs=2, eval_every=0, optimizer="adam", lr=0.003),
                 device="cpu")
    assert hist[-1]["train_acc"] > 0.3
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


def test_orthogonality_penalty_is_zero_for_orthonormal_weights_and_per_group_for_depthwise():
    from dse.compress.orthogonal import orthogonality_penalty

    q, _ = torch.linalg.qr(torch.randn(12, 12))
    assert orthogonality_penalty(q[:5].reshape(5, 12, 1, 1)) == pytest.approx(0.0, abs=1e-8)  # orthonormal rows
    assert orthogonality_penalty(q[:, :5].contiguous()) == pytest.approx(0.0, abs=1e-8)     # orthonormal columns
    assert orthogonality_penalty(2 * q[:5]) == pytest.approx(5 * 9.0)                     # (4 - 1)^2 per row
    dw = torch.zeros(3, 1, 3, 3)
    dw[:, 0, 1, 1] = torch.tensor([1.0, 2.0, 0.0])  # per-channel norms^2 1, 4, 0
    assert orthogonality_penalty(dw, groups=3) == pytest.approx(0.0 + 9.0 + 1.0)
    assert orthogonality_penalty(dw) != pytest.approx(10.0)  # one (3, 9) matrix couples the filters


def test_orthogonal_regularizer_is_a_recipe_field_and_its_gradient_pulls_towards_orthogonality():
    model = _model(quant="fixed", weight_bits=2, act_bits=2)
    compression = validate_candidate({**TINY, "quant": "fixed", "weight_bits": 2, "act_bits": 2}).compression
    assert training_hooks(model, compression, 3, quant_recipe=QuantRecipe()) == []
    recipe = Recipe.parse({"quant": {"orthogonal_reg": 0.01}})
    assert Recipe.parse(recipe.model_dump(mode="json")).quant.orthogonal_reg == 0.01
    (hook,) = training_hooks(model, compression, 3, quant_recipe=recipe.quant)
    before = hook.penalty()
    before.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
    assert hook.penalty() < before
    float_model = _model()
    assert training_hooks(float_model, validate_candidate(TINY).compression, 3, quant_recipe=recipe.quant) == []
    with pytest.raises(SpecError, match="orthogonal_reg"):
        Recipe.parse({"quant": {"orthogonal_reg": -1}})
