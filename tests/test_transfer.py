"""Tests for dse.robust.transfer: transfer matrices of adversarial examples between small digits models."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dse.errors import SpecError
from dse.robust.attacks import AttackConfig, run_attack
from dse.data import Split, iterate_batches
from dse.robust.transfer import transfer_matrix, vulnerability

SAMPLES = 240
BATCH = 100  # batches of 100, 100 and 40: the partial last batch is exercised too
ATTACK = AttackConfig(name="pgd", eps=0.1, step_size=0.025, steps=10)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mlp(data: Split, *, seed: int, width: int, steps: int = 300) -> nn.Module:
    """A flattened-pixel MLP trained full batch with Adam (~0.2 s); the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(data.x), data.y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def models(digits, trained_digits_model):
    """Three naturally trained models: the shared tiny MobileNet and two MLPs of different width and seed."""
    return {
        "cnn": trained_digits_model,
        "mlp64": _mlp(digits.train, seed=1, width=64),
        "mlp32": _mlp(digits.train, seed=2, width=32),
    }


@pytest.fixture(scope="module")
def result(models, digits):
    return transfer_matrix(models, digits.test, attack=ATTACK, batch_size=BATCH, max_samples=SAMPLES, seed=0)


def _direct(model: nn.Module, data: Split, attack: AttackConfig, *, seed: int) -> tuple[float, float]:
    """Clean and white-box accuracy computed straight from run_attack, same batches and seed."""
    data = Split(x=data.x[:SAMPLES], y=data.y[:SAMPLES])
    generator = torch.Generator().manual_seed(seed)
    clean = adv = 0
    for x, y in iterate_batches(data, BATCH, shuffle=False):
        x_adv = run_attack(model, x, y, attack, generator=generator)
        with torch.no_grad():
            clean += int((model(x).argmax(1) == y).sum())
            adv += int((model(x_adv).argmax(1) == y).sum())
    return clean / len(data), adv / len(data)


# --------------------------------------------------------------------------- vulnerability


def test_vulnerability_hand_computed():
    assert vulnerability(0.8, 0.2) == pytest.approx(0.75)
    assert vulnerability(0.5, 0.5) == 0.0
    assert vulnerability(1.0, 0.0) == 1.0
    assert vulnerability(0.5, 0.6) == pytest.approx(-0.2)  # transferred examples may help a target
    assert vulnerability(0.0, 0.0) is None
    assert vulnerability(0, 0.3) is None


@pytest.mark.parametrize(
    ("clean", "adv", "field"),
    [(True, 0.5, "clean_acc"), (float("nan"), 0.5, "clean_acc"), (1.5, 0.5, "clean_acc"), (0.5, "0.1", "adv_acc"),
     (0.5, -0.1, "adv_acc")],
)
def test_vulnerability_bad_input(clean, adv, field):
    with pytest.raises(SpecError, match=field):
        vulnerability(clean, adv)


# --------------------------------------------------------------------------- matrix


def test_format_shapes_and_order(result, models):
    names = list(models)
    assert set(result) == {"kind", "attack", "samples", "models", "clean_acc", "acc", "vulnerability"}
    assert result["kind"] == "transfer"
    assert result["attack"] == ATTACK.describe()
    assert result["samples"] == SAMPLES
    assert result["models"] == names
    assert len(result["clean_acc"]) == 3
    assert [len(row) for row in result["acc"]] == [3, 3, 3]
    assert [len(row) for row in result["vulnerability"]] == [3, 3, 3]
    for row in result["acc"]:
        for value in row:
            assert isinstance(value, float) and 0.0 <= value <= 1.0
            assert (value * SAMPLES) == pytest.approx(round(value * SAMPLES))
    assert json.loads(json.dumps(result)) == result


def test_clean_and_diagonal_match_run_attack(result, models, digits):
    for k, model in enumerate(models.values()):
        clean, white_box = _direct(model, digits.test, ATTACK, seed=0)
        assert result["clean_acc"][k] == clean
        assert result["acc"][k][k] == white_box


def test_models_learned_and_attack_bites(result):
    assert min(result["clean_acc"]) > 0.7
    for k in range(3):
        assert result["acc"][k][k] < result["clean_acc"][k] - 0.3


def test_transfer_weaker_than_white_box(result):
    # Measured: the CNN's white-box accuracy is ~0.12 while the MLPs' examples leave it ~0.6, and
    # the MLPs keep ~0.9 on the CNN's examples against ~0.3 white-box. Between the two MLPs
    # (same architecture) transfer is stronger but still below white-box.
    acc = result["acc"]
    cnn, mlp64, mlp32 = 0, 1, 2
    for source, target in [(cnn, mlp64), (cnn, mlp32), (mlp64, cnn), (mlp32, cnn)]:
        assert acc[source][target] >= acc[target][target] + 0.2, (source, target)
    for source, target in [(mlp64, mlp32), (mlp32, mlp64)]:
        assert acc[source][target] >= acc[target][target], (source, target)


def test_vulnerability_matrix_follows_formula(result):
    clean = result["clean_acc"]
    for i, row in enumerate(result["acc"]):
        for j, value in enumerate(row):
            assert result["vulnerability"][i][j] == pytest.approx((clean[j] - value) / clean[j])
    assert all(0.3 < result["vulnerability"][k][k] <= 1.0 for k in range(3))


