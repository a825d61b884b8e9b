"""Hostile and careless inputs (issue 10): every one is refused before anything runs.

Each case calls the command line in-process and asserts the exit code (2 for bad input), that
stderr is exactly one line starting ``dse: error:`` that names the file, field or flag, and that
nothing was created or lost: the test's folder (also the working directory, so a default
``runs/`` would land there) holds the same files, with the same sizes and times, afterwards. Code
payloads (``!!python`` YAML tags, pickles) must not run: their marker file is never created.

The kinds follow the issue: bad study files (encoding, syntax, tags, types, unknown keys,
non-finite bounds, empty lists, search-space options, sampler options, storage URLs, output
folders), bad flags, bad candidate files, bad checkpoints, resources this machine does not have
(GPUs, CPUs, a cluster address where nothing listens, a missing data folder), and commands on a
study that never ran. ``run_study`` is replaced by a tripwire in the study cases: a case that
passes validation fails at once instead of starting Ray.
"""

from __future__ import annotations

import os
import pickle
import random
import socket
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dse.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MARKER = "PWNED"

#: A small valid study: each case changes one thing. ``output_dir`` is relative: to the study's folder.
BASE = {
    "name": "hostile",
    "data": {"dataset": "digits", "subset": 150, "val_fraction": 0.3},
    "space": {"name": "mobilenet_tiny", "options": {"width_mult": [0.1, 0.2], "expand_ratio": [1, 2]}},
    "objectives": [{"name": "robust_acc"}, {"name": "params"}],
    "metrics": ["natural_acc"],
    "sampler": {"name": "random", "seed": 0},
    "budget": {"n_trials": 2},
    "recipe": {"method": "pgd_at", "epochs": 1, "batch_size": 50, "attack": {"name": "pgd", "eps": 0.1, "step_size": 0.05, "steps": 1}},
    "eval": {"attack": {"steps": 2}, "max_samples": 30, "checks": False},
    "execution": {"concurrency": 1, "cpus_per_trial": 1},
    "output_dir": "out",
}
CANDIDATE = {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 2}


