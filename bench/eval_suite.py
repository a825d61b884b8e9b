"""Throughput of the standard evaluation suite on MobileNet-tiny W=0.35 E=6, 32x32 RGB inputs.

Runs ``dse.robust.suites.evaluate_suite(suite="standard")`` (PGD-50 x 5 restarts, APGD-CE, APGD-T with 9
target classes; l_inf eps 8/255) and prints images/s per attack and for the whole suite, next to one
PGD-50 run by dse and by torchattacks on the same batch (the ratio says what dse's PGD costs against
the reference implementation). The suite runs twice: on the model, and on its BatchNorm-folded view
(:func:`dse.robust.fold.fold_batchnorm`, what ``dse eval`` and ``dse rescore`` attack), with the ratio.

The cost depends on the model: PGD's extra restarts, and APGD-T's further target classes, run only
on samples still robust. So two cases are measured: a model trained naturally for a few epochs on the
CIFAR-10 subset (``--data-root``, default ../shared/data/cifar10-subset), attacked on its first
``--samples`` clean-correct test images (broken early: the cheap end), and a random-init model whose
own predictions are the labels (nothing breaks, every iteration of every attack runs: the expensive
end; a robust model lies between). Without the subset, only the second case runs, on uniform noise.

Usage: ``python bench/eval_suite.py [--samples 64] [--batch-size 64] [--threads N] [--device cpu] [--no-fold]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dse.robust.attacks import AttackConfig, pgd
from dse.data import Split, load_dataset
from dse.models import build_model
from dse.robust.fold import fold_batchnorm
from dse.robust.suites import SUITES, evaluate_suite
from dse.training import default_recipe, train

MBN = {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 6}
CIFAR = dict(in_channels=3, num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"


def _scenarios(n: int, root: Path, epochs: int, device: torch.device):
    """(label, model, data): a trained model, then a random-init one that nothing breaks."""
    cifar = (root / "cifar-10-batches-py" / "test_batch").is_file()
    x = None
    if cifar:
        torch.manual_seed(0)
        model = build_model(MBN, **CIFAR)
        data = load_dataset("cifar10", root=root, val_fraction=0.0)
        train(model, data, default_recipe("cifar10", method="natural", epochs=epochs, eval_every=0), device=device)
        model = model.to(device).eval()
        test = data.test.to(device)
        with torch.no_grad():
            keep = torch.nonzero(model(test.x).argmax(1) == test.y).squeeze(1)[:n]
        x = test.x[keep]
        yield f"trained {epochs} natural epochs on the CIFAR-10 subset, {n} clean-correct test images", model, Split(
            x=x, y=test.y[keep])
    torch.manual_seed(0)
    model = build_model(MBN, **CIFAR).to(device).eval()
    x = x if x is not None else torch.rand(n, 3, 32, 32, device=device)
    with torch.no_grad():
        y = model(x).argmax(1)
    yield "random init, labels = its own predictions (attacks break nothing: every iteration runs)", model, Split(x=x, y=y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", type=Path, default=SHARED)
    parser.add_argument("--no-fold", action="store_true", help="skip the BatchNorm-folded run")
    parser.add_argument("--train-epochs", type=int, default=3, help="natural epochs on the CIFAR-10 subset first")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    attack = AttackConfig(eps=8 / 255, step_size=2 / 255, steps=20)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads;"
          f" MobileNet-tiny W=0.35 E=6; suite standard = {', '.join(SUITES['standard'])}, l_inf eps 8/255")
    import torchattacks

    for label, model, data in _scenarios(args.samples, args.data_root, args.train_epochs, device):
        model = model.to(memory_format=torch.channels_last)
        print(f"\n{label}")
        totals = {}
        views = [("BatchNorm", model), ("folded", fold_batchnorm(model))] if not args.no_fold else [("BatchNorm", model)]
        for view, attacked in views:
            start = time.perf_counter()
            out = evaluate_suite(attacked, data, suite="standard", attack=attack, batch_size=args.batch_size)
            totals[view] = time.perf_counter() - start
            print(f"  [{view}] {'attack':12s} {'seconds':>8s} {'images/s':>9s} {'robust acc':>11s}")
            for name, entry in out["per_attack"].items():
                print(f"  [{view}] {name:12s} {entry['seconds']:8.1f} {len(data) / entry['seconds']:9.2f} {entry['robust_acc']:11.3f}")
            print(f"  [{view}] {'suite':12s} {totals[view]:8.1f} {len(data) / totals[view]:9.2f} {out['robust_acc']:11.3f}")
        if "folded" in totals:
            print(f"  suite speed-up of the folded view (what dse eval runs): {totals['BatchNorm'] / totals['folded']:.2f}x")
        t0 = time.perf_counter()
        pgd(model, data.x, data.y, eps=attack.eps, step_size=attack.eps / 4, steps=50, generator=torch.Generator().manual_seed(0))
        t_dse = time.perf_counter() - t0
        t0 = time.perf_counter()
        torchattacks.PGD(model, eps=attack.eps, alpha=attack.eps / 4, steps=50, random_start=True)(data.x, data.y)
        t_ta = time.perf_counter() - t0
        print(f"  PGD-50, one run: dse {len(data) / t_dse:.2f} images/s, torchattacks {len(data) / t_ta:.2f} images/s,"
              f" ratio dse/torchattacks {t_ta / t_dse:.2f}x")

if __name__ == "__main__":
    main()
