"""Attack suites, the PGD cross-check against torchattacks, gradient-masking checks, dse eval --suite."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torchattacks  # part of the install (README: pip install --no-deps torchattacks); the suites need it
from torch import nn

from conftest import make_model
from dse.errors import SpecError
from dse.robust.attacks import AttackConfig, pgd
from dse.data import Split, load_dataset
from dse.robust.masking import CHECKS, CheckSettings, input_gradient_stats, masking_checks
from dse.robust.suites import SUITE_ATTACKS, SUITES, describe_suite, evaluate_suite, suite_attacks
from dse.training import default_recipe, seed_everything, train
from objectives import EvalSettings, check_masking, default_eval_settings, evaluate_objectives

EPS = 0.1  # the digits threat model: l_inf 0.1 (1.6 grey levels of 16)


class RoundInput(nn.Module):
    """Input quantizer with no straight-through estimator: round() has a zero gradient (masking)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


@pytest.fixture(scope="module")
def masked_model(digits):
    seed_everything(0)
    model = nn.Sequential(RoundInput(), make_model(digits))
    train(model, digits, default_recipe("digits", method="natural", epochs=10, warmup_epochs=1, eval_every=0), device="cpu")
    return model.eval()


def _attack() -> AttackConfig:
    return default_eval_settings("digits").attack


def test_suite_registry_names_known_attacks():
    assert set(SUITES) == {"quick", "standard", "full"}
    for names in SUITES.values():
        assert all(n in SUITE_ATTACKS for n in names)
    assert set(SUITES["standard"]) == {"pgd-50x5", "apgd-ce", "apgd-t"}
    assert set(SUITES["standard"]) < set(SUITES["full"])
    assert {"fab-t", "square", "cw-l2", "fgsm", "bim"} <= set(SUITES["full"])
    text = describe_suite("standard", _attack())
    assert "PGD-50" in text and "APGD-CE" in text and "APGD-T" in text and "eps=0.1" in text
    with pytest.raises(SpecError, match="suite: unknown suite 'strong'"):
        suite_attacks("strong")
    with pytest.raises(SpecError, match="unknown attack 'pgd-7'"):
        suite_attacks(["pgd-7"])


@pytest.mark.parametrize("name", sorted(SUITE_ATTACKS))
def test_every_suite_attack_stays_in_the_threat_model_and_restores_mode(name, trained_digits_model, digits):
    """Every registry entry: runs, keeps the caller's mode and RNG, never beats the clean accuracy."""
    model = trained_digits_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    state = torch.random.get_rng_state()
    try:
        out = evaluate_suite(model, digits.test, suite=[name], attack=_attack(), max_samples=24, seed=1)
    finally:
        training = model.training
        model.eval()
    assert training, "the caller's train mode is restored"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "weights and BatchNorm statistics untouched"
    assert torch.equal(torch.random.get_rng_state(), state), "the global RNG is untouched (torchattacks reseeds it)"
    assert 0.0 <= out["robust_acc"] <= out["natural_acc"]
    assert out["per_attack"][name]["robust_acc"] == pytest.approx(out["robust_acc"])
    json.dumps({k: v for k, v in out.items() if k != "_tensors"})


def test_worst_case_is_per_sample_and_cascade_agrees(trained_digits_model, digits):
    model, attack = trained_digits_model, _attack()
    out = evaluate_suite(model, digits.test, suite=["fgsm", "bim", "eval-attack"], attack=attack, max_samples=120)
    t = out["_tensors"]
    robust = (t["clean_logits"].argmax(1) == t["y"]) & (t["adv_logits"].argmax(1) == t["y"])
    assert torch.equal(robust, t["robust"]), "adv logits are the worst-case example's"
    assert out["robust_acc"] <= min(v["robust_acc"] for v in out["per_attack"].values())
    # FGSM and BIM are deterministic, so running BIM only on FGSM's survivors changes nothing.
    both = evaluate_suite(model, digits.test, suite=["fgsm", "bim"], attack=attack, max_samples=120)
    cascade = evaluate_suite(model, digits.test, suite=["fgsm", "bim"], attack=attack, max_samples=120, cascade=True)
    assert cascade["mode"] == "cascade"
    assert cascade["robust_acc"] == both["robust_acc"]
    accs = [v["robust_acc"] for v in cascade["per_attack"].values()]
    assert accs == sorted(accs, reverse=True), "cascade figures are cumulative"