# ------------------------------------------------------------------------------ helpers
def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _readonly_dir(tmp_path: Path) -> Path:
    """A folder this process cannot write to (root ignores permissions: /proc/sys then)."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        return d
    if not os.access("/proc/sys", os.W_OK):
        return Path("/proc/sys")
    pytest.skip("no folder this process cannot write to (running as root without a read-only /proc/sys)")


def _deep_set(data: dict, dotted: str, value) -> dict:
    """A copy of ``data`` with ``a.b.c`` set (``...`` deletes it)."""
    out = yaml.safe_load(yaml.safe_dump(data))
    node = out
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is ...:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return out


def _no_training(monkeypatch) -> None:
    """Training start is a tripwire: a case that gets that far has passed validation."""
    import dse.pipeline

    monkeypatch.setattr(dse.pipeline, "train_candidate", lambda *a, **k: pytest.fail("validation passed: training was reached"))


@pytest.fixture
def box(tmp_path, monkeypatch, capsys):
    """Runs the CLI in ``tmp_path`` (the working directory) and checks the refusal."""
    monkeypatch.chdir(tmp_path)

    def tripwire(*args, **kwargs):
        raise AssertionError("validation passed: run_study was reached")

    import dse.study.runner

    monkeypatch.setattr(dse.study.runner, "run_study", tripwire)

    class Box:
        root = tmp_path

        def study(self, data=None, *, text: str | bytes | None = None, name: str = "study.yaml") -> Path:
            path = tmp_path / name
            if text is None:
                path.write_text(yaml.safe_dump(BASE if data is None else data))
            elif isinstance(text, bytes):
                path.write_bytes(text)
            else:
                path.write_text(text, encoding="utf-8")
            return path

        def candidate(self, data=None, *, text: str | bytes | None = None) -> Path:
            path = tmp_path / "cand.yaml"
            if text is None:
                path.write_text(yaml.safe_dump(CANDIDATE if data is None else data))
            elif isinstance(text, bytes):
                path.write_bytes(text)
            else:
                path.write_text(text, encoding="utf-8")
            return path

        def refuse(self, argv, *fragments: str, code: int = 2) -> str:
            """Runs ``dse ARGV``; asserts exit ``code``, one ``dse: error:`` line holding every
            fragment (one of them, for a tuple), nothing created or lost, and no payload run."""
            capsys.readouterr()
            before = _snapshot(tmp_path)
            got = main([str(a) for a in argv])
            out, err = capsys.readouterr()
            lines = err.strip().splitlines()
            assert got == code, f"exit {got}, stderr: {err[-2000:]}"
            assert len(lines) == 1 and lines[0].startswith("dse: error: "), f"not one error line: {err[-2000:]}"
            for fragment in fragments:
                options = fragment if isinstance(fragment, tuple) else (fragment,)
                assert any(o in lines[0] for o in options), f"{options} not in {lines[0]!r}"
            assert _snapshot(tmp_path) == before, "files were created, changed or removed"
            assert not (tmp_path / MARKER).exists(), "a code payload ran"
            return lines[0]

    return Box()


# ------------------------------------------------------------------- 1. study file contents
RAW_STUDIES = {
    "latin1_byte": (b"name: caf\xe9\nspace: {name: mobilenet_tiny}\n", "not UTF-8"),
    "utf16_bom": ("name: hostile\n".encode("utf-16"), "not UTF-8"),
    "random_bytes": (random.Random(0).randbytes(256), ("not UTF-8", "not valid YAML")),
    "nul_byte": ("name: a\x00b\n", "not valid YAML"),
    "unclosed_list": ("name: [hostile\n", "not valid YAML"),
    "unclosed_mapping": ("{name: hostile\n", "not valid YAML"),
    "bad_indent": ("name: hostile\n  space: 1\n objectives: []\n", "not valid YAML"),
    "tab_indent": ("space:\n\tname: mobilenet_tiny\n", "not valid YAML"),
    "double_colon": ("name: a: b\n", "not valid YAML"),
    "a_list": ("- name\n- space\n", "expected a mapping"),
    "a_string": ("just some words\n", "expected a mapping"),
    "empty_file": ("", "expected a mapping"),
    "null_document": ("~\n", "expected a mapping"),
    "python_apply": (f'!!python/object/apply:os.system ["touch {MARKER}"]\n', "not valid YAML"),
    "python_apply_in_field": (f'name: !!python/object/apply:os.system ["touch {MARKER}"]\n', "not valid YAML"),
    "python_new_popen": (f'name: !!python/object/new:subprocess.Popen [["touch", "{MARKER}"]]\n', "not valid YAML"),
    "python_name": ("name: !!python/name:os.system\n", "not valid YAML"),
    "python_module": ("name: !!python/module:os\n", "not valid YAML"),
    "python_object": ("space: !!python/object:argparse.Namespace {name: x}\n", "not valid YAML"),
    "alias_bomb": (
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
        "name: hostile\nspace: {name: mobilenet_tiny, options: {width_mult: *e}}\nobjectives: [robust_acc, params]\n",
        ("a: unknown key", "width_mult"),
    ),
}


@pytest.mark.parametrize(("content", "fragment"), RAW_STUDIES.values(), ids=RAW_STUDIES.keys())
def test_unreadable_study_files(box, content, fragment):
    path = box.study(text=content)
    box.refuse(["run", path], "study.yaml", fragment)


def test_study_file_that_is_a_folder_or_missing(box):
    (box.root / "folder.yaml").mkdir()
    box.refuse(["run", box.root / "folder.yaml"], "folder.yaml", "cannot read study file")
    box.refuse(["run", box.root / "missing.yaml"], "missing.yaml", "cannot read study file")


#: (dotted field, value, fragment of the message): one change to BASE each.
FIELD_CASES = [
    ("name", 5, "name"),
    ("name", "", "name"),
    ("name", "../../etc", "name"),
    ("name", ["a"], "name"),
    ("colour", "blue", "colour: unknown key"),
    ("objective", ["robust_acc", "params"], "objective: unknown key"),
    ("objectives", "robust_acc", "objectives"),
    ("objectives", [], "objectives"),
    ("objectives", ["robust_acc"], "objectives"),
    ("objectives", ["robust_acc", "robust_acc"], "objectives"),
    ("objectives", [{"name": "robust_acc", "weight": 2}, "params"], "weight: unknown key"),
    ("objectives", ["robust_acc", 7], "objectives"),
    ("metrics", "natural_acc", "metrics"),
    ("metrics", ["accuracy"], "metrics.0"),
    ("metrics", [None], "metrics.0"),
    ("constraints", [{"metric": "natural_acc", "min": float("nan")}], "min must be a finite number"),
    ("constraints", [{"metric": "natural_acc", "max": float("nan")}], "max must be a finite number"),
    ("constraints", [{"metric": "natural_acc", "max": float("inf")}], "max must be a finite number"),
    ("constraints", [{"metric": "natural_acc", "min": float("-inf")}], "min must be a finite number"),
    ("constraints", [{"metric": "natural_acc", "min": "high"}], "constraints.0.min"),
    ("constraints", [{"metric": "natural_acc", "min": 0.9, "max": 0.1}], "min 0.9 > max 0.1"),
    ("constraints", [{"metric": "natural_acc", "min": 0.5, "mni": 0.1}], "mni: unknown key"),
    ("constraints", {"metric": "natural_acc", "min": 0.5}, "constraints"),
    ("constraints", [{"metric": "bops", "max": 1}], "constraints.0.metric"),
    ("budget.n_trials", "ten", "budget.n_trials"),
    ("budget.n_trials", 2.5, "budget.n_trials"),
    ("budget.n_trials", -3, "budget.n_trials"),
    ("budget.n_trials", 0, "budget.n_trials"),
    ("budget.wall_time", float("nan"), "budget.wall_time"),
    ("budget.wall_time", float("inf"), "budget.wall_time"),
    ("budget.wall_time", -5, "budget.wall_time"),
    ("budget.wall_time", "0s", "budget.wall_time"),
    ("budget.wall_time", "forever", "budget.wall_time"),
    ("budget.trials", 3, "budget.trials: unknown key"),
    ("data.dataset", "mnist", "data.dataset"),
    ("data.val_fraction", 1.5, "data.val_fraction"),
    ("data.val_fraction", float("nan"), "data.val_fraction"),
    ("data.subset", 5, "data.subset"),
    ("data.seed", "x", "data.seed"),
    ("data.path", "/tmp", "data.path: unknown key"),
    ("data", "digits", "data"),
    ("execution.concurrency", 0, "execution.concurrency"),
    ("execution.cpus_per_trial", 0, "execution.cpus_per_trial"),
    ("execution.cpus_per_trial", float("nan"), "execution.cpus_per_trial"),
    ("execution.gpus_per_trial", -1, "execution.gpus_per_trial"),
    ("execution.gpus_per_trial", float("nan"), "execution.gpus_per_trial"),
    ("execution.num_cpus", 0, "execution.num_cpus"),
    ("execution.gpus", 1, "execution.gpus: unknown key"),
    ("recipe.epochs", 0, "epochs"),
    ("recipe.lr", float("nan"), "lr"),
    ("recipe.lr", float("inf"), "lr"),
    ("recipe.lr", -0.1, "lr"),
    ("recipe.batch_size", 0, "batch_size"),
    ("recipe.method", "mart", "method"),
    ("recipe.optimiser", "adam", "optimiser"),
    ("recipe", [1, 2], "recipe"),
    ("eval.max_samples", 0, "max_samples"),
    ("eval.attack", {"eps": float("nan")}, "eps"),
    ("eval.attack", {"steps": 0}, "steps"),
    ("eval.attack", {"norm": "l7"}, "eval"),
    ("eval.typo", 1, "typo"),
    ("eval", 5, "eval"),
    ("scheduler.name", "hyperband", "scheduler.name"),
    ("scheduler", {"name": "mo_asha", "min_epochs": 5}, "scheduler.min_epochs"),
    ("scheduler", {"name": "mo_asha", "reduction_factor": 1}, "scheduler.reduction_factor"),
    ("sampler.name", "cmaes", "sampler.name"),
    ("sampler.seed", "x", "sampler.seed"),
    ("sampler", {"name": "nsga2", "options": {"population_size": 0}}, "sampler.options"),
    ("sampler", {"name": "nsga2", "options": {"population_size": -4}}, "sampler.options"),
    ("sampler", {"name": "nsga2", "options": {"population_size": "many"}}, "sampler.options"),
    ("sampler", {"name": "nsga2", "options": {"popsize": 8}}, "sampler.options"),
    ("sampler", {"name": "tpe", "options": {"n_startup": 3}}, "sampler.options"),
    ("sampler.options", [1], "sampler.options"),
    ("storage", "sqlite//nope", "storage"),
    ("storage", "nosuchdb://u@h/db", "storage"),
    ("storage", "postgresql+nosuchdriver://u@h/db", "storage"),
    ("storage", "hello", "storage"),
    ("storage", "://", "storage"),
    ("storage", 5, "storage"),
]


#: Generated: every numeric field of a study file given NaN, +inf and -inf, and ``true`` where a
#: number belongs (YAML reads ``.nan``, ``.inf`` and ``true`` as values; none may pass as a number).
NUMERIC_FIELDS = [
    "budget.wall_time", "data.val_fraction", "execution.cpus_per_trial", "execution.gpus_per_trial",
    "recipe.lr", "recipe.momentum", "recipe.weight_decay", "eval.attack.eps", "eval.attack.step_size",
    "scheduler.min_epochs",
]
WHOLE_FIELDS = ["budget.n_trials", "data.subset", "data.seed", "execution.concurrency", "execution.num_cpus", "recipe.epochs",
                "recipe.batch_size", "eval.max_samples", "sampler.seed"]
FIELD_CASES += [(f, v, f.split(".")[-1]) for f in NUMERIC_FIELDS for v in (float("nan"), float("inf"), float("-inf"))]
FIELD_CASES += [(f, True, f.split(".")[-1]) for f in NUMERIC_FIELDS + WHOLE_FIELDS]


@pytest.mark.parametrize(("field", "value", "fragment"), FIELD_CASES, ids=[f"{f}={v!r}"[:60] for f, v, _ in FIELD_CASES])
def test_bad_study_fields(box, field, value, fragment):
    path = box.study(_deep_set(BASE, field, value))
    box.refuse(["run", path], "study.yaml", fragment)


def test_storage_whose_driver_is_not_installed(box, monkeypatch):
    """A URL whose dialect SQLAlchemy knows but whose driver is not importable is refused when read
    (the dialect class alone loads without it), in the study file and as a flag."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    url = "postgresql+psycopg://dse@127.0.0.1/dse"
    box.refuse(["run", box.study({**BASE, "storage": url})], "study.yaml: storage", "driver", "not installed")
    box.refuse(["run", box.study(), "--storage", url], "--storage", "not installed")


