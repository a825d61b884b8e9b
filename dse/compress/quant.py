"""Quantized layers for compact CNNs: fixed-point (DoReFa/PACT), multi-bit (ABC-Net/XNOR) and powers of two (INQ).

The quantizers themselves (straight-through estimators) are in :mod:`dse.compress.quantizers`;
INQ's freezing schedule is in :mod:`dse.compress.inq`. This module holds the spec, the layers
and the model rewrite.

(Over 400 lines: the documented choices below, the spec's validation and the two layer classes
belong together; splitting them would scatter one concept.)

Modes (:class:`QuantSpec`):

* ``"fixed"``: DoReFa weights at ``weight_bits`` (scale-preserving, see :func:`~dse.compress.quantizers.dorefa_weight`)
  and PACT activations at ``act_bits`` (see :class:`~dse.compress.quantizers.PACTQuant`), quantized at the input of each
  quantized layer.
* ``"mbn"``: ABC-Net multi-bit network (seed 004, eqs. 2-3): ``M = weight_bases`` binary weight
  bases, ``N = act_bases`` binary activation bases. ``M = N = 1`` is XNOR-Net.
* ``"pow2"``: INQ weights in ``{0, +-2^k}`` (seed 003 and Zhou et al. 2017), activations full
  precision unless ``act_bits`` is given (then PACT). :class:`~dse.compress.inq.INQSchedule` freezes growing
  partitions of the weights as in INQ; without it all weights are quantized with an STE.

The first conv and the last linear layer are fixed-point at ``first_last_bits`` (or left
full precision with ``first_last_bits = 32``), whatever the mode.

Choices (documented here once):

* Weight quantizers are per layer (one scale per tensor) by default, so a ``k``-bit fixed layer has
  at most ``2^k`` distinct weight values and an ``M``-base MBN layer at most ``2^M``; with
  ``per_channel`` (``fixed`` and ``mbn``) each output channel has its own scale (its own ``2^k`` or
  ``2^M`` values).
* PACT activations on signed inputs: a layer's input is treated as signed (symmetric PACT, clip to
  ``[-alpha, alpha]``, ``2^k`` uniform levels) once any input it has seen had a negative value.
  The flag ``act_signed`` is a persistent buffer, sticky (never reset) and updated at every
  forward without a host sync (not while frozen, :mod:`dse.compress.freeze`); it can also be set
  by hand (``layer.act_signed.fill_(True)``).
  Inputs after a ReLU never set it; MobileNet's block inputs (linear bottlenecks) do.
* The first layer's input is the image itself (already 8-bit pixels): it is not quantized, and
  ``act_bits`` of the first layer reports ``first_last_bits``.
* MBN activations: ABC-Net's shifted binarization ``H_v(x) = +1 if clip(x + v, 0, 1) > 0.5
  else -1`` (ties to -1, so post-ReLU zeros are -1), i.e. ``sign(x - t)`` with threshold
  ``t = 0.5 - v``; ``beta_n`` and ``v_n`` are learned (``act_scale``, ``act_shift``). The STE
  window is XNOR-Net's ``|x - t| <= 1``.
  Thresholds start at ABC-Net's ``t = 0.5`` (``v = 0``) for ``N = 1`` and evenly spaced in
  ``[0.25, 1.25]`` for more bases: never at 0, where post-ReLU inputs pile up.
* MBN convolutions use linearity: ``Conv(sum_m alpha_m B_m, sum_n beta_n H_n)`` is computed as
  one convolution; ``layer_bits`` still reports ``M * N`` binary convolutions for BOPS.
* Biases stay full precision (accumulator precision).
* INQ freezing is applied in the forward: frozen weights are re-snapped to their power of two
  and taken from a detached tensor, so their gradient is exactly zero (no tensor hook that could
  be lost by ``deepcopy``/``load_state_dict``). Weight decay or momentum may still move the
  frozen float values slightly; the forward ignores that, and :meth:`~dse.compress.inq.INQSchedule.step` rewrites them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dse.compress.quantizers import dorefa_weight, mbn_activation, mbn_weight, pact, pact_alpha_init, pow2_weight
from dse.errors import SpecError

__all__ = [
    "QUANT_LAYERS",
    "QUANT_MODES",
    "LayerQuant",
    "QConv2d",
    "QLinear",
    "QuantSpec",
    "layer_bits",
    "quantize_model",
]

QUANT_MODES = ("none", "fixed", "mbn", "pow2")

#: Bit-width ranges per field.
_MIN_BITS, _MAX_BITS = 1, 8
_MIN_POW2_BITS = 2
_MIN_BASES, _MAX_BASES = 1, 8
_FULL_PRECISION = 32
_MAX_FIRST_LAST_BITS = 16


# --------------------------------------------------------------------------- #
# Spec
# --------------------------------------------------------------------------- #


def _check_range(field: str, value: Any, lo: int, hi: int, allowed: tuple[int, ...] = ()) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"quant: {field}: expected an integer, got {value!r}")
    if not (lo <= value <= hi or value in allowed):
        extra = "".join(f" or {a}" for a in allowed)
        raise SpecError(f"quant: {field}: {value} is outside [{lo}, {hi}]{extra}")


@dataclass(frozen=True, kw_only=True)
class QuantSpec:
    """How a model is quantized.

    Attributes:
        mode: ``"none"``, ``"fixed"`` (DoReFa/PACT), ``"mbn"`` (ABC-Net; XNOR-Net with 1x1 bases)
            or ``"pow2"`` (INQ).
        weight_bits: ``fixed``: 1..8 (required); ``pow2``: INQ bit-width b, 2..8 (required).
        act_bits: ``fixed``: 1..8 (required); ``pow2``: 1..8 or ``None`` (full-precision activations).
        weight_bases: ``mbn``: M in 1..8 (required).
        act_bases: ``mbn``: N in 1..8 (required).
        first_last_bits: Bits of the first conv and the last linear layer (1..16), or 32 to keep
            them full precision.
        per_channel: ``fixed``/``mbn``: one weight scale per output channel instead of per tensor.
        depthwise_bits: When set (1..8), depthwise convolutions are fixed point with at least this
            many weight and activation bits, whatever the mode (few MACs, fragile at low precision).

    Raises:
        SpecError: One line naming the field of an impossible combination.
    """

    mode: str = "none"
    weight_bits: int | None = None
    act_bits: int | None = None
    weight_bases: int | None = None
    act_bases: int | None = None
    first_last_bits: int = 8
    per_channel: bool = False
    depthwise_bits: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in QUANT_MODES:
            raise SpecError(f"quant: mode: unknown mode {self.mode!r} (known: {', '.join(QUANT_MODES)})")
        _check_range("first_last_bits", self.first_last_bits, 1, _MAX_FIRST_LAST_BITS, (_FULL_PRECISION,))
        if self.depthwise_bits is not None:
            _check_range("depthwise_bits", self.depthwise_bits, _MIN_BITS, _MAX_BITS)
        uses = {
            "none": (),
            "fixed": ("weight_bits", "act_bits"),
            "mbn": ("weight_bases", "act_bases"),
            "pow2": ("weight_bits", "act_bits"),
        }[self.mode]
        required = {
            "fixed": ("weight_bits", "act_bits"),
            "mbn": ("weight_bases", "act_bases"),
            "pow2": ("weight_bits",),
        }
        for field in ("weight_bits", "act_bits", "weight_bases", "act_bases"):
            value = getattr(self, field)
            if value is None:
                if field in required.get(self.mode, ()):
                    raise SpecError(f"quant: {field}: required for mode {self.mode!r}")
                continue
            if field not in uses:
                raise SpecError(f"quant: {field}: not used by mode {self.mode!r} (leave it unset)")
            if field.endswith("bases"):
                _check_range(field, value, _MIN_BASES, _MAX_BASES)
            elif self.mode == "pow2" and field == "weight_bits":
                _check_range(field, value, _MIN_POW2_BITS, _MAX_BITS)
            else:
                _check_range(field, value, _MIN_BITS, _MAX_BITS)


# --------------------------------------------------------------------------- #
# Layers
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class LayerQuant:
    """Per-layer quantization: mode, bits/bases and whether the input is quantized."""

    mode: str  # fixed | mbn | pow2
    weight_bits: int | None = None
    act_bits: int | None = None
    weight_bases: int | None = None
    act_bases: int | None = None
    quantize_input: bool = True
    per_channel: bool = False


class _QuantMixin:
    """Parameters, buffers and quantizers shared by :class:`QConv2d` and :class:`QLinear`."""

    weight: nn.Parameter
    #: While frozen (:func:`dse.compress.freeze.frozen`): the weights computed with, a constant.
    frozen_weight: Tensor | None = None
    #: While :func:`dse.compress.freeze.cached_weights` holds: the quantized weights computed once,
    #: detached (passes that need no weight gradient: attacks, evaluation); nothing else changes.
    weight_cache: Tensor | None = None
    #: False while a recipe's float warm start runs (:mod:`dse.compress.warm_start`): the layer
    #: then computes in float (weights and inputs unquantized).
    quant_enabled: bool = True
    #: Gradient of the PACT clip while training (a recipe choice, :mod:`dse.compress.warm_start`):
    #: ``"pact"`` or ``"lsq"`` (:func:`~dse.compress.quantizers.pact`); values are the same either way.
    clip_grad: str = "pact"

    def __init__(self, *args: Any, quant: LayerQuant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # nn.Conv2d / nn.Linear, next in the MRO
        self._init_quant(quant)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._quant_repr()}"

    def _init_quant(self, cfg: LayerQuant) -> None:
        module: Any = self
        self.quant_mode = cfg.mode
        self.weight_bits = 1 if cfg.mode == "mbn" else cfg.weight_bits
        self.act_bits = 1 if cfg.mode == "mbn" else cfg.act_bits
        self.weight_bases = cfg.weight_bases
        self.act_bases = cfg.act_bases
        self.quantize_input = cfg.quantize_input
        self.per_channel = cfg.per_channel
        dev, dt = self.weight.device, self.weight.dtype
        self.uses_pact = cfg.quantize_input and cfg.mode in ("fixed", "pow2") and cfg.act_bits is not None
        if self.uses_pact:
            assert cfg.act_bits is not None
            module.act_alpha = nn.Parameter(torch.tensor(pact_alpha_init(cfg.act_bits), device=dev, dtype=dt))
            module.register_buffer("act_signed", torch.zeros((), dtype=torch.bool, device=dev))
        if cfg.mode == "mbn" and cfg.quantize_input:
            n = cfg.act_bases or 1
            # Thresholds start strictly above 0: post-ReLU inputs have a point mass at exactly 0, and a
            # threshold there flips all those zeros to +1 after one tiny update of the shift, making the
            # binarized input constant (seen: MobileNet-tiny on digits diverged in its first epoch).
            thresholds = torch.full((1,), 0.5) if n == 1 else torch.linspace(0.25, 1.25, n)
            beta = 1.0 if n == 1 else 0.5 * 1.0 / (n - 1)
            module.act_scale = nn.Parameter(torch.full((n,), beta, device=dev, dtype=dt))
            module.act_shift = nn.Parameter((0.5 - thresholds).to(device=dev, dtype=dt))
        if cfg.mode == "pow2":
            module.register_buffer("inq_frozen", torch.zeros(self.weight.shape, dtype=torch.bool, device=dev))
            module.register_buffer("inq_n1", torch.tensor(float("nan"), device=dev, dtype=dt))

    def quantize_input_(self, x: Tensor) -> Tensor:
        """The layer's input as the quantized layer sees it (identity where inputs stay unquantized)."""
        if not self.quantize_input or not self.quant_enabled:
            return x
        if self.quant_mode == "mbn":
            return mbn_activation(x, self.act_scale, self.act_shift)  # type: ignore[attr-defined]
        if self.uses_pact:
            signed: Tensor = self.act_signed  # type: ignore[attr-defined]
            if self.frozen_weight is None:
                with torch.no_grad():
                    torch.logical_or(signed, x.detach().amin() < 0, out=signed)
            assert self.act_bits is not None
            return pact(x, self.act_alpha, self.act_bits, signed=signed, clip_grad=self.clip_grad)  # type: ignore[attr-defined]
        return x

    def quantized_weight(self) -> Tensor:
        """The weights the layer computes with (differentiable through the STEs)."""
        if self.frozen_weight is not None:
            return self.frozen_weight
        if self.weight_cache is not None:
            return self.weight_cache
        w = self.weight
        if not self.quant_enabled:
            return w
        if self.quant_mode == "fixed":
            assert self.weight_bits is not None
            return dorefa_weight(w, self.weight_bits, per_channel=self.per_channel)
        if self.quant_mode == "mbn":
            assert self.weight_bases is not None
            return mbn_weight(w, self.weight_bases, per_channel=self.per_channel)[0]
        assert self.weight_bits is not None
        n1_buf: Tensor = self.inq_n1  # type: ignore[attr-defined]
        if bool(torch.isnan(n1_buf)):  # plain quantization-aware training: all weights power of two
            return pow2_weight(w, self.weight_bits)
        # INQ: frozen weights are powers of two (no gradient), the others train in full precision.
        frozen: Tensor = self.inq_frozen  # type: ignore[attr-defined]
        snapped = pow2_weight(w.detach(), self.weight_bits, int(n1_buf))
        return torch.where(frozen, snapped, w)

    def _quant_repr(self) -> str:
        if self.quant_mode == "mbn":
            bits = f"weight_bases={self.weight_bases}, act_bases={self.act_bases}"
        else:
            bits = f"weight_bits={self.weight_bits}, act_bits={self.act_bits}"
        pc = ", per_channel=True" if self.per_channel else ""
        return f"mode={self.quant_mode}, {bits}, quantize_input={self.quantize_input}{pc}"