def test_eps_zero_suite_equals_natural_accuracy(trained_digits_model, digits):
    attack = dataclasses.replace(_attack(), eps=0.0)
    out = evaluate_suite(trained_digits_model, digits.test, suite=["pgd-50x5", "apgd-ce", "fgsm"], attack=attack, max_samples=60)
    assert out["robust_acc"] == out["natural_acc"]


def test_dse_pgd_agrees_with_torchattacks_pgd_within_one_point(pgd_at_model, full_digits):
    """Cross-check against an independent implementation: same model, same threat model and budget."""
    data = full_digits.test
    attack = _attack()
    x, y = data.x, data.y
    mine = pgd(pgd_at_model, x, y, eps=attack.eps, step_size=attack.step_size, steps=attack.steps,
               generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torchattacks.PGD(pgd_at_model, eps=attack.eps, alpha=attack.step_size, steps=attack.steps, random_start=True)(x, y)
    with torch.no_grad():
        clean = pgd_at_model(x).argmax(1) == y
        acc_mine = (clean & (pgd_at_model(mine).argmax(1) == y)).float().mean().item()
        acc_theirs = (clean & (pgd_at_model(theirs).argmax(1) == y)).float().mean().item()
    assert 0.3 < acc_mine < clean.float().mean().item(), "a meaningful robust accuracy to compare"
    assert abs(acc_mine - acc_theirs) <= 0.01, (acc_mine, acc_theirs)


def test_pgd_at_model_standard_suite_is_no_weaker_and_checks_pass(pgd_at_model, full_digits):
    """Acceptance: on a PGD-AT digits model the standard suite scores <= PGD-20 and no check fires."""
    settings = dataclasses.replace(default_eval_settings("digits"), max_samples=120)
    quick = evaluate_objectives(pgd_at_model, full_digits.test, settings, ["robust_acc"])["robust_acc"]
    cache: dict = {}
    standard = evaluate_objectives(
        pgd_at_model, full_digits.test, dataclasses.replace(settings, suite="standard"), ["robust_acc"], cache=cache
    )["robust_acc"]
    assert standard <= quick
    assert standard > 0.4, "PGD-AT made the model robust; the check below is about a real model"
    assert set(cache["suite"]["per_attack"]) == set(SUITES["standard"])
    report = check_masking(pgd_at_model, full_digits.test, settings, cache=cache)
    assert report["masking_flags"] == [], report["checks"]
    assert set(report["checks"]) == set(CHECKS)
    assert report["checks"]["not_broken_at_large_eps"]["acc"] <= 0.05


def test_masked_gradients_are_flagged(masked_model, digits):
    """An input quantizer without STE: PGD sees zero gradients and Square walks past it."""
    report = masking_checks(masked_model, digits.test, attack=_attack(), settings=CheckSettings(samples=100))
    assert "zero_or_nonfinite_gradients" in report["masking_flags"]
    assert "black_box_beats_white_box" in report["masking_flags"]
    assert report["checks"]["zero_or_nonfinite_gradients"]["zero_fraction"] == 1.0
    assert report["checks"]["black_box_beats_white_box"]["square"] < report["checks"]["black_box_beats_white_box"]["white_box"]


def test_gradient_stats_count_zero_and_nonfinite(trained_digits_model, digits):
    data = Split(x=digits.test.x[:20], y=digits.test.y[:20])
    assert input_gradient_stats(trained_digits_model, data) == {"zero_fraction": 0.0, "nonfinite_fraction": 0.0}

    class InfGrad(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = trained_digits_model

        def forward(self, x):
            return self.inner(x + torch.sqrt(x - x.detach()))  # forward unchanged; d sqrt(u)/du at 0 is inf

    stats = input_gradient_stats(InfGrad(), data)
    assert stats["nonfinite_fraction"] == 1.0


def test_checks_disabled_and_settings_validated():
    assert masking_checks(nn.Linear(2, 2), Split(x=torch.zeros(2, 1, 2, 2), y=torch.zeros(2, dtype=torch.long)),
                          attack=_attack(), settings=CheckSettings(enabled=False))["masking_flags"] == []
    assert CheckSettings.from_dict(False).enabled is False
    assert CheckSettings.from_dict({"samples": 50}).samples == 50
    for bad, field in (({"samples": 0}, "samples"), ({"tolerance": 2}, "tolerance"), ({"eps_multiples": [-1]}, "eps_multiples"),
                       ({"square_queries": -1}, "square_queries"), ({"bogus": 1}, "bogus")):
        with pytest.raises(SpecError, match=f"checks.{field}"):
            CheckSettings.from_dict(bad)


def test_eval_settings_take_a_suite_and_checks():
    s = EvalSettings.from_dict({"suite": "standard", "checks": {"samples": 64}})
    assert s.uses_suite and s.checks.samples == 64
    assert EvalSettings.from_dict(s.to_dict()) == s
    assert "APGD-T" in s.describe_attack()
    assert not EvalSettings(suite="quick").uses_suite
    with pytest.raises(SpecError, match="suite"):
        EvalSettings(suite="strongest")
    with pytest.raises(SpecError, match="checks"):
        EvalSettings(checks=3)


def test_cli_eval_suite_json(tmp_path, capsys, trained_digits_model, digits):
    from dse.checkpoint import save_checkpoint
    from dse.cli import main

    ckpt = save_checkpoint(tmp_path / "m.pt", trained_digits_model, candidate={"arch": "mobilenet_tiny", "width_mult": 0.35,
                           "expand_ratio": 2}, data={"dataset": "digits", "subset": 600, "val_fraction": 0.2, "seed": 0})
    assert main(["eval", str(ckpt), "--suite", "standard", "--eval-samples", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out["per_attack"]) == set(SUITES["standard"])
    assert out["robust_acc"] <= min(out["per_attack"].values())
    assert out["masking_flags"] == [] and set(out["checks"]) == set(CHECKS)
    assert "standard suite" in out["measurement"] and "40 samples" in out["measurement"]
    assert json.loads((tmp_path / "m.eval-standard.json").read_text())["robust_acc"] == out["robust_acc"]
    assert main(["eval", str(ckpt), "--suite", "strong"]) == 2
    assert "invalid choice: 'strong'" in capsys.readouterr().err


def test_cli_eval_curves_and_transfer(tmp_path, capsys, trained_digits_model, digits, masked_model):
    from dse.checkpoint import save_checkpoint
    from dse.cli import main

    data = {"dataset": "digits", "subset": 600, "val_fraction": 0.2, "seed": 0}
    cand = {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2}
    a = save_checkpoint(tmp_path / "a.pt", trained_digits_model, candidate=cand, data=data)
    b = save_checkpoint(tmp_path / "b.pt", masked_model[1], candidate=cand, data=data)
    assert main(["eval", str(a), "--curves", "--no-checks", "--eval-samples", "40", "--eval-steps", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["checks"] == {} and out["masking_flags"] == []
    assert out["eps_curve"]["points"][0] == {"eps": 0.0, "acc": pytest.approx(out["natural_acc"])}
    assert out["step_size_curve"]["worst_step_ratio"] in (0.05, 0.25, 0.5)
    assert main(["transfer", str(a), str(b), "--eval-samples", "50", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["models"] == ["a", "b"] and len(result["acc"]) == 2
    assert json.loads((tmp_path / "transfer.json").read_text())["acc"] == result["acc"]
    assert main(["transfer", str(a)]) == 2
    assert "at least two" in capsys.readouterr().err


def test_pgd_far_above_the_best_known_attack_is_flagged(trained_digits_model, digits):
    """PGD scoring well above a stronger attack's accuracy on the same samples: PGD's loss is starved."""
    tiny = AttackConfig(name="pgd", eps=1e-3, step_size=2.5e-4, steps=5)  # PGD ~ natural accuracy here
    settings = CheckSettings(samples=60, eps_multiples=(1.0,), square_queries=0, strong_steps=5, strong_restarts=1)
    data = Split(x=digits.test.x[:60], y=digits.test.y[:60])
    without = masking_checks(trained_digits_model, data, attack=tiny, settings=settings)
    assert "pgd_far_above_best_attack" not in without["checks"]  # nothing to compare with
    pgd_acc = without["checks"]["more_iterations_raise_accuracy"]["weak"]
    assert pgd_acc > 0.5
    low = masking_checks(trained_digits_model, data, attack=tiny, settings=settings, white_box_acc=pgd_acc - 0.2)
    assert "pgd_far_above_best_attack" in low["masking_flags"]
    assert low["checks"]["pgd_far_above_best_attack"]["best_attack"] == pytest.approx(pgd_acc - 0.2)
    close = masking_checks(trained_digits_model, data, attack=tiny, settings=settings, white_box_acc=pgd_acc - 0.02)
    assert "pgd_far_above_best_attack" not in close["masking_flags"]
    assert close["checks"]["pgd_far_above_best_attack"]["passed"]
    with pytest.raises(SpecError, match="checks.attack_gap_max"):
        CheckSettings.from_dict({"attack_gap_max": 1.5})
