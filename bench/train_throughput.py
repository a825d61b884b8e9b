"""Training throughput of MobileNet-tiny W=0.35 E=6 (32x32, batch 128) on this machine.

Prints, measured in one run:

* the machine's dense fp32 matmul GFLOP/s (2048x2048), the reference peak;
* images/s of one natural and one PGD-10 training step, the way dse trains (tensors sliced
  into batches, batched crop/flip, channels_last, input gradients via ``torch.autograd.grad``),
  and the GFLOP/s that represents (from the counted MACs) as a fraction of the matmul peak;
* the same work done by a plain PyTorch loop (``TensorDataset`` + ``DataLoader`` with
  per-image augmentation, NCHW, PGD through ``loss.backward()`` w.r.t. the perturbation),
  and the ratio dse / plain.

Usage: ``python bench/train_throughput.py [--steps 3] [--batch-size 128]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from dse.robust.attacks import pgd
from dse.data import Split, iterate_batches, random_crop_flip
from dse.models import build_model
from dse.profile import profile_model

EPS, STEP, STEPS = 8 / 255, 2 / 255, 10


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def _model(channels_last: bool) -> torch.nn.Module:
    model = build_model(
        {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 6},
        in_channels=3, num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    )
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _time_steps(step, batches, steps: int) -> float:
    """Median seconds per step after one warm-up step."""
    it = iter(batches)
    step(*next(it))
    times = []
    for _ in range(steps):
        x, y = next(it)
        start = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dse_loop(x: torch.Tensor, y: torch.Tensor, batch: int, steps: int, adversarial: bool) -> float:
    model = _model(channels_last=True).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    split = Split(x=x, y=y)

    def step(xb, yb):
        xb = random_crop_flip(xb, generator=gen).contiguous(memory_format=torch.channels_last)
        if adversarial:
            xb = pgd(model, xb, yb, eps=EPS, step_size=STEP, steps=STEPS, generator=gen)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def batches():
        while True:
            yield from iterate_batches(split, batch, shuffle=True, generator=gen, drop_last=True)

    return _time_steps(step, batches(), steps)


class _Augmented(Dataset):
    """What a typical hand-written loop does without torchvision: per-image crop and flip."""

    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        img, label = self.base[i]
        padded = F.pad(img, (4, 4, 4, 4))
        dx, dy = torch.randint(0, 9, (2,)).tolist()
        img = padded[:, dy : dy + 32, dx : dx + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, label


def plain_loop(x: torch.Tensor, y: torch.Tensor, batch: int, steps: int, adversarial: bool) -> float:
    model = _model(channels_last=False).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(_Augmented(TensorDataset(x, y)), batch_size=batch, shuffle=True, drop_last=True)

    def step(xb, yb):
        if adversarial:  # the common hand-written PGD: grad w.r.t. delta through the clamp, model in train mode
            delta = torch.empty_like(xb).uniform_(-EPS, EPS).requires_grad_(True)
            for _ in range(STEPS):
                loss = F.cross_entropy(model((xb + delta).clamp(0, 1)), yb)
                loss.backward()
                delta.data = (delta + STEP * delta.grad.sign()).clamp(-EPS, EPS)
                delta.grad.zero_()
            xb = (xb + delta.detach()).clamp(0, 1)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def batches():
        while True:
            yield from loader

    return _time_steps(step, batches(), steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    n = args.batch_size * (args.steps + 2)
    x, y = torch.rand(n, 3, 32, 32), torch.randint(0, 10, (n,))
    macs = profile_model(_model(False), in_channels=3, image_size=32)["macs"]
    peak = matmul_gflops()
    # FLOPs per image: forward 2*MACs; a training step (forward + backward) ~3x forward; each
    # attack step is a forward plus an input-gradient backward, ~2x forward.
    flops_natural = 3 * 2 * macs
    flops_pgd = flops_natural + STEPS * 2 * 2 * macs
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, MobileNet-tiny W=0.35 E=6: {macs / 1e6:.2f} MMACs/image")
    print(f"dense fp32 matmul 2048x2048: {peak:.1f} GFLOP/s (reference peak)")
    print(f"{'step':<12} {'loop':<7} {'s/step':>8} {'img/s':>8} {'GFLOP/s':>8} {'% peak':>7}")
    for name, adversarial, flops in (("natural", False, flops_natural), (f"PGD-{STEPS}", True, flops_pgd)):
        results = {}
        for loop_name, loop in (("dse", dse_loop), ("plain", plain_loop)):
            seconds = loop(x, y, args.batch_size, args.steps, adversarial)
            ips = args.batch_size / seconds
            gflops = ips * flops / 1e9
            results[loop_name] = ips
            print(f"{name:<12} {loop_name:<7} {seconds:>8.3f} {ips:>8.1f} {gflops:>8.2f} {100 * gflops / peak:>6.1f}%")
        print(f"{name:<12} ratio dse/plain: {results['dse'] / results['plain']:.2f}x")


if __name__ == "__main__":
    main()