class QConv2d(_QuantMixin, nn.Conv2d):
    """An ``nn.Conv2d`` whose weights and inputs are quantized (see :func:`quantize_model`).

    Args:
        *args: As for ``nn.Conv2d``.
        quant: Per-layer quantization.
        **kwargs: As for ``nn.Conv2d``.
    """

    @classmethod
    def from_float(cls, conv: nn.Conv2d, quant: LayerQuant) -> QConv2d:
        """A quantized conv sharing ``conv``'s weight and bias parameters."""
        q = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            quant=quant,
        )
        q.weight = conv.weight
        q.bias = conv.bias
        q.train(conv.training)
        return q

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.quantize_input_(x), self.quantized_weight(), self.bias)



class QLinear(_QuantMixin, nn.Linear):
    """An ``nn.Linear`` whose weights and inputs are quantized (see :func:`quantize_model`).

    Args:
        *args: As for ``nn.Linear``.
        quant: Per-layer quantization.
        **kwargs: As for ``nn.Linear``.
    """

    @classmethod
    def from_float(cls, linear: nn.Linear, quant: LayerQuant) -> QLinear:
        """A quantized linear layer sharing ``linear``'s weight and bias parameters."""
        q = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
            quant=quant,
        )
        q.weight = linear.weight
        q.bias = linear.bias
        q.train(linear.training)
        return q

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.quantize_input_(x), self.quantized_weight(), self.bias)



