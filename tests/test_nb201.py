"""NAS-Bench-201 robustness lookups (Jung et al. 2023), the nb201 space and the search-efficiency bench."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from dse import DataError, SpecError
from dse.models.nb201 import OPS, NB201Config, build_nb201, make_cell, parse_cell
from objectives._nb201 import CORRUPTIONS, NB201_ATTACKS, NB201_METRICS, NB201Table, _table, evaluate_nb201
from search_spaces.nb201 import nb201
from tests.conftest import load_bench

optuna.logging.set_verbosity(optuna.logging.WARNING)

NB201_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201-robustness"
ARCH_13433 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|nor_conv_1x1~1|skip_connect~2|"
# id 217 is published under its isomorph, id 46 (and id 25 under id 3)
ARCH_217 = "|avg_pool_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|nor_conv_3x3~0|skip_connect~1|nor_conv_3x3~2|"
ARCH_46 = "|skip_connect~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ARCH_25 = "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|"
ARCH_3 = "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|skip_connect~2|"


bench = load_bench("search_efficiency")


@pytest.fixture
def real_root() -> Path:
    if not (NB201_DATA / "meta.json").is_file() or not (NB201_DATA / "cifar10" / "clean_accuracy.json").is_file():
        pytest.skip(f"NB201 robustness data (Jung et al. 2023) not found at {NB201_DATA} (read-only shared input)")
    return NB201_DATA


@pytest.fixture(scope="module")
def real_table() -> NB201Table:
    if not (NB201_DATA / "meta.json").is_file():
        pytest.skip(f"NB201 robustness data (Jung et al. 2023) not found at {NB201_DATA} (read-only shared input)")
    return NB201Table(NB201_DATA, dataset="cifar10")


# -- a tiny synthetic directory in the published layout ------------------------------------------------
CELL_A = make_cell(["nor_conv_3x3"] * 6)
CELL_B = make_cell(["skip_connect"] * 6)
CELL_C = make_cell(["nor_conv_3x3"] * 5 + ["none"])  # declared isomorphic to A in the synthetic meta
CELL_D = make_cell(["avg_pool_3x3"] * 6)


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    meta = {
        "ids": {
            "0": {"nb201-string": CELL_A, "isomorph": "0"},
            "1": {"nb201-string": CELL_B, "isomorph": "1"},
            "2": {"nb201-string": CELL_C, "isomorph": "0"},
            "3": {"nb201-string": CELL_D, "isomorph": "3"},
        },
        "epsilons": {"pgd@Linf": [0.5, 1.0, 2.0]},
    }
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "cifar10").mkdir()
    clean = {"cifar10": {"clean": {"accuracy": {"0": 0.9, "1": 0.6, "3": 0.7}}}}
    pgd = {"cifar10": {"pgd@Linf": {"accuracy": {"0": [0.5, 0.3, 0.1], "1": [0.4, 0.35, 0.3], "3": [0.6, 0.2, 0.0]}}}}
    (tmp_path / "cifar10" / "clean_accuracy.json").write_text(json.dumps(clean))
    (tmp_path / "cifar10" / "pgd@Linf_accuracy.json").write_text(json.dumps(pgd))
    return tmp_path


def _one_line(err: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(err.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_synthetic_table_lookups_isomorphs_and_values(tiny_root):
    table = NB201Table(tiny_root)
    assert table.metrics() == ["nb201_clean_acc", "nb201_params", "nb201_pgd_acc_0p5", "nb201_pgd_acc_1", "nb201_pgd_acc_2"]
    assert table.lookup(CELL_A, "nb201_clean_acc") == 0.9
    assert table.lookup(CELL_B, "nb201_pgd_acc_2") == 0.3
    assert table.lookup(CELL_D, "nb201_pgd_acc_0p5") == 0.6
    assert table.lookup(CELL_C, "nb201_pgd_acc_1") == table.lookup(CELL_A, "nb201_pgd_acc_1") == 0.3
    assert table.isomorph_id(CELL_C) == 0
    assert table.unique_cells() == [CELL_A, CELL_B, CELL_D]
    np.testing.assert_allclose(
        table.values(["nb201_clean_acc", "nb201_pgd_acc_2"]), [[0.9, 0.1], [0.6, 0.3], [0.7, 0.0]]
    )
    scores = evaluate_nb201({"arch": "nb201", "cell": CELL_C}, ["nb201_pgd_acc_2", "nb201_clean_acc"], root=tiny_root)
    assert scores == {"nb201_pgd_acc_2": 0.1, "nb201_clean_acc": 0.9}
    assert _table(tiny_root, "cifar10") is _table(str(tiny_root), "cifar10")  # cached per (root, dataset)


def test_synthetic_table_loads_lazily(tiny_root):
    (tiny_root / "cifar10" / "pgd@Linf_accuracy.json").write_text("{not json")
    table = NB201Table(tiny_root)
    assert table.lookup(CELL_B, "nb201_clean_acc") == 0.6  # the corrupt PGD file is never read
    with pytest.raises(DataError) as err:
        table.lookup(CELL_B, "nb201_pgd_acc_1")
    _one_line(err, "pgd@Linf_accuracy.json", "corrupt JSON")


def test_bad_directories_and_files_are_named_in_one_line(tiny_root, tmp_path):
    with pytest.raises(DataError) as err:
        NB201Table(tmp_path / "nowhere")
    _one_line(err, "nowhere", "not a directory")
    with pytest.raises(DataError) as err:
        NB201Table(tiny_root, dataset="cifar100")
    _one_line(err, "cifar100", "found: cifar10")
    table = NB201Table(tiny_root)
    with pytest.raises(DataError) as err:
        table.lookup(CELL_A, "nb201_square_acc_1")
    _one_line(err, "aa_square@Linf_accuracy.json", "missing")
    with pytest.raises(DataError) as err:
        table.lookup(CELL_A, "nb201_pgd_acc_8")
    _one_line(err, "meta.json", "8/255")
    (tiny_root / "cifar10" / "clean_accuracy.json").write_text(json.dumps({"cifar10": {"clean": {}}}))
    with pytest.raises(DataError) as err:
        NB201Table(tiny_root).lookup(CELL_A, "nb201_clean_acc")
    _one_line(err, "clean_accuracy.json", "malformed", "accuracy")
    (tiny_root / "meta.json").write_text('{"ids": [1, 2]')
    with pytest.raises(DataError) as err:
        NB201Table(tiny_root).unique_cells()
    _one_line(err, "meta.json", "corrupt JSON")
    (tiny_root / "meta.json").unlink()
    with pytest.raises(DataError) as err:
        NB201Table(tiny_root)
    _one_line(err, "meta.json", "missing")


def test_bad_cells_metrics_and_candidates_are_named_in_one_line(tiny_root):
    table = NB201Table(tiny_root)
    with pytest.raises(SpecError) as err:
        table.lookup(CELL_A, "nb201_pgd_acc_9")
    _one_line(err, "nb201_pgd_acc_9", "unknown")
    with pytest.raises(SpecError) as err:
        table.lookup("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "nb201_clean_acc")
    _one_line(err, "'conv'")
    unknown_cell = make_cell(["none"] * 6)  # well-formed, absent from the synthetic meta
    with pytest.raises(SpecError) as err:
        table.lookup(unknown_cell, "nb201_clean_acc")
    _one_line(err, unknown_cell, "meta.json")
    with pytest.raises(SpecError) as err:
        evaluate_nb201({"arch": "mobilenet_tiny", "cell": CELL_A}, ["nb201_clean_acc"], root=tiny_root)
    _one_line(err, "candidate: arch")
    with pytest.raises(SpecError) as err:
        evaluate_nb201({"arch": "nb201", "cell": CELL_A}, ["natural_acc"], root=tiny_root)
    _one_line(err, "natural_acc")


@pytest.mark.parametrize(
    ("cell", "fragment"),
    [
        ("|none~0|+|none~0|none~1|", "3 nodes"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "'none~0'"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|conv_5x5~2|", "conv_5x5"),
        ("none~0+none~0|none~1+none~0|none~1|none~2", "node 1"),
    ],
)
def test_config_rejects_malformed_cells(cell, fragment):
    with pytest.raises(ValueError, match=fragment):
        NB201Config(cell=cell)


def test_config_and_model_builder():
    config = NB201Config.model_validate({"arch": "nb201", "cell": ARCH_13433})
    assert config.model_dump() == {"arch": "nb201", "cell": ARCH_13433}
    assert parse_cell(ARCH_13433) == ("avg_pool_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_1x1", "nor_conv_1x1", "skip_connect")
    with pytest.raises(ValueError, match="width_mult"):
        NB201Config.model_validate({"arch": "nb201", "cell": ARCH_13433, "width_mult": 1.0})
    with pytest.raises(ValueError, match="frozen"):
        config.cell = ARCH_3
    with pytest.raises(SpecError, match="not built or trained"):
        build_nb201(config, in_channels=3, num_classes=10)


def test_metric_names_and_descriptions():
    assert NB201_METRICS["nb201_pgd_acc_2"].description == "PGD l_inf eps=2/255 (published, Jung et al. 2023)"
    assert "eps=0.5/255" in NB201_METRICS["nb201_square_acc_0p5"].description
    assert "FGSM" in NB201_METRICS["nb201_fgsm_acc_255"].description
    assert all(m.direction == "maximize" and m.name.isidentifier() for m in NB201_METRICS.values() if m.name != "nb201_params")
    assert NB201_METRICS["nb201_params"].direction == "minimize"
    # one metric per published (attack, eps) and (corruption, severity), named from its fields
    expected = {"nb201_clean_acc", "nb201_params"}
    for key, (source, _, eps_list) in NB201_ATTACKS.items():
        for eps in eps_list:
            name = f"nb201_{key}_acc_{str(eps).replace('.', 'p')}"
            expected.add(name)
            assert NB201_METRICS[name].source == source and NB201_METRICS[name].eps == eps
            assert NB201_METRICS[name].filename == f"{source}_accuracy.json"
    for corruption in CORRUPTIONS:
        for severity in range(1, 6):
            name = f"nb201_{corruption}_acc_s{severity}"
            expected.add(name)
            assert NB201_METRICS[name].source == corruption and NB201_METRICS[name].severity == severity
    assert set(NB201_METRICS) == expected


def test_nb201_params_is_a_computed_cost_axis(tiny_root):
    from dse.models.nb201 import nb201_params
    from dse.study.config import StudyConfig

    # published extremes for CIFAR-10 (Dong & Yang 2020): 0.073 M and 1.531 M parameters
    assert nb201_params(make_cell(["none"] * 6)) == nb201_params(make_cell(["skip_connect", "avg_pool_3x3"] * 3)) == 73_306
    assert nb201_params(make_cell(["nor_conv_3x3"] * 6)) == 1_531_546
    # one 1x1 edge: 5 cells per stage at 16, 32 and 64 channels, each C^2 + 2C
    one = make_cell(["nor_conv_1x1"] + ["none"] * 5)
    assert nb201_params(one) - 73_306 == 5 * sum(c * c + 2 * c for c in (16, 32, 64))
    assert nb201_params(one, num_classes=100) - nb201_params(one) == 90 * 64 + 90
    table = NB201Table(tiny_root)
    np.testing.assert_allclose(table.values(["nb201_params"])[:, 0], [nb201_params(c) for c in table.unique_cells()])
    scores = evaluate_nb201({"arch": "nb201", "cell": CELL_C}, ["nb201_params"], root=tiny_root)
    assert scores["nb201_params"] == nb201_params(CELL_A), "looked up through the isomorph, like every nb201_* value"
    assert StudyConfig.direction_of("nb201_params") == "minimize"


# -- the published data ---------------------------------------------------------------------------------
def test_published_values(real_table):
    assert real_table.lookup(ARCH_13433, "nb201_clean_acc") == pytest.approx(0.893)
    assert real_table.lookup(ARCH_13433, "nb201_pgd_acc_1") == pytest.approx(0.336)
    assert real_table.isomorph_id(ARCH_13433) == 13433
    assert len(real_table.unique_cells()) == 6466
    assert len(real_table.metrics()) == len(NB201_METRICS)
    values = real_table.values(["nb201_clean_acc", "nb201_pgd_acc_2", "nb201_square_acc_4"])
    assert values.shape == (6466, 3) and np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()


@pytest.mark.parametrize(("cell", "isomorph", "iso_id"), [(ARCH_217, ARCH_46, 46), (ARCH_25, ARCH_3, 3)])
def test_non_canonical_cells_get_their_isomorphs_values(real_table, cell, isomorph, iso_id):
    assert real_table.isomorph_id(cell) == iso_id
    for metric in ("nb201_clean_acc", "nb201_pgd_acc_2", "nb201_fgsm_acc_1"):
        assert real_table.lookup(cell, metric) == real_table.lookup(isomorph, metric)


def test_evaluate_on_cifar100(real_root):
    scores = evaluate_nb201({"arch": "nb201", "cell": ARCH_13433}, ["nb201_clean_acc"], root=real_root, dataset="cifar100")
    assert 0.01 < scores["nb201_clean_acc"] < 1


# -- the search space -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
def test_space_yields_valid_cells(sampler):
    samplers = {
        "random": optuna.samplers.RandomSampler(seed=0),
        "tpe": optuna.samplers.TPESampler(seed=0, n_startup_trials=4),
        "nsga2": optuna.samplers.NSGAIISampler(seed=0, population_size=4),
    }
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=samplers[sampler])
    seen = set()
    for i in range(12):
        trial = study.ask()
        spec = nb201(trial)
        assert NB201Config.model_validate(spec).model_dump() == spec
        assert sorted(trial.params) == [f"edge_{k}" for k in range(6)]
        seen.add(spec["cell"])
        study.tell(trial, [i % 3 / 3, 1 - i % 4 / 4])
    assert len(seen) > 1


def test_space_ops_subset_and_bad_ops():
    params = {f"edge_{k}": "nor_conv_3x3" for k in range(6)}
    spec = nb201(optuna.trial.FixedTrial(params), ops=["nor_conv_3x3", "skip_connect"])
    assert spec == {"arch": "nb201", "cell": make_cell(["nor_conv_3x3"] * 6)}
    trial = optuna.create_study().ask()
    for bad, fragment in (([], "at least one"), (["conv_5x5"], "conv_5x5"), ("none", "expected a list")):
        with pytest.raises(SpecError, match=fragment) as err:
            nb201(trial, ops=bad)
        _one_line(err, "ops")
    for op in OPS:  # every operation of the space makes a cell the model spec accepts
        cell = nb201(optuna.trial.FixedTrial({f"edge_{k}": op for k in range(6)}), ops=[op])["cell"]
        assert parse_cell(cell) == (op,) * 6 and NB201Config(cell=cell).cell == cell


# -- hypervolume and the bench --------------------------------------------------------------------------
def _brute_force_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact volume of the union of boxes [reference, p] by inclusion-exclusion over all subsets."""
    points = [p for p in points if np.all(p >= reference)]
    total = 0.0
    for size in range(1, len(points) + 1):
        for subset in itertools.combinations(points, size):
            corner = np.min(subset, axis=0)
            total += (-1) ** (size + 1) * float(np.prod(corner - reference))
    return total


