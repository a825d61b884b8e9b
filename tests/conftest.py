"""Shared fixtures: a small digits data set and a quickly trained MobileNet-tiny on it; synthetic
tables (learning curves, NAS-Bench-201 results) and checks shared by the several-driver tests."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dse.data import load_dataset
from dse.models import build_model
from dse.training import default_recipe, seed_everything, train

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY = {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2}


def load_bench(name: str):
    """Imports ``bench/NAME.py`` by path (``bench/`` holds scripts, not a package) as ``bench_NAME``."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits", subset=600, val_fraction=0.2, seed=0)


def make_model(dataset, candidate=None):
    spec = dataset.spec
    return build_model(
        candidate or TINY, in_channels=spec.in_channels, num_classes=spec.num_classes, mean=spec.mean, std=spec.std
    )


@pytest.fixture(scope="session")
def trained_digits_model(digits):
    """A naturally trained tiny MobileNet (a few seconds): well above chance, not robust."""
    seed_everything(0)
    model = make_model(digits)
    train(model, digits, default_recipe("digits", method="natural", epochs=10, warmup_epochs=1, eval_every=0), device="cpu")
    return model.eval()


@pytest.fixture(scope="session")
def full_digits():
    return load_dataset("digits", val_fraction=0.1, seed=0)


@pytest.fixture(scope="session")
def pgd_at_model(full_digits):
    """MobileNet-tiny W=0.35 E=2 adversarially trained (PGD-7 AT, 12 epochs, ~40 s on one core); shared
    by the suite tests and the training test that compares it with natural training."""
    seed_everything(0)
    model = make_model(full_digits)
    train(model, full_digits, default_recipe("digits", method="pgd_at", epochs=12, eval_every=0), device="cpu")
    return model.eval()


@pytest.fixture
def cifar_dir() -> Path:
    path = SHARED_DATA / "cifar10-subset"
    if not (path / "cifar-10-batches-py" / "data_batch_1").is_file():
        pytest.skip(f"real CIFAR-10 subset not found at {path} (../shared/data is read-only input, absent here)")
    return path


def kill_session(sid: int, *, timeout: float = 30.0) -> int:
    """SIGKILLs every process of session ``sid`` (a driver started with ``start_new_session=True``
    and the Ray processes it spawned), and only those: unlike ``ray stop --force``, it leaves other
    Ray instances on the machine (a study running beside the tests) alone. Returns how many it killed."""
    import os
    import signal
    import time

    def members() -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, session
                pids.append(int(entry))
        return pids

    killed = 0
    deadline = time.time() + timeout
    while (pids := members()) and time.time() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return killed


def learning_curve_table(root: Path, n: int = 18, epochs: int = 9) -> Path:
    """A learning-curve table: trial k's curves rise to a final robust accuracy that grows with k,
    and its BOPS fall with k's parity (so the front holds several candidates)."""
    rng = np.random.default_rng(0)
    trials, rows = [], []
    for k in range(n):
        final = 0.2 + 0.7 * k / (n - 1)
        bops = 1e6 * (2 + (k % 3))
        trials.append({"number": k, "state": "COMPLETE", "robust_acc": final, "natural_acc": min(1.0, final + 0.1),
                       "bops": bops, "duration_s": 10.0 * epochs, "measurement": "synthetic"})
        for e in range(1, epochs + 1):
            val = final * (1 - math.exp(-e / 2)) + float(rng.normal(0, 0.005))
            rows.append({"number": k, "epoch": e, "epoch_seconds": 8.0, "val_eval_seconds": 2.0,
                         "val_robust_acc": val, "val_natural_acc": min(1.0, val + 0.1),
                         "val_rung_robust_acc": val - 0.02, "val_rung_natural_acc": min(1.0, val + 0.08), "val_rung_eval_seconds": 0.5})
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(trials).to_csv(root / "trials.csv", index=False)
    pd.DataFrame(rows).to_csv(root / "epochs.csv", index=False)
    return root


#: The two operations of the synthetic NAS-Bench-201 table: its 64 cells cover that space.
SYNTHETIC_OPS = ["nor_conv_3x3", "skip_connect"]


def synthetic_nb201_table(root: Path) -> Path:
    """A NAS-Bench-201 robustness directory in the published layout for the 64 cells of SYNTHETIC_OPS."""
    from dse.models.nb201 import make_cell

    cells = [make_cell(list(ops)) for ops in itertools.product(SYNTHETIC_OPS, repeat=6)]
    rng = np.random.default_rng(0)
    clean = {str(i): float(v) for i, v in enumerate(rng.uniform(0.6, 0.95, len(cells)))}
    pgd = {str(i): [float(v) * clean[str(i)] for v in rng.uniform(0.2, 0.8, 2)] for i in range(len(cells))}
    meta = {"ids": {str(i): {"nb201-string": c, "isomorph": str(i)} for i, c in enumerate(cells)}, "epsilons": {"pgd@Linf": [2.0, 8.0]}}
    (root / "cifar10").mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps(meta))
    (root / "cifar10" / "clean_accuracy.json").write_text(json.dumps({"cifar10": {"clean": {"accuracy": clean}}}))
    (root / "cifar10" / "pgd@Linf_accuracy.json").write_text(json.dumps({"cifar10": {"pgd@Linf": {"accuracy": pgd}}}))
    return root


def trained_trials(trials: list) -> list:
    """Trials that trained (or looked up) their candidate: complete, not a reused repeat, not refused."""
    import optuna

    return [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]


def assert_each_candidate_once(trials: list, budget: int) -> list:
    """Several drivers shared one study: ``budget`` candidates were trained between them, none
    twice, no trial was left running and no live driver's trial was taken from it. Returns the
    trained trials."""
    import optuna

    from dse.study.drivers import INTERRUPTED

    trained = trained_trials(trials)
    candidates = [json.dumps(t.user_attrs["candidate"], sort_keys=True) for t in trained]
    assert len(trained) == budget, f"the budget is shared: {len(trained)} trained, budget {budget}"
    assert len(set(candidates)) == len(candidates), "a candidate was trained twice"
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING], "a trial was left running"
    assert not [t for t in trials if t.user_attrs.get("error") == INTERRUPTED], "a live driver's trial was taken from it"
    return trained


class InputRecorder(torch.nn.Module):
    """Wraps a model and keeps (a copy of) every input it is called with, in call order."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)
