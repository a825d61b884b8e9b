"""Accuracy under an attack: the one loop behind robust accuracy, suites, masking checks, curves and transfer.

:func:`predict` visits the samples in order, batch by batch, with the model in eval mode (every
submodule's train/eval flag restored afterwards, also on error), and keeps the clean logits and the
logits on the attack's examples of every sample (:class:`Predictions`). Accuracies, per-sample
correctness and the KL instability are read off those. :func:`transfer_predictions` is the same
loop with the examples crafted on one model and scored by others; :func:`eps_sweep` runs it at a
rising sequence of PGD radii.

An attack here is any ``attack(x, y) -> x_adv`` on one batch (on the model's device), e.g.
``lambda x, y: run_attack(model, x, y, config, generator=g)``; a seeded generator shared by the
batches makes the whole evaluation repeatable.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dse.data import Split, iterate_batches
from dse.robust.attacks import pgd
from dse.robust.kernel import attack_mode, model_logits

__all__ = [
    "AttackFn",
    "Predictions",
    "accuracy",
    "correct",
    "eps_sweep",
    "first_samples",
    "model_device",
    "pgd_attack",
    "predict",
    "transfer_predictions",
]

#: ``attack(x, y) -> x_adv`` for one batch.
AttackFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True, kw_only=True)
class Predictions:
    """Logits of one model, sample by sample, on clean inputs and on an attack's examples (CPU, float32).

    Attributes:
        y: Labels ``(N,)``.
        clean: Logits on the clean inputs ``(N, C)``, or ``None`` when they were not computed.
        adv: Logits on the adversarial examples ``(N, C)``, or ``None`` without an attack.
    """

    y: Tensor
    clean: Tensor | None = None
    adv: Tensor | None = None

    def clean_correct(self) -> Tensor:
        """Per sample: the clean input is classified correctly."""
        assert self.clean is not None, "clean logits were not computed"
        return self.clean.argmax(1) == self.y

    def adv_correct(self) -> Tensor:
        """Per sample: the adversarial example is classified correctly."""
        assert self.adv is not None, "no attack was run"
        return self.adv.argmax(1) == self.y

    def robust(self) -> Tensor:
        """Per sample: classified correctly both clean and under attack (seed 000, eq. 2)."""
        return self.clean_correct() & self.adv_correct()

    def natural_acc(self) -> float:
        """Fraction of clean samples classified correctly."""
        return self.clean_correct().sum().item() / len(self.y)

    def adv_acc(self) -> float:
        """Fraction of adversarial examples classified correctly (clean correctness not required)."""
        return self.adv_correct().sum().item() / len(self.y)

    def robust_acc(self) -> float:
        """Fraction of samples classified correctly both clean and under attack."""
        return self.robust().sum().item() / len(self.y)

    def instability(self) -> float:
        """Mean ``KL(softmax(clean) || softmax(adv))`` over the samples (seed 000, eq. 3), in float64."""
        assert self.clean is not None and self.adv is not None
        log_p_clean = F.log_softmax(self.clean.double(), dim=1)
        log_p_adv = F.log_softmax(self.adv.double(), dim=1)
        kl = (log_p_clean.exp() * (log_p_clean - log_p_adv)).sum(dim=1)
        return kl.mean().item()


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer; the CPU for a model with neither."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def first_samples(data: Split, n: int | None) -> Split:
    """The first ``n`` samples of ``data`` (all of it when ``n`` is ``None`` or not smaller)."""
    if n is None or n >= len(data):
        return data
    return Split(x=data.x[:n], y=data.y[:n])


def correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Boolean mask of the samples of ``x`` that ``model`` classifies as ``y`` (no gradients)."""
    with torch.no_grad():
        return model_logits(model, x).argmax(dim=1) == y


