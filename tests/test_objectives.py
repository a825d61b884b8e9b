"""One suite over every registered objective, plus checks of each measure's maths."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dse import SpecError
from dse.data import Split, iterate_batches
from dse.robust.attacks import AttackConfig, run_attack
from dse.robust.evaluate import Predictions, accuracy, eps_sweep, predict, transfer_predictions
from objectives import OBJECTIVES, EvalSettings, evaluate_objectives, get_objective, measurement
from objectives._lipschitz import local_lipschitz
from tests.conftest import make_model

SETTINGS = EvalSettings(attack=AttackConfig(eps=0.1, step_size=0.025, steps=10), max_samples=60, lipschitz_steps=5)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_is_a_finite_deterministic_number(name, trained_digits_model, digits):
    objective = OBJECTIVES[name]
    if objective.extra == "onnx":
        pytest.importorskip("onnxruntime", reason="ort_latency_ms needs the onnx extra")
    assert objective.name == name
    assert objective.direction in ("maximize", "minimize")
    assert objective.description
    trained_digits_model.train()
    first = objective(trained_digits_model, digits.test, SETTINGS)
    assert trained_digits_model.training, "the caller's train mode must be restored"
    trained_digits_model.eval()
    second = objective(trained_digits_model, digits.test, SETTINGS)
    assert not trained_digits_model.training
    assert isinstance(first, float) and math.isfinite(first)
    if objective.deterministic:
        assert first == second
    else:
        assert first > 0 and second > 0


def test_shared_cache_gives_the_same_values(trained_digits_model, digits):
    names = [n for n, o in OBJECTIVES.items() if o.deterministic]
    together = evaluate_objectives(trained_digits_model, digits.test, SETTINGS, names)
    alone = {n: OBJECTIVES[n](trained_digits_model, digits.test, SETTINGS) for n in names}
    assert together == pytest.approx(alone)


def test_accuracy_definitions(trained_digits_model, digits):
    data = SETTINGS.samples(digits.test)
    with torch.no_grad():
        expected = (trained_digits_model(data.x).argmax(1) == data.y).float().mean().item()
    scores = evaluate_objectives(trained_digits_model, digits.test, SETTINGS, ["natural_acc", "robust_acc"])
    assert scores["natural_acc"] == pytest.approx(expected)
    assert scores["natural_acc"] > 0.5, "the fixture model should have learned digits"
    assert scores["robust_acc"] < scores["natural_acc"]


def test_eps_zero_robust_equals_natural_and_no_instability(trained_digits_model, digits):
    settings = EvalSettings(attack=AttackConfig(eps=0.0, step_size=0.0, steps=5), max_samples=60)
    scores = evaluate_objectives(trained_digits_model, digits.test, settings, ["natural_acc", "robust_acc", "pert_instability"])
    assert scores["robust_acc"] == scores["natural_acc"]
    assert scores["pert_instability"] == pytest.approx(0.0, abs=1e-9)


def test_instability_is_the_mean_kl():
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([[2.0, -1.0], [0.5, 1.0]]))

        def forward(self, x):
            return x.flatten(1)[:, :2] @ self.w

    model = Fixed()
    x = torch.tensor([[[[0.2, 0.7]]], [[[0.9, 0.1]]]])
    data = Split(x=x, y=torch.tensor([0, 1]))
    settings = EvalSettings(attack=AttackConfig(eps=0.1, step_size=0.05, steps=3, random_start=False))
    cache: dict = {}
    value = OBJECTIVES["pert_instability"](model, data, settings, cache=cache)
    p = torch.softmax(cache["logits"]["clean"].double(), 1)
    q = torch.softmax(cache["logits"]["adv"].double(), 1)
    assert value == pytest.approx((p * (p / q).log()).sum(1).mean().item())
    assert value > 0


def test_local_lipschitz_of_a_linear_map_is_its_l1_norm():
    """For f(x) = w.x with one output, max |w.d| / ||d||_inf over the ball is ||w||_1."""
    torch.manual_seed(0)
    w = torch.randn(1, 16)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 1, bias=False))
    model[1].weight.data = w
    x = torch.full((3, 1, 4, 4), 0.5)
    values = local_lipschitz(model, x, eps=0.05, step_size=0.02, steps=5)
    assert values == pytest.approx(torch.full((3,), w.abs().sum().item()), rel=1e-3)


def test_lipschitz_bound_is_eq5_and_grows_with_width_and_expansion(digits):
    def bound(w, e):
        return OBJECTIVES["lipschitz_bound"](make_model(digits, {"arch": "mobilenet_tiny", "width_mult": w, "expand_ratio": e}), digits.test, SETTINGS)

    model = make_model(digits, {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 6})
    expected = sum(
        math.log10(math.sqrt(b.conv_pwl.out_channels) + math.sqrt(b.conv_dw.out_channels)) for b in model.blocks
    )
    assert bound(0.35, 6) == pytest.approx(expected)
    assert bound(0.35, 6) < bound(0.65, 6) < bound(1.0, 6)
    assert bound(0.35, 6) < bound(0.35, 10) < bound(0.35, 20)


def test_cost_objectives_match_the_profile(digits):
    from dse.profile import profile_model

    model = make_model(digits)
    prof = profile_model(model, in_channels=1, image_size=8)
    assert OBJECTIVES["params"](model, digits.test, SETTINGS) == prof["params"]
    assert OBJECTIVES["macs"](model, digits.test, SETTINGS) == prof["macs"]


def test_unknown_objective_and_measurement_record(digits):
    with pytest.raises(SpecError, match="unknown 'accuracy'"):
        get_objective("accuracy")
    record = measurement(SETTINGS, digits.test)
    assert record["samples"] == 60
    assert "PGD-10" in record["attack"] and "eps=0.1" in record["attack"]


def test_settings_round_trip():
    assert EvalSettings.from_dict(SETTINGS.to_dict()) == SETTINGS


# --------------------------------------------------------------------------- the accuracy-under-attack loop


def test_predictions_read_offs_hand_computed():
    p = Predictions(
        y=torch.tensor([0, 1, 1, 0]),
        clean=torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [1.0, 0.0]]),
        adv=torch.tensor([[0.0, 2.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]]),
    )
    assert p.clean_correct().tolist() == [True, True, False, True]
    assert p.adv_correct().tolist() == [False, True, True, True]
    assert p.robust().tolist() == [False, True, False, True]
    assert (p.natural_acc(), p.adv_acc(), p.robust_acc()) == (0.75, 0.75, 0.5)
    kl = [2 * math.tanh(1.0), 0.0, 3 * math.tanh(1.5), 0.0]  # KL(softmax([a, 0]) || softmax([0, a])) = a tanh(a/2)
    assert p.instability() == pytest.approx(sum(kl) / 4)


def test_predict_matches_the_attack_batch_by_batch_and_restores_modes(trained_digits_model, digits):
    model = trained_digits_model
    data = Split(x=digits.test.x[:50], y=digits.test.y[:50])
    attack = AttackConfig(eps=0.1, step_size=0.025, steps=3)
    seen: list[bool] = []
    handle = model.register_forward_pre_hook(lambda m, _: seen.append(m.training))
    model.train()
    modules = list(model.modules())
    modules[1].eval()  # mixed flags come back exactly
    before = [m.training for m in modules]
    try:
        g = torch.Generator().manual_seed(4)
        p = predict(model, data, lambda x, y: run_attack(model, x, y, attack, generator=g), batch_size=20)
        assert [m.training for m in modules] == before
        assert seen and not any(seen), "evaluated in eval mode"
    finally:
        handle.remove()
        model.eval()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        batches = list(iterate_batches(data, 20, shuffle=False))
        adv = torch.cat([model(run_attack(model, x, y, attack, generator=g)) for x, y in batches])
        # batch by batch: oneDNN may round a batch of 50 differently from batches of 20 (1e-9 seen)
        clean = torch.cat([model(x) for x, _ in batches])
        assert torch.equal(p.adv, adv) and torch.equal(p.clean, clean)
    assert torch.equal(p.y, data.y)
    g = torch.Generator().manual_seed(4)
    fn = lambda x, y: run_attack(model, x, y, attack, generator=g)  # noqa: E731
    plain = accuracy(model, data, fn, batch_size=20, require_clean=False)
    assert plain == p.adv_acc() and p.robust_acc() <= min(plain, p.natural_acc())
    assert accuracy(model, data, batch_size=7) == p.natural_acc()


def test_transfer_predictions_score_the_source_examples_on_every_target(trained_digits_model, digits):
    data = Split(x=digits.test.x[:30], y=digits.test.y[:30])
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    attack = AttackConfig(eps=0.1, step_size=0.025, steps=2)
    g = torch.Generator().manual_seed(0)
    own, theirs = transfer_predictions(
        trained_digits_model, [trained_digits_model, other], data,
        lambda x, y: run_attack(trained_digits_model, x, y, attack, generator=g), batch_size=16,
    )
    g = torch.Generator().manual_seed(0)
    batches = list(iterate_batches(data, 16, shuffle=False))
    x_adv = [run_attack(trained_digits_model, x, y, attack, generator=g) for x, y in batches]
    with torch.no_grad():  # batch by batch: oneDNN may round other batch sizes differently (1e-9 seen)
        assert torch.equal(own.adv, torch.cat([trained_digits_model(xa) for xa in x_adv]))
        assert torch.equal(theirs.adv, torch.cat([other(xa) for xa in x_adv]))
        assert torch.equal(theirs.clean, torch.cat([other(x) for x, _ in batches]))


def test_eps_sweep_starts_clean_and_stops_below_the_bar(trained_digits_model, digits):
    data = Split(x=digits.test.x[:40], y=digits.test.y[:40])
    points = eps_sweep(trained_digits_model, data, [0.0, 0.05, 0.5, 0.9], norm="linf", steps=5, step_ratio=0.25,
                       require_clean=False, stop_below=0.1)
    assert points[0] == {"eps": 0.0, "acc": accuracy(trained_digits_model, data)}
    assert [p["eps"] for p in points] == [0.0, 0.05, 0.5], "0.5 breaks the model, so 0.9 is never attacked"
    assert points[-1]["acc"] < 0.1 <= points[-2]["acc"]
    robust = eps_sweep(trained_digits_model, data, [0.0, 0.05], norm="linf", steps=5, step_ratio=0.25)
    assert robust[1]["acc"] <= points[1]["acc"], "robust accuracy also requires the clean sample right"

