"""Training throughput of MobileNet-tiny W=0.35 E=6 (32x32 CIFAR-sized, batch 128) on CPU or a GPU.

Prints, measured in one run:

* the device's dense matmul rate (fp32, and bf16 where asked or on a GPU), the reference peaks;
* images/s of a training step of each method, the way dse trains: :func:`dse.training.train` itself
  on random 32x32 data (tensors sliced into batches, batched crop/flip, channels_last, device-side
  generators and totals); one epoch warms up, the next is timed (``epoch_seconds``);
* the same work done by a plain PyTorch loop (``TensorDataset`` + ``DataLoader`` with per-image
  augmentation, NCHW, the usual hand-written attacks: PGD and FastAT through ``loss.backward()``
  w.r.t. the perturbation, TRADES' reference inner loop, free AT's global noise), and the ratio;
* the GFLOP/s each represents (from the counted MACs) as a fraction of the matmul peaks.

Methods: ``natural``, ``pgd`` (PGD-10 AT), ``trades`` (TRADES, 10 steps), ``fast_at`` (FGSM-RS),
``free`` (free AT, m = 4). A step is one optimizer step (a free replay is one); images/s counts the
images of the timed optimizer steps. FLOPs per image, F = a forward pass (2 x MACs): a training
step 3F; an attack step (forward + input gradient) 2F; so natural 3F, PGD-K (2K + 3)F, TRADES-K
(2K + 7)F (a clean forward, K steps, two forwards and two backwards), FastAT 5F, a free replay 3F.

Usage::

    python bench/train_throughput.py [--device cuda] [--steps 3] [--batch-size 128]
        [--methods natural,pgd,trades,fast_at,free] [--attack-dtype float32|bfloat16|both]
        [--attack-bn default,batch,frozen_batch,frozen_batch:3] [--no-fold] [--profile N] [--amp] [--compile]
        [--no-plain] [--workers N]

``--attack-bn`` lists the recipe's ``attack_bn`` modes to time, a ``dse`` row each: ``default`` (row
``dse``: the method's own default, what a recipe that does not say gets), ``batch``, ``frozen_batch``
(frozen statistics let BatchNorm fold into the convolutions unless ``--no-fold``), ``eval``;
``MODE:N`` also sets ``attack_batch_steps: N`` (the attack's last N steps with batch statistics); ``--attack-dtype both`` adds a dse row per adversarial method whose attack passes run under bfloat16
autocast (recipe ``attack_dtype``); ``--amp`` trains dse with CUDA AMP; ``--compile`` with
``torch.compile``.
"""

from __future__ import annotations

import argparse
import time
import typing
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from dse.data import Dataset as DseDataset
from dse.data import Split, dataset_spec
from dse.models import build_model
from dse.profile import profile_model
from dse.training import Recipe, seed_everything, train

