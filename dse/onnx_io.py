"""A model as an ONNX graph and an onnxruntime session: export, logits, single-image latency.

Needs the ``onnx`` extra (``pip install -c constraints.txt -e ".[onnx]"``: onnx and onnxruntime);
without it every function here raises a one-line :class:`~dse.errors.SpecError` naming the extra.

Choices (documented here once):

* The exporter is torch's TorchScript one (``torch.onnx.export(..., dynamo=False)``): it needs
  onnx only, while the torch.export-based exporter needs onnxscript, which dse does not install.
  It inlines autograd functions (``autograd_inlining``), so dse's straight-through quantizers
  export as the plain ops of their forward (clip, round, where); no ``symbolic`` is needed.
* The model is exported frozen (:func:`dse.compress.freeze.frozen`): quantized weights are
  computed once and stored as initializers, masked weights are zero, PACT sign flags are fixed.
  So every quantization mode exports: ``fixed`` (DoReFa weights, PACT activations), ``mbn``
  (ABC-Net / XNOR bases; weights as their least-squares approximation, activations as sums of
  shifted signs) and ``pow2`` (INQ powers of two). The graph simulates quantization in float32
  (fake quantization), as training does; it is not an integer-kernel graph.
* Input ``image``: float32 NCHW in ``[0, 1]`` (the model normalizes inside), batch axis dynamic;
  output ``logits``.
"""

from __future__ import annotations

import importlib
import io
import statistics
import time
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from dse.compress.freeze import frozen
from dse.compress.quant import QUANT_LAYERS
from dse.errors import SpecError

__all__ = [
    "INPUT_NAME", "MIN_OPSET", "ONNX_EXTRA", "OUTPUT_NAME",
    "onnx_opset", "ort_logits", "ort_median_ms", "ort_session", "require", "to_onnx",
]

#: The pip extra that installs onnx and onnxruntime.
ONNX_EXTRA = "onnx"
INPUT_NAME, OUTPUT_NAME = "image", "logits"
#: Lowest opset accepted: ONNX ``Round`` came in opset 11 (tested: 11 to 21; the default is the exporter's, 20).
MIN_OPSET = 11


def require(module: str) -> ModuleType:
    """Imports ``onnx`` or ``onnxruntime``.

    Raises:
        SpecError: One line naming the missing module and the extra that installs it.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SpecError(
            f"{module} is not installed: ONNX export and ort_latency_ms need the {ONNX_EXTRA!r} extra"
            f" (pip install -c constraints.txt -e \".[{ONNX_EXTRA}]\")"
        ) from None


def _quant_mode(model: nn.Module) -> str:
    modes = {str(m.quant_mode) for m in model.modules() if isinstance(m, QUANT_LAYERS)}
    if len(modes) > 1:  # the first and last layers of any quantized model are fixed-point
        modes.discard("fixed")
    return "/".join(sorted(modes)) or "none"


def to_onnx(model: nn.Module, input_shape: Sequence[int], *, opset: int | None = None) -> bytes:
    """The model, frozen, as a serialized ONNX graph checked by ``onnx.checker``.

    Args:
        model: A dse model (left as it was: mode and weights are restored).
        input_shape: ``(channels, height, width)`` of one image.
        opset: ONNX opset, at least :data:`MIN_OPSET` (default: the exporter's, 20 with torch 2.13).

    Raises:
        SpecError: The onnx extra is missing, or the model cannot be exported (one line naming
            the model's quantization mode and the exporter's reason).
    """
    onnx = require("onnx")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET):
        raise SpecError(f"opset: must be a whole number >= {MIN_OPSET} (ONNX Round, used by quantizers), got {opset!r}")
    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    example = torch.rand((1, *input_shape), generator=torch.Generator().manual_seed(0)).to(device)
    buffer = io.BytesIO()
    with frozen(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices, tracer notes
        try:
            torch.onnx.export(
                model, (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True, autograd_inlining=True,
            )
            onnx.checker.check_model(onnx.load_from_string(buffer.getvalue()))
        except Exception as err:  # the exporter raises many types (unsupported op, bad opset, tracer errors)
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            mode = _quant_mode(model)
            what = f"quant: {mode}" if mode != "none" else "model"
            raise SpecError(f"{what}: cannot be exported to ONNX ({reason})") from err
    return buffer.getvalue()


def onnx_opset(data: bytes) -> int:
    """The default-domain opset of a serialized ONNX graph."""
    model = require("onnx").load_from_string(data)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def ort_session(data: bytes, *, threads: int = 1) -> Any:
    """An onnxruntime CPU session on a serialized graph: ``threads`` intra-op threads, one
    inter-op thread (sequential execution), all graph optimizations, warnings off."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def ort_logits(session: Any, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """The session's logits for images ``x`` (N, C, H, W), in batches, as a CPU float tensor."""
    images = x.detach().to("cpu", torch.float32).contiguous().numpy()
    parts = [session.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + batch_size]})[0]
             for i in range(0, len(images), batch_size)]
    return torch.from_numpy(np.concatenate(parts)) if parts else torch.empty(0)


def ort_median_ms(session: Any, x: torch.Tensor, *, warmup: int, repeats: int) -> float:
    """Median milliseconds of one batch-1 ``session.run`` over ``repeats`` timed runs after
    ``warmup`` untimed ones, each on the next image of ``x`` (cycling)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    images = x.detach().to("cpu", torch.float32).contiguous().numpy()
    count = images.shape[0]
    times = []
    for i in range(warmup + repeats):
        feed = {INPUT_NAME: images[i % count : i % count + 1]}
        start = time.perf_counter()
        session.run([OUTPUT_NAME], feed)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return float(statistics.median(times))
