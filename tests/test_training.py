"""Training methods, recipes, schedules, determinism and the per-epoch callback."""

from __future__ import annotations

import pytest
import torch

from dse import SpecError
from dse.training import METHODS, Recipe, _lr_lambda, default_recipe, seed_everything, train
from tests.conftest import make_model

FAST_ATTACK = {"name": "pgd", "eps": 0.1, "step_size": 0.05, "steps": 2}


def _small(digits):
    from dse.data import Dataset, Split

    return Dataset(
        spec=digits.spec,
        train=Split(x=digits.train.x[:128], y=digits.train.y[:128]),
        val=Split(x=digits.val.x[:40], y=digits.val.y[:40]),
        test=digits.test,
    )


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_reports_each_epoch(method, digits):
    data = _small(digits)
    seed_everything(0)
    model = make_model(data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[dict] = []
    recipe = Recipe.parse({"method": method, "epochs": 2, "batch_size": 64, "attack": FAST_ATTACK, "eval_samples": 20})
    history = train(model, data, recipe, callback=seen.append, device="cpu")
    assert seen == history and [m["epoch"] for m in history] == [1, 2]
    for metrics in history:
        assert {"train_loss", "train_acc", "lr", "val_natural_acc", "val_robust_acc", "val_pert_instability"} <= set(metrics)
        assert all(torch.isfinite(torch.tensor(float(v))) for v in metrics.values())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


@pytest.mark.parametrize(("adv_weight", "mix_mode"), [(0.9, "loss"), (0.5, "batch"), (0.0, "loss")])
def test_clean_adversarial_mixes(adv_weight, mix_mode, digits):
    data = _small(digits)
    recipe = Recipe.parse(
        {"method": "pgd_at", "epochs": 1, "batch_size": 64, "attack": FAST_ATTACK, "adv_weight": adv_weight, "mix_mode": mix_mode, "eval_every": 0}
    )
    history = train(make_model(data), data, recipe, device="cpu")
    assert history[0]["train_loss"] > 0


def test_training_is_deterministic_on_cpu(digits):
    data = _small(digits)
    recipe = Recipe.parse({"method": "pgd_at", "epochs": 1, "batch_size": 32, "attack": FAST_ATTACK, "eval_every": 0})
    states = []
    for _ in range(2):
        seed_everything(3)
        model = make_model(data)
        train(model, data, recipe, device="cpu")
        states.append(model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_training_attack_is_kept_apart_from_evaluation(digits):
    recipe = default_recipe("digits")
    assert recipe.train_attack().steps == 7
    from dse.training import default_eval_settings

    assert default_eval_settings("digits").attack.steps == 20
    assert default_eval_settings("cifar10").attack.eps == pytest.approx(8 / 255)
    assert default_recipe("cifar10").method == "trades"


def test_schedules():
    cosine = _lr_lambda(Recipe.parse({"epochs": 10, "schedule": "cosine"}), steps_per_epoch=10)
    assert cosine(0) == pytest.approx(1.0) and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)
    step = _lr_lambda(Recipe.parse({"epochs": 10, "schedule": "step", "milestones": [0.5, 0.75], "gamma": 0.1}), 10)
    assert step(49) == 1.0 and step(50) == pytest.approx(0.1) and step(80) == pytest.approx(0.01)
    warm = _lr_lambda(Recipe.parse({"epochs": 10, "warmup_epochs": 2, "schedule": "constant"}), 10)
    assert warm(0) == pytest.approx(0.05) and warm(19) == 1.0 and warm(60) == 1.0


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"method": "mart"}, "method"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1}, "lr"),
        ({"optimizer": "adam"}, "optimizer: unknown key"),
        ({"adv_weight": 1.5}, "adv_weight"),
        ({"milestones": [0.8, 0.2]}, "milestones"),
        ({"attack": {"name": "pgd", "norm": "l3"}}, "norm"),
    ],
)
def test_bad_recipes_are_named(fields, fragment):
    with pytest.raises(SpecError) as info:
        Recipe.parse(fields)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_divergence_is_reported(digits):
    data = _small(digits)
    recipe = Recipe.parse({"method": "natural", "epochs": 1, "eval_every": 0})
    model = make_model(data)
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="diverged at epoch 1"):
        train(model, data, recipe, device="cpu")


@pytest.mark.slow
def test_pgd_at_beats_natural_training_on_digits():
    """The issue's acceptance scenario (about 3 minutes on 2 cores)."""
    from dse.data import load_dataset
    from objectives import evaluate_objectives
    from dse.training import default_eval_settings

    data = load_dataset("digits")
    settings = default_eval_settings("digits")
    scores = {}
    for method in ("natural", "pgd_at"):
        seed_everything(0)
        model = make_model(data, {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 6})
        train(model, data, default_recipe("digits", method=method), device="cpu")
        scores[method] = evaluate_objectives(model, data.test, settings, ["natural_acc", "robust_acc"])
    assert scores["pgd_at"]["natural_acc"] >= 0.90
    assert scores["pgd_at"]["robust_acc"] >= scores["natural"]["robust_acc"] + 0.2
