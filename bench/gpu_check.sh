#!/usr/bin/env bash
# bench/gpu_check.sh: dse's GPU checks in one script, run from the repository root of a fresh checkout
# (under 5 minutes on an H200; about 2 minutes on a CPU-only machine, where it runs what it can and
# says what it skipped and why):
#   1. the Python to use (an existing torch is kept: pip is never allowed to pull another one), and
#      the device: nvidia-smi and torch.cuda, or "no CUDA device: skipping ...";
#   2. the CUDA-only tests (pytest marker `cuda`; on CPU they are collected and must skip cleanly);
#   3. bench/train_throughput.py on the device: images/s of dse against a plain PyTorch loop for a
#      natural, PGD-10, TRADES, FastAT and free step, bf16 attack passes beside fp32, and the fraction
#      of the device's measured fp32/bf16 matmul rate;
#   4. 2 TRADES epochs of seed 000's smallest model (the smallest width_mult and expand_ratio of
#      studies/seed000_width_expand_cifar10.yaml, its recipe otherwise) on the real CIFAR-10 subset
#      (../shared/data/cifar10-subset, shared/data/cifar10-subset or $DSE_CIFAR_ROOT), or on random
#      32x32 data, said so, when it is absent; on CPU a tiny subset.
# Everything goes to stdout, and to "$OUT/gpu_check.log" too when $OUT is set. The exit status is the
# number of failed steps (0: every step that could run passed).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    exec > >(tee "$OUT/gpu_check.log") 2>&1
else
    exec 2>&1
fi

failed=0
started=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - started )) s)"; }
fail() { echo "FAILED: $*"; failed=$((failed + 1)); }

# --------------------------------------------------------------------------- 1. Python and device
step "1. Python, dse and the device"
need="import torch, numpy, pydantic, yaml, tqdm"
PY=""
if [ -x .venv/bin/python ] && .venv/bin/python -c "$need; import dse.training" 2>/dev/null; then
    PY=.venv/bin/python
    echo "using the existing .venv"
