"""Evaluation suites: an ensemble of attacks, robust accuracy as the worst case per sample.

Three suites, each a list of attack names (data, not code):

* ``quick``: the study's evaluation attack (PGD-20 by default);
* ``standard``: PGD-50 with 5 random restarts, APGD-CE and APGD-T with the targeted DLR loss
  (Croce & Hein 2020);
* ``full``: ``standard`` plus FAB-T and Square (5,000 queries), i.e. AutoAttack's standard set, plus
  CW-l2, FGSM and BIM.

PGD, FGSM and BIM are dse's own (:mod:`dse.robust.attacks`). APGD-CE, APGD-T, FAB-T, Square and CW come
from torchattacks (Kim 2020), a thin adapter here: its APGD, FAB and Square are ports of the
AutoAttack reference code, it needs only torch and numpy (installed with ``--no-deps``; its declared
torchvision dependency is unused), and re-implementing FAB and Square by hand would only add risk.
adversarial-robustness-toolbox was the alternative; its AutoAttack needs ``multiprocess`` and ran
~20x slower here.

Every attack's output is projected into the threat model's ball and the [0, 1] box and checked with
:func:`dse.robust.attacks.check_attack_bounds` before it is scored, so an attack that optimizes another
norm (CW-l2 in an l_inf suite, FAB's minimal perturbations) is scored inside the threat model.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dse.data import Split
from dse.errors import SpecError
from dse.robust.attacks import AttackConfig, bim, check_attack_bounds, fgsm, pgd, run_attack
from dse.robust.evaluate import first_samples, predict
from dse.robust.kernel import attack_mode, fmt_fraction, project

__all__ = [
    "SUITES",
    "SUITE_ATTACKS",
    "SuiteAttack",
    "describe_square",
    "describe_suite",
    "evaluate_suite",
    "square_attack",
    "suite_attacks",
]

logger = logging.getLogger(__name__)

#: Attack names per suite, in the order they run.
SUITES: dict[str, tuple[str, ...]] = {
    "quick": ("eval-attack",),
    "standard": ("pgd-50x5", "apgd-ce", "apgd-t"),
    "full": ("pgd-50x5", "apgd-ce", "apgd-t", "fab-t", "square", "cw-l2", "fgsm", "bim"),
}

_TORCHATTACKS_NORM = {"linf": "Linf", "l2": "L2"}


@dataclass(frozen=True, kw_only=True)
class SuiteAttack:
    """One attack of a suite.

    Args:
        name: Registry key.
        describe: ``describe(attack) -> str``: the attack as run, given the threat model.
        run: ``run(model, x, y, attack=..., num_classes=..., seed=..., generator=...) -> x_adv``.
        white_box: False for query-only (black-box) attacks.
        library: Where the implementation comes from (``dse`` or ``torchattacks``).
    """

    name: str
    describe: Callable[[AttackConfig], str]
    run: Callable[..., Tensor]
    white_box: bool = True
    library: str = "dse"


def _torchattacks() -> Any:
    try:
        import torchattacks
    except ImportError as err:  # pragma: no cover - depends on the install
        raise SpecError(
            "this suite needs torchattacks: pip install --no-deps -c constraints.txt torchattacks"
        ) from err
    return torchattacks


@contextlib.contextmanager
def _isolated(model: nn.Module) -> Iterator[None]:
    """:func:`dse.robust.kernel.attack_mode` (eval mode, gradients on, modes restored), with the global
    RNG untouched: torchattacks reseeds it."""
    devices = [p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices), attack_mode(model):
        yield


def _eval_attack(model: nn.Module, x: Tensor, y: Tensor, *, attack: AttackConfig, generator: torch.Generator, **_: Any) -> Tensor:
    return run_attack(model, x, y, attack, generator=generator)


def _pgd_50x5(model: nn.Module, x: Tensor, y: Tensor, *, attack: AttackConfig, generator: torch.Generator, **_: Any) -> Tensor:
    return pgd(model, x, y, eps=attack.eps, step_size=attack.eps / 4, steps=50, restarts=5, norm=attack.norm, generator=generator)


def _fgsm(model: nn.Module, x: Tensor, y: Tensor, *, attack: AttackConfig, **_: Any) -> Tensor:
    return fgsm(model, x, y, eps=attack.eps, norm=attack.norm, random_start=False)


def _bim(model: nn.Module, x: Tensor, y: Tensor, *, attack: AttackConfig, **_: Any) -> Tensor:
    return bim(model, x, y, eps=attack.eps, step_size=attack.eps / 8, steps=20, norm=attack.norm)


def _apgd(loss: str) -> Callable[..., Tensor]:
    def run(model: nn.Module, x: Tensor, y: Tensor, *, attack: AttackConfig, seed: int, **_: Any) -> Tensor:
        ta = _torchattacks()
        norm = _TORCHATTACKS_NORM[attack.norm]
        with _isolated(model):
            return ta.APGD(model, norm=norm, eps=attack.eps, steps=100, n_restarts=1, loss=loss, seed=seed)(x, y)

    return run


def _apgd_t(model: nn.Module, x: Tensor, y: Tensor, *, attack: AttackConfig, seed: int, num_classes: int, **_: Any) -> Tensor:
    ta = _torchattacks()
    # n_classes sets the number of target classes to n_classes - 1: AutoAttack's 9 for 10+ classes.
    with _isolated(model):
        return ta.APGDT(
            model, norm=_TORCHATTACKS_NORM[attack.norm], eps=attack.eps, steps=100, n_restarts=1, seed=seed,
            n_classes=min(num_classes, 10),
        )(x, y)


def _fab_t(model: nn.Module, x: Tensor, y: Tensor, *, attack: AttackConfig, seed: int, num_classes: int, **_: Any) -> Tensor:
    ta = _torchattacks()
    with _isolated(model):
        return ta.FAB(
            model, norm=_TORCHATTACKS_NORM[attack.norm], eps=attack.eps, steps=100, n_restarts=1, seed=seed,
            multi_targeted=True, n_classes=min(num_classes, 10),
        )(x, y)


def square_attack(queries: int) -> Callable[..., Tensor]:
    """Square (Andriushchenko et al. 2020, torchattacks' port), a query-only attack with ``queries`` queries.

    Returns:
        ``run(model, x, y, *, attack, seed, **_) -> x_adv`` in ``attack``'s threat model (p_init 0.8,
        margin loss, one restart), the model in eval mode and the global RNG untouched.
    """

    def run(model: nn.Module, x: Tensor, y: Tensor, *, attack: AttackConfig, seed: int, **_: Any) -> Tensor:
        ta = _torchattacks()
        with _isolated(model), torch.no_grad():
            return ta.Square(
                model, norm=_TORCHATTACKS_NORM[attack.norm], eps=attack.eps, n_queries=queries, n_restarts=1,
                p_init=0.8, loss="margin", seed=seed,
            )(x, y)

    return run


def _cw_l2(model: nn.Module, x: Tensor, y: Tensor, **_: Any) -> Tensor:
    ta = _torchattacks()
    with _isolated(model):
        return ta.CW(model, c=1.0, kappa=0.0, steps=100, lr=0.01)(x, y)


def _threat(attack: AttackConfig) -> str:
    """``"linf eps=8/255"``."""
    return f"{attack.norm} eps={fmt_fraction(attack.eps)}"


def describe_square(attack: AttackConfig, queries: int = 5000) -> str:
    """One line: :func:`square_attack` with ``queries`` queries in ``attack``'s threat model."""
    return f"Square {_threat(attack)} {queries} queries, p_init=0.8, margin loss (torchattacks)"


