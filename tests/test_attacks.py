"""Tests for dse.robust.attacks on a tiny model trained on sklearn's 8x8 digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
import torch.nn.functional as F
from torch import Tensor, nn

from dse.errors import SpecError
from dse.robust import kernel
from dse.robust.attacks import (
    ATTACKS,
    LOSSES,
    NORMS,
    AttackConfig,
    attack_loss,
    bim,
    check_attack_bounds,
    fgsm,
    pgd,
    run_attack,
    trades_adversary,
)

N_EVAL = 200


class Digits:
    """Trained model plus held-out data."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor) -> None:
        self.model = model
        self.x = x
        self.y = y


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def _robust_count(model: nn.Module, x_adv: Tensor, y: Tensor) -> int:
    with torch.no_grad():
        return int((model(x_adv).argmax(dim=1) == y).sum())


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _train_digits() -> Digits:
    """Train the MLP on digits for ~0.5 s with fixed seeds; evaluate on held-out samples."""
    torch.manual_seed(0)
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    x_tr, y_tr, x_te, y_te = x[:1400], y[:1400], x[1400 : 1400 + N_EVAL], y[1400 : 1400 + N_EVAL]
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x_tr), y_tr).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    assert _accuracy(model, x_te, y_te) > 0.9
    return Digits(model, x_te, y_te)


@pytest.fixture(scope="module")
def digits() -> Digits:
    return _train_digits()


