"""Throughput of the standard evaluation suite on MobileNet-tiny W=0.35 E=6, 32x32 RGB inputs.

Runs ``dse.suites.evaluate_suite(suite="standard")`` (PGD-50 x 5 restarts, APGD-CE, APGD-T with 9
target classes; l_inf eps 8/255) and prints images/s per attack and for the whole suite, next to one
PGD-50 run by dse and by torchattacks on the same batch (the ratio says what dse's PGD costs against
the reference implementation).

With the CIFAR-10 subset (``--data-root``, default ../shared/data/cifar10-subset) the model is first
trained naturally for a few epochs and the first ``--samples`` clean-correct test images are attacked
(the suite skips misclassified ones after its first attack); without it, uniform noise, a random-init
model and its own predictions as labels. PGD's extra restarts run only on still-robust samples, so
on a non-robust model PGD-50 x 5 costs about one run; the worst case (all five restarts) is printed
too. APGD runs all its iterations either way.

Usage: ``python bench/eval_suite.py [--samples 64] [--batch-size 64] [--threads N] [--device cpu]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dse.attacks import AttackConfig, pgd
from dse.data import Split, load_dataset
from dse.models import build_model
from dse.suites import SUITES, evaluate_suite
from dse.training import default_recipe, train

CIFAR = dict(in_channels=3, num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"


def _model_and_data(n: int, root: Path, epochs: int, device: torch.device) -> tuple[torch.nn.Module, Split, str]:
    torch.manual_seed(0)
    model = build_model({"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 6}, **CIFAR)
    if (root / "cifar-10-batches-py" / "test_batch").is_file():
        data = load_dataset("cifar10", root=root, val_fraction=0.0)
        train(model, data, default_recipe("cifar10", method="natural", epochs=epochs, eval_every=0), device=device)
        model = model.to(device).eval()
        return model, data.test.to(device), f"CIFAR-10 test images from {root}, model trained {epochs} natural epochs"
    x = torch.rand(n, 3, 32, 32, device=device)
    model = model.to(device).eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, Split(x=x, y=y), "uniform noise (no CIFAR-10 found), random-init model, labels = its predictions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", type=Path, default=SHARED)
    parser.add_argument("--train-epochs", type=int, default=3, help="natural epochs on the CIFAR-10 subset first")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, data, source = _model_and_data(args.samples, args.data_root, args.train_epochs, device)
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        clean = model(data.x).argmax(1) == data.y
    keep = torch.nonzero(clean).squeeze(1)[: args.samples]  # attacks run on clean-correct samples only
    data = Split(x=data.x[keep], y=data.y[keep])
    x, y = data.x, data.y
    attack = AttackConfig(eps=8 / 255, step_size=2 / 255, steps=20)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; {len(data)} images: {source}")
    print(f"model MobileNet-tiny W=0.35 E=6, {len(data)} clean-correct images attacked; suite standard = {SUITES['standard']}")

    start = time.perf_counter()
    out = evaluate_suite(model, data, suite="standard", attack=attack, batch_size=args.batch_size)
    total = time.perf_counter() - start
    print(f"{'attack':12s} {'seconds':>8s} {'images/s':>9s} {'robust acc':>11s}")
    for name, entry in out["per_attack"].items():
        print(f"{name:12s} {entry['seconds']:8.1f} {len(data) / entry['seconds']:9.2f} {entry['robust_acc']:11.3f}")
    print(f"{'suite':12s} {total:8.1f} {len(data) / total:9.2f} {out['robust_acc']:11.3f}")

    import torchattacks

    generator = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    pgd(model, x, y, eps=attack.eps, step_size=attack.eps / 4, steps=50, generator=generator)
    t_dse = time.perf_counter() - t0
    t0 = time.perf_counter()
    torchattacks.PGD(model, eps=attack.eps, alpha=attack.eps / 4, steps=50, random_start=True)(x, y)
    t_ta = time.perf_counter() - t0
    worst = total - out["per_attack"]["pgd-50x5"]["seconds"] + 5 * t_dse
    print(f"suite, worst case (all 5 PGD restarts run on every sample): ~{len(data) / worst:.2f} images/s")
    print(f"PGD-50, one run: dse {len(data) / t_dse:.2f} images/s, torchattacks {len(data) / t_ta:.2f} images/s,"
          f" ratio dse/torchattacks {t_ta / t_dse:.2f}x")

if __name__ == "__main__":
    main()
