"""A replayed study on a simulated clock: the same searcher, sampler, scheduler and trial code as
``dse run``, with Ray Tune's event loop replaced by a discrete-event one, so a scheduler or
sampler can be compared on hundreds of seeded studies in seconds.

Each worker runs one trial at a time; a trial's epochs take their recorded seconds (training plus
the evaluations the study's scheduler would run: the full per-epoch one, the ladder's, and at
the end the final scoring). After each epoch the stopping rule decides, exactly as the Ray
scheduler does (:func:`dse.study.scheduling.on_epoch`); another rule (e.g. Syne Tune's MOASHA,
for the benchmark) can be passed in.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from dse.errors import SpecError
from dse.study.config import StudyConfig
from dse.study.runner import make_scheduler
from dse.study.scheduling import MultiObjectiveASHA, on_epoch
from dse.study.searcher import searcher_class
from dse.study.storage import make_sampler
from dse.study.trial import evaluate_candidate
from search_spaces.replay import epoch_cost

__all__ = ["SimulatedStudy", "StopRule", "simulate_study"]

logger = logging.getLogger(__name__)

#: ``rule(number, result) -> continue?``; also told ``rule.done(number)`` when a trial ends, if it has ``done``.
StopRule = Callable[[int, Mapping[str, Any]], bool]


@dataclass
class SimulatedStudy:
    """A finished simulation: the Optuna study and one event per finished trial, in clock order:
    ``(time_s, epochs_spent, number, state)`` with the totals at that moment."""

    study: optuna.Study
    events: list[tuple[float, int, int, str]] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        """Epochs trained over the whole study."""
        return self.events[-1][1] if self.events else 0


def simulate_study(config: StudyConfig, *, workers: int = 2, rule: StopRule | None = None) -> SimulatedStudy:
    """Runs a replay study (``space: replay``) to its budget on a simulated clock.

    Args:
        config: A study file whose space is ``replay``; its sampler, scheduler and budget apply.
        workers: Trials running at once (the study's ``execution.concurrency`` in a real run).
        rule: A stopping rule to use instead of the study's scheduler.

    Returns:
        The in-memory Optuna study and the finished-trial events.
    """
    if not config.is_replay:
        raise SpecError("simulate: space: only a replay study (space: replay) can run on a simulated clock")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=config.directions(), sampler=make_sampler(config))
    core = make_scheduler(config)
    if rule is not None:  # an outside rule: its stops are recorded through a rule-less core, as PRUNED
        core = MultiObjectiveASHA(rungs=[])
    elif core is not None:
        def rule(number: int, result: Mapping[str, Any]) -> bool:
            return on_epoch(core, config, number, result)

    searcher = searcher_class()(study, config, config.budget.n_trials, None, core)
    study_dict = config.to_dict()
    durations = _durations(config)
    clock, epochs, serial = 0.0, 0, 0
    queue: list[tuple[float, int, str, int, Any]] = []  # (time, order, trial id, kind, payload)
    out = SimulatedStudy(study=study)

    def start(now: float) -> bool:
        nonlocal serial
        tid = f"sim_{serial:05d}"
        serial += 1
        suggestion = searcher.suggest(tid)
        if not isinstance(suggestion, dict):
            return False
        rows: list[dict[str, float]] = []
        final = evaluate_candidate(suggestion["candidate"], study_dict, rows.append)
        number = suggestion["number"]
        t = now
        for row in rows:
            t += epoch_cost(row)
            heapq.heappush(queue, (t, serial * 1000 + int(row["epoch"]), tid, number, ("epoch", row)))
        spent = sum(epoch_cost(r) for r in rows)
        t += max(0.0, durations.get(int(suggestion["candidate"]["replay"]), spent) - spent)
        heapq.heappush(queue, (t, serial * 1000 + 999, tid, number, ("done", final)))
        return True

    for _ in range(workers):
        start(clock)
    stopped: set[str] = set()
    while queue:
        clock, _, tid, number, (kind, payload) = heapq.heappop(queue)
        if tid in stopped:
            continue
        if kind == "epoch":
            epochs += 1
            searcher.on_trial_result(tid, payload)
            if rule is None or rule(number, payload):
                continue
            stopped.add(tid)
            if core is not None and number not in core.stopped:
                core.stopped[number] = getattr(rule, "stopped", {}).get(number, (int(payload["epoch"]), {}))
            searcher.on_trial_complete(tid, result=payload)
        else:
            searcher.on_trial_complete(tid, result={**payload, "done_trial": 1})
        if rule is not None and hasattr(rule, "done"):
            rule.done(number)
        _finish(out, study, clock, epochs, number)
        start(clock)  # the freed worker takes the next trial
    return out


def _finish(out: SimulatedStudy, study: optuna.Study, clock: float, epochs: int, number: int) -> None:
    state = next(t.state for t in study.get_trials(deepcopy=False) if t.number == number)
    out.events.append((clock, epochs, number, state.name))


def _durations(config: StudyConfig) -> dict[int, float]:
    """Recorded wall seconds of each table trial (the final scoring is what exceeds its epochs)."""
    from search_spaces.replay import load_table

    trials = load_table(config.space.options["table"]).trials
    if "duration_s" not in trials.columns:
        return {}
    return {int(n): float(d) for n, d in zip(trials["number"], trials["duration_s"]) if isinstance(d, (int, float)) and math.isfinite(d)}