SUITE_ATTACKS: dict[str, SuiteAttack] = {
    a.name: a
    for a in (
        SuiteAttack(name="eval-attack", describe=lambda a: a.describe(), run=_eval_attack),
        SuiteAttack(
            name="pgd-50x5",
            describe=lambda a: f"PGD-50 {_threat(a)} step=eps/4 restarts=5 loss=ce random_start",
            run=_pgd_50x5,
        ),
        SuiteAttack(
            name="apgd-ce",
            describe=lambda a: f"APGD-CE {_threat(a)} 100 iterations, 1 restart (torchattacks)",
            run=_apgd("ce"),
            library="torchattacks",
        ),
        SuiteAttack(
            name="apgd-t",
            describe=lambda a: f"APGD-T (targeted DLR) {_threat(a)} 100 iterations, up to 9 target classes (torchattacks)",
            run=_apgd_t,
            library="torchattacks",
        ),
        SuiteAttack(
            name="fab-t",
            describe=lambda a: f"FAB-T {_threat(a)} 100 iterations, up to 9 target classes (torchattacks)",
            run=_fab_t,
            library="torchattacks",
        ),
        SuiteAttack(
            name="square",
            describe=describe_square,
            run=square_attack(5000),
            white_box=False,
            library="torchattacks",
        ),
        SuiteAttack(
            name="cw-l2",
            describe=lambda a: f"CW-l2 c=1 kappa=0 100 Adam steps lr=0.01, projected into {_threat(a)} (torchattacks)",
            run=_cw_l2,
            library="torchattacks",
        ),
        SuiteAttack(name="fgsm", describe=lambda a: f"FGSM {_threat(a)} no random start", run=_fgsm),
        SuiteAttack(name="bim", describe=lambda a: f"BIM-20 {_threat(a)} step=eps/8", run=_bim),
    )
}