#: The quantized layer classes.
QUANT_LAYERS = (QConv2d, QLinear)


def _layer_quant(spec: QuantSpec, layer: nn.Module) -> LayerQuant:
    pc = spec.per_channel and spec.mode in ("fixed", "mbn")
    dw = isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels
    if dw and spec.depthwise_bits is not None:
        floor = spec.depthwise_bits
        if spec.mode == "fixed":
            return LayerQuant("fixed", weight_bits=max(floor, spec.weight_bits or 0), act_bits=max(floor, spec.act_bits or 0),
                              per_channel=pc)
        if spec.mode == "mbn":
            return LayerQuant("fixed", weight_bits=floor, act_bits=floor, per_channel=pc)
    if spec.mode == "mbn":
        return LayerQuant("mbn", weight_bases=spec.weight_bases, act_bases=spec.act_bases, per_channel=pc)
    return LayerQuant(spec.mode, weight_bits=spec.weight_bits, act_bits=spec.act_bits, per_channel=pc)


def quantize_model(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """Replaces every ``nn.Conv2d``/``nn.Linear`` by a :class:`QConv2d`/:class:`QLinear`, in place.

    The first ``nn.Conv2d`` and the last ``nn.Linear`` of ``model.modules()`` are fixed-point at
    ``spec.first_last_bits`` (the first one's input, the image, is not quantized), or stay plain
    float layers when it is 32. Weight/bias parameters are shared with the replaced layers, so
    ``weight``/``bias`` state_dict keys are unchanged. ``mode == "none"`` returns ``model`` as is.

    Args:
        model: The float model.
        spec: How to quantize.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: If ``model`` already holds quantized layers.
    """
    if spec.mode == "none":
        return model
    if any(isinstance(m, QUANT_LAYERS) for m in model.modules()):
        raise ValueError("model is already quantized")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    first = convs[0] if convs else None
    last = linears[-1] if linears else None
    edge_bits = spec.first_last_bits
    replaced: dict[int, nn.Module] = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, (nn.Conv2d, nn.Linear)):
                continue
            if id(child) in replaced:  # the same layer registered twice
                setattr(parent, name, replaced[id(child)])
                continue
            is_first, is_last = child is first, child is last
            if is_first or is_last:
                if edge_bits == _FULL_PRECISION:
                    continue
                quant = LayerQuant("fixed", weight_bits=edge_bits, act_bits=edge_bits, quantize_input=not is_first,
                                   per_channel=spec.per_channel and spec.mode in ("fixed", "mbn"))
            else:
                quant = _layer_quant(spec, child)
            cls = QConv2d if isinstance(child, nn.Conv2d) else QLinear
            new = cls.from_float(child, quant)  # type: ignore[arg-type]
            replaced[id(child)] = new
            setattr(parent, name, new)
    return model


def layer_bits(module: nn.Module) -> tuple[int, int, int]:
    """``(weight_bits, act_bits, binary_multiplier)`` of a conv/linear layer, for BOPS.

    ``fixed``: ``(wb, ab, 1)``; ``mbn``: ``(1, 1, M * N)``; ``pow2``: ``(wb, ab or 32, 1)``;
    a plain float ``nn.Conv2d``/``nn.Linear``: ``(32, 32, 1)``.

    Raises:
        TypeError: If ``module`` is not a conv or linear layer.
    """
    if isinstance(module, QUANT_LAYERS):
        if module.quant_mode == "mbn":
            return 1, 1, int(module.weight_bases or 1) * int(module.act_bases or 1)
        wb = int(module.weight_bits or _FULL_PRECISION)
        ab = int(module.act_bits) if module.act_bits is not None else _FULL_PRECISION
        return wb, ab, 1
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return _FULL_PRECISION, _FULL_PRECISION, 1
    raise TypeError(f"layer_bits: expected a conv or linear layer, got {type(module).__name__}")
