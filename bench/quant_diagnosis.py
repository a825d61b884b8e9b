"""Per-layer diagnosis of a quantized candidate: why a low-bit model does (not) learn.

For every quantized conv/linear layer of a candidate it prints, on one batch of training data:

* ``kind``: first / expand (1x1) / dw (depthwise 3x3) / project (1x1) / head / last;
* ``w_err``: relative error ``||Q(W) - W|| / ||W||`` of the weights as quantized now (per-tensor
  scales or per-channel, whichever the candidate uses), and ``w_err_pc`` / ``w_err_pt`` for the
  other choice, so the effect of per-channel scales shows layer by layer;
* ``dead_ch``: output channels whose quantized weights are all zero or all one value;
* ``alpha``, ``clip``, ``zero``: the PACT clipping level and the fractions of the layer's inputs
  clipped at it and rounded to the zero level (MBN: the fraction of inputs binarized to -1);
* ``g_w``: gradient norm of the float weights through the straight-through estimator, relative
  to the weight norm (``|dL/dW| / |W|``); ``g_a``: gradient of the clipping parameters;
* ``bn_var``: batch variance / running variance of the BatchNorm after the layer (far from 1:
  the running statistics no longer describe the quantized layer's outputs).

Usage::

    python bench/quant_diagnosis.py --set quant=fixed --set weight_bits=2 --set act_bits=2 --epochs 3
    python bench/quant_diagnosis.py --set quant=mbn --set weight_bases=3 --set act_bases=1 \
        --recipe '{"quant": {"warm_start_epochs": 3}}' --epochs 4

``--epochs N`` first trains the candidate for N epochs of the digits recipe (with ``--recipe``
overrides) and diagnoses the trained model; 0 diagnoses it at initialisation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dse.candidate import validate_candidate  # noqa: E402
from dse.compress.keys import training_hooks  # noqa: E402
from dse.compress.quant import QUANT_LAYERS  # noqa: E402
from dse.compress.quantizers import dorefa_weight, mbn_weight  # noqa: E402
from dse.pipeline import build_for, data_options, load_data  # noqa: E402
from dse.training import default_recipe, seed_everything, train  # noqa: E402


def _kind(name: str, module: nn.Module, first: bool, last: bool) -> str:
    if first:
        return "first"
    if last:
        return "last"
    if isinstance(module, nn.Conv2d):
        if module.groups > 1:
            return "dw"
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("conv_pw", "conv1"):
            return "expand"
        if "head" in leaf:
            return "head"
        if "shortcut" in name:
            return "shortcut"
        return "project"
    return "linear"


def _quantized(w: torch.Tensor, module: nn.Module, per_channel: bool) -> torch.Tensor:
    mode = module.quant_mode
    if mode == "fixed":
        return dorefa_weight(w, module.weight_bits, per_channel=per_channel)
    if mode == "mbn":
        return mbn_weight(w, module.weight_bases, per_channel=per_channel)[0]
    return module.quantized_weight()


def diagnose(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, float | str]]:
    """One row per quantized layer (see the module docstring)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    first, last = layers[0][1], layers[-1][1]
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, m in layers:
        def hook(mod, inp, out, name=name):
            inputs[name] = inp[0].detach()
            outputs[name] = out.detach()
        handles.append(m.register_forward_hook(hook))
    model.train()
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    for h in handles:
        h.remove()
    modules = dict(model.named_modules())
    names = [n for n, _ in modules.items()]
    rows = []
    for name, m in layers:
        if not isinstance(m, QUANT_LAYERS):
            continue
        w = m.weight.detach()
        row: dict[str, float | str] = {"layer": name, "kind": _kind(name, m, m is first, m is last), "mode": m.quant_mode}
        q = m.quantized_weight().detach()
        row["w_err"] = float((q - w).norm() / w.norm().clamp_min(1e-12))
        if m.quant_mode in ("fixed", "mbn"):
            for tag, pc in (("pt", False), ("pc", True)):
                alt = _quantized(w, m, pc).detach()
                row[f"w_err_{tag}"] = float((alt - w).norm() / w.norm().clamp_min(1e-12))
        flat = q.reshape(q.shape[0], -1)
        row["dead_ch"] = int(((flat.max(1).values - flat.min(1).values) == 0).sum())
        xin = inputs[name]
        if getattr(m, "uses_pact", False):
            alpha = float(m.act_alpha.detach())
            row["alpha"] = alpha
            row["clip"] = float((xin.abs() >= alpha).float().mean()) if bool(m.act_signed) else float((xin >= alpha).float().mean())
            signed = bool(m.act_signed)
            lo = -alpha if signed else 0.0
            step = (alpha - lo) / (2**m.act_bits - 1)
            qin = lo + torch.round((xin.clamp(lo, alpha) - lo) / step) * step
            row["zero"] = float((qin.abs() < 1e-6 * max(alpha, 1)).float().mean()) if not signed else float("nan")
            row["g_a"] = float(m.act_alpha.grad.abs()) if m.act_alpha.grad is not None else float("nan")
        elif m.quant_mode == "mbn" and m.quantize_input:
            thr = 0.5 - m.act_shift.detach()
            row["alpha"] = float(m.act_scale.detach().mean())
            row["zero"] = float((xin <= thr[0]).float().mean())
            row["g_a"] = float(m.act_scale.grad.norm()) if m.act_scale.grad is not None else float("nan")
        g = m.weight.grad
        row["g_w"] = float(g.norm() / w.norm().clamp_min(1e-12)) if g is not None else float("nan")
        idx = names.index(name)
        bn = next((modules[n] for n in names[idx + 1 : idx + 3] if isinstance(modules[n], nn.BatchNorm2d)), None)
        if bn is not None and bn.num_features == outputs[name].shape[1]:
            var = outputs[name].transpose(0, 1).reshape(bn.num_features, -1).var(1)
            row["bn_var"] = float((var / bn.running_var.clamp_min(1e-8)).median())
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", action="append", default=[], help="candidate KEY=VALUE (arch defaults to mobilenet_tiny 0.35/6)")
    parser.add_argument("--epochs", type=int, default=0, help="train this many epochs of the digits recipe first")
    parser.add_argument("--recipe", default="{}", help="JSON recipe overrides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    cand: dict[str, object] = {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 6}
    for item in args.set:
        key, value = item.split("=", 1)
        cand[key] = yaml.safe_load(value)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seed_everything(args.seed)
    data = load_data(data_options({"dataset": "digits"}))
    model = build_for(cand, data.spec)
    if args.epochs:
        recipe = default_recipe("digits", **{"epochs": args.epochs, "seed": args.seed, "eval_every": 0, **json.loads(args.recipe)})
        hooks = training_hooks(model, validate_candidate(dict(cand)).compression, recipe.epochs,
                               quant_recipe=recipe.quant, data=data.train, batch_size=recipe.batch_size)
        hist = train(model, data, recipe, hooks=hooks, device="cpu")
        print(f"trained {args.epochs} epochs: train_acc {hist[-1]['train_acc']:.3f} loss {hist[-1]['train_loss']:.3f}")
    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(data.train), generator=gen)[: args.batch]
    x, y = data.train.x[idx], data.train.y[idx]
    rows = diagnose(model, x, y)
    cols = ["layer", "kind", "mode", "w_err", "w_err_pt", "w_err_pc", "dead_ch", "alpha", "clip", "zero", "g_w", "g_a", "bn_var"]
    print(f"candidate {cand}")
    print(" ".join(f"{c:>10}" if c != "layer" else f"{c:<28}" for c in cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if c == "layer":
                cells.append(f"{str(v)[-28:]:<28}")
            elif isinstance(v, float):
                cells.append(f"{v:>10.3g}")
            else:
                cells.append(f"{v!s:>10}")
        print(" ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