def suite_attacks(suite: str | Sequence[str]) -> tuple[str, ...]:
    """The attack names of a suite (a registry name, or a list of attack names).

    Raises:
        SpecError: An unknown suite or attack, named.
    """
    if isinstance(suite, str):
        if suite not in SUITES:
            raise SpecError(f"suite: unknown suite {suite!r} (known: {', '.join(SUITES)})")
        return SUITES[suite]
    names = tuple(suite)
    if not names:
        raise SpecError("suite: an attack list needs at least one attack")
    for name in names:
        if name not in SUITE_ATTACKS:
            raise SpecError(f"suite: unknown attack {name!r} (known: {', '.join(SUITE_ATTACKS)})")
    return names


def describe_suite(suite: str | Sequence[str], attack: AttackConfig) -> str:
    """One line: every attack of the suite as run under ``attack``'s threat model."""
    names = suite_attacks(suite)
    label = suite if isinstance(suite, str) else "custom"
    return f"{label} suite, worst case per sample of: " + "; ".join(SUITE_ATTACKS[n].describe(attack) for n in names)


def evaluate_suite(
    model: nn.Module,
    data: Split,
    *,
    suite: str | Sequence[str],
    attack: AttackConfig,
    batch_size: int = 256,
    max_samples: int | None = None,
    seed: int = 0,
    cascade: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Robust accuracy under an attack ensemble, the worst case per sample.

    The first attack runs on every sample; each later one on the samples the model classifies
    correctly (clean); with ``cascade`` only on those every earlier attack failed to break (as AutoAttack does: faster, but then the per-attack
    figures are the cumulative robust accuracy after each attack, not each attack on its own).

    Args:
        model: Classifier taking ``[0, 1]`` inputs; evaluated in eval mode, its mode restored.
        data: Samples to evaluate (on the model's device or the CPU).
        suite: ``quick``, ``standard``, ``full`` or a list of attack names (:data:`SUITE_ATTACKS`).
        attack: The threat model (``eps``, ``norm``); ``quick`` runs this attack itself.
        batch_size: Samples per attack call.
        max_samples: Evaluate the first this many samples only.
        seed: Seeds every attack's randomness.
        cascade: Run each attack only on samples still robust.
        progress: Called as ``progress(attack_name, done, total)`` after each batch.

    Returns:
        A JSON-able dict: ``suite``, ``measurement`` (one line), ``samples``, ``natural_acc``,
        ``robust_acc`` (worst case), ``per_attack`` (``{name: {"robust_acc", "description",
        "seconds", "white_box", "library"}}``), ``mode`` and, under the key ``"_tensors"``, per-sample
        ``clean_logits``, ``adv_logits`` (the worst-case example's) and ``robust`` (not JSON; pop it).
    """
    names = suite_attacks(suite)
    data = first_samples(data, max_samples)
    return _run_suite(model, data, names, suite=suite, attack=attack, batch_size=batch_size, seed=seed,
                      cascade=cascade, progress=progress)


def _run_suite(
    model: nn.Module,
    data: Split,
    names: tuple[str, ...],
    *,
    suite: str | Sequence[str],
    attack: AttackConfig,
    batch_size: int,
    seed: int,
    cascade: bool,
    progress: Callable[[str, int, int], None] | None,
) -> dict[str, Any]:
    n = len(data)
    if n == 0:
        raise SpecError("samples: nothing to evaluate (empty split)")
    clean_logits = predict(model, data, batch_size=batch_size).clean
    assert clean_logits is not None
    num_classes = clean_logits.shape[1]
    y_all = data.y.cpu()
    robust = clean_logits.argmax(1) == y_all
    adv_logits = clean_logits.clone()
    per_attack: dict[str, dict[str, Any]] = {}
    for name in names:
        entry = SUITE_ATTACKS[name]
        start = time.perf_counter()
        clean_ok = clean_logits.argmax(1) == y_all
        survives = clean_ok.clone()
        # The first attack runs on every sample, so each has an adversarial example (perturbation
        # instability needs them all); later ones only where robust accuracy can still change.
        first = not per_attack
        todo = torch.arange(n) if first else torch.nonzero(robust if cascade else clean_ok).squeeze(1)
        if todo.numel() > 0:
            subset = data if first else Split(x=data.x[todo], y=data.y[todo])
            run = _in_threat_model(entry, model, attack, num_classes=num_classes, seed=seed)
            tick = None if progress is None else functools.partial(progress, name)
            logits = predict(model, subset, run, batch_size=batch_size, clean=False, progress=tick).adv
            assert logits is not None
            ok = logits.argmax(1) == y_all[todo]
            survives[todo] = ok & clean_ok[todo]
            # The worst-case example: the first one that breaks the sample, else the latest attack's.
            still = robust[todo] | first
            adv_logits[todo[still]] = logits[still]
            robust[todo[~ok]] = False
        acc = (robust if cascade else survives).float().mean().item()
        per_attack[name] = {
            "robust_acc": acc,
            "description": entry.describe(attack),
            "seconds": time.perf_counter() - start,
            "white_box": entry.white_box,
            "library": entry.library,
        }
        logger.info("%s: robust accuracy %.4f (%d samples, %.1f s)", name, acc, n, per_attack[name]["seconds"])
    return {
        "suite": suite if isinstance(suite, str) else list(names),
        "measurement": f"{describe_suite(suite, attack)}; {n} samples, seed {seed}",
        "samples": n,
        "seed": seed,
        "mode": "cascade" if cascade else "independent",
        "natural_acc": (clean_logits.argmax(1) == y_all).float().mean().item(),
        "robust_acc": robust.float().mean().item(),
        "per_attack": per_attack,
        "_tensors": {"clean_logits": clean_logits, "adv_logits": adv_logits, "robust": robust, "y": y_all},
    }


def _in_threat_model(
    entry: SuiteAttack, model: nn.Module, attack: AttackConfig, *, num_classes: int, seed: int
) -> Callable[[Tensor, Tensor], Tensor]:
    """``entry`` as a batch attack whose examples are projected into ``attack``'s ball and box, then checked.

    One generator, seeded with ``seed``, serves all the batches.
    """
    generator = torch.Generator().manual_seed(seed)

    def run(x: Tensor, y: Tensor) -> Tensor:
        x_adv = entry.run(model, x, y, attack=attack, num_classes=num_classes, seed=seed, generator=generator)
        x_adv = project(x_adv.detach().to(x.dtype), x, attack.eps, attack.norm)
        check_attack_bounds(x, x_adv, eps=attack.eps, norm=attack.norm, atol=1e-5)
        return x_adv

    return run