EPS, STEP, STEPS, BETA, REPLAYS = 8 / 255, 2 / 255, 10, 6.0, 4
METHODS = ("natural", "pgd", "trades", "fast_at", "free")
#: forward passes (F) per image and optimizer step, see the module docstring
FORWARDS = {"natural": 3, "pgd": 2 * STEPS + 3, "trades": 2 * STEPS + 7, "fast_at": 5, "free": 3}
RECIPE_METHOD = {"natural": "natural", "pgd": "pgd_at", "trades": "trades", "fast_at": "fast_at", "free": "free"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """Dense ``n x n`` matmul rate in GFLOP/s (n = 8192 on a GPU, 2048 on CPU)."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def _model(channels_last: bool) -> torch.nn.Module:
    model = build_model(
        {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 6},
        in_channels=3, num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    )
    return model.to(memory_format=torch.channels_last) if channels_last else model


# --------------------------------------------------------------------------- dse: train() itself


def dse_loop(
    x: torch.Tensor, y: torch.Tensor, method: str, args: argparse.Namespace, attack_dtype: str,
    attack_bn: tuple[str | None, int] = (None, 0),
) -> float:
    """Seconds per optimizer step of :func:`dse.training.train`: epoch 2 of 2 (epoch 1 warms up).
    ``attack_bn``: the recipe's ``attack_bn`` (``None``: the method's default) and ``attack_batch_steps``."""
    data = DseDataset(spec=dataset_spec("cifar10"), train=Split(x=x, y=y), val=None, test=Split(x=x[:1], y=y[:1]))
    mode, batch_steps = attack_bn
    recipe = Recipe.parse({
        "method": RECIPE_METHOD[method], "epochs": 2, "batch_size": args.batch_size, "lr": 0.05,
        "attack": {"name": "pgd", "eps": EPS, "step_size": STEP, "steps": STEPS}, "trades_beta": BETA,
        "free_replays": REPLAYS, "eval_every": 0, "amp": args.amp, "compile": args.compile,
        "attack_dtype": attack_dtype if method not in ("natural", "free") else "float32",
        "attack_fold_bn": not args.no_fold,
        **({} if mode is None else {"attack_bn": mode, "attack_batch_steps": batch_steps}),
    })
    seed_everything(0)
    model = _model(channels_last=True)
    if args.profile:  # one warm-up epoch, then the per-op table of one profiled epoch
        train(model, data, recipe.model_copy(update={"epochs": 1}), device=args.device)
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
        with profile(activities=activities) as prof:
            train(model, data, recipe.model_copy(update={"epochs": 1}), device=args.device)
        print(f"--- {method} (attack_bn {recipe.attack_bn}, attack_batch_steps {recipe.attack_batch_steps}): ops by "
              f"self time, one epoch of {len(x) // args.batch_size} steps")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile))
    history = train(model, data, recipe, device=args.device)
    steps = len(x) // args.batch_size * (REPLAYS if method == "free" else 1)
    return history[-1]["epoch_seconds"] / steps


# --------------------------------------------------------------------------- a plain PyTorch loop


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


def _plain_step(method: str, model: torch.nn.Module, opt: torch.optim.Optimizer) -> Callable[..., int]:
    """One plain training step of ``method`` (returns the optimizer steps it took)."""
    noise: dict[str, torch.Tensor] = {}

    def update(loss: torch.Tensor) -> None:
        opt.zero_grad()
        loss.backward()
        opt.step()

    def step(xb: torch.Tensor, yb: torch.Tensor) -> int:
        if method == "natural":
            update(F.cross_entropy(model(xb), yb))
        elif method in ("pgd", "fast_at"):  # grad w.r.t. delta through the clamp, model in train mode
            delta = torch.empty_like(xb).uniform_(-EPS, EPS).requires_grad_(True)
            steps, size = (STEPS, STEP) if method == "pgd" else (1, 1.25 * EPS)
            for _ in range(steps):
                F.cross_entropy(model((xb + delta).clamp(0, 1)), yb).backward()
                delta.data = (delta + size * delta.grad.sign()).clamp(-EPS, EPS)
                delta.grad.zero_()
            update(F.cross_entropy(model((xb + delta.detach()).clamp(0, 1)), yb))
        elif method == "trades":  # the reference code: eval mode for the attack, KL(sum), autograd.grad
            model.eval()
            with torch.no_grad():
                p_nat = F.softmax(model(xb), dim=1)
            x_adv = xb + 0.001 * torch.randn_like(xb)
            for _ in range(STEPS):
                x_adv.requires_grad_(True)
                loss_kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_nat, reduction="sum")
                (grad,) = torch.autograd.grad(loss_kl, [x_adv])
                x_adv = torch.min(torch.max(x_adv.detach() + STEP * grad.sign(), xb - EPS), xb + EPS).clamp(0, 1)
            model.train()
            logits = model(xb)
            kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
            update(F.cross_entropy(logits, yb) + BETA * kl)
        else:  # free: the paper's code, a global noise replayed m times
            if noise.get("d") is None or noise["d"].shape != xb.shape:
                noise["d"] = torch.zeros_like(xb)
            for _ in range(REPLAYS):
                d = noise["d"].clone().requires_grad_(True)
                loss = F.cross_entropy(model((xb + d).clamp(0, 1)), yb)
                opt.zero_grad()
                loss.backward()
                noise["d"] = (noise["d"] + EPS * d.grad.sign()).clamp(-EPS, EPS)
                opt.step()
            return REPLAYS
        return 1

    return step


def plain_loop(x: torch.Tensor, y: torch.Tensor, method: str, args: argparse.Namespace) -> float:
    """Seconds per optimizer step: ``args.steps`` batches timed after one warm-up batch."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = _model(channels_last=False).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    cuda = device.type == "cuda"
    loader = DataLoader(_Augmented(TensorDataset(x, y)), batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.workers, pin_memory=cuda, persistent_workers=args.workers > 0)
    step = _plain_step(method, model, opt)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            for xb, yb in loader:
                yield xb.to(device, non_blocking=cuda), yb.to(device, non_blocking=cuda)

    it = batches()
    step(*next(it))
    _sync(device)
    start, taken = time.perf_counter(), 0
    for _ in range(args.steps):
        taken += step(*next(it))
    _sync(device)
    return (time.perf_counter() - start) / taken


