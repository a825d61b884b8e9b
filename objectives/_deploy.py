"""Deployment objectives: latency of the model exported to ONNX and run by onnxruntime.

Needs the ``onnx`` extra; without it the objective raises a one-line error naming the extra. It
is measured only when named (a study's objectives or metrics), never by the evaluate-everything
default of ``dse train`` / ``dse eval`` (see :attr:`objectives.Objective.extra`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dse.data import Split
from dse.onnx_io import ONNX_EXTRA, ort_median_ms, ort_session, to_onnx
from objectives._base import EvalSettings, Objective
from objectives._compression import LATENCY_REPEATS, LATENCY_WARMUP

__all__ = ["DEPLOY_OBJECTIVES", "ort_latency_ms"]


def ort_latency_ms(
    model: nn.Module,
    data: Split,
    settings: EvalSettings | None = None,
    *,
    cache: dict[str, Any] | None = None,
    warmup: int = LATENCY_WARMUP,
    repeats: int = LATENCY_REPEATS,
) -> float:
    """Median milliseconds of one batch-1 inference of the deployed model on this CPU, by onnxruntime.

    The model is exported to ONNX as it deploys (:func:`dse.onnx_io.to_onnx`: frozen, quantized
    weights as constants, fake-quantized activations in float32) for one image of ``data``'s
    size, and run by one onnxruntime CPU session with ``intra_op_num_threads=1`` and one inter-op
    thread, so trials running side by side do not fight for cores: the figure is single-core
    latency. ``warmup`` untimed runs, then the median of ``repeats`` timed ``session.run`` calls,
    each on the next image of ``data`` (the median resists other load on a shared machine). The
    model's train/eval mode and weights are left as they were.

    Quantized candidates run as fake-quantized float32 graphs (:mod:`dse.onnx_io`): their figure
    is the cost of simulating quantization (3-7x the float graph's here), not of integer kernels.

    Not a free objective although it depends on the structure only (dense float kernels take
    the same time whatever the weight values): one call exports the model, 0.2-0.4 s for a float
    MobileNet-tiny or ResNet-20 and about 1 s for an 8-bit one on an idle core (several times that
    on a loaded 2-core machine), and free objectives are computed in the study driver for up to
    dozens of candidates per proposal (surrogate sampler, constraint prechecks), while trials
    load the cores. So early stopping (``mo_asha``) does not rank on it at its rungs.

    Raises:
        SpecError: onnx/onnxruntime are not installed (naming the extra), or the model cannot be
            exported.
    """
    _, channels, height, width = data.x.shape
    session = ort_session(to_onnx(model, (channels, height, width)), threads=1)
    images = data.x[: max(1, min(len(data), warmup + repeats))]
    return ort_median_ms(session, images, warmup=warmup, repeats=repeats)


DEPLOY_OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective(
            "ort_latency_ms",
            "minimize",
            ort_latency_ms,
            f"ms per single-image inference of the ONNX export by onnxruntime on this CPU, 1 thread:"
            f" median of {LATENCY_REPEATS} after {LATENCY_WARMUP} warm-up",
            deterministic=False,
            extra=ONNX_EXTRA,
        ),
    )
}
