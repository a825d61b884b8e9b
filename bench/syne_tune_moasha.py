"""Syne Tune's MOASHA as a stopping rule for dse's simulated studies: an outside reference for
dse's own multi-objective early stopping (``scheduler: mo_asha``) in ``bench/multifidelity.py``.

dse's sampler still proposes every candidate; only the stop/continue decision after each epoch
comes from Syne Tune. :class:`SyneTuneMOASHARule` is a ``rule(number, result) -> continue?`` with a
``done(number)`` method, as :func:`dse.study.simulate.simulate_study` takes it.

Which MOASHA: ``syne_tune.optimizer.schedulers.multiobjective.moasha.MOASHA`` is Syne Tune's
current one (0.14 moved the schedulers to the new ``TrialScheduler`` API; ``legacy_moasha.
LegacyMOASHA`` keeps the old ``LegacyTrialScheduler`` API, which Syne Tune's tuner warns "is
deprecated and will be removed in the next release"). The rule uses ``MOASHA`` whenever it can be
imported. In 0.14.2 it cannot from a core install: ``moasha.py`` imports ``schedulers/asha.py``
for its ``Bracket``, which imports the searcher factory, which imports the BORE and BoTorch
searchers unconditionally (``xgboost``, ``botorch``: optional extras). The rule then falls back
to ``LegacyMOASHA``, whose ``_Bracket`` is a line-for-line copy of ``Bracket`` (same rungs,
ranking and stop test), so the decisions are the same (the tests check this with a stand-in
searcher factory); ``rule.implementation`` names the class used, and ``implementation="current"``
or ``"legacy"`` forces one.

How the study maps onto it:

* metrics: the objectives that dse's rungs rank on (``StudyConfig.rung_metric_names()``: measured
  per epoch, or known before training), under their own names; each epoch's value is
  taken as dse takes it: ``val_rung_NAME``, else ``val_NAME``, else ``free_NAME``. Constraints play
  no part (MOASHA has none).
* directions: ``LegacyMOASHA`` takes a ``mode`` per metric (``maximize`` -> ``"max"``); the current
  ``MOASHA`` takes one ``do_minimize`` for all, so it is built with ``do_minimize=True`` and the
  maximized objectives are fed negated.
* ``time_attr="epoch"``, ``max_t=config.max_epochs()``, ``grace_period=scheduler.min_epochs``,
  ``reduction_factor=scheduler.reduction_factor``, one bracket (asynchronous successive halving,
  stopping form): the same rungs as dse's below the last epoch. Syne Tune's continue test is
  ``rank / n <= 1 / eta`` against dse's ``rank < ceil(n / eta)`` (Syne Tune keeps one more trial
  when ``eta`` divides ``n``). At ``max_t`` Syne Tune answers STOP because the trial is done; the
  rule then answers continue, so the trial ends normally instead of being recorded as stopped.
* priority: non-dominated sorting with Syne Tune's epsilon-net order inside a front (Salinas et al.
  2021), seeded on the first objective (``NonDominatedPriority(dim=0)``, its default). As shipped
  (0.14.2), that priority hands the bracket ``nondominated_sort``'s *order* (row indices, best
  first) where the bracket reads one *priority per row*: the newcomer's rank becomes the index of
  whichever row sorts last. E.g. after rows with losses (1, 1), (2, 2), (3, 3), a newcomer at
  (0, 0), which dominates them all, is stopped. By default the rule passes the same sort turned
  into ranks; ``shipped_priority=True`` keeps Syne Tune's own.
* the config space is a constant placeholder (``{"space": <space name>}``): MOASHA needs one but
  is never asked to sample. Trials are Syne Tune ``Trial`` objects keyed by the Optuna trial
  number; ``done(number)`` calls ``on_trial_remove`` for a trial MOASHA stopped and
  ``on_trial_complete`` (with its last result) for one that ran out, as Syne Tune's tuner does.
* ``rule.stopped`` records each stopped trial as ``number -> (epoch, {objective: value})``, the
  form of ``MultiObjectiveASHA.stopped``, for the simulator to record it as PRUNED.

Syne Tune is a benchmark-only extra, not a dse dependency. Install it into the venv with
``pip install --no-deps -c constraints.txt syne-tune dill sortedcontainers``: ``--no-deps`` because
syne-tune 0.14 pins ``numpy<1.27`` while dse runs numpy 2.x; the parts used here (MOASHA, the ASHA
bracket, non-dominated sorting, ``Trial``) run on numpy 2. :func:`available` says why it cannot
be used, for the bench to skip the reference.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dse.study.config import StudyConfig

__all__ = ["SyneTuneMOASHARule", "available", "moasha_class", "per_epoch_value"]

INSTALL = "pip install --no-deps -c constraints.txt syne-tune dill sortedcontainers"
CURRENT = "syne_tune.optimizer.schedulers.multiobjective.moasha.MOASHA"
LEGACY = "syne_tune.optimizer.schedulers.multiobjective.legacy_moasha.LegacyMOASHA"


def moasha_class(implementation: str = "auto") -> type:
    """Syne Tune's MOASHA class: ``current`` (``moasha.MOASHA``), ``legacy``
    (``legacy_moasha.LegacyMOASHA``) or ``auto`` (the current one when it imports, else the legacy).

    Raises:
        ImportError: The class asked for does not import.
    """
    if implementation not in ("auto", "current", "legacy"):
        raise ValueError(f"implementation: {implementation!r} is not auto, current or legacy")
    if implementation != "legacy":
        try:
            from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

            return MOASHA
        except ImportError:
            if implementation == "current":
                raise
    from syne_tune.optimizer.schedulers.multiobjective.legacy_moasha import LegacyMOASHA

    return LegacyMOASHA


def available() -> str | None:
    """None when a Syne Tune MOASHA imports, else the reason it cannot be used."""
    try:
        from syne_tune.backend.trial_status import Trial  # noqa: F401
        from syne_tune.optimizer.scheduler import SchedulerDecision  # noqa: F401
        from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import MOPriority  # noqa: F401
        from syne_tune.optimizer.schedulers.multiobjective.non_dominated_priority import nondominated_sort  # noqa: F401

        moasha_class("auto")
    except Exception as err:  # ImportError, or a numpy incompatibility surfacing at import
        return f"syne-tune is not usable ({type(err).__name__}: {err}); install it with `{INSTALL}`"
    return None


def per_epoch_value(result: Mapping[str, Any], name: str) -> float | None:
    """An objective's value in one epoch's result, looked up as dse's rungs do:
    ``val_rung_NAME``, else ``val_NAME``, else ``free_NAME`` (None when none is finite)."""
    for key in (f"val_rung_{name}", f"val_{name}", f"free_{name}"):
        value = result.get(key)
        if value is not None and math.isfinite(float(value)):
            return float(value)
    return None


def _ranked_priority(dim: int | None = 0):
    """Syne Tune's non-dominated sort (epsilon-net inside a front) as one rank per row, the form
    the ASHA bracket reads (see the module docstring)."""
    from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import MOPriority
    from syne_tune.optimizer.schedulers.multiobjective.non_dominated_priority import nondominated_sort

    class RankedNonDominatedPriority(MOPriority):
        def priority_unsafe(self, objectives: np.ndarray) -> np.ndarray:
            order = np.asarray(nondominated_sort(X=objectives, dim=dim), dtype=int)
            ranks = np.empty(len(order), dtype=int)
            ranks[order] = np.arange(len(order))
            return ranks

    return RankedNonDominatedPriority()


class SyneTuneMOASHARule:
    """Syne Tune's MOASHA deciding, after each epoch of a dse trial, whether it continues.

    Args:
        config: The study; its objectives, directions, epochs and ``scheduler.min_epochs`` /
            ``reduction_factor`` configure MOASHA (its ``scheduler.name`` does not matter).
        shipped_priority: Use Syne Tune's ``NonDominatedPriority`` as shipped (see the module
            docstring) instead of the same sort read as ranks.
        implementation: ``auto``, ``current`` or ``legacy``: see :func:`moasha_class`.
        seed: The current MOASHA's ``random_seed`` (default: the sampler's seed, else 0). With one
            bracket nothing in the decisions is random.

    Attributes:
        scheduler: The Syne Tune scheduler.
        implementation: Its class, dotted (:data:`CURRENT` or :data:`LEGACY`).
        metrics: The objective names Syne Tune ranks on.
        stopped: ``number -> (epoch, {objective: value})`` of each trial it stopped (the same form
            as :attr:`dse.study.scheduling.MultiObjectiveASHA.stopped`).
    """

    def __init__(self, *, config: StudyConfig, shipped_priority: bool = False, implementation: str = "auto",
                 seed: int | None = None) -> None:
        reason = available()
        if reason:
            raise RuntimeError(reason)
        from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import NonDominatedPriority

        self.config = config
        self.metrics = config.rung_metric_names()
        if not self.metrics:
            raise ValueError("no objective is measured per epoch or known before training: MOASHA has nothing to rank")
        direction = dict(zip(config.objective_names(), config.directions()))
        self.max_t = config.max_epochs()
        self.rungs = config.rung_epochs()
        cls = moasha_class(implementation)
        self.implementation = f"{cls.__module__}.{cls.__qualname__}"
        common = dict(
            config_space={"space": config.space.name},
            metrics=list(self.metrics),
            time_attr="epoch",
            multiobjective_priority=NonDominatedPriority(dim=0) if shipped_priority else _ranked_priority(dim=0),
            max_t=self.max_t,
            grace_period=config.scheduler.min_epochs,
            reduction_factor=config.scheduler.reduction_factor,
            brackets=1,
        )
        if self.implementation == LEGACY:
            self.scheduler = cls(mode=["max" if direction[n] == "maximize" else "min" for n in self.metrics], **common)
            #: Multiplies a natural value into the form the scheduler is fed.
            self.signs = {n: 1.0 for n in self.metrics}
        else:
            if seed is None:
                seed = config.sampler.seed if config.sampler.seed is not None else 0
            self.scheduler = cls(do_minimize=True, random_seed=seed, **common)
            self.signs = {n: (-1.0 if direction[n] == "maximize" else 1.0) for n in self.metrics}
        self.stopped: dict[int, tuple[int, dict[str, float]]] = {}
        self._trials: dict[int, Any] = {}
        self._last: dict[int, dict[str, float]] = {}
        self._said_stop: set[int] = set()

    def _add(self, number: int) -> Any:
        from syne_tune.backend.trial_status import Trial

        trial = Trial(trial_id=number, config={"number": number}, creation_time=datetime.now())
        state = np.random.get_state()  # MOASHA picks the bracket with numpy's global generator
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # LegacyMOASHA prints each added trial
                self.scheduler.on_trial_add(trial)
        finally:
            np.random.set_state(state)
        self._trials[number] = trial
        return trial

    def __call__(self, number: int, result: Mapping[str, Any]) -> bool:
        """Feeds trial ``number``'s epoch ``result`` to MOASHA: True unless it says STOP.

        Raises:
            ValueError: A rung epoch's result lacks one of the ranked objectives.
        """
        from syne_tune.optimizer.scheduler import SchedulerDecision

        if number in self.stopped:
            return False
        trial = self._trials.get(number) or self._add(number)
        epoch = float(result["epoch"])
        values = {n: per_epoch_value(result, n) for n in self.metrics}
        if any(v is None for v in values.values()):
            if int(epoch) in self.rungs:
                raise ValueError(f"trial {number}: epoch {int(epoch)} is a rung but its result lacks one of "
                                 f"{self.metrics}")
            return True
        fed = {"epoch": epoch, **{n: self.signs[n] * v for n, v in values.items()}}
        self._last[number] = fed
        decision = self.scheduler.on_trial_result(trial, fed)
        if decision != SchedulerDecision.STOP:
            return True
        self._said_stop.add(number)
        if epoch >= self.max_t:  # done, not stopped early
            return True
        self.stopped[number] = (int(epoch), dict(values))
        return False

    def done(self, number: int) -> None:
        """Trial ``number`` ended: removed when MOASHA said STOP (as Syne Tune's tuner does), else
        completed with its last result."""
        trial = self._trials.pop(number, None)
        if trial is None:
            return
        if number in self._said_stop or number not in self._last:
            self.scheduler.on_trial_remove(trial)
        else:
            self.scheduler.on_trial_complete(trial, self._last[number])
        self._last.pop(number, None)