#: A misspelt key, objective, metric, sampler or space: the one-line error ends its part with the
#: close known name (``difflib``), ``(did you mean 'x'?)``. (dotted field, value, what the line says)
TYPO_CASES = [
    ("objectives", [{"name": "robust_ac"}, {"name": "params"}], "objectives.0.name: unknown objective 'robust_ac' (did you mean 'robust_acc'?)"),
    ("objectives", ["nb201_clean_ac", "nb201_pgd_acc_2"], "(did you mean 'nb201_clean_acc'?)"),
    ("objectives", [{"name": "robust_acc", "directon": "maximize"}, "params"], "objectives.0.directon: unknown key (did you mean 'direction'?)"),
    ("metrics", ["natural_ac"], "metrics.0: unknown metric 'natural_ac' (did you mean 'natural_acc'?)"),
    ("constraints", [{"metric": "natural_ac", "min": 0.5}], "constraints.0.metric: 'natural_ac' (did you mean 'natural_acc'?)"),
    ("constraints", [{"metrc": "natural_acc", "min": 0.5}], "constraints.0.metrc: unknown key (did you mean 'metric'?)"),
    ("constraint", [{"metric": "natural_acc", "min": 0.5}], "constraint: unknown key (did you mean 'constraints'?)"),
    ("lookp", {}, "lookp: unknown key (did you mean 'lookup'?)"),
    ("sampler.name", "nsga", "sampler.name: Input should be 'nsga2', 'nsga3'"),
    ("sampler.name", "nsga", "(did you mean 'nsga2'?)"),
    ("sampler.name", "rando", "(did you mean 'random'?)"),
    ("sampler.seeed", 1, "sampler.seeed: unknown key (did you mean 'seed'?)"),
    ("space.name", "mobilenet_tin", "space.name: unknown space 'mobilenet_tin' (did you mean 'mobilenet_tiny'?)"),
    ("space.optons", {}, "space.optons: unknown key (did you mean 'options'?)"),
    ("space.options.width_mul", [0.1], "space.options.width_mul: unknown option of space mobilenet_tiny (did you mean 'width_mult'?)"),
    ("space", {"name": "quantization", "options": {"weight_bit": [2, 4]}}, "weight_bit: unknown key (did you mean 'weight_bits'?)"),
    ("space", {"name": "nb201", "options": {"ops": ["nor_conv_3x"]}}, "(did you mean 'nor_conv_3x3'?)"),
    ("recipe.epoch", 3, "recipe.epoch: unknown key (did you mean 'epochs'?)"),
    ("recipe.method", "pgd", "(did you mean 'pgd_at'?)"),
    ("recipe.attack.stepz", 3, "recipe.attack.stepz: unknown key (did you mean 'steps'?)"),
    ("eval.max_sample", 10, "eval.max_sample: unknown key (did you mean 'max_samples'?)"),
    ("eval.attack.step", 3, "eval.attack.step: unknown key (did you mean 'steps'?)"),
    ("execution.concurency", 2, "execution.concurency: unknown key (did you mean 'concurrency'?)"),
    ("budget.n_trial", 3, "budget.n_trial: unknown key (did you mean 'n_trials'?)"),
    ("data.datset", "digits", "data.datset: unknown key (did you mean 'dataset'?)"),
    ("data.dataset", "cifar", "(did you mean 'cifar10'?)"),
    ("scheduler.name", "moasha", "(did you mean 'mo_asha'?)"),
    ("scheduler.min_epoch", 2, "scheduler.min_epoch: unknown key (did you mean 'min_epochs'?)"),
    ("scheduler.rung_eval", {"stepz": [1]}, "scheduler.rung_eval.stepz: unknown key (did you mean 'steps'?)"),
]


