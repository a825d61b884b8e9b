"""The dse command line: profile, train, eval; JSON output; one-line errors with exit code 2."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dse.cli import main
from tests.test_models import PAPER_ROWS

FAST = ["--set", "recipe.attack={name: pgd, eps: 0.1, step_size: 0.05, steps: 2}", "--eval-steps", "3"]
BASE = ["--set", "arch=mobilenet_tiny", "--set", "width_mult=0.35", "--set", "expand_ratio=2"]


def run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    payload = json.loads(lines[-1]) if code == 0 and "--json" in argv else None
    return code, payload, err


@pytest.mark.parametrize(("w", "e", "params_m", "macs_m"), PAPER_ROWS[:1])
def test_profile_json(capsys, w, e, params_m, macs_m):
    code, result, _ = run(
        capsys, "profile", "--set", "arch=mobilenet_tiny", "--set", f"width_mult={w}", "--set", f"expand_ratio={e}",
        "--dataset", "cifar10", "--json",
    )
    assert code == 0
    assert result["params"] / 1e6 == pytest.approx(params_m, rel=0.01)
    assert result["macs"] / 1e6 == pytest.approx(macs_m, rel=0.01)


def test_profile_from_file_with_layers(capsys, tmp_path):
    path = tmp_path / "cand.yaml"
    path.write_text("arch: mobilenet_tiny\nwidth_mult: 0.5\nexpand_ratio: 4\ndata: {dataset: digits}\n")
    code, result, _ = run(capsys, "profile", str(path), "--layers", "--json")
    assert code == 0 and result["input"] == [1, 8, 8]
    assert sum(layer["macs"] for layer in result["layers"]) == result["macs"]


def test_profile_is_seeded_so_compressed_bytes_repeat(capsys):
    """compressed_bytes depends on the initial weights: two profiles of one candidate agree (seed
    0 by default, recorded), another --seed gives other weights, and the caller's RNG is untouched."""
    import torch

    cand = ["--set", "arch=mobilenet_tiny", "--set", "width_mult=0.35", "--set", "expand_ratio=2", "--json"]
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    first, second = (run(capsys, "profile", *cand)[1] for _ in range(2))
    assert torch.rand(1) == expected_draw, "profiling left the global torch RNG alone"
    assert first["seed"] == second["seed"] == 0
    assert first["compressed_bytes"] == second["compressed_bytes"]
    other = run(capsys, "profile", *cand, "--seed", "7")[1]
    assert other["seed"] == 7 and other["compressed_bytes"] != first["compressed_bytes"]
    assert run(capsys, "profile", *cand, "--seed", "7")[1]["compressed_bytes"] == other["compressed_bytes"]


def test_train_writes_safe_checkpoint_and_eval_agrees(capsys, tmp_path):
    ckpt = tmp_path / "model.pt"
    code, result, err = run(
        capsys, "train", *BASE, "--dataset", "digits", "--subset", "200", "--method", "pgd_at", "--epochs", "1",
        *FAST, "--eval-samples", "50", "-o", str(ckpt), "--json",
    )
    assert code == 0, err
    for key in ("natural_acc", "robust_acc", "pert_instability", "lipschitz", "lipschitz_bound", "params", "macs"):
        assert isinstance(result[key], float), key
    assert "PGD-3" in result["measurement"]["attack"] and result["measurement"]["samples"] == 50
    assert "epoch 1/1" in err  # progress goes to stderr
    payload = torch.load(ckpt, weights_only=True)
    assert payload["candidate"]["expand_ratio"] == 2 and payload["recipe"]["method"] == "pgd_at"
    saved = json.loads(ckpt.with_suffix(".json").read_text())
    assert saved["natural_acc"] == result["natural_acc"] and len(saved["history"]) == 1
    code, again, err = run(capsys, "eval", str(ckpt), "--json")
    assert code == 0, err
    for key in ("natural_acc", "robust_acc", "pert_instability", "lipschitz"):
        assert again[key] == pytest.approx(result[key]), key


def test_train_from_candidate_file_with_recipe_file(capsys, tmp_path):
    cand = tmp_path / "cand.yaml"
    cand.write_text(yaml.safe_dump({
        "arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2,
        "data": {"dataset": "digits", "subset": 150}, "recipe": {"method": "trades", "epochs": 3},
    }))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("epochs: 1\nbatch_size: 50\nattack: {name: pgd, eps: 0.1, step_size: 0.05, steps: 2}\n")
    code, result, err = run(capsys, "train", str(cand), "--recipe", str(recipe), "--eval-samples", "30", "--eval-steps", "2", "-o", str(tmp_path / "m.pt"), "--json")
    assert code == 0, err
    assert result["method"] == "trades" and result["epochs"] == 1