def _cpu_logits(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model_logits(model, x).float().cpu()


def transfer_predictions(
    source: nn.Module,
    targets: Sequence[nn.Module],
    data: Split,
    attack: AttackFn | None = None,
    *,
    batch_size: int = 256,
    clean: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[Predictions]:
    """Every target's logits on the clean samples and on ``attack``'s examples crafted on ``source``.

    The samples are visited in order in batches of ``batch_size``; each batch is attacked on the
    source's device and scored by every target on its own device. Every model runs in eval mode and
    gets its train/eval flags back afterwards.

    Args:
        source: The model the attack is run on (its eval mode is set here; the attack sees it).
        targets: Models that classify the clean inputs and the examples, in order.
        data: The samples.
        attack: ``attack(x, y) -> x_adv`` on one batch; ``None`` for clean logits only.
        batch_size: Samples per batch.
        clean: Also keep the clean logits.
        progress: Called as ``progress(done, total)`` after each batch.

    Returns:
        One :class:`Predictions` per target.
    """
    n = len(data)
    y = data.y.cpu()
    devices = [model_device(t) for t in targets]
    source_device = model_device(source)
    clean_parts: list[list[Tensor]] = [[] for _ in targets]
    adv_parts: list[list[Tensor]] = [[] for _ in targets]
    with contextlib.ExitStack() as stack:
        for model in (source, *targets):
            stack.enter_context(attack_mode(model))
        done = 0
        for xb, yb in iterate_batches(data, batch_size, shuffle=False):
            if clean:
                for j, target in enumerate(targets):
                    clean_parts[j].append(_cpu_logits(target, xb.to(devices[j])))
            if attack is not None:
                x_adv = attack(xb.to(source_device), yb.to(source_device))
                for j, target in enumerate(targets):
                    adv_parts[j].append(_cpu_logits(target, x_adv.to(devices[j])))
            done += xb.shape[0]
            if progress is not None:
                progress(done, n)
    return [
        Predictions(
            y=y,
            clean=torch.cat(clean_parts[j]) if clean else None,
            adv=torch.cat(adv_parts[j]) if attack is not None else None,
        )
        for j in range(len(targets))
    ]


def predict(
    model: nn.Module,
    data: Split,
    attack: AttackFn | None = None,
    *,
    batch_size: int = 256,
    clean: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Predictions:
    """The model's logits on the clean samples and on ``attack``'s examples (:func:`transfer_predictions`
    with the model as its own target)."""
    return transfer_predictions(model, [model], data, attack, batch_size=batch_size, clean=clean, progress=progress)[0]


def accuracy(
    model: nn.Module,
    data: Split,
    attack: AttackFn | None = None,
    *,
    batch_size: int = 256,
    require_clean: bool = True,
) -> float:
    """Accuracy under ``attack`` (clean accuracy without one).

    Args:
        model: The classifier; evaluated in eval mode, its flags restored.
        data: The samples.
        attack: ``attack(x, y) -> x_adv`` on one batch, or ``None``.
        batch_size: Samples per batch.
        require_clean: Count a sample only if its clean input is classified correctly too (robust
            accuracy, seed 000 eq. 2); ``False``: plain accuracy on the examples.
    """
    if attack is None:
        return predict(model, data, batch_size=batch_size).natural_acc()
    p = predict(model, data, attack, batch_size=batch_size, clean=require_clean)
    return p.robust_acc() if require_clean else p.adv_acc()


def pgd_attack(
    model: nn.Module,
    *,
    eps: float,
    step_ratio: float,
    steps: int,
    norm: str,
    loss: str = "ce",
    restarts: int = 1,
    seed: int = 0,
) -> AttackFn:
    """PGD on ``model`` at radius ``eps`` with step ``step_ratio * eps`` and random starts from a CPU
    generator seeded with ``seed`` now (one generator for all the batches of one evaluation)."""
    generator = torch.Generator().manual_seed(seed)

    def attack(x: Tensor, y: Tensor) -> Tensor:
        return pgd(model, x, y, eps=eps, step_size=step_ratio * eps, steps=steps, norm=norm, loss=loss,
                   restarts=restarts, random_start=True, generator=generator)

    return attack


def eps_sweep(
    model: nn.Module,
    data: Split,
    radii: Sequence[float],
    *,
    norm: str,
    steps: int,
    step_ratio: float,
    loss: str = "ce",
    batch_size: int = 256,
    seed: int = 0,
    require_clean: bool = True,
    stop_below: float | None = None,
) -> list[dict[str, float]]:
    """Accuracy under :func:`pgd_attack` at each radius, in order (radius 0: the clean accuracy).

    Each radius gets a fresh generator seeded with ``seed``, so a point does not depend on the
    radii before it.

    Args:
        model: The classifier.
        data: The samples.
        radii: Radii (``>= 0``), in the order they are attacked.
        norm: Threat model.
        steps: PGD iterations.
        step_ratio: PGD step size as a fraction of the radius.
        loss: Loss PGD maximizes.
        batch_size: Samples per batch.
        seed: Seed of the random starts.
        require_clean: See :func:`accuracy`.
        stop_below: Stop after the first radius whose accuracy is strictly below this.

    Returns:
        ``[{"eps": radius, "acc": accuracy}, ...]`` for the radii attacked.
    """
    points: list[dict[str, float]] = []
    for radius in radii:
        attack = None
        if radius > 0:
            attack = pgd_attack(model, eps=radius, step_ratio=step_ratio, steps=steps, norm=norm, loss=loss, seed=seed)
        acc = accuracy(model, data, attack, batch_size=batch_size, require_clean=require_clean)
        points.append({"eps": float(radius), "acc": acc})
        if stop_below is not None and acc < stop_below:
            break
    return points