@pytest.mark.parametrize("dims", [2, 3])
def test_hypervolume_matches_brute_force(dims):
    rng = np.random.default_rng(dims)
    for n in (1, 2, 3, 5, 8):
        for _ in range(4):
            points = rng.integers(0, 6, size=(n, dims)) / 5 if n > 2 else rng.random((n, dims))
            reference = np.full(dims, 0.1) if n == 5 else np.zeros(dims)  # n=5: some points below the reference
            expected = _brute_force_hypervolume(points, reference)
            assert bench.hypervolume(points, reference) == pytest.approx(expected, abs=1e-12)
    assert bench.hypervolume(np.empty((0, 2)), [0, 0]) == 0.0
    assert bench.hypervolume(np.array([[0.5, 0.5], [0.2, 0.9]]), [0, 0]) == pytest.approx(0.25 + 0.2 * 0.4)


def test_mini_bench_returns_fractions(real_root):
    runs, true_hv = bench.run_benchmark(
        root=real_root, samplers=["random", "nsga2"], settings=["clean-pgd2", "clean-pgd2-square4"], seeds=1, trials=[5, 10]
    )
    assert set(true_hv) == {"clean-pgd2", "clean-pgd2-square4"} and all(v > 0 for v in true_hv.values())
    assert len(runs) == 4
    for run in runs:
        assert 0 < run.fractions[5] <= run.fractions[10] <= 1
    rows = bench.summarize(runs)
    assert [(r["setting"], r["sampler"], r["seeds"]) for r in rows][0] == ("clean-pgd2", "random", 1)


