"""Quantized weights cached for an attack's steps (``dse.compress.freeze.cached_weights``): time side by side.

One PGD step (forward and input gradient, batch 64 of 8x8 digits-sized inputs, one thread) of each
candidate, with the weights quantized at every forward (as without the cache) and with them
quantized once; the figures are medians over ``--repeats`` rounds that alternate the two, so load
on the machine falls on both alike. The outputs are checked to be equal (the cache changes no value).

    python bench/quant_weight_cache.py [--steps 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from dse.compress.freeze import cached_weights
from dse.models import build_model

CANDIDATES = {
    "resnet20 float": {"arch": "resnet20"},
    "resnet20 fixed 2/2": {"arch": "resnet20", "quant": "fixed", "weight_bits": 2, "act_bits": 2, "per_channel": True},
    "resnet20 MBN 3x1": {"arch": "resnet20", "quant": "mbn", "weight_bases": 3, "act_bases": 1, "per_channel": True},
    "resnet20 MBN 3x3": {"arch": "resnet20", "quant": "mbn", "weight_bases": 3, "act_bases": 3, "per_channel": True},
    "mobilenet_tiny fixed 2/2": {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 6, "quant": "fixed",
                                 "weight_bits": 2, "act_bits": 2, "per_channel": True},
    "mobilenet_tiny MBN 3x1": {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 6, "quant": "mbn",
                               "weight_bases": 3, "act_bases": 1, "per_channel": True},
}


def _steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    grad = x
    for _ in range(steps):
        xa = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
    return (time.perf_counter() - start) / steps, grad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="PGD steps per timing")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds (median)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x, y = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 10
    print(f"{'candidate':<26} {'per forward':>12} {'cached':>10} {'speed-up':>9}")
    for name, candidate in CANDIDATES.items():
        torch.manual_seed(0)
        model = build_model(candidate, in_channels=1, num_classes=10, mean=(0.3,), std=(0.4,)).train()
        timings: dict[bool, list[float]] = {False: [], True: []}
        grads = {}
        for _ in range(args.repeats):
            for cached in (False, True):
                with cached_weights(model) if cached else contextlib.nullcontext():
                    _steps(model, x, y, 2)  # warm-up
                    seconds, grads[cached] = _steps(model, x, y, args.steps)
                timings[cached].append(seconds)
        if not torch.equal(grads[False], grads[True]):
            raise SystemExit(f"{name}: the cached weights changed the input gradient")
        plain, fast = statistics.median(timings[False]), statistics.median(timings[True])
        print(f"{name:<26} {plain * 1e3:>9.1f} ms {fast * 1e3:>7.1f} ms {plain / fast:>8.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
