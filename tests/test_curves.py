"""Tests for dse.robust.curves on the naturally trained tiny MobileNet of conftest (not robust)."""

from __future__ import annotations

import json

import pytest
import torch

import dse.robust.curves as curves
import dse.robust.evaluate as evaluate
from dse.errors import SpecError
from dse.robust.attacks import check_attack_bounds
from dse.robust.curves import DEFAULT_EPS, eps_curve, step_size_curve
from dse.data import Split
from dse.robust.kernel import attack_mode, prepare

N = 100  # samples attacked per test
TOL = 0.03  # slack for the eps curve's monotonicity (independent random starts per radius)
RATIOS = (0.05, 0.25, 0.5)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def linf_curve(_one_thread, digits, trained_digits_model):
    return eps_curve(trained_digits_model, digits.test, steps=10, num_classes=10, max_samples=N, batch_size=64)


@pytest.fixture(scope="module")
def step_curve(_one_thread, digits, trained_digits_model):
    return step_size_curve(
        trained_digits_model, digits.test, eps=8 / 255, step_ratios=RATIOS, iterations=10, runs=2, max_samples=N
    )


def _clean_acc(model, split: Split, n: int) -> float:
    with torch.no_grad():
        return float((model(split.x[:n]).argmax(dim=1) == split.y[:n]).sum()) / n


def _modes(model) -> list[bool]:
    return [m.training for m in model.modules()]


# --------------------------------------------------------------------------- eps_curve


def test_eps_curve_format_and_json(linf_curve):
    assert linf_curve["kind"] == "eps_curve"
    assert linf_curve["attack"] == "PGD-10 linf step=0.25*eps restarts=1 loss=ce"
    assert linf_curve["norm"] == "linf"
    assert linf_curve["steps"] == 10
    assert linf_curve["samples"] == N
    assert linf_curve["chance"] == pytest.approx(0.1)
    assert all(set(p) == {"eps", "acc"} for p in linf_curve["points"])
    assert json.loads(json.dumps(linf_curve)) == linf_curve


def test_eps_curve_zero_is_clean_accuracy(linf_curve, digits, trained_digits_model):
    first = linf_curve["points"][0]
    assert first["eps"] == 0.0
    assert first["acc"] == _clean_acc(trained_digits_model, digits.test, N)


def test_eps_curve_decreases_and_stops_below_chance(linf_curve):
    points = linf_curve["points"]
    eps = [p["eps"] for p in points]
    acc = [p["acc"] for p in points]
    assert eps == list(DEFAULT_EPS["linf"][: len(points)])
    assert all(b <= a + TOL for a, b in zip(acc, acc[1:]))
    # The natural model breaks before the largest automatic radius: the sweep stopped early.
    assert len(points) < len(DEFAULT_EPS["linf"])
    assert linf_curve["below_chance_at"] == eps[-1]
    assert acc[-1] < linf_curve["chance"]
    assert all(a >= linf_curve["chance"] for a in acc[:-1])


def test_eps_curve_does_not_attack_after_stop(monkeypatch, digits, trained_digits_model):
    seen: list[float] = []
    real_pgd = evaluate.pgd

    def spy(*args, **kwargs):
        seen.append(kwargs["eps"])
        return real_pgd(*args, **kwargs)

    monkeypatch.setattr(evaluate, "pgd", spy)  # the eps sweep behind eps_curve attacks through it
    out = eps_curve(
        trained_digits_model, digits.test, eps=[0.5, 0.7, 0.9], steps=5, num_classes=10, max_samples=40
    )
    assert [p["eps"] for p in out["points"]] == [0.0, 0.5]
    assert out["below_chance_at"] == 0.5
    assert set(seen) == {0.5}


def test_eps_curve_explicit_list_and_fractions(digits, trained_digits_model):
    out = eps_curve(
        trained_digits_model, digits.test, eps=["1/255", 2 / 255], steps=3, num_classes=10, max_samples=30
    )
    assert [p["eps"] for p in out["points"]] == [0.0, 1 / 255, 2 / 255]
    assert out["below_chance_at"] is None


