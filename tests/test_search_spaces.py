"""One suite over every registered search space."""

from __future__ import annotations

import json

import optuna
import pytest

from dse import SpecError
from dse.models import build_model, validate_candidate
from search_spaces import SEARCH_SPACES, get_search_space, suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: Options of the spaces that need some (every other space runs on its defaults).
OPTIONS = {
    "listed": {"candidates": [
        {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 6},
        {"arch": "mobilenet_tiny", "width_mult": 0.35, "expand_ratio": 6, "quant": "fixed", "weight_bits": 2, "act_bits": 2,
         "per_channel": True},
        {"arch": "resnet20", "quant": "mbn", "weight_bases": 3, "act_bases": 1, "depthwise_bits": 8},
    ]},
}


@pytest.mark.parametrize("name", sorted(SEARCH_SPACES))
@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
def test_space_yields_valid_buildable_candidates(name, sampler):
    if name == "replay":
        return _check_replay(sampler)
    samplers = {
        "random": optuna.samplers.RandomSampler(seed=0),
        "tpe": optuna.samplers.TPESampler(seed=0),
        "nsga2": optuna.samplers.NSGAIISampler(seed=0),
    }
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=samplers[sampler])
    seen = set()
    for _ in range(6):
        trial = study.ask()
        spec = suggest(name, trial, OPTIONS.get(name))
        assert {k: v for k, v in validate_candidate(spec).model_dump().items() if k in spec} == spec
        if spec["arch"] == "nb201":  # looked up in published results, never built
            with pytest.raises(SpecError, match="not built or trained"):
                build_model(spec, in_channels=1, num_classes=10, mean=(0.5,), std=(0.3,))
        else:
            model = build_model(spec, in_channels=1, num_classes=10, mean=(0.5,), std=(0.3,))
            assert sum(p.numel() for p in model.parameters()) > 0
        seen.add(str(spec))
        study.tell(trial, [0.5, 1.0])
    assert len(seen) > 1


def _check_replay(sampler: str) -> None:
    """The replay space proposes recorded candidates only (its candidates are table rows, not models)."""
    import pandas as pd

    from search_spaces.replay import LearningCurveTable

    table = LearningCurveTable(
        trials=pd.DataFrame({"number": range(8), "state": ["COMPLETE"] * 7 + ["FAIL"], "robust_acc": [0.1 * k for k in range(8)]}),
        epochs=pd.DataFrame({"number": list(range(8)), "epoch": [1] * 8}),
    )
    study = optuna.create_study(directions=["maximize", "minimize"], sampler={
        "random": optuna.samplers.RandomSampler(seed=0), "tpe": optuna.samplers.TPESampler(seed=0),
        "nsga2": optuna.samplers.NSGAIISampler(seed=0)}[sampler])
    seen = set()
    for _ in range(6):
        trial = study.ask()
        spec = suggest("replay", trial, {"table": table})
        assert set(spec) == {"replay"} and spec["replay"] in range(7), "a failed recorded trial is never proposed"
        seen.add(spec["replay"])
        study.tell(trial, [0.5, 1.0])
    assert len(seen) > 1


def test_mobilenet_tiny_choices_ranges_and_per_stage():
    space = get_search_space("mobilenet_tiny")
    spec = space(optuna.trial.FixedTrial({"width_mult": 0.65, "expand_ratio": 10}), width_mult=[0.35, 0.65], expand_ratio=[6, 10])
    assert spec == {"arch": "mobilenet_tiny", "width_mult": 0.65, "expand_ratio": 10}
    spec = space(optuna.trial.FixedTrial({"width_mult": 0.5, "expand_ratio": 4}), width_mult={"low": 0.25, "high": 1.0, "step": 0.05}, expand_ratio=[4])
    assert spec["width_mult"] == 0.5
    params = {f"width_mult_{i}": 0.35 for i in range(7)} | {f"expand_ratio_{i}": 6 for i in range(1, 6)}
    spec = space(optuna.trial.FixedTrial(params), width_mult=[0.35], expand_ratio=[6], per_stage=True)
    assert spec["width_mult"] == [0.35] * 7 and spec["expand_ratio"] == [6] * 5


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"width_mult": {"low": 0.05, "high": 1.0}}, "outside"),
        ({"width_mult": {"high": 1.0}}, "needs low and high"),
        ({"expand_ratio": []}, "at least one"),
        ({"depth": 3}, "unexpected keyword"),
    ],
)
def test_bad_space_options_are_named(options, fragment):
    trial = optuna.create_study().ask()
    with pytest.raises(SpecError, match=fragment):
        suggest("mobilenet_tiny", trial, options)


def test_unknown_space():
    with pytest.raises(SpecError, match="unknown 'nasnet'"):
        get_search_space("nasnet")


def test_listed_space_with_the_grid_sampler_proposes_every_entry_once():
    from dse.study.sampler_registry import build_sampler
    from search_spaces import check_options, listed_grid

    options = OPTIONS["listed"]
    check_options("listed", options)
    study = optuna.create_study(directions=["maximize"], sampler=build_sampler("grid", seed=0, options={}, grid=listed_grid(options)))
    seen = []
    for _ in range(3):
        trial = study.ask()
        seen.append(suggest("listed", trial, options))
        study.tell(trial, [0.5])
    key = lambda c: json.dumps(c, sort_keys=True)  # noqa: E731
    assert sorted(map(key, seen)) == sorted(map(key, options["candidates"]))
    with pytest.raises(SpecError, match=r"candidates\[1\]"):
        check_options("listed", {"candidates": [options["candidates"][0], {"arch": "mobilenet_tiny", "width_mult": 7}]})
    with pytest.raises(SpecError, match="listed"):
        build_sampler("grid", seed=0, options={})


@pytest.mark.parametrize("space", ["quantization", "joint"])
def test_per_channel_option_marks_fixed_and_multi_bit_candidates_only(space):
    quant = {"modes": ["none", "fixed", "mbn"], "per_channel": True}
    options = {"quantization": quant} if space == "joint" else quant
    seen = {}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        candidate = suggest(space, study.ask(), options)
        seen[candidate.get("quant", "none")] = candidate.get("per_channel", False)
    assert seen == {"none": False, "fixed": True, "mbn": True}
    plain = suggest(space, optuna.trial.FixedTrial({"quant": "fixed", "weight_bits": 2, "act_bits": 2,
                                                    "width_mult": 0.35, "expand_ratio": 2, "prune_scheme": "none"}),
                    {"quantization": {"modes": ["fixed"]}} if space == "joint" else {"modes": ["fixed"]})
    assert plain["quant"] == "fixed" and plain.get("per_channel", False) is False
