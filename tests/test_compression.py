"""Compression candidate keys: impossible combinations are rejected when read, with one line."""

from __future__ import annotations

import pytest
import yaml

from dse import SpecError
from dse.study.config import load_study_config
from dse.models import validate_candidate

MBN = {"arch": "mobilenet_tiny", "quant": "mbn", "weight_bases": 3, "act_bases": 1}


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"quant": "mbn", "weight_bases": 0, "act_bases": 1}, "weight_bases"),
        ({"quant": "fixed", "weight_bits": 9, "act_bits": 4}, "weight_bits"),
        ({"prune_scheme": "irregular", "prune_ratio": 1.0}, "prune_ratio"),
        ({"quant": "fixed", "weight_bits": 4, "act_bits": 4, "weight_bases": 2}, "weight_bases is for quant: mbn"),
        ({"quant": "mbn", "weight_bases": 2, "act_bases": 2, "weight_bits": 4}, "weight_bits is for quant: fixed"),
        ({"quant": "fixed", "weight_bits": 4}, "needs weight_bits and act_bits"),
        ({"quant": "mbn", "weight_bases": 2}, "needs weight_bases and act_bases"),
        ({"quant": "ternary"}, "quant"),
        ({"prune_ratio": 0.5}, "needs a prune_scheme"),
        ({"prune_scheme": "funnel"}, "needs a prune_ratio"),
        ({"prune_scheme": "lottery", "prune_ratio": 0.5}, "prune_scheme"),
        ({"weight_bits": 4}, "weight_bits is for quant: fixed or pow2, not quant: none"),
    ],
)
def test_impossible_combinations_are_named(extra, fragment):
    with pytest.raises(SpecError) as info:
        validate_candidate({"arch": "mobilenet_tiny", **extra})
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_plain_candidates_are_unchanged_and_compression_keys_round_trip():
    plain = {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 6}
    assert validate_candidate(plain).model_dump() == plain
    spec = validate_candidate({**MBN, "prune_scheme": "funnel", "prune_ratio": 0.5}).model_dump()
    assert spec["quant"] == "mbn" and spec["prune_ratio"] == 0.5
    assert validate_candidate(yaml.safe_load(yaml.safe_dump(spec))).model_dump() == spec


STUDY = {
    "name": "q",
    "data": {"dataset": "digits"},
    "objectives": ["robust_acc", "params"],
    "budget": {"n_trials": 2},
}


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        ({"name": "quantization", "options": {"weight_bases": [0, 1]}}, "weight_bases"),
        ({"name": "quantization", "options": {"weight_bits": [4, 9]}}, "weight_bits"),
        ({"name": "quantization", "options": {"modes": ["fixed", "ternary"]}}, "modes"),
        ({"name": "pruning", "options": {"ratio_high": 1.0}}, "ratio_high"),
        ({"name": "pruning", "options": {"ratio_low": 0.8, "ratio_high": 0.5}}, "ratio_low"),
        ({"name": "joint", "options": {"quantization": {"act_bases": [0]}}}, "act_bases"),
        ({"name": "joint", "options": {"depth": 3}}, "depth"),
    ],
)
def test_study_files_with_impossible_space_options_are_rejected_when_read(tmp_path, space, fragment):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "space": space}))
    with pytest.raises(SpecError) as info:
        load_study_config(path)
    message = str(info.value)
    assert "study.yaml" in message and fragment in message and "\n" not in message


@pytest.mark.parametrize("scheme", ["irregular", "funnel", "admm"])
def test_pruned_sparsity_survives_training_checkpoint_eval_and_export(tmp_path, capsys, scheme):
    """Measured sparsity equals the target within 1% after training, in the checkpoint, on re-evaluation
    and after exporting and training the exported candidate again."""
    import json

    import torch

    from dse.cli import main
    from dse.models import build_model
    from dse.compress.pruning import sparsity

    base = ["--set", "arch=mobilenet_tiny", "--set", "width_mult=0.35", "--set", "expand_ratio=2",
            "--set", f"prune_scheme={scheme}", "--set", "prune_ratio=0.6", "--dataset", "digits", "--subset", "150",
            "--method", "natural", "--epochs", "3", "--eval-samples", "20", "--eval-steps", "1", "--json"]
    ckpt = tmp_path / "p.pt"
    assert main(["train", *base, "-o", str(ckpt)]) == 0
    capsys.readouterr()
    payload = torch.load(ckpt, weights_only=True)
    model = build_model(payload["candidate"], in_channels=1, num_classes=10, mean=(0.3,), std=(0.4,))
    model.load_state_dict(payload["state_dict"], strict=True)
    assert sparsity(model) == pytest.approx(0.6, abs=0.01)
    assert main(["eval", str(ckpt), "--eval-steps", "1", "--eval-samples", "20", "--no-checks", "--json"]) == 0  # checks: tests/test_suites.py
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scored["candidate"]["prune_ratio"] == 0.6
    exported = tmp_path / "exported.yaml"
    exported.write_text(yaml.safe_dump({**payload["candidate"], "data": {"dataset": "digits", "subset": 150}, "recipe": {"method": "natural", "epochs": 2}}))
    again = tmp_path / "again.pt"
    assert main(["train", str(exported), "--eval-steps", "1", "--eval-samples", "20", "-o", str(again), "--json"]) == 0
    capsys.readouterr()
    second = build_model(payload["candidate"], in_channels=1, num_classes=10, mean=(0.3,), std=(0.4,))
    second.load_state_dict(torch.load(again, weights_only=True)["state_dict"], strict=True)
    assert sparsity(second) == pytest.approx(0.6, abs=0.01)