def _error(capsys, *argv) -> str:
    code = main(list(argv))
    _, err = capsys.readouterr()
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("dse: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _fake_cifar(root: Path) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(20)]}, f, protocol=2)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, f, protocol=2)
    return d


def test_bad_inputs_get_one_line_errors_and_exit_2(capsys, tmp_path):
    assert "arch: unknown architecture 'resnet1'" in _error(capsys, "profile", "--set", "arch=resnet1")
    assert "widht: unknown key" in _error(capsys, "profile", "--set", "arch=mobilenet_tiny", "--set", "widht=0.5")
    assert "width_mult: 2.5 is outside" in _error(capsys, "profile", "--set", "arch=mobilenet_tiny", "--set", "width_mult=2.5")
    assert "missing.yaml" in _error(capsys, "profile", str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("arch: [mobilenet_tiny\n")
    assert "broken.yaml: not valid YAML" in _error(capsys, "profile", str(broken))
    assert "--set 'width_mult'" in _error(capsys, "profile", "--set", "width_mult")
    assert "epochs" in _error(capsys, "train", *BASE, "--epochs", "0")
    line = _error(capsys, "train", *BASE, "--dataset", "cifar10", "--data-root", str(tmp_path / "nowhere"))
    assert "nowhere" in line and "--download" in line
    assert "nope.pt: checkpoint not found" in _error(capsys, "eval", str(tmp_path / "nope.pt"))


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "studies/quickstart.yaml", "--n-trials", "-3"], "--n-trials: expected a whole number >= 1, got -3"),
        (["run", "studies/quickstart.yaml", "--n-trials", "0"], "--n-trials: expected a whole number >= 1, got 0"),
        (["train", *BASE, "--lr", "inf"], "--lr: expected a finite number > 0, got inf"),
        (["train", *BASE, "--lr", "nan"], "--lr: expected a finite number > 0, got nan"),
        (["train", *BASE, "--epochs", "2.5"], "--epochs: expected a whole number >= 1, got '2.5'"),
        (["train", *BASE, "--eval-samples", "0"], "--eval-samples: expected a whole number >= 1, got 0"),
        (["train", *BASE, "--val-fraction", "1"], "--val-fraction: expected a fraction in (0, 1), got 1"),
        (["eval", "x.pt", "--eval-eps", "-0.1"], "--eval-eps: expected a finite number > 0, got -0.1"),
        (["export", "studies/quickstart.yaml", "--trial", "-1", "-o", "x.yaml"], "--trial: expected a whole number >= 0, got -1"),
    ],
)
def test_bad_flag_values_exit_2_before_anything_runs(capsys, argv, fragment):
    line = _error(capsys, *argv)
    assert fragment in line and not Path("x.yaml").exists()


def test_json_output_is_valid_json_even_with_nan():
    from dse.cli import _finite_json

    text = json.dumps(_finite_json({"robust_acc": float("nan"), "per": [1.0, float("inf")], "ok": 0.5}), allow_nan=False)
    assert json.loads(text) == {"robust_acc": None, "per": [1.0, None], "ok": 0.5}


@pytest.mark.parametrize("damage", ["truncate", "wrong_shape", "missing"])
def test_bad_data_files_are_named(capsys, tmp_path, damage):
    d = _fake_cifar(tmp_path)
    target = d / "data_batch_3"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:500])
    elif damage == "wrong_shape":
        with open(target, "wb") as f:
            pickle.dump({b"data": np.zeros((20, 100), dtype=np.uint8), b"labels": [0] * 20}, f, protocol=2)
    else:
        target.unlink()
    line = _error(capsys, "train", *BASE, "--dataset", "cifar10", "--data-root", str(tmp_path), "--epochs", "1")
    assert "data_batch_3" in line


def test_cifar_format_end_to_end(capsys, tmp_path):
    _fake_cifar(tmp_path)
    code, result, err = run(
        capsys, "train", *BASE, "--dataset", "cifar10", "--data-root", str(tmp_path), "--method", "trades", "--epochs", "1",
        *FAST, "--eval-samples", "10", "-o", str(tmp_path / "c.pt"), "--json",
    )
    assert code == 0, err
    assert result["dataset"] == "cifar10" and result["measurement"]["samples"] == 10


def test_real_cifar_subset_trades_runs(capsys, tmp_path, cifar_dir):
    """A scaled-down TRADES run on the real CIFAR-10 subset (the full 1-2 epoch run is in the README)."""
    code, result, err = run(
        capsys, "train", *BASE, "--dataset", "cifar10", "--data-root", str(cifar_dir), "--subset", "200", "--method", "trades",
        "--epochs", "1", "--set", "recipe.attack={name: pgd, eps: 0.0313725, step_size: 0.0156863, steps: 2}",
        "--eval-steps", "3", "--eval-samples", "40", "-o", str(tmp_path / "r.pt"), "--json",
    )
    assert code == 0, err
    assert 0.0 <= result["robust_acc"] <= result["natural_acc"] <= 1.0


def test_console_script_exit_code_and_json_last_line(tmp_path):
    exe = shutil.which("dse") or str(Path(sys.executable).parent / "dse")
    ok = subprocess.run([exe, "profile", "--set", "arch=mobilenet_tiny", "--json"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0
    assert json.loads(ok.stdout.strip().splitlines()[-1])["params"] > 0
    bad = subprocess.run([exe, "profile", "--set", "arch=mobilenet_tiny", "--set", "width_mult=9"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "width_mult" in bad.stderr


@pytest.mark.parametrize(("attack", "described"), [("fgsm", "FGSM linf eps=0.1 steps=1"), ("bim", "BIM-3 linf"), ("pgd", "PGD-3 linf")])
def test_transfer_eval_attack_flag(capsys, tmp_path, attack, described):
    """``--eval-attack`` picks the attack behind the transfer matrix; ``fgsm`` is plain FGSM (seed 003's)."""
    from dse.data import dataset_spec
    from dse.models import build_model

    spec = dataset_spec("digits")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        candidate = {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2}
        model = build_model(candidate, in_channels=spec.in_channels, num_classes=spec.num_classes, mean=spec.mean, std=spec.std)
        path = tmp_path / f"m{seed}.pt"
        torch.save({"format": 1, "state_dict": model.state_dict(), "candidate": candidate, "data": {"dataset": "digits"}}, path)
        paths.append(str(path))
    code, result, err = run(capsys, "transfer", *paths, "--eval-attack", attack, "--eval-steps", "3",
                            "--eval-samples", "20", "-o", str(tmp_path / "t.json"), "--json")
    assert code == 0, err
    assert described in json.dumps(result)