@pytest.mark.parametrize(("field", "value", "fragment"), TYPO_CASES, ids=[f"{f}={v!r}"[:60] for f, v, _ in TYPO_CASES])
def test_misspelt_names_in_study_files_suggest_the_close_one(box, field, value, fragment):
    line = box.refuse(["run", box.study(_deep_set(BASE, field, value))], "study.yaml", fragment)
    assert line.count("did you mean") == 1, line


@pytest.mark.parametrize(("field", "value"), [("colour", "blue"), ("recipe.xyzzy", "adam"), ("objectives", ["accuracy", "params"])])
def test_names_close_to_nothing_get_no_suggestion(box, field, value):
    line = box.refuse(["run", box.study(_deep_set(BASE, field, value))], "study.yaml", ("unknown", "accuracy"))
    assert "did you mean" not in line, line


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["profile", "--set", "arch=mobilenet_tny"], "(did you mean 'mobilenet_tiny'?)"),
        (["profile", "--set", "arch=mobilenet_tiny", "--set", "width_mul=0.5"], "width_mul: unknown key (did you mean 'width_mult'?)"),
        (["profile", "--set", "arch=mobilenet_tiny", "--set", "recipie.epochs=2"], "unknown section 'recipie' (did you mean 'recipe'?)"),
    ],
)
def test_misspelt_candidate_keys_suggest_the_close_one(box, argv, fragment):
    box.refuse(argv, fragment)


@pytest.mark.parametrize(
    ("section", "fragment"),
    [({"recipe": {"epoch": 2}}, "cand.yaml: recipe.epoch: unknown key (did you mean 'epochs'?)"),
     ({"data": {"datset": "digits"}}, "cand.yaml: data: datset: unknown key (did you mean 'dataset'?)")],
)
def test_misspelt_candidate_sections_suggest_the_close_one(box, monkeypatch, section, fragment):
    _no_training(monkeypatch)
    box.refuse(["train", box.candidate({**CANDIDATE, **section})], fragment)


def test_did_you_mean():
    from dse.errors import did_you_mean
    from dse.study.config import SAMPLERS

    assert did_you_mean("nsga", SAMPLERS) == " (did you mean 'nsga2'?)", "of equally close names the first listed"
    assert did_you_mean("robust_ac", {"robust_acc": 1, "natural_acc": 2}) == " (did you mean 'robust_acc'?)"
    assert did_you_mean("colour", ["name", "space"]) == ""
    assert did_you_mean(5, ["5"]) == "" and did_you_mean("a", []) == ""


# ------------------------------------------------------------------- 2. search-space options
def _space(name: str, **options) -> dict:
    return {"name": name, "options": options}


SPACE_CASES = [
    (_space("mobilenet_tiny", width_mult={"low": 0, "high": 100}), "width_mult"),
    (_space("mobilenet_tiny", width_mult={"low": float("nan"), "high": 1.0}), "width_mult"),
    (_space("mobilenet_tiny", width_mult={"low": 0.5, "high": 0.2}), "width_mult"),
    (_space("mobilenet_tiny", width_mult={"low": 0.2, "high": 0.5, "step": -0.1}), "width_mult"),
    (_space("mobilenet_tiny", width_mult={"low": 0.2, "high": 0.5, "step": 0}), "width_mult"),
    (_space("mobilenet_tiny", width_mult={"low": 0.2}), "width_mult"),
    (_space("mobilenet_tiny", width_mult={"low": 0.2, "high": 1.0, "stride": 1}), "width_mult"),
    (_space("mobilenet_tiny", width_mult=[float("nan")]), "width_mult"),
    (_space("mobilenet_tiny", width_mult=[float("inf")]), "width_mult"),
    (_space("mobilenet_tiny", width_mult=[]), "width_mult"),
    (_space("mobilenet_tiny", width_mult=[0]), "width_mult"),
    (_space("mobilenet_tiny", width_mult=[100]), "width_mult"),
    (_space("mobilenet_tiny", width_mult=[True]), "width_mult"),
    (_space("mobilenet_tiny", width_mult=["wide"]), "width_mult"),
    (_space("mobilenet_tiny", width_mult="0.5"), "width_mult"),
    (_space("mobilenet_tiny", expand_ratio=[0]), "expand_ratio"),
    (_space("mobilenet_tiny", expand_ratio=[]), "expand_ratio"),
    (_space("mobilenet_tiny", expand_ratio=[100]), "expand_ratio"),
    (_space("mobilenet_tiny", expand_ratio=[2.5]), "expand_ratio"),
    (_space("mobilenet_tiny", expand_ratio=[True]), "expand_ratio"),
    (_space("mobilenet_tiny", expand_ratio=4), "expand_ratio"),
    (_space("mobilenet_tiny", per_stage="yes"), "per_stage"),
    (_space("mobilenet_tiny", depth=3), "depth"),
    (_space("nb201", ops=[]), "ops"),
    (_space("nb201", ops=["conv_9x9"]), "ops"),
    (_space("nb201", ops="skip_connect"), "ops"),
    (_space("nb201", cells=3), "cells"),
    (_space("quantization", weight_bits=[9]), "weight_bits"),
    (_space("quantization", modes=[]), "modes"),
    (_space("pruning", ratio_low=float("nan")), "ratio_low"),
    (_space("joint", width_mult=[]), "width_mult"),
    (_space("joint", expand_ratio=[0]), "expand_ratio"),
    (_space("joint", width_mult={"low": 0, "high": 100}), "width_mult"),
    (_space("replay", table="no/such/folder"), "table"),
    (_space("replay", table=".", speed=2), "speed"),
    ({"name": "darts"}, "unknown space 'darts'"),
    ("mobilenet_tiny", "space"),
    ({"name": "mobilenet_tiny", "options": [0.5]}, "space.options"),
    ({**_space("mobilenet_tiny"), "fixed": {"widht": 1}}, "widht"),
    ({**_space("mobilenet_tiny"), "fixed": {"width_mult": 9}}, "width_mult"),
    ({**_space("mobilenet_tiny"), "fixed": {"width_mult": float("nan")}}, "width_mult"),
    ({**_space("mobilenet_tiny"), "fixed": {"expand_ratio": 0}}, "expand_ratio"),
    ({**_space("mobilenet_tiny"), "fixed": {"arch": "resnet1"}}, "arch"),
    ({**_space("mobilenet_tiny"), "fixed": {"prune_ratio": 1.0}}, "prune_ratio"),
    ({**_space("mobilenet_tiny"), "fixed": [1]}, "space.fixed"),
]