def test_random_search_reaches_about_085_of_the_true_front(real_root):
    runs, _ = bench.run_benchmark(root=real_root, samplers=["random"], settings=["clean-pgd2"], seeds=10, trials=[100])
    median = float(np.median([r.fractions[100] for r in runs]))
    assert 0.78 < median < 0.93


def test_bench_main_prints_the_table(real_root, capsys):
    assert bench.main(["--root", str(real_root), "--seeds", "1", "--trials", "5,10", "--samplers", "random"]) == 0
    out = capsys.readouterr().out
    assert "HV@10" in out and "random" in out
    assert all(name in out for name in ("clean-pgd2 ", "clean-pgd2-square4", "clean-pgd2-params")), "default settings"
    assert "seconds per ask" not in out, "random is not ask-timed"


def test_bench_main_bad_root_is_one_line(tmp_path, capsys):
    assert bench.main(["--root", str(tmp_path / "nowhere"), "--seeds", "1", "--trials", "5", "--samplers", "random"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere" in err


def test_bench_hypervolume_takes_directions():
    points = np.array([[0.5, 2.0], [0.2, 1.0], [0.9, 9.0]])  # (accuracy max, cost min)
    ref = [0.0, 5.0]  # the third point costs more than the reference: adds nothing
    assert bench.hypervolume(points, ref, ["maximize", "minimize"]) == pytest.approx(0.5 * 3.0 + 0.2 * 1.0)
    flipped = points * [1, -1]
    expected = bench.hypervolume(flipped, [0.0, -5.0])
    assert bench.hypervolume(points, ref, ["maximize", "minimize"]) == pytest.approx(expected)


def test_params_setting_fractions_and_front(real_root, real_table):
    setting = bench.SETTINGS["clean-pgd2-params"]
    assert setting.directions == ("maximize", "maximize", "minimize")
    params = real_table.column("nb201_params")
    ref = setting.reference(real_table)
    assert ref[:2] == (0.0, 0.0) and ref[2] == pytest.approx(params.max() + 0.1 * (params.max() - params.min()))
    front = bench.true_front(real_table, setting)
    assert front[:, 2].min() == params.min() == 73_306, "the cheapest cell's params value is on the true front"
    assert front[:, 0].max() == pytest.approx(np.nanmax(real_table.column("nb201_clean_acc")))
    runs, true_hv = bench.run_benchmark(
        root=real_root, samplers=["random"], settings=[setting.name], seeds=2, trials=[10, 30]
    )
    everything = real_table.values(list(setting.metrics))
    assert true_hv[setting.name] == pytest.approx(bench.hypervolume(everything, ref, setting.directions))
    assert len(runs) == 2
    for run in runs:
        assert 0 < run.fractions[10] <= run.fractions[30] <= 1


def test_bench_main_params_setting_prints_a_table(real_root, capsys):
    argv = ["--root", str(real_root), "--samplers", "random", "--settings", "clean-pgd2-params"]
    argv += ["--seeds", "2", "--trials", "10,20"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "nb201_params (min)" in out and "HV@20" in out
    row = next(line for line in out.splitlines() if line.startswith("clean-pgd2-params") and "random" in line)
    assert row.split()[2] == "2", row


def test_ask_timing_table(real_root, capsys, monkeypatch):
    setting = bench.SETTINGS["clean-pgd2"]
    timings = bench.time_asks("pls", setting, root=real_root, at=(10, 20), repeats=2)
    assert set(timings) == {10, 20} and all(0 < t < 1 for t in timings.values())
    monkeypatch.setattr(bench, "ASK_AT", (5, 12))
    argv = ["--root", str(real_root), "--samplers", "random,rea", "--settings", "clean-pgd2", "--seeds", "1"]
    argv += ["--trials", "5"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "seconds per ask" in out and "s/ask@12" in out
    assert [line.split()[0] for line in out.split("seconds per ask")[1].splitlines()[3:]] == ["rea"]
    assert bench.main([*argv, "--no-ask-timing"]) == 0
    assert "seconds per ask" not in capsys.readouterr().out


def test_syne_tune_mo_rea_or_its_skip_reason(real_root, capsys, monkeypatch):
    argv = ["--root", str(real_root), "--samplers", "st-morea,random", "--settings", "clean-pgd2-params"]
    argv += ["--seeds", "1", "--trials", "30"]
    with monkeypatch.context() as m:  # without syne_tune: skipped with its reason, the other samplers still run
        m.setattr(bench, "syne_tune_unavailable", lambda: "syne_tune does not import (ImportError: test)")
        assert bench.main(argv) == 0
        out = capsys.readouterr().out
        assert "st-morea (Syne Tune MO-REA) skipped: syne_tune does not import (ImportError: test)" in out
        assert not any(line.startswith("clean-pgd2-params") and "st-morea" in line for line in out.splitlines())
    if bench.syne_tune_unavailable() is not None:
        pytest.skip(f"Syne Tune MO-REA: {bench.syne_tune_unavailable()}")
    state = np.random.get_state()[1].copy()
    setting = bench.SETTINGS["clean-pgd2-params"]
    first = bench.run_syne_tune(0, setting, 30, root=real_root, dataset="cifar10")
    np.testing.assert_array_equal(first, bench.run_syne_tune(0, setting, 30, root=real_root, dataset="cifar10"))
    np.testing.assert_array_equal(state, np.random.get_state()[1], err_msg="numpy's global generator is restored")
    assert bench.main(argv) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("clean-pgd2-params"))
    assert row[:3] == ["clean-pgd2-params", "st-morea", "1"] and 0 < float(row[3]) <= 1, row
