"""ONNX export of trained candidates, checked with onnxruntime, and the ``ort_latency_ms`` objective."""

from __future__ import annotations

import json
import math

import pytest
import torch

_EXTRA = "needs the onnx extra: pip install -c constraints.txt -e '.[onnx]'"
pytest.importorskip("onnx", reason=f"ONNX export {_EXTRA}")
pytest.importorskip("onnxruntime", reason=f"onnxruntime checks {_EXTRA}")

from dse import SpecError  # noqa: E402
from dse.checkpoint import save_checkpoint  # noqa: E402
from dse.compress.quant import QUANT_LAYERS  # noqa: E402
from dse.deploy import export_onnx  # noqa: E402
from dse.onnx_io import ort_logits, ort_session, require, to_onnx  # noqa: E402
from dse.training import default_recipe, seed_everything, train  # noqa: E402
from objectives import OBJECTIVES, EvalSettings  # noqa: E402
from tests.conftest import TINY, make_model  # noqa: E402

#: The ``digits`` fixture's data, as a checkpoint's ``data`` section (so the test split is the same).
DATA = {"dataset": "digits", "root": None, "subset": 600, "val_fraction": 0.2, "seed": 0}
FIXED_8 = {**TINY, "quant": "fixed", "weight_bits": 8, "act_bits": 8}


def _checkpoint(path, model, candidate):
    recipe = default_recipe("digits", method="natural", epochs=1, eval_every=0)
    return save_checkpoint(path, model, candidate=candidate, data=DATA, recipe=recipe.model_dump(mode="json"))


@pytest.fixture(scope="module")
def fixed8_model(trained_digits_model, digits):
    """Fixed-point 8/8 MobileNet-tiny: the float fixture's weights, fine-tuned one epoch with quantization."""
    seed_everything(0)
    model = make_model(digits, FIXED_8)
    missing, unexpected = model.load_state_dict(trained_digits_model.state_dict(), strict=False)
    assert not unexpected and all(k.endswith(("act_alpha", "act_signed")) for k in missing)
    recipe = default_recipe("digits", method="natural", epochs=1, lr=0.01, warmup_epochs=0, eval_every=0)
    train(model, digits, recipe, device="cpu")
    return model.eval()


def _report(name, result):
    print(f"\n{name}: agreement {result['agreement']:.4f} on {result['samples']} test samples, max |logit diff|"
          f" {result['max_abs_diff']:.2e}, torch acc {result['torch_acc']:.3f}, onnx acc {result['onnx_acc']:.3f},"
          f" opset {result['opset']}, {result['bytes']} bytes, {result['seconds']} s ({result['quantization']})")


def test_full_precision_export_agrees_with_torch(trained_digits_model, tmp_path):
    ckpt = _checkpoint(tmp_path / "fp.pt", trained_digits_model, TINY)
    result = export_onnx(ckpt, tmp_path / "out" / "fp.onnx")
    _report("float32", result)
    assert result["agreement"] >= 0.99 and result["samples"] == 360
    assert result["max_abs_diff"] < 1e-3
    assert result["torch_acc"] > 0.5 and result["quantization"] == "none" and result["pruning"] is None
    assert (tmp_path / "out" / "fp.onnx").stat().st_size == result["bytes"]
    assert not list((tmp_path / "out").glob(".*.tmp"))  # written atomically


def test_fixed_point_8bit_export_agrees_with_torch(fixed8_model, tmp_path):
    assert any(isinstance(m, QUANT_LAYERS) for m in fixed8_model.modules())
    before = {k: v.clone() for k, v in fixed8_model.state_dict().items()}
    ckpt = _checkpoint(tmp_path / "q8.pt", fixed8_model, FIXED_8)
    result = export_onnx(ckpt, tmp_path / "q8.onnx", samples=300)
    _report("fixed 8/8", result)
    assert result["quantization"] == "fixed w8/a8, first/last 8-bit" and result["samples"] == 300
    assert result["torch_acc"] > 0.5, "the quantized model should predict digits, not one class"
    assert result["agreement"] >= 0.99
    # exporting froze and released the quantizers without changing the model
    assert all(m.frozen_weight is None for m in fixed8_model.modules() if isinstance(m, QUANT_LAYERS))
    assert all(torch.equal(before[k], v) for k, v in fixed8_model.state_dict().items())


@pytest.mark.parametrize("candidate", [
    {"quant": "mbn", "weight_bases": 2, "act_bases": 2},
    {"quant": "pow2", "weight_bits": 4, "act_bits": 4, "prune_scheme": "irregular", "prune_ratio": 0.5},
], ids=["mbn", "pow2-pruned"])
def test_other_modes_export(candidate, digits):
    seed_everything(0)
    model = make_model(digits, {**TINY, **candidate}).eval()
    x = digits.test.x[:64]
    with torch.no_grad():
        expected = model(x)
    logits = ort_logits(ort_session(to_onnx(model, (1, 8, 8))), x)
    assert (logits.argmax(1) == expected.argmax(1)).float().mean() >= 0.95
    assert (logits - expected).abs().max() < 1e-3


def test_export_failure_is_a_one_line_error_naming_the_mode(digits, monkeypatch):
    def unsupported(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::linalg_solve' to ONNX opset 20 is not supported.\nmore")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    model = make_model(digits, {**TINY, "quant": "mbn", "weight_bases": 2, "act_bases": 1})
    with pytest.raises(SpecError, match=r"^quant: mbn: cannot be exported to ONNX \(Exporting .*linalg_solve") as err:
        to_onnx(model, (1, 8, 8))
    assert "\n" not in str(err.value)
    with pytest.raises(SpecError, match=r"^opset: must be a whole number >= 11"):
        to_onnx(model, (1, 8, 8), opset=9)


def test_a_missing_extra_is_named(monkeypatch):
    import importlib

    def missing(name):
        raise ImportError(name)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(SpecError, match=r"onnxruntime is not installed: .*'onnx' extra .*\.\[onnx\]"):
        require("onnxruntime")


def test_ort_latency_ms_is_a_positive_finite_float(trained_digits_model, digits):
    objective = OBJECTIVES["ort_latency_ms"]
    assert objective.direction == "minimize" and not objective.free and not objective.deterministic
    trained_digits_model.train()
    value = objective(trained_digits_model, digits.test, EvalSettings())
    assert trained_digits_model.training
    trained_digits_model.eval()
    print(f"\nort_latency_ms {value:.4f} ms (tiny MobileNet, 8x8 digits, 1 onnxruntime thread)")
    assert isinstance(value, float) and math.isfinite(value) and value > 0


def test_the_export_model_command(trained_digits_model, tmp_path, capsys):
    from dse.cli import main

    ckpt = _checkpoint(tmp_path / "fp.pt", trained_digits_model, TINY)
    assert main(["export-model", str(ckpt), "-o", str(tmp_path / "fp.onnx"), "--samples", "64", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["samples"] == 64 and result["agreement"] >= 0.99 and (tmp_path / "fp.onnx").is_file()
    assert main(["export-model", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
