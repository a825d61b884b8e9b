"""A trained candidate as a deployable ONNX file, checked against torch with onnxruntime.

:func:`export_onnx` loads a checkpoint through :func:`dse.pipeline.model_from_checkpoint` (the one
checkpoint-to-model path), exports it with :func:`dse.onnx_io.to_onnx` (TorchScript exporter,
model frozen: quantized weights as constants; every quantization mode and pruning exports, see
:mod:`dse.onnx_io`), runs the graph with onnxruntime on the checkpoint's test split and compares
it with torch: agreement of the argmax predictions and the largest logit difference. The file is
written atomically, after the check.

Needs the ``onnx`` extra (``pip install -c constraints.txt -e ".[onnx]"``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import torch

from dse.compress.keys import CompressionConfig
from dse.data import Split
from dse.errors import SpecError
from dse.io import atomic_write, check_writable
from dse.models import validate_candidate
from dse.onnx_io import onnx_opset, ort_logits, ort_session, require, to_onnx
from dse.pipeline import load_for_evaluation
from dse.robust.evaluate import predict

__all__ = ["AGREEMENT_FLOOR", "describe_compression", "export_onnx"]

logger = logging.getLogger(__name__)

#: Below this agreement with torch on the test split, :func:`export_onnx` warns.
AGREEMENT_FLOOR = 0.99
_BATCH = 256


def describe_compression(candidate: Mapping[str, Any]) -> tuple[str, str | None]:
    """A candidate's quantization in words (``"fixed w8/a8, first/last 8-bit"``, ``"none"``) and
    its pruning (``"irregular 0.5"``, or None)."""
    c: CompressionConfig = validate_candidate(candidate).compression
    quant = {
        "none": "none",
        "fixed": f"fixed w{c.weight_bits}/a{c.act_bits}",
        "mbn": f"mbn M={c.weight_bases} N={c.act_bases}",
        "pow2": f"pow2 w{c.weight_bits}/" + (f"a{c.act_bits}" if c.act_bits else "a-float"),
    }[c.quant]
    if c.quant != "none":
        quant += ", first/last " + ("float" if c.first_last_bits == 32 else f"{c.first_last_bits}-bit")
    pruning = f"{c.prune_scheme} {c.prune_ratio:g}" if c.prune_scheme != "none" else None
    return quant, pruning


def export_onnx(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    opset: int | None = None,
    samples: int | None = None,
) -> dict[str, Any]:
    """Exports a checkpoint's model to ONNX and checks it with onnxruntime on the test split.

    Args:
        checkpoint: A dse checkpoint (``dse train``, a study trial).
        output: The ``.onnx`` file to write (parents created; written atomically).
        opset: ONNX opset (default: the exporter's, 20 with torch 2.13).
        samples: Check on the first ``samples`` test samples (default: the whole test split).

    Returns:
        ``output``, ``checkpoint``, ``candidate``, ``dataset``, ``quantization`` and ``pruning`` (in
        words), ``opset``, ``exporter``, ``input`` (one image's shape; the batch axis is dynamic),
        ``bytes``, ``split``, ``samples``, ``agreement`` (fraction of samples whose argmax is the
        same in torch and onnxruntime), ``max_abs_diff`` (largest logit difference), ``torch_acc``
        and ``onnx_acc`` (accuracy of each on those samples), ``torch`` and ``onnxruntime``
        versions, ``seconds``.

    Raises:
        SpecError: The onnx extra is missing, a bad ``opset``/``samples``, or a model that cannot
            be exported (one line naming its quantization mode).
        DataError: Missing or corrupt checkpoint or data, or an output that cannot be written.
    """
    ort = require("onnxruntime")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise SpecError(f"samples: must be a whole number >= 1, got {samples!r}")
    out = check_writable(output, what="ONNX output")  # before the export, not after it
    start = time.perf_counter()
    model, payload, _, dataset = load_for_evaluation(checkpoint, device="cpu")
    spec = dataset.spec
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    data = to_onnx(model, shape, opset=opset)
    test = dataset.test if samples is None else Split(x=dataset.test.x[:samples], y=dataset.test.y[:samples])
    reference = predict(model, test, batch_size=_BATCH).clean  # dse's own evaluation path
    assert reference is not None
    logits = ort_logits(ort_session(data, threads=torch.get_num_threads()), test.x, batch_size=_BATCH)
    agreement = float((logits.argmax(1) == reference.argmax(1)).float().mean())
    atomic_write(out, lambda tmp: tmp.write_bytes(data))
    quant, pruning = describe_compression(payload["candidate"])
    if agreement < AGREEMENT_FLOOR:
        logger.warning("onnxruntime agrees with torch on only %.2f%% of %d test samples", 100 * agreement, len(test))
    return {
        "output": str(out),
        "checkpoint": str(checkpoint),
        "candidate": payload["candidate"],
        "dataset": spec.name,
        "quantization": quant,
        "pruning": pruning,
        "opset": onnx_opset(data),
        "exporter": "torch.onnx TorchScript (dynamo=False)",
        "input": list(shape),
        "bytes": len(data),
        "split": "test",
        "samples": len(test),
        "agreement": agreement,
        "max_abs_diff": float((logits - reference).abs().max()),
        "torch_acc": float((reference.argmax(1) == test.y.cpu()).float().mean()),
        "onnx_acc": float((logits.argmax(1) == test.y.cpu()).float().mean()),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "seconds": round(time.perf_counter() - start, 2),
    }