@pytest.mark.parametrize(("space", "fragment"), SPACE_CASES, ids=[f"{i}-{f}" for i, (_, f) in enumerate(SPACE_CASES)])
def test_bad_search_spaces_refused_when_read(box, space, fragment):
    path = box.study({**BASE, "space": space})
    box.refuse(["run", path], "study.yaml", fragment)


def test_space_that_cannot_be_scored_by_its_objectives(box):
    tabular = {**BASE, "space": _space("nb201"), "objectives": ["nb201_clean_acc", "nb201_pgd_acc_2"], "metrics": []}
    box.refuse(["run", box.study({**tabular, "space": _space("mobilenet_tiny")})], "study.yaml", "space")
    box.refuse(["run", box.study({**BASE, "space": _space("nb201")})], "study.yaml", "space")


# ------------------------------------------------------------------- output folders
def test_output_dir_that_is_a_file(box):
    (box.root / "taken").write_text("a file")
    box.refuse(["run", box.study({**BASE, "output_dir": "taken"})], "output_dir", "is a file")
    box.refuse(["run", box.study({**BASE, "output_dir": "taken/out"})], "output_dir", "is a file")


def test_output_dir_not_writable(box):
    ro = _readonly_dir(box.root)
    box.refuse(["run", box.study({**BASE, "output_dir": str(ro / "out")})], "output_dir", "not writable")


# ------------------------------------------------------------------- 4. resources, addresses, data
def test_gpu_per_trial_on_a_machine_without_enough(box):
    wanted = (torch.cuda.device_count() if torch.cuda.is_available() else 0) + 1
    path = box.study(_deep_set(BASE, "execution.gpus_per_trial", wanted))
    box.refuse(["run", path], "study.yaml", "execution.gpus_per_trial")


@pytest.mark.parametrize("execution", [{"cpus_per_trial": 4096}, {"cpus_per_trial": 2, "num_cpus": 1}], ids=["machine", "num_cpus"])
def test_more_cpus_per_trial_than_there_are(box, execution):
    box.refuse(["run", box.study({**BASE, "execution": execution})], "study.yaml", "execution.cpus_per_trial")


def test_address_where_nothing_listens(box):
    port = _free_port()
    box.refuse(["run", box.study(), "--address", f"127.0.0.1:{port}"], "--address", "nothing answers")
    box.refuse(["run", box.study(), "--address", f"ray://127.0.0.1:{port}"], "--address", "nothing answers")
    box.refuse(["run", box.study(_deep_set(BASE, "execution.address", f"127.0.0.1:{port}"))], "execution.address")


@pytest.mark.parametrize("address", ["nonsense", "host:notaport", "127.0.0.1:99999", ":6379"])
def test_malformed_address(box, address):
    box.refuse(["run", box.study(), "--address", address], "--address")


@pytest.mark.parametrize("root", ["no/such/folder", None], ids=["missing", "unset"])
def test_cifar_study_without_its_data_folder(box, root):
    path = box.study(_deep_set(BASE, "data", {"dataset": "cifar10", "root": root}))
    box.refuse(["run", path], "study.yaml", "data.root")


def test_cifar_folder_relative_to_the_study_file_not_the_cwd(box):
    """The study's own folder holds no CIFAR data even though the working directory does."""
    sub = box.root / "studies"
    sub.mkdir()
    (box.root / "cifar" / "cifar-10-batches-py").mkdir(parents=True)
    path = sub / "study.yaml"
    path.write_text(yaml.safe_dump(_deep_set(BASE, "data", {"dataset": "cifar10", "root": "cifar"})))
    box.refuse(["run", path], "data.root", str(sub / "cifar"))


def test_tabular_study_without_its_lookup_folder(box):
    study = {**BASE, "space": _space("nb201"), "objectives": ["nb201_clean_acc", "nb201_pgd_acc_2"], "metrics": [],
             "lookup": {"root": "no/such/nb201"}}
    box.refuse(["run", box.study(study)], "study.yaml", "lookup.root")


GPU_STUDIES = sorted(p.name for p in (REPO / "studies").glob("*.yaml") if "gpus_per_trial: 1" in p.read_text())


@pytest.mark.parametrize("name", GPU_STUDIES)
def test_shipped_gpu_studies_refused_on_a_machine_that_cannot_run_them(box, name):
    if torch.cuda.is_available() and Path("~/data/cifar10").expanduser().is_dir():
        pytest.skip("this machine has a GPU and ~/data/cifar10: the study can run")
    box.refuse(["run", REPO / "studies" / name], name, ("execution.gpus_per_trial", "data.root"))


# ------------------------------------------------------------------- 5. flags
STUDY_FLAGS = [
    (["run", "STUDY", "--n-trials", "-3"], "--n-trials"),
    (["run", "STUDY", "--n-trials", "0"], "--n-trials"),
    (["run", "STUDY", "--n-trials", "abc"], "--n-trials"),
    (["run", "STUDY", "--n-trials", "1.5"], "--n-trials"),
    (["run", "STUDY", "--storage", "sqlite//nope"], "--storage"),
    (["run", "STUDY", "--storage", "nosuchdb://h/db"], "--storage"),
    (["resume", "STUDY", "--storage", "://"], "--storage"),
    (["run", "STUDY", "--bogus-flag"], "--bogus-flag"),
    (["run"], "study"),
    (["report", "STUDY", "--trials", "abc"], "--trials"),
    (["report", "STUDY", "--trials", "1,,2"], "--trials"),
    (["report", "STUDY", "--trials", "-1"], "--trials"),
    (["report", "STUDY", "-o", "DIR"], "--output"),
    (["report", "STUDY", "--storage", "hello"], "--storage"),
    (["export", "STUDY", "--pick", "knee", "-o", "DIR"], "--output"),
    (["export", "STUDY", "--pick", "knee", "-o", "FILE/x.yaml"], "--output"),
    (["export", "STUDY", "--trial", "-1", "-o", "x.yaml"], "--trial"),
    (["export", "STUDY", "--trial", "1", "--pick", "knee", "-o", "x.yaml"], "--pick"),
    (["rescore", "STUDY", "--eval-samples", "0"], "--eval-samples"),
    (["rescore", "STUDY", "--trials", "abc"], "--trials"),
    (["rescore", "STUDY", "--device", "bogus"], "--device"),
    (["rescore", "STUDY", "--suite", "bogus"], "--suite"),
    (["frobnicate", "STUDY"], "frobnicate"),
]