def test_eps_curve_l2_default_capped(digits, trained_digits_model):
    kw = {"norm": "l2", "steps": 3, "step_ratio": 0.5, "num_classes": 10, "max_samples": 30, "max_points": 3}
    out = eps_curve(trained_digits_model, digits.test, **kw)
    assert out["attack"] == "PGD-3 l2 step=0.5*eps restarts=1 loss=ce"
    assert [p["eps"] for p in out["points"]] == [0.0, 0.125, 0.25]


@pytest.mark.parametrize(
    "eps",
    [[0.1, -0.2], [0.2, 0.1], [0.1, 0.1], [], "0.1", [float("nan")], [True]],
)
def test_eps_curve_bad_eps(eps, digits, trained_digits_model):
    with pytest.raises(SpecError, match="eps"):
        eps_curve(trained_digits_model, digits.test, eps=eps, steps=1, num_classes=10, max_samples=5)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"norm": "l1"}, "norm"),
        ({"steps": 0}, "steps"),
        ({"step_ratio": 0}, "step_ratio"),
        ({"num_classes": 1}, "num_classes"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_samples": 0}, "max_samples"),
        ({"max_points": 1}, "max_points"),
        ({"seed": -1}, "seed"),
    ],
)
def test_eps_curve_bad_args(kwargs, field, digits, trained_digits_model):
    args = {"steps": 1, "num_classes": 10, "max_samples": 5, **kwargs}
    with pytest.raises(SpecError, match=field):
        eps_curve(trained_digits_model, digits.test, **args)


# --------------------------------------------------------------------------- step_size_curve


def test_step_curve_format_and_json(step_curve):
    assert step_curve["kind"] == "step_size_curve"
    assert step_curve["eps"] == pytest.approx(8 / 255)
    assert step_curve["norm"] == "linf"
    assert (step_curve["iterations"], step_curve["runs"], step_curve["samples"]) == (10, 2, N)
    assert [c["step_ratio"] for c in step_curve["curves"]] == list(RATIOS)
    for c in step_curve["curves"]:
        assert c["step_size"] == pytest.approx(c["step_ratio"] * 8 / 255)
        assert len(c["mean_acc"]) == len(c["worst_acc"]) == 11
    assert json.loads(json.dumps(step_curve)) == step_curve


def test_step_curve_monotone_and_worst_below_mean(step_curve):
    for c in step_curve["curves"]:
        mean, worst = c["mean_acc"], c["worst_acc"]
        assert all(b <= a for a, b in zip(mean, mean[1:]))
        assert all(b <= a for a, b in zip(worst, worst[1:]))
        assert all(w <= m for w, m in zip(worst, mean))
        assert mean[-1] < mean[0]  # the attack does something to a natural model
    # Run k starts from the same random points for every step size.
    assert len({c["mean_acc"][0] for c in step_curve["curves"]}) == 1
    assert len({c["worst_acc"][0] for c in step_curve["curves"]}) == 1


def test_step_curve_worst_step(step_curve):
    finals = {c["step_ratio"]: c["mean_acc"][-1] for c in step_curve["curves"]}
    assert step_curve["worst_step_ratio"] in RATIOS
    assert finals[step_curve["worst_step_ratio"]] == min(finals.values())
    assert step_curve["worst_final_acc"] == min(finals.values())
    assert step_curve["worst_step_size"] == pytest.approx(step_curve["worst_step_ratio"] * 8 / 255)


def test_step_curve_single_run_is_nonincreasing_l2(digits, trained_digits_model):
    kw = {"norm": "l2", "step_ratios": [0.25], "iterations": 6, "runs": 1, "max_samples": 40, "batch_size": 16}
    out = step_size_curve(trained_digits_model, digits.test, eps=1.0, **kw)
    (c,) = out["curves"]
    assert all(b <= a for a, b in zip(c["mean_acc"], c["mean_acc"][1:]))
    assert c["worst_acc"] == c["mean_acc"]  # one run: worst case == mean
    assert out["worst_step_ratio"] == 0.25


