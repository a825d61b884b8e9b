"""Forward-pass latency of MobileNet-tiny W=0.35 E=6 and ResNet-20 on 32x32 images.

Measured with the objectives' own protocols (seed 002): Algorithm 4 (one image already in
memory) and Algorithm 5 (load N = 64 images and evaluate them), each the median of the timed
repeats after warm-up runs, in eval mode under ``torch.inference_mode``. Prints the device and
the torch thread count next to the numbers.

Usage: ``python bench/latency.py [--repeats 30] [--warmup 10] [--batch-size 64] [--threads N] [--device cpu]``
"""

from __future__ import annotations

import argparse

import torch

from dse.data import Split
from dse.models import build_model
from dse.models._resnet import ResNetConfig, build_resnet
from dse.profile import profile_model
from objectives._compression import latency_batch_ms, latency_info, latency_ms

CIFAR = dict(in_channels=3, num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


def _models() -> dict[str, torch.nn.Module]:
    return {
        "MobileNet-tiny W=0.35 E=6": build_model(
            {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 6}, **CIFAR
        ),
        "ResNet-20": build_resnet(ResNetConfig(arch="resnet20"), **CIFAR),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = Split(x=torch.rand(256, 3, 32, 32), y=torch.zeros(256, dtype=torch.long))
    device = torch.device(args.device)
    info = latency_info(torch.nn.Linear(1, 1).to(device), warmup=args.warmup, repeats=args.repeats)
    print(
        f"device {info['device']} ({info['device_name']}), torch {info['torch']}, {info['torch_threads']} threads,"
        f" {args.warmup} warm-up + median of {args.repeats} repeats"
    )
    batch_head = f"{args.batch_size} images ms"
    print(f"{'model':28s} {'params':>9s} {'MMACs':>8s} {'1 image ms':>11s} {batch_head:>15s} {'ms/image':>9s}")
    for name, model in _models().items():
        model = model.to(device)
        prof = profile_model(model, in_channels=3, image_size=32)
        one = latency_ms(model, data, warmup=args.warmup, repeats=args.repeats)
        batch = latency_batch_ms(model, data, warmup=args.warmup, repeats=args.repeats, batch_size=args.batch_size)
        print(
            f"{name:28s} {prof['params']:9d} {prof['macs'] / 1e6:8.2f} {one:11.2f} {batch:15.2f}"
            f" {batch / args.batch_size:9.3f}"
        )


if __name__ == "__main__":
    main()
