"""Attacks continued from a start point, and training attacks whose last steps use batch statistics
(recipe ``attack_batch_steps``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dse.errors import SpecError
from dse.models import build_model
from dse.robust.attacks import pgd
from dse.robust.trades import trades_adversary


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = build_model({"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2},
                        in_channels=3, num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    return model.eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.rand(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen)


KW = {"eps": 8 / 255, "step_size": 2 / 255}


def test_pgd_continued_from_its_own_iterate_equals_one_longer_run() -> None:
    model, (x, y) = _model(), _inputs()
    whole = pgd(model, x, y, steps=5, generator=torch.Generator().manual_seed(1), **KW)
    first = pgd(model, x, y, steps=2, generator=torch.Generator().manual_seed(1), **KW)
    rest = pgd(model, x, y, steps=3, start=first, generator=torch.Generator().manual_seed(9), **KW)
    torch.testing.assert_close(rest, whole, rtol=0, atol=1e-7)
    assert not torch.equal(first, whole)  # the continuation did move


def test_trades_continued_from_its_own_iterate_equals_one_longer_run() -> None:
    model, (x, _) = _model(), _inputs()
    whole = trades_adversary(model, x, steps=4, generator=torch.Generator().manual_seed(1), **KW)
    first = trades_adversary(model, x, steps=1, generator=torch.Generator().manual_seed(1), **KW)
    rest = trades_adversary(model, x, steps=3, start=first, **KW)
    torch.testing.assert_close(rest, whole, rtol=0, atol=1e-7)


def test_a_start_point_is_projected_into_the_ball_and_box() -> None:
    model, (x, y) = _model(), _inputs()
    far = x + 0.5  # outside the ball and, for most pixels, the box
    out = pgd(model, x, y, steps=1, start=far, **KW)
    assert (out - x).abs().max() <= KW["eps"] + 1e-6
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start": torch.zeros(2, 3, 16, 16)}, "start: expected a tensor of the inputs' shape"),
        ({"start": [0.0]}, "start: expected a tensor"),
        ({"start": torch.zeros(8, 3, 16, 16), "restarts": 2}, "restarts"),
    ],
)
def test_bad_start_points_are_named(kwargs: dict, match: str) -> None:
    model, (x, y) = _model(), _inputs()
    with pytest.raises(SpecError, match=match):
        pgd(model, x, y, steps=1, **KW, **kwargs)


# --------------------------------------------------------------------------- recipe attack_batch_steps


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"attack_bn": "batch", "attack_batch_steps": 3}, "attack_batch_steps: with attack_bn batch"),
        ({"attack_bn": "frozen_batch", "attack_batch_steps": 10}, "must be below the training attack's steps"),
        ({"method": "fast_at", "attack_bn": "frozen_batch", "attack_batch_steps": 1}, "pgd_at and trades"),
        ({"attack_bn": "frozen_batch", "attack_batch_steps": -1}, "attack_batch_steps"),
    ],
)
def test_recipe_rejects_impossible_batch_steps(fields: dict, match: str) -> None:
    from dse.recipe import Recipe

    with pytest.raises(SpecError, match=match):
        Recipe.parse(fields)


@pytest.mark.parametrize("method", ["pgd_at", "trades"])
@pytest.mark.parametrize("attack_bn", ["frozen_batch", "eval"])
def test_the_last_steps_run_with_batch_statistics_from_the_first_steps_end(method: str, attack_bn: str, monkeypatch) -> None:
    from dse import training
    from dse.recipe import Recipe

    calls: list[tuple[str, int, bool, bool]] = []

    def spy(real):
        def run(net, *args, **kwargs):
            calls.append((kwargs["bn"], kwargs["steps"], kwargs.get("start") is not None, net.training))
            out = real(net, *args, **kwargs)
            starts.append(out)
            return out

        return run

    starts: list[torch.Tensor] = []
    monkeypatch.setattr(training, "pgd", spy(training.pgd))
    monkeypatch.setattr(training, "trades_adversary", spy(training.trades_adversary))
    model = _model().train()
    folded = training.fold_batchnorm(model)
    assert folded is not None
    x, y = _inputs()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attack = {"name": "pgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 7}
    recipe = Recipe.parse({"method": method, "attack": attack, "attack_bn": attack_bn, "attack_batch_steps": 3})
    training._adversarial_loss(model, x, y, recipe, torch.Generator().manual_seed(1), folded=folded)
    assert [c[:3] for c in calls] == [("eval", 4, False), ("batch", 3, True)]
    assert calls[1][3] is True  # the model itself (train mode), not the folded view
    # the attack phases left the running statistics to the training pass: one update with x_adv
    # (TRADES: x, then x_adv)
    after = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(before)
    with torch.no_grad():
        if method == "trades":
            model(x)
        model(starts[-1])
    for key, value in model.state_dict().items():
        torch.testing.assert_close(after[key], value, msg=key)


def test_method_defaults_of_attack_bn() -> None:
    from dse.recipe import METHOD_DEFAULTS, Recipe, default_recipe

    assert Recipe.parse({"method": "trades"}).attack_bn == "frozen_batch"
    assert default_recipe("cifar10").attack_bn == "frozen_batch"  # CIFAR's default method is TRADES
    assert Recipe.parse({"method": "trades", "attack_bn": "batch"}).attack_bn == "batch"
    pgd_at = Recipe.parse({"method": "pgd_at"})
    assert (pgd_at.attack_bn, pgd_at.attack_batch_steps) == ("frozen_batch", 3)
    assert default_recipe("digits").attack_batch_steps == 3  # PGD-7: 4 frozen steps, then 3 batch
    # the default never exceeds a short attack's steps; a recipe that names attack_bn gets no package
    short = {"name": "pgd", "eps": 0.1, "step_size": 0.05}
    assert Recipe.parse({"attack": {**short, "steps": 2}}).attack_batch_steps == 1
    assert Recipe.parse({"attack": {**short, "steps": 1}}).attack_batch_steps == 0
    assert Recipe.parse({"attack_bn": "frozen_batch"}).attack_batch_steps == 0
    assert Recipe.parse({"attack_bn": "batch"}).attack_batch_steps == 0
    assert Recipe.parse({"method": "fast_at"}).attack_bn == "batch"
    # a dumped recipe parses back to itself (what a trial records is what reruns it)
    for method in ("natural", "pgd_at", "trades", "fast_at", "free"):
        recipe = Recipe.parse({"method": method})
        assert Recipe.parse(recipe.model_dump(mode="json")) == recipe
    assert set(METHOD_DEFAULTS) <= {"natural", "pgd_at", "trades", "fast_at", "free"}


def test_full_training_recipe_keeps_the_studys_adversarial_choices(tmp_path) -> None:
    from dse.study.config import StudyConfig
    from dse.study.export import resolved_recipe

    config = StudyConfig.model_validate({
        "name": "s", "space": {"name": "mobilenet_tiny"}, "objectives": ["natural_acc", "params"],
        "data": {"dataset": "digits"},
        "recipe": {"method": "trades", "trades_beta": 3.0, "attack_bn": "batch", "epochs": 2, "lr": 0.01},
    })
    full = resolved_recipe(config, full=True)
    assert (full["method"], full["trades_beta"], full["attack_bn"]) == ("trades", 3.0, "batch")
    assert full["epochs"] != 2 and full["lr"] != 0.01  # the data set's full-training schedule