@pytest.mark.parametrize(("argv", "fragment"), STUDY_FLAGS, ids=[" ".join(a)[:50] for a, _ in STUDY_FLAGS])
def test_bad_study_command_flags(box, argv, fragment):
    (box.root / "adir").mkdir()
    (box.root / "afile").write_text("x")
    swap = {"STUDY": str(box.study()), "DIR": str(box.root / "adir"), "FILE/x.yaml": str(box.root / "afile" / "x.yaml")}
    box.refuse([swap.get(a, a) for a in argv], fragment)


MODEL = ["--set", "arch=mobilenet_tiny", "--set", "width_mult=0.35", "--set", "expand_ratio=2"]
TRAIN_FLAGS = [
    (["--lr", "inf"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--subset", "0"], "--subset"),
    (["--val-fraction", "0"], "--val-fraction"),
    (["--val-fraction", "1"], "--val-fraction"),
    (["--val-fraction", "nan"], "--val-fraction"),
    (["--eval-samples", "0"], "--eval-samples"),
    (["--eval-eps", "nan"], "--eval-eps"),
    (["--eval-eps", "inf"], "--eval-eps"),
    (["--eval-step-size", "0"], "--eval-step-size"),
    (["--eval-restarts", "0"], "--eval-restarts"),
    (["--seed", "-1"], "--seed"),
    (["--device", "bogus"], "--device"),
    (["--device", "cuda:7"], "--device"),
    (["--method", "mart"], "--method"),
    (["--dataset", "mnist"], "--dataset"),
    (["--set", "width_mult=true"], "width_mult"),
    (["--set", "width_mult=.nan"], "width_mult"),
    (["--set", "width_mult=.inf"], "width_mult"),
    (["--set", "width_mult=[0.5]"], "width_mult"),
    (["--set", "expand_ratio=0"], "expand_ratio"),
    (["--set", "expand_ratio=2.5"], "expand_ratio"),
    (["--set", "expand_ratio=true"], "expand_ratio"),
    (["--set", "arch=true"], "arch"),
    (["--set", "recipe.lr=.nan"], "lr"),
    (["--set", "recipe.epochs=0"], "epochs"),
    (["--set", "recipe.lr=true"], "recipe.lr"),
    (["--recipe", "BOOLS"], "lr"),
    (["--set", "data.subset=0"], "subset"),
    (["--set", "data.seed=-1"], "seed"),
    (["--set", "data.val_fraction=true"], "val_fraction"),
    (["--dataset", "cifar10", "--data-root", "nowhere"], "nowhere"),
    (["--dataset", "cifar10", "--data-root", "FILE"], "afile"),
    (["--set", "eval.max_samples=0"], "max_samples"),
    (["--set", "width_mult"], "--set"),
    (["-o", "DIR"], "--output"),
    (["-o", "FILE/m.pt"], "--output"),
    (["--recipe", "missing.yaml"], "missing.yaml"),
    (["--recipe", "TAGGED"], "not valid YAML"),
]


@pytest.mark.parametrize(("flags", "fragment"), TRAIN_FLAGS, ids=[" ".join(f)[:40] for f, _ in TRAIN_FLAGS])
def test_bad_train_flags(box, monkeypatch, flags, fragment):
    _no_training(monkeypatch)
    (box.root / "adir").mkdir()
    (box.root / "afile").write_text("x")
    (box.root / "tagged.yaml").write_text(f'epochs: !!python/object/apply:os.system ["touch {MARKER}"]\n')
    (box.root / "bools.yaml").write_text("lr: true\n")
    swap = {"DIR": str(box.root / "adir"), "FILE/m.pt": str(box.root / "afile" / "m.pt"), "TAGGED": str(box.root / "tagged.yaml"),
            "FILE": str(box.root / "afile"), "BOOLS": str(box.root / "bools.yaml")}
    box.refuse(["train", *MODEL, *[swap.get(f, f) for f in flags]], fragment)


def test_train_output_into_a_read_only_folder(box, monkeypatch):
    _no_training(monkeypatch)
    ro = _readonly_dir(box.root)
    box.refuse(["train", *MODEL, "-o", ro / "m.pt"], "--output", "not writable")


# ------------------------------------------------------------------- candidate files
CANDIDATE_FILES = [
    (None, b"arch: mobilenet_tiny\nwidth_mult: 0.5\n# caf\xe9\n", "not UTF-8"),
    (None, "arch: [mobilenet_tiny\n", "not valid YAML"),
    (None, f'arch: !!python/object/apply:os.system ["touch {MARKER}"]\n', "not valid YAML"),
    (None, "- arch\n- width_mult\n", "expected a mapping"),
    (None, "", "expected a mapping"),
    ({**CANDIDATE, "widht": 0.5}, None, "widht"),
    ({"width_mult": 0.5}, None, "arch"),
    ({**CANDIDATE, "width_mult": float("nan")}, None, "width_mult"),
    ({**CANDIDATE, "width_mult": True}, None, "width_mult"),
    ({**CANDIDATE, "expand_ratio": [0]}, None, "expand_ratio"),
    ({**CANDIDATE, "prune_ratio": 1.0}, None, "prune_ratio"),
    ({**CANDIDATE, "quant": "mbn", "weight_bits": 4}, None, "weight_bits"),
    ({**CANDIDATE, "data": {"dataset": "mnist"}}, None, "dataset"),
]


@pytest.mark.parametrize(("data", "text", "fragment"), CANDIDATE_FILES, ids=[str(i) for i in range(len(CANDIDATE_FILES))])
def test_bad_candidate_files(box, data, text, fragment):
    path = box.candidate(data, text=text)
    box.refuse(["profile", path], fragment)


CANDIDATE_SECTIONS = [
    ({"recipe": {"optimiser": "adam"}}, "optimiser"),
    ({"recipe": {"epochs": 0}}, "epochs"),
    ({"recipe": {"lr": float("nan")}}, "lr"),
    ({"recipe": {"lr": float("inf")}}, "lr"),
    ({"recipe": 5}, "recipe"),
    ({"eval": {"attack": {"eps": float("nan")}}}, "eps"),
    ({"eval": {"max_samples": 0}}, "max_samples"),
    ({"recipe": {"lr": True}}, "recipe.lr"),
    ({"recipe": {"epochs": True}}, "recipe.epochs"),
    ({"recipe": {"attack": {"eps": True}}}, "recipe.attack.eps"),
    ({"eval": {"attack": {"steps": True}}}, "eval.attack.steps"),
    ({"data": {"subset": 0}}, "subset"),
    ({"data": {"val_fraction": float("nan")}}, "val_fraction"),
]


@pytest.mark.parametrize(("section", "fragment"), CANDIDATE_SECTIONS, ids=[str(s)[:40] for s, _ in CANDIDATE_SECTIONS])
def test_bad_candidate_sections_refused_before_training(box, monkeypatch, section, fragment):
    _no_training(monkeypatch)
    box.refuse(["train", box.candidate({**CANDIDATE, **section})], fragment)


# ------------------------------------------------------------------- 6. checkpoints
class _Payload:
    """Unpickling this runs ``os.system``: a code-executing pickle."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _checkpoint(path: Path, *, weights: str = "ok", **changes) -> Path:
    from dse.data import dataset_spec
    from dse.models import build_model

    spec = dataset_spec("digits")
    model = build_model(CANDIDATE, in_channels=spec.in_channels, num_classes=spec.num_classes, mean=spec.mean, std=spec.std)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if weights != "ok":
        first = next(k for k, v in state.items() if k.endswith(".weight") and v.is_floating_point() and v.dim() > 1)
        state[first].view(-1)[0] = float(weights)
    payload = {"format": 1, "state_dict": state, "candidate": dict(CANDIDATE), "data": {"dataset": "digits", "subset": 100}, **changes}
    torch.save(payload, path)
    return path


def _bad_checkpoint(root: Path, kind: str) -> Path:
    path = root / "model.pt"
    if kind == "pickle_payload":
        with open(path, "wb") as f:
            pickle.dump({"state_dict": _Payload(), "candidate": CANDIDATE}, f)
    elif kind == "torch_pickle_payload":
        torch.save({"state_dict": {}, "candidate": _Payload()}, path)
    elif kind == "truncated":
        _checkpoint(path)
        path.write_bytes(path.read_bytes()[:700])
    elif kind == "random_bytes":
        path.write_bytes(random.Random(1).randbytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind == "yaml_text":
        path.write_text(yaml.safe_dump(CANDIDATE))
    elif kind == "a_list":
        torch.save([1, 2, 3], path)
    elif kind == "no_candidate":
        torch.save({"state_dict": {}}, path)
    elif kind == "bad_candidate":
        _checkpoint(path, candidate={**CANDIDATE, "width_mult": 9})
    elif kind == "wrong_weights":
        _checkpoint(path, candidate={**CANDIDATE, "width_mult": 1.0})
    elif kind in ("nan", "inf", "-inf"):
        _checkpoint(path, weights=kind)
    return path


CHECKPOINTS = [
    ("pickle_payload", "model.pt"),
    ("torch_pickle_payload", "model.pt"),
    ("truncated", "model.pt"),
    ("random_bytes", "model.pt"),
    ("empty", "model.pt"),
    ("folder", "model.pt"),
    ("yaml_text", "model.pt"),
    ("a_list", "not a dse checkpoint"),
    ("no_candidate", "not a dse checkpoint"),
    ("bad_candidate", "model.pt: candidate: width_mult"),
    ("wrong_weights", "weights do not fit"),
    ("nan", "not finite"),
    ("inf", "not finite"),
    ("-inf", "not finite"),
]


@pytest.mark.parametrize(("kind", "fragment"), CHECKPOINTS, ids=[k for k, _ in CHECKPOINTS])
def test_bad_checkpoints_are_refused_and_never_executed(box, kind, fragment):
    path = _bad_checkpoint(box.root, kind)
    box.refuse(["eval", path, "--eval-samples", "10", "--eval-steps", "1", "--no-checks"], fragment)


def test_bad_checkpoint_among_transfer_inputs(box):
    good = _checkpoint(box.root / "good.pt")
    bad = _bad_checkpoint(box.root, "pickle_payload")
    box.refuse(["transfer", good, bad, "--eval-samples", "10", "--eval-steps", "1"], "model.pt")


@pytest.mark.parametrize("flags", [["--eval-samples", "0"], ["--device", "bogus"], ["-o", "DIR"], ["--split", "train"], ["--suite", "bogus"]],
                         ids=lambda f: " ".join(f))
def test_bad_eval_flags(box, flags):
    path = _checkpoint(box.root / "good.pt")
    (box.root / "adir").mkdir()
    box.refuse(["eval", path, *[str(box.root / "adir") if f == "DIR" else f for f in flags]], flags[0])


def test_eval_output_into_a_read_only_folder(box):
    path = _checkpoint(box.root / "good.pt")
    ro = _readonly_dir(box.root)
    box.refuse(["eval", path, "-o", ro / "e.json"], "--output", "not writable")


# ------------------------------------------------------------------- 9. commands on a study never run
NEVER_RUN = [
    ["resume", "STUDY"],
    ["report", "STUDY"],
    ["report", "STUDY", "--storage", "sqlite:///other.db"],
    ["export", "STUDY", "--pick", "knee", "-o", "x.yaml"],
    ["export", "STUDY", "--trial", "0", "-o", "x.yaml"],
    ["rescore", "STUDY"],
    ["rescore", "STUDY", "--storage", "sqlite:///other.db"],
]


@pytest.mark.parametrize("argv", NEVER_RUN, ids=[" ".join(a) for a in NEVER_RUN])
def test_commands_on_a_study_that_never_ran_create_nothing(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(BASE))
    before = _snapshot(tmp_path)
    assert main([str(path) if a == "STUDY" else a for a in argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dse: error:") and "dse run" in lines[0], lines
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------- paths relative to the study file
def test_relative_paths_resolve_against_the_study_file(tmp_path, monkeypatch):
    from dse.study.config import load_study_config

    folder = tmp_path / "deep" / "studies"
    folder.mkdir(parents=True)
    (tmp_path / "deep" / "data").mkdir()
    path = folder / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, "data": {"dataset": "cifar10", "root": "../data"}, "storage": "sqlite:///db/s.db"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_study_config(path)
    assert config.data.root == str(tmp_path / "deep" / "data")
    assert config.output_dir == str(folder / "out")
    assert config.storage == f"sqlite:///{folder / 'db' / 's.db'}"
    monkeypatch.chdir(tmp_path)
    assert load_study_config(path).to_dict() == config.to_dict()  # the same from any working directory
    default = load_study_config(_write_without_output(path))
    assert default.output_dir == str(tmp_path / "runs" / "hostile")  # the default output stays under the cwd
    assert not any(tmp_path.rglob("out")) and not (tmp_path / "runs").exists()  # reading creates nothing


def _write_without_output(path: Path) -> Path:
    data = yaml.safe_load(path.read_text())
    data.pop("output_dir")
    data.pop("storage")
    other = path.with_name("default.yaml")
    other.write_text(yaml.safe_dump(data))
    return other


def test_home_in_study_paths(tmp_path, monkeypatch):
    from dse.study.config import load_study_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, "data": {"dataset": "cifar10", "root": "~/cifar"}, "output_dir": "~/out"}))
    config = load_study_config(path)
    assert config.data.root == str(tmp_path / "home" / "cifar") and config.output_dir == str(tmp_path / "home" / "out")


def test_shipped_nb201_study_finds_its_lookup_root_from_any_directory(tmp_path, monkeypatch):
    from dse.study.config import load_study_config

    if not (SHARED_DATA / "nb201-robustness" / "meta.json").is_file():
        pytest.skip(f"NB201 robustness data not found at {SHARED_DATA / 'nb201-robustness'} (../shared/data is absent here)")
    monkeypatch.chdir(tmp_path)
    config = load_study_config(REPO / "studies" / "nb201_cifar10.yaml")
    assert Path(config.lookup.root) == (SHARED_DATA / "nb201-robustness").resolve()
    assert (Path(config.lookup.root) / "meta.json").is_file()


def test_shipped_cifar_cpu_studies_find_their_data_from_any_directory(tmp_path, monkeypatch):
    from dse.study.config import load_study_config

    if not (SHARED_DATA / "cifar10-subset").is_dir():
        pytest.skip(f"CIFAR-10 subset not found at {SHARED_DATA / 'cifar10-subset'} (../shared/data is absent here)")
    monkeypatch.chdir(tmp_path)
    for path in sorted((REPO / "studies").glob("*_cpu.yaml")):
        config = load_study_config(path)
        if config.data.dataset != "digits":
            assert Path(config.data.root) == (SHARED_DATA / "cifar10-subset").resolve(), path.name


# ------------------------------------------------------------------- controls: valid input gets through
VALID_SPACES = [
    {**_space("mobilenet_tiny", width_mult={"low": 0.2, "high": 0.5, "step": 0.1}, per_stage=True), "fixed": {"width_mult": 0.35}},
    _space("joint"),
    _space("quantization", base={"arch": "resnet20"}),
    _space("pruning"),
]


@pytest.mark.parametrize("space", VALID_SPACES, ids=["mobilenet_fixed", "joint", "quantization", "pruning"])
def test_valid_studies_reach_the_runner(box, space):
    with pytest.raises(AssertionError, match="run_study was reached"):
        main(["run", str(box.study({**BASE, "space": space}))])


SHIPPED = sorted(p.name for p in (REPO / "studies").glob("*.yaml") if p.name not in GPU_STUDIES)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_studies_pass_every_check_from_another_directory(box, name):
    """Run from a folder that is not the checkout, each CPU study finds its data (issue 10, kind 3)."""
    text = (REPO / "studies" / name).read_text()
    if "shared/data" in text and not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent here (the study reads its data from ../shared/data)")
    with pytest.raises(AssertionError, match="run_study was reached"):
        main(["run", str(REPO / "studies" / name)])


def test_switches_in_candidate_sections_stay_allowed(box, monkeypatch):
    """``true``/``false`` is refused for numbers, not for the recipe's and evaluation's switches."""
    _no_training(monkeypatch)
    sections = {"recipe": {"epochs": 1, "amp": False, "nesterov": True, "channels_last": True, "attack": {"random_start": False}},
                "eval": {"cascade": True, "checks": {"enabled": True, "samples": 10}, "attack": {"random_start": True}}}
    with pytest.raises(pytest.fail.Exception, match="training was reached"):
        main(["train", str(box.candidate({**CANDIDATE, **sections})), "--subset", "100"])
    study = {**BASE, "recipe": {**BASE["recipe"], "amp": False}, "eval": {**BASE["eval"], "checks": False, "cascade": True},
             "sampler": {"name": "tpe", "seed": 0, "options": {"multivariate": True}}}
    with pytest.raises(AssertionError, match="run_study was reached"):
        main(["run", str(box.study(study))])


@pytest.mark.parametrize("command", ["report", "export", "resume"])
def test_a_corrupted_study_database_is_one_line_and_left_as_it_is(tmp_path, capsys, command):
    study = yaml.safe_load((Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml").read_text())
    study["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(study))
    db = tmp_path / "out" / "study.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"not a database " * 100)
    args = [command, str(path)] + (["--pick", "knee", "-o", str(tmp_path / "x.yaml")] if command == "export" else [])
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be opened" in err[0] and "study.db" in err[0]
    assert db.read_bytes() == b"not a database " * 100