def test_worst_index_ties():
    # Lowest final count wins; on a tie the curve that got there sooner; then the first one.
    assert curves._worst_index([[10, 9, 8], [10, 9, 7]]) == 1
    assert curves._worst_index([[10, 9, 8], [10, 8, 8]]) == 1
    assert curves._worst_index([[10, 8, 8], [10, 8, 8]]) == 0


def test_step_curve_constant_model_full_tie():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0]))  # constant logits: always predicts class 0
    split = Split(x=torch.rand(6, 1, 2, 2), y=torch.zeros(6, dtype=torch.long))
    out = step_size_curve(model, split, eps=0.1, step_ratios=[0.5, 0.1], iterations=3, runs=2)
    assert all(c["mean_acc"] == c["worst_acc"] == [1.0] * 4 for c in out["curves"])
    assert out["worst_step_ratio"] == 0.5
    assert out["worst_final_acc"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"eps": 0}, "eps"),
        ({"eps": -0.1}, "eps"),
        ({"step_ratios": []}, "step_ratios"),
        ({"step_ratios": [0.1, 0.0]}, "step_ratios"),
        ({"step_ratios": [0.1, 0.1]}, "step_ratios"),
        ({"iterations": 0}, "iterations"),
        ({"runs": 0}, "runs"),
        ({"norm": "l0"}, "norm"),
    ],
)
def test_step_curve_bad_args(kwargs, field, digits, trained_digits_model):
    args = {"eps": 0.1, "iterations": 1, "runs": 1, "max_samples": 5, **kwargs}
    with pytest.raises(SpecError, match=field):
        step_size_curve(trained_digits_model, digits.test, **args)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 8 / 255), ("l2", 0.5)])
def test_trace_iterates_stay_in_ball(norm, eps, digits, trained_digits_model):
    x, y = prepare(digits.test.x[:32], digits.test.y[:32])
    gen = torch.Generator().manual_seed(0)
    with attack_mode(trained_digits_model):
        trace = list(
            curves._pgd_trace(
                trained_digits_model, x, y, eps=eps, step_size=0.5 * eps, iterations=4, norm=norm, generator=gen
            )
        )
    assert len(trace) == 5
    for x_adv, wrong in trace:
        check_attack_bounds(x, x_adv, eps=eps, norm=norm)
        with torch.no_grad():
            assert torch.equal(wrong, trained_digits_model(x_adv).argmax(dim=1) != y)


# --------------------------------------------------------------------------- shared behaviour


@pytest.mark.parametrize("which", ["eps", "step"])
def test_mode_restored_and_eval_during_attack(which, digits, trained_digits_model):
    model = trained_digits_model
    seen: list[bool] = []
    handle = model.register_forward_pre_hook(lambda m, _: seen.append(m.training))
    model.train()
    try:
        before = _modes(model)
        if which == "eps":
            eps_curve(model, digits.test, eps=[0.05], steps=2, num_classes=10, max_samples=20)
        else:
            step_size_curve(model, digits.test, eps=0.05, step_ratios=[0.5], iterations=2, runs=1, max_samples=20)
        assert _modes(model) == before
        assert seen and not any(seen)
    finally:
        handle.remove()
        model.eval()


def test_repeatable_with_seed(digits, trained_digits_model):
    kw = {"steps": 3, "num_classes": 10, "max_samples": 40, "eps": [4 / 255, 16 / 255], "seed": 3}
    assert eps_curve(trained_digits_model, digits.test, **kw) == eps_curve(trained_digits_model, digits.test, **kw)
    kw = {"eps": 8 / 255, "step_ratios": [0.25], "iterations": 3, "runs": 2, "max_samples": 40, "seed": 3}
    a = step_size_curve(trained_digits_model, digits.test, **kw)
    b = step_size_curve(trained_digits_model, digits.test, **kw)
    assert a == b


def test_empty_and_bad_data(trained_digits_model):
    empty = Split(x=torch.zeros(0, 1, 8, 8), y=torch.zeros(0, dtype=torch.long))
    with pytest.raises(SpecError, match="data"):
        eps_curve(trained_digits_model, empty, num_classes=10, steps=1)
    with pytest.raises(SpecError, match="data"):
        step_size_curve(trained_digits_model, (torch.zeros(1), torch.zeros(1)), eps=0.1)