elif command -v python3 >/dev/null && python3 -c "import torch" 2>/dev/null; then
    # a torch is installed (on a GPU machine: a CUDA build): keep it. A venv that sees it, and a
    # constraints file whose torch pin is that very torch, so pip can never fetch another one.
    venv=.venv-gpu-check
    echo "python3 has torch $(python3 -c 'import torch; print(torch.__version__)'): keeping it (venv $venv sees the system packages)"
    [ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"
    pins="$venv/constraints-keep-torch.txt"
    { grep -v -i '^torch==' constraints.txt; echo "torch==$(python3 -c 'import torch; print(torch.__version__)')"; } > "$pins"
    if ! "$venv/bin/python" -c "$need, pytest; import dse.training" 2>/dev/null; then
        timeout 120 "$venv/bin/pip" install -q --disable-pip-version-check --retries 1 --timeout 15 \
            -c "$pins" -e ".[dev]" || echo "pip install failed (offline?): trying what is already installed"
    fi
    PY="$venv/bin/python"
elif command -v python3 >/dev/null; then
    echo "no torch installed: a .venv with the pinned CPU/CUDA torch of constraints.txt (as .ci/run does)"
    python3 -m venv .venv && timeout 240 .venv/bin/pip install -q -c constraints.txt -e ".[dev]" \
        || echo "pip install failed"
    PY=.venv/bin/python
else
    echo "no python3 on this machine: nothing can run"
    exit 1
fi
if ! "$PY" -c "$need; import dse.training" 2>/dev/null; then
    # offline and dse not installed: the checkout itself on the path, if its few imports are there
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    if ! "$PY" -c "$need; import dse.training"; then
        echo "dse does not import with $PY (missing packages above): skipping steps 2-4"
        exit 1
    fi
    echo "dse imported from the checkout (PYTHONPATH), not installed"
fi
"$PY" -c "import dse.version, torch; print(f'python {__import__(\"sys\").version.split()[0]}, dse {dse.version.VERSION}, torch {torch.__version__}, CUDA build {torch.version.cuda}')"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu,clocks.max.sm --format=csv \
        || nvidia-smi || true
fi
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    CUDA=1
    "$PY" -c "
import torch
p = torch.cuda.get_device_properties(0)
print(f'torch.cuda: {torch.cuda.device_count()} device(s); 0: {p.name}, {p.total_memory / 2**30:.0f} GiB, '
      f'capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, bf16 {torch.cuda.is_bf16_supported()}')"
    DEVICE=cuda
else
    CUDA=0
    DEVICE=cpu
    echo "no CUDA device: skipping the CUDA tests' bodies (they must skip cleanly), the CUDA throughput"
    echo "bench (run on CPU at tiny sizes instead) and the GPU-sized TRADES run (a tiny CPU one instead)"
fi

# --------------------------------------------------------------------------- 2. CUDA-only tests
step "2. the CUDA-only tests (pytest -m cuda)"
if "$PY" -c "import pytest" 2>/dev/null; then
    files=$(grep -l "pytest.mark.cuda" tests/test_*.py | tr '\n' ' ')
    echo "files with cuda tests: $files"
    # -m cuda replaces pyproject's "-m 'not slow'"; -p no:cacheprovider: nothing written into the checkout
    # shellcheck disable=SC2086
    timeout 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider -rs $files || fail "the CUDA tests"
    [ "$CUDA" = 1 ] || echo "(no CUDA device: the cuda tests above are expected to be skipped, not run)"
else
    echo "pytest is not installed for $PY: skipping the tests"
fi

# --------------------------------------------------------------------------- 3. throughput
step "3. bench/train_throughput.py on $DEVICE"
if [ "$CUDA" = 1 ]; then
    timeout 200 "$PY" bench/train_throughput.py --device cuda --steps 10 --batch-size 128 --attack-dtype both \
        || fail "the CUDA throughput bench"
    timeout 60 "$PY" bench/train_throughput.py --device cuda --steps 10 --batch-size 128 --amp --no-plain \
        --methods natural,pgd,trades || fail "the CUDA throughput bench with AMP"
else
    echo "(CPU, tiny sizes: batch 32, 2 timed batches; CPU figures, not the GPU's)"
    timeout 150 "$PY" bench/train_throughput.py --device cpu --steps 2 --batch-size 32 \
        || fail "the CPU throughput bench"
fi

# --------------------------------------------------------------------------- 4. TRADES, seed 000's smallest
step "4. 2 TRADES epochs of seed 000's smallest model on $DEVICE"
timeout 150 "$PY" - "$DEVICE" <<'EOF' || fail "the TRADES run"
import os
import sys
import time
from pathlib import Path

import torch
import yaml

from dse.data import Dataset, Split, dataset_spec, load_dataset
from dse.models import build_model
from dse.robust.attacks import AttackConfig
from dse.training import default_recipe, seed_everything, train
from objectives import EvalSettings, evaluate_objectives

device = torch.device(sys.argv[1])
cuda = device.type == "cuda"
study = yaml.safe_load(Path("studies/seed000_width_expand_cifar10.yaml").read_text())
options = study["space"]["options"]
width = options["width_mult"]
width = width["low"] if isinstance(width, dict) else min(width)
expand = min(options["expand_ratio"]) if isinstance(options["expand_ratio"], list) else options["expand_ratio"]["low"]
candidate = {"arch": "mobilenet_tiny", "width_mult": width, "expand_ratio": expand}
roots = [os.environ.get("DSE_CIFAR_ROOT"), "../shared/data/cifar10-subset", "shared/data/cifar10-subset"]
root = next((r for r in roots if r and (Path(r) / "cifar-10-batches-py" / "data_batch_1").is_file()), None)
subset = None if cuda else 320  # CPU: a tiny run (about a minute)
if root is not None:
    data = load_dataset("cifar10", root=root, subset=subset, val_fraction=0.1, seed=0)
    print(f"data: the real CIFAR-10 subset at {root}: {len(data.train)} train / {len(data.test)} test images")
else:
    n = subset or 4660
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    data = Dataset(spec=dataset_spec("cifar10"), train=Split(x=x, y=y), val=None, test=Split(x=x[:500], y=y[:500]))
    print(f"NO CIFAR-10 subset found (looked in {', '.join(r for r in roots if r)}): random 32x32 data "
          f"({n} images), so the accuracies below mean nothing; the run checks speed and that TRADES runs")
# as a study trains it: the data set's defaults (warmup, grad_clip), then the study's recipe
fields = {**study["recipe"], "epochs": 2, "eval_every": 0}
fields["amp"] = bool(fields.get("amp")) and cuda
recipe = default_recipe("cifar10", **fields)
print(f"candidate {candidate}; recipe: {recipe.method} beta {recipe.trades_beta}, {recipe.epochs} epochs, "
      f"batch {recipe.batch_size}, lr {recipe.lr}, attack {recipe.attack}, amp {recipe.amp}")
spec = data.spec
seed_everything(0)
model = build_model(candidate, in_channels=spec.in_channels, num_classes=spec.num_classes, mean=spec.mean, std=spec.std)
start = time.perf_counter()
history = train(model, data, recipe, device=device)
for h in history:
    print(f"epoch {int(h['epoch'])}: train_loss {h['train_loss']:.4f} train_acc {h['train_acc']:.3f} "
          f"lr {h['lr']:.4g} {h['epoch_seconds']:.1f} s ({len(data.train) / h['epoch_seconds']:.0f} img/s)")
samples = 1000 if cuda else 100
settings = EvalSettings(attack=AttackConfig.from_dict(study["eval"]["attack"]), max_samples=samples)
scores = evaluate_objectives(model.eval(), data.test, settings, ["natural_acc", "robust_acc"])
print(f"test ({samples} samples max, PGD-{settings.attack.steps}): natural_acc {scores['natural_acc']:.3f} "
      f"robust_acc {scores['robust_acc']:.3f}; {time.perf_counter() - start:.1f} s training and scoring")
if not all(h["train_loss"] == h["train_loss"] for h in history):
    sys.exit("a training loss was NaN")
EOF

step "done: $failed failed step(s)"
exit "$failed"