class BNNet(nn.Module):
    """A small CNN with BatchNorm and Dropout (mode-sensitive layers)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.fc(h.flatten(1))


class RaisesOnSecondCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = BNNet()
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.calls >= 2:
            raise RuntimeError("boom")
        return self.inner(x)


def _all_attacks(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str, seed: int
) -> dict[str, Tensor]:
    """Every attack variant at (eps, norm), seeded with ``seed`` where random."""
    step = eps / 2
    g = torch.Generator().manual_seed
    return {
        "fgsm": fgsm(model, x, y, eps=eps, norm=norm),
        "fgsm_rs": fgsm(model, x, y, eps=eps, norm=norm, random_start=True, generator=g(seed)),
        "bim": bim(model, x, y, eps=eps, step_size=step, steps=3, norm=norm, loss="margin"),
        "pgd": pgd(model, x, y, eps=eps, step_size=step, steps=3, norm=norm, restarts=2, generator=g(seed)),
        "pgd_dlr": pgd(
            model, x, y, eps=eps, step_size=3 * eps, steps=2, norm=norm, loss="dlr", generator=g(seed)
        ),
        "trades": trades_adversary(model, x, eps=eps, step_size=step, steps=3, norm=norm, generator=g(seed)),
    }


# --------------------------------------------------------------------------- #
# Bounds
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_outputs_stay_in_ball_and_box(digits: Digits, norm: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(48, 1, 8, 8, generator=gen)
    # Many pixels exactly at the box edges.
    u = torch.rand(x.shape, generator=gen)
    x[u < 0.3] = 0.0
    x[u > 0.7] = 1.0
    x[:8] = digits.x[:8]
    y = torch.randint(0, 10, (48,), generator=gen)
    eps_list = [0.0, 0.05, 0.3, 1.0] if norm == "linf" else [0.0, 0.5, 2.0, 10.0]
    for eps in eps_list:
        for name, x_adv in _all_attacks(digits.model, x, y, eps, norm, seed).items():
            assert x_adv.shape == x.shape, name
            assert not x_adv.requires_grad, name
            assert x_adv.min() >= 0 and x_adv.max() <= 1, name
            d = (x_adv - x).flatten(1)
            if norm == "linf":
                assert float(d.abs().max()) <= eps + 1e-6, (name, eps)
            else:
                assert float(d.norm(dim=1).max()) <= eps + 1e-6, (name, eps)
            check_attack_bounds(x, x_adv, eps=eps, norm=norm)


def test_l2_projection_is_active(digits: Digits) -> None:
    x, y = digits.x[:32], digits.y[:32]
    gen = torch.Generator().manual_seed(0)
    x_adv = pgd(digits.model, x, y, eps=1.0, step_size=5.0, steps=3, norm="l2", generator=gen)
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert float(norms.max()) <= 1.0 + 1e-6
    assert float(norms.max()) > 0.9  # the huge steps hit the ball's surface


def test_check_attack_bounds_rejects_violations() -> None:
    x = torch.full((2, 3), 0.5)
    with pytest.raises(ValueError, match="box"):
        check_attack_bounds(x, x + torch.tensor([[0.0, 0.0, 0.6], [0.0, 0.0, 0.0]]), eps=1.0, norm="linf")
    with pytest.raises(ValueError, match="linf ball: sample 1"):
        check_attack_bounds(x, x + torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.2, 0.0]]), eps=0.1, norm="linf")
    with pytest.raises(ValueError, match="l2 ball"):
        check_attack_bounds(x, x + 0.1, eps=0.1, norm="l2")  # l2 norm = 0.1*sqrt(3)
    check_attack_bounds(x, x + 0.1, eps=0.1, norm="linf")
    with pytest.raises(ValueError, match="shape"):
        check_attack_bounds(x, x[:1], eps=0.1, norm="linf")
    with pytest.raises(SpecError, match="norm"):
        check_attack_bounds(x, x, eps=0.1, norm="l1")


def test_rejects_inputs_outside_unit_box(digits: Digits) -> None:
    x = digits.x[:4] * 2.0 - 0.5
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd(digits.model, x, digits.y[:4], eps=0.1, step_size=0.05, steps=2)


# --------------------------------------------------------------------------- #
# Attack strength
# --------------------------------------------------------------------------- #


def test_eps_zero_gives_natural_accuracy(digits: Digits) -> None:
    m, x, y = digits.model, digits.x, digits.y
    nat = _robust_count(m, x, y)
    for norm in NORMS:
        outs = _all_attacks(m, x, y, 0.0, norm, 0)
        for name in ATTACKS:
            cfg = AttackConfig(name=name, eps=0.0, norm=norm)
            outs[cfg.name + "_cfg"] = run_attack(m, x, y, cfg)
        for name, x_adv in outs.items():
            assert torch.equal(x_adv, x), name
            assert _robust_count(m, x_adv, y) == nat, name


def test_attack_works_at_large_eps(digits: Digits) -> None:
    m, x, y = digits.model, digits.x, digits.y
    nat = _accuracy(m, x, y)
    g = torch.Generator().manual_seed
    for loss in LOSSES:
        x_adv = pgd(m, x, y, eps=0.3, step_size=0.05, steps=20, loss=loss, generator=g(0))
        assert _accuracy(m, x_adv, y) < 0.05, loss
    assert _accuracy(m, fgsm(m, x, y, eps=0.3), y) < nat - 0.5
    assert _accuracy(m, bim(m, x, y, eps=0.3, step_size=0.05, steps=10), y) < 0.05
    x_l2 = pgd(m, x, y, eps=2.5, step_size=0.5, steps=20, norm="l2", generator=g(0))
    assert _accuracy(m, x_l2, y) < 0.2
    # TRADES moves the prediction away from the clean one.
    x_tr = trades_adversary(m, x, eps=0.3, step_size=0.05, steps=10, generator=g(0))
    with torch.no_grad():
        changed = (m(x_tr).argmax(1) != m(x).argmax(1)).float().mean()
    assert changed > 0.5


def test_more_steps_and_restarts_do_not_help_the_model(digits: Digits) -> None:
    m, x, y = digits.model, digits.x, digits.y
    g = torch.Generator().manual_seed
    eps = 0.08
    counts = [
        _robust_count(m, pgd(m, x, y, eps=eps, step_size=eps / 4, steps=s, generator=g(0)), y)
        for s in (5, 20, 50)
    ]
    assert 0 < counts[0] < len(y)  # a non-trivial operating point
    assert counts[1] <= counts[0] + 2
    assert counts[2] <= counts[1] + 2
    r1 = _robust_count(m, pgd(m, x, y, eps=eps, step_size=eps / 4, steps=10, restarts=1, generator=g(3)), y)
    r3 = _robust_count(m, pgd(m, x, y, eps=eps, step_size=eps / 4, steps=10, restarts=3, generator=g(3)), y)
    assert r3 <= r1 + 1
    # PGD is at least as strong as FGSM (beyond noise).
    f = _robust_count(m, fgsm(m, x, y, eps=eps), y)
    assert counts[1] <= f + 2


def _weak_pgd_grad_through_clamp(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, step: float, steps: int, gen: torch.Generator
) -> Tensor:
    """Reference of the pitfall: gradient w.r.t. delta through the box clamp."""
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    for _ in range(steps):
        delta = delta.detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(torch.clamp(x + delta, 0, 1)), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        delta = torch.clamp(delta + step * grad.sign(), -eps, eps)
    return torch.clamp(x + delta, 0, 1).detach()


def test_gradient_taken_wrt_clamped_input(digits: Digits) -> None:
    m, y = digits.model, digits.y
    x = (digits.x > 0.5).float()  # every pixel saturated at 0 or 1
    eps, step, steps = 0.15, 0.03, 10
    g = torch.Generator().manual_seed
    ours = _robust_count(m, pgd(m, x, y, eps=eps, step_size=step, steps=steps, generator=g(0)), y)
    weak = _robust_count(m, _weak_pgd_grad_through_clamp(m, x, y, eps, step, steps, g(0)), y)
    assert ours <= weak
    assert ours < weak  # the pitfall measurably weakens the attack here


# --------------------------------------------------------------------------- #
# Model state, grads, determinism, grad mode
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["fgsm", "fgsm_rs", "bim", "pgd", "trades"])
def test_mode_restored_and_no_param_grads(digits: Digits, name: str) -> None:
    torch.manual_seed(0)
    net = BNNet()
    x, y = digits.x[:16], digits.y[:16]
    run = {
        "fgsm": lambda: fgsm(net, x, y, eps=0.1),
        "fgsm_rs": lambda: fgsm(net, x, y, eps=0.1, random_start=True),
        "bim": lambda: bim(net, x, y, eps=0.1, step_size=0.03, steps=3),
        "pgd": lambda: pgd(net, x, y, eps=0.1, step_size=0.03, steps=3, restarts=2),
        "trades": lambda: trades_adversary(net, x, eps=0.1, step_size=0.03, steps=3),
    }[name]
    # Mixed modes: whole net in train, but dropout in eval.
    net.train()
    net.drop.eval()
    running = net.bn.running_mean.clone()
    run()
    assert net.training and net.bn.training and net.conv.training
    assert not net.drop.training
    assert torch.equal(net.bn.running_mean, running)  # ran in eval mode
    assert all(p.grad is None for p in net.parameters())
    assert all(p.requires_grad for p in net.parameters())
    net.eval()
    run()
    assert not any(mod.training for mod in net.modules())
    assert all(p.grad is None for p in net.parameters())


def test_frozen_params_stay_frozen(digits: Digits) -> None:
    net = BNNet()
    net.conv.weight.requires_grad_(False)
    pgd(net, digits.x[:8], digits.y[:8], eps=0.1, step_size=0.03, steps=2)
    assert not net.conv.weight.requires_grad and net.fc.weight.requires_grad
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_mode_restored_when_model_raises(digits: Digits, mode: str) -> None:
    net = RaisesOnSecondCall()
    net.train(mode == "train")
    with pytest.raises(RuntimeError, match="boom"):
        pgd(net, digits.x[:8], digits.y[:8], eps=0.1, step_size=0.03, steps=5)
    assert all(mod.training == (mode == "train") for mod in net.modules())
    assert all(p.grad is None for p in net.parameters())


def test_deterministic_with_seeded_generator(digits: Digits) -> None:
    m, x, y = digits.model, digits.x[:64], digits.y[:64]
    for norm in NORMS:
        eps = 0.1 if norm == "linf" else 1.0
        a = _all_attacks(m, x, y, eps, norm, seed=7)
        b = _all_attacks(m, x, y, eps, norm, seed=7)
        c = _all_attacks(m, x, y, eps, norm, seed=8)
        for name in a:
            assert torch.equal(a[name], b[name]), (norm, name)
        assert not torch.equal(a["pgd"], c["pgd"])
        assert not torch.equal(a["trades"], c["trades"])
    cfg = AttackConfig(eps=0.1, step_size=0.02, steps=3, restarts=2)
    r1 = run_attack(m, x, y, cfg, generator=torch.Generator().manual_seed(1))
    r2 = run_attack(m, x, y, cfg, generator=torch.Generator().manual_seed(1))
    assert torch.equal(r1, r2)


def test_works_under_no_grad_and_inference_mode(digits: Digits) -> None:
    m, x, y = digits.model, digits.x[:64], digits.y[:64]
    with torch.no_grad():
        x_adv = pgd(m, x, y, eps=0.3, step_size=0.05, steps=10, generator=torch.Generator().manual_seed(0))
        x_tr = trades_adversary(m, x, eps=0.3, step_size=0.05, steps=3)
    assert _accuracy(m, x_adv, y) < 0.1
    assert not torch.equal(x_tr, x)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
        x_inf = pgd(m, xi, yi, eps=0.3, step_size=0.05, steps=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_inf, x_adv)
    assert all(p.grad is None for p in m.parameters())


def test_input_not_modified_and_output_detached(digits: Digits) -> None:
    m = digits.model
    x = digits.x[:16].clone().requires_grad_(True)
    before = x.detach().clone()
    x_adv = pgd(m, x, digits.y[:16], eps=0.1, step_size=0.03, steps=3)
    assert torch.equal(x.detach(), before)
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert x.grad is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_with_cpu_generator(digits: Digits) -> None:  # pragma: no cover - hardware dependent
    m = _mlp().cuda()
    x, y = digits.x[:16].cuda(), digits.y[:16].cuda()
    out = pgd(m, x, y, eps=0.1, step_size=0.03, steps=2, generator=torch.Generator().manual_seed(0))
    assert out.device == x.device
    check_attack_bounds(x, out, eps=0.1, norm="linf")


# --------------------------------------------------------------------------- #
# Losses
# --------------------------------------------------------------------------- #


def test_attack_loss_hand_computed() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.5, 3.0, 1.0, 0.0]])
    y = torch.tensor([0, 2])
    ce = attack_loss(logits, y, "ce")
    lse0 = math.log(sum(math.exp(v) for v in (2.0, 1.0, 0.0, -1.0)))
    lse1 = math.log(sum(math.exp(v) for v in (0.5, 3.0, 1.0, 0.0)))
    np.testing.assert_allclose(ce.numpy(), [lse0 - 2.0, lse1 - 1.0], rtol=1e-6)
    np.testing.assert_allclose(attack_loss(logits, y, "margin").numpy(), [1.0 - 2.0, 3.0 - 1.0], rtol=1e-6)
    # dlr: -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)
    # row 0: sorted 2,1,0 -> -(2 - 1) / (2 - 0) = -0.5; row 1: sorted 3,1,0.5 -> -(1 - 3) / (3 - 0.5) = 0.8
    np.testing.assert_allclose(attack_loss(logits, y, "dlr").numpy(), [-0.5, 0.8], rtol=1e-5)
    with pytest.raises(SpecError, match="dlr"):
        attack_loss(logits[:, :2], torch.tensor([0, 1]), "dlr")
    with pytest.raises(SpecError, match="loss"):
        attack_loss(logits, y, "hinge")


# --------------------------------------------------------------------------- #
# AttackConfig
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "cw"}, "name"),
        ({"norm": "l1"}, "norm"),
        ({"loss": "hinge"}, "loss"),
        ({"eps": -0.1}, "eps"),
        ({"eps": float("nan")}, "eps"),
        ({"step_size": -1.0}, "step_size"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"restarts": 0}, "restarts"),
        ({"random_start": "yes"}, "random_start"),
    ],
)
def test_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(SpecError, match=field):
        AttackConfig(**kwargs)


def test_function_validation(digits: Digits) -> None:
    m, x, y = digits.model, digits.x[:4], digits.y[:4]
    with pytest.raises(SpecError, match="eps"):
        pgd(m, x, y, eps=-1.0, step_size=0.1, steps=2)
    with pytest.raises(SpecError, match="steps"):
        pgd(m, x, y, eps=0.1, step_size=0.1, steps=0)
    with pytest.raises(SpecError, match="norm"):
        fgsm(m, x, y, eps=0.1, norm="l0")
    with pytest.raises(SpecError, match="loss"):
        bim(m, x, y, eps=0.1, step_size=0.1, steps=1, loss="nll")
    with pytest.raises(SpecError, match="restarts"):
        pgd(m, x, y, eps=0.1, step_size=0.1, steps=1, restarts=0)
    with pytest.raises(SpecError, match="steps"):
        trades_adversary(m, x, eps=0.1, step_size=0.1, steps=0)
    with pytest.raises(SpecError, match="alpha"):
        fgsm(m, x, y, eps=0.1, alpha=-0.1)


def test_config_roundtrip_and_describe() -> None:
    for cfg in (
        AttackConfig(),
        AttackConfig(name="fgsm", norm="l2", eps=0.5, random_start=False, loss="margin"),
        AttackConfig(name="bim", eps=0.3, step_size=0.01, steps=7, loss="dlr"),
        AttackConfig(restarts=5, random_start=False),
    ):
        d = cfg.to_dict()
        assert set(d) == {"name", "norm", "eps", "step_size", "steps", "restarts", "random_start", "loss"}
        assert AttackConfig.from_dict(d) == cfg
    assert AttackConfig.from_dict({"eps": "8/255"}).eps == pytest.approx(8 / 255)
    assert AttackConfig.from_dict({"steps": 10}).steps == 10
    with pytest.raises(SpecError, match="epsilon"):
        AttackConfig.from_dict({"epsilon": 0.1})
    with pytest.raises(SpecError, match="mapping"):
        AttackConfig.from_dict([("eps", 0.1)])  # type: ignore[arg-type]
    text = AttackConfig().describe()
    assert text == "PGD-20 linf eps=8/255 (0.0314) step=2/255 restarts=1 loss=ce random_start"
    text = AttackConfig(eps=0.3, step_size=0.01, steps=7, norm="l2").describe()
    assert "7" in text and "eps=0.3" in text and "l2" in text
    assert AttackConfig(name="bim", steps=3).describe().startswith("BIM-3 linf eps=8/255")
    assert "FGSM-RS" in AttackConfig(name="fgsm").describe()
    for name in ATTACKS:  # every name a config accepts is described under its own name
        assert AttackConfig(name=name).describe().lower().startswith(name)


def test_run_attack_dispatch(digits: Digits) -> None:
    m, x, y = digits.model, digits.x[:32], digits.y[:32]
    g = torch.Generator().manual_seed
    cfg = AttackConfig(eps=0.1, step_size=0.02, steps=4, restarts=2, loss="margin")
    assert torch.equal(
        run_attack(m, x, y, cfg, generator=g(0)),
        pgd(m, x, y, eps=0.1, step_size=0.02, steps=4, restarts=2, loss="margin", generator=g(0)),
    )
    cfg = AttackConfig(name="bim", eps=0.1, step_size=0.02, steps=4)
    assert torch.equal(run_attack(m, x, y, cfg), bim(m, x, y, eps=0.1, step_size=0.02, steps=4))
    cfg = AttackConfig(name="fgsm", eps=0.1, random_start=True, norm="l2")
    assert torch.equal(
        run_attack(m, x, y, cfg, generator=g(0)),
        fgsm(m, x, y, eps=0.1, norm="l2", random_start=True, generator=g(0)),
    )
    with pytest.raises(SpecError):
        run_attack(m, x, y, {"name": "pgd"})  # type: ignore[arg-type]


@pytest.mark.parametrize("attack", ["pgd", "fgsm", "trades"])
def test_batch_statistics_mode_leaves_running_stats_and_modes_untouched(attack):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10))
    model.train()
    model(torch.rand(16, 1, 8, 8))  # give the running statistics non-default values
    bn = model[1]
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    if attack == "pgd":
        x_adv = pgd(model, x, y, eps=0.1, step_size=0.05, steps=3, bn="batch")
    elif attack == "fgsm":
        x_adv = fgsm(model, x, y, eps=0.1, random_start=True, bn="batch")
    else:
        x_adv = trades_adversary(model, x, eps=0.1, step_size=0.05, steps=3, bn="batch")
    after = bn.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert bn.momentum == 0.1 and model.training and bn.training
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    # With batch statistics the attack sees the function being trained: the objective it ascends,
    # measured in train mode, is at least its value at the clean input (CE) or above zero (TRADES' KL).
    with torch.no_grad():
        if attack == "trades":
            kl = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(model(x), 1), reduction="sum")
            assert kl > 1e-3
        else:
            assert F.cross_entropy(model(x_adv), y) >= F.cross_entropy(model(x), y) - 1e-4


def test_unknown_bn_mode_is_named():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(SpecError, match="bn"):
        pgd(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), eps=0.1, step_size=0.05, steps=1, bn="frozen")


# --------------------------------------------------------------------------- #
# The kernel (dse.robust.kernel)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 0.5)])
def test_project_lands_in_ball_and_box_and_is_idempotent(norm: str, eps: float) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8, generator=gen)
    far = x + 2 * torch.randn(x.shape, generator=gen)
    p = kernel.project(far, x, eps, norm)
    check_attack_bounds(x, p, eps=eps, norm=norm)
    assert torch.allclose(kernel.project(p, x, eps, norm), p, atol=1e-6)
    inside = kernel.random_init(x, eps, norm, torch.Generator().manual_seed(1))
    check_attack_bounds(x, inside, eps=eps, norm=norm)
    assert torch.equal(kernel.project(inside, x, eps, norm), inside)
    assert torch.equal(inside, kernel.random_init(x, eps, norm, torch.Generator().manual_seed(1)))


def test_ascent_step_sizes() -> None:
    x = torch.zeros(3, 1, 2, 2)
    grad = torch.tensor([[1.0, -2.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0]]).view(3, 1, 2, 2)
    linf = kernel.ascent_step(x, grad, 0.1, "linf").flatten(1)
    assert torch.equal(linf[0], torch.tensor([0.1, -0.1, 0.0, 0.1]))
    l2 = kernel.ascent_step(x, grad, 0.5, "l2").flatten(1)
    assert l2[0].norm().item() == pytest.approx(0.5) and l2[2].norm().item() == pytest.approx(0.5)
    assert torch.equal(l2[1], torch.zeros(4)), "a zero gradient does not move the sample"


def test_grad_and_logits_match_autograd(digits: Digits) -> None:
    m, x, y = digits.model, digits.x[:8], digits.y[:8]
    grad, out = kernel.grad_and_logits(m, x, kernel.loss_objective(y, "margin"))
    leaf = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(attack_loss(m(leaf), y, "margin").sum(), leaf)
    assert torch.allclose(grad, ref) and not out.requires_grad
    assert torch.equal(out, m(x).detach())
    assert torch.equal(kernel.input_grad(m, x, kernel.loss_objective(y, "margin")), grad)


def test_attack_mode_enables_grad_and_restores_flags_on_error() -> None:
    net = BNNet()
    net.train()
    net.drop.eval()
    before = [mod.training for mod in net.modules()]
    with pytest.raises(RuntimeError, match="inside"):
        with torch.no_grad(), kernel.attack_mode(net):
            assert torch.is_grad_enabled() and not any(mod.training for mod in net.modules())
            raise RuntimeError("inside")
    assert [mod.training for mod in net.modules()] == before


def test_argument_checks_and_fractions() -> None:
    assert kernel.check_int("seed", -3, None) == -3
    with pytest.raises(SpecError, match="seed must be an integer, got True"):
        kernel.check_int("seed", True, None)
    with pytest.raises(SpecError, match="steps must be >= 1, got 0"):
        kernel.check_int("steps", 0, 1)
    assert kernel.check_nonneg("eps", "8/255") == pytest.approx(8 / 255)
    with pytest.raises(SpecError, match="ratio must be > 0"):
        kernel.check_positive("ratio", 0)
    with pytest.raises(SpecError, match="unknown norm 'l1' \\(expected one of: linf, l2\\)"):
        kernel.check_choice("norm", "l1", kernel.NORMS)
    assert kernel.fmt_fraction(8 / 255) == "8/255" and kernel.fmt_fraction(0.1) == "0.1"
    assert kernel.fmt_fraction(0.0) == "0"
    assert kernel.fmt_eps(2 / 255) == "2/255 (0.0078)" and kernel.fmt_eps(0.3) == "0.3"