# --------------------------------------------------------------------------- main


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--steps", type=int, default=3, help="timed batches per measurement (after a warm-up)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--attack-dtype", choices=("float32", "bfloat16", "both"), default="float32",
                        help="dse's attack passes: float32, bfloat16 autocast, or both (one row each)")
    parser.add_argument("--attack-bn", default="default,batch,frozen_batch",
                        help="comma-separated recipe attack_bn modes to time: default (the method's own), batch, "
                             "frozen_batch, eval; MODE:N adds attack_batch_steps N (e.g. frozen_batch:3)")
    parser.add_argument("--no-fold", action="store_true", help="recipe attack_fold_bn: false (BatchNorm not folded)")
    parser.add_argument("--amp", action="store_true", help="dse trains with CUDA AMP (recipe amp)")
    parser.add_argument("--compile", action="store_true", help="dse trains through torch.compile (recipe compile)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="before timing, print the torch profiler's top N ops of each dse row")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain PyTorch loops")
    parser.add_argument("--workers", type=int, default=None, help="plain loop's DataLoader workers (default 4 on CUDA, else 0)")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {', '.join(unknown)}")
    args.methods = methods
    modes = typing.get_args(Recipe.model_fields["attack_bn"].annotation)  # the recipe's own choices
    items = [m.strip() for m in args.attack_bn.split(",") if m.strip()]
    args.attack_bn = []
    for item in items:
        mode, _, steps = item.partition(":")
        if (mode != "default" and mode not in modes) or (steps and (not steps.isdigit() or mode == "default")):
            parser.error(f"--attack-bn: {item!r}: expected default or one of {', '.join(modes)}, optionally MODE:N")
        args.attack_bn.append((None if mode == "default" else mode, int(steps or 0)))
    if not args.attack_bn:
        parser.error("--attack-bn: empty")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.workers is None:
        args.workers = 4 if args.device.startswith("cuda") else 0
    return args


def main() -> None:
    args = _parse()
    device = torch.device(args.device)
    n = args.batch_size * args.steps
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    macs = profile_model(_model(False), in_channels=3, image_size=32)["macs"]
    peaks = {"fp32": matmul_gflops(device, torch.float32)}
    if device.type == "cuda" or args.attack_dtype != "float32":
        peaks["bf16"] = matmul_gflops(device, torch.bfloat16)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}; MobileNet-tiny W=0.35 E=6: {macs / 1e6:.2f} MMACs/image, "
          f"batch {args.batch_size}, {args.steps} timed batches")
    print("dense matmul: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()) + " (reference peaks)")
    flags = [f for f, on in (("amp", args.amp), ("compile", args.compile)) if on]
    print(f"dse = dse.training.train{' (' + ', '.join(flags) + ')' if flags else ''}; plain = DataLoader + "
          f"hand-written loop, {args.workers} workers")
    header = f"{'method':<10} {'loop':<16} {'s/step':>8} {'img/s':>9} {'GFLOP/s':>9}" + "".join(
        f" {'% ' + k:>7}" for k in peaks)
    print(header)
    dtypes = {"float32": ["float32"], "bfloat16": ["bfloat16"], "both": ["float32", "bfloat16"]}[args.attack_dtype]
    for method in args.methods:
        flops = FORWARDS[method] * 2 * macs
        runs: list[tuple[str, Callable[[], float]]] = []
        adversarial = method not in ("natural", "free")
        default = Recipe.parse({"method": RECIPE_METHOD[method]})
        for bn in args.attack_bn if adversarial else [(None, 0)]:
            for dtype in dtypes if adversarial else ["float32"]:
                mode, k = bn
                label = ("dse" if mode is None else "dse-" + mode.replace("_batch", "")) + (f"+{k}b" if k else "")
                label += "" if dtype == "float32" else "-bf16"
                runs.append((label, lambda dtype=dtype, bn=bn: dse_loop(x, y, method, args, dtype, bn)))
        if adversarial:
            print(f"{method:<10} (dse = the recipe's default for {default.method}: attack_bn {default.attack_bn}"
                  + (f", attack_batch_steps {default.attack_batch_steps}" if default.attack_batch_steps else "") + ")")
        if not args.no_plain:
            runs.append(("plain", lambda: plain_loop(x, y, method, args)))
        results = {}
        for label, run in runs:
            seconds = run()
            ips = args.batch_size / seconds
            results[label] = ips
            gflops = ips * flops / 1e9
            print(f"{method:<10} {label:<16} {seconds:>8.4f} {ips:>9.1f} {gflops:>9.2f}"
                  + "".join(f" {100 * gflops / p:>6.1f}%" for p in peaks.values()), flush=True)
        for label in results:
            if label != "plain" and "plain" in results:
                print(f"{method:<10} ratio {label}/plain: {results[label] / results['plain']:.2f}x")
        for label in results:
            if label not in ("dse", "plain") and "dse" in results:
                print(f"{method:<10} ratio {label}/dse: {results[label] / results['dse']:.2f}x")


if __name__ == "__main__":
    main()