def test_eps_zero_changes_nothing(models, digits):
    attack = AttackConfig(name="pgd", eps=0.0, step_size=0.0, steps=1)
    out = transfer_matrix(models, digits.test, attack=attack, batch_size=BATCH, max_samples=SAMPLES)
    for row in out["acc"]:
        assert row == out["clean_acc"]
    assert all(v == 0.0 for row in out["vulnerability"] for v in row)


def test_repeatable_and_rows_independent_of_order(result, models, digits):
    again = transfer_matrix(models, digits.test, attack=ATTACK, batch_size=BATCH, max_samples=SAMPLES, seed=0)
    assert again == result
    # One fresh generator per source: reordering the models only permutes the matrix.
    order = [2, 0, 1]
    names = [result["models"][k] for k in order]
    swapped = transfer_matrix(
        [(name, models[name]) for name in names], digits.test, attack=ATTACK, batch_size=BATCH,
        max_samples=SAMPLES, seed=0,
    )
    assert swapped["models"] == names
    assert swapped["clean_acc"] == [result["clean_acc"][k] for k in order]
    assert swapped["acc"] == [[result["acc"][i][j] for j in order] for i in order]


def test_single_model_and_sample_cap(digits, models):
    out = transfer_matrix({"only": models["mlp32"]}, digits.test, attack=ATTACK, max_samples=10**6)
    assert out["samples"] == len(digits.test)
    assert len(out["acc"]) == 1 and len(out["acc"][0]) == 1


def test_modes_restored_and_eval_used(models, digits):
    cnn = models["cnn"]
    state = {k: v.clone() for k, v in cnn.state_dict().items()}
    small = {"cnn": cnn, "mlp32": models["mlp32"]}
    ref = transfer_matrix(small, digits.test, attack=ATTACK, batch_size=BATCH, max_samples=60)
    modules = list(cnn.modules())
    try:
        cnn.train()
        modules[1].eval()  # a mixed state must come back exactly
        before = [m.training for m in modules]
        out = transfer_matrix(small, digits.test, attack=ATTACK, batch_size=BATCH, max_samples=60)
        assert [m.training for m in modules] == before
        assert models["mlp32"].training is False
        # evaluated in eval mode: same numbers, and BatchNorm running statistics untouched
        assert out == ref
        for key, value in cnn.state_dict().items():
            assert torch.equal(value, state[key]), key
        # also restored when validation fails after the models were switched to eval
        with pytest.raises(SpecError, match="models"):
            transfer_matrix({"cnn": cnn, "five": nn.Sequential(nn.Flatten(), nn.Linear(64, 5))}, digits.test,
                            attack=ATTACK)
        assert [m.training for m in modules] == before
    finally:
        cnn.eval()


# --------------------------------------------------------------------------- bad input


def _linear(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, classes))


@pytest.mark.parametrize(
    "models",
    [
        {},
        [],
        [("a", _linear()), ("a", _linear())],
        {"": _linear()},
        {"  ": _linear()},
        [(3, _linear())],
        {"a": "not a model"},
        {"a": _linear(), "b": _linear(5)},
        {"a": _linear(), "b": nn.Flatten(start_dim=2)},  # (N, 1, 64): not (N, C) logits
        "a",
    ],
    ids=["empty-dict", "empty-list", "duplicate", "empty-name", "blank-name", "non-str", "not-module",
         "class-mismatch", "not-logits", "string"],
)
def test_bad_models_named(models, digits):
    with pytest.raises(SpecError, match="models"):
        transfer_matrix(models, digits.test, attack=ATTACK, max_samples=8)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"attack": {"name": "pgd"}}, "attack"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"max_samples": 0}, "max_samples"),
        ({"max_samples": True}, "max_samples"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_bad_arguments_named(kwargs, field, digits):
    args = {"attack": ATTACK, **kwargs}
    with pytest.raises(SpecError, match=field):
        transfer_matrix({"a": _linear()}, digits.test, **args)


def test_bad_data_named(digits):
    with pytest.raises(SpecError, match="data"):
        transfer_matrix({"a": _linear()}, (digits.test.x, digits.test.y), attack=ATTACK)
    empty = Split(x=digits.test.x[:0], y=digits.test.y[:0])
    with pytest.raises(SpecError, match="data"):
        transfer_matrix({"a": _linear()}, empty, attack=ATTACK)
    with pytest.raises(SpecError, match="data labels"):
        transfer_matrix({"a": _linear(5)}, digits.test, attack=ATTACK)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_models_on_their_own_device(models, digits):
    cpu = {"mlp64": models["mlp64"], "mlp32": models["mlp32"]}
    ref = transfer_matrix(cpu, digits.test, attack=ATTACK, batch_size=BATCH, max_samples=SAMPLES)
    gpu_model = _mlp(digits.train, seed=2, width=32).cuda()
    gpu_model.load_state_dict(models["mlp32"].state_dict())
    out = transfer_matrix(
        {"mlp64": models["mlp64"], "mlp32": gpu_model}, digits.test, attack=ATTACK, batch_size=BATCH,
        max_samples=SAMPLES,
    )
    assert out["clean_acc"] == pytest.approx(ref["clean_acc"], abs=2 / SAMPLES)
    for row, ref_row in zip(out["acc"], ref["acc"]):
        assert row == pytest.approx(ref_row, abs=5 / SAMPLES)
