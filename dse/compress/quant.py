"""Quantized layers for compact CNNs: fixed-point (DoReFa/PACT), multi-bit (ABC-Net/XNOR) and powers of two (INQ).

Every quantizer is a straight-through estimator (STE): a tiny :class:`torch.autograd.Function`
whose forward is the quantizer's maths and whose backward passes the incoming gradient
(optionally clipped to a window). No quantizer ever blocks the gradient w.r.t. the layer input,
so gradient-based attacks (``dse.robust.attacks``) see the STE path.

Modes (:class:`QuantSpec`):

* ``"fixed"``: DoReFa weights at ``weight_bits`` (scale-preserving, see :func:`dorefa_weight`)
  and PACT activations at ``act_bits`` (see :class:`PACTQuant`), quantized at the input of each
  quantized layer.
* ``"mbn"``: ABC-Net multi-bit network (seed 004, eqs. 2-3): ``M = weight_bases`` binary weight
  bases, ``N = act_bases`` binary activation bases. ``M = N = 1`` is XNOR-Net.
* ``"pow2"``: INQ weights in ``{0, +-2^k}`` (seed 003 and Zhou et al. 2017), activations full
  precision unless ``act_bits`` is given (then PACT). :class:`INQSchedule` freezes growing
  partitions of the weights as in INQ; without it all weights are quantized with an STE.

The first conv and the last linear layer are fixed-point at ``first_last_bits`` (or left
full precision with ``first_last_bits = 32``), whatever the mode.

Choices (documented here once):

* Weight quantizers are per layer (one scale per tensor), so a ``k``-bit fixed layer has at most
  ``2^k`` distinct weight values and an ``M``-base MBN layer at most ``2^M``.
* DoReFa is scale-preserving: its ``[-1, 1]`` output is multiplied by the (detached) ``max|W|``,
  so quantized layers keep roughly the magnitudes of their float weights (matters for the last
  linear layer, which no BatchNorm follows). 1-bit weights are ``mean|W| * sign(W)``.
* PACT activations on signed inputs: a layer's input is treated as signed (symmetric PACT, clip to
  ``[-alpha, alpha]``, ``2^k`` uniform levels) once any input it has seen had a negative value.
  The flag ``act_signed`` is a persistent buffer, sticky (never reset) and updated at every
  forward without a host sync; it can also be set by hand (``layer.act_signed.fill_(True)``).
  Inputs after a ReLU never set it; MobileNet's block inputs (linear bottlenecks) do.
* The first layer's input is the image itself (already 8-bit pixels): it is not quantized, and
  ``act_bits`` of the first layer reports ``first_last_bits``.
* MBN weights: ``B_m = sign(W - mean(W) + u_m std(W))`` with ``u_m`` evenly spaced in
  ``[-1, 1]``; for ``M = 1`` the base is ``sign(W)`` (XNOR-Net). The ``alpha_m`` are solved by
  least squares at every forward (no parameters; always optimal for the current weights); the
  weight gradient is ABC-Net's eq. 3: ``sum_m alpha_m 1_{|x_m| <= 1}``.
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
  frozen float values slightly; the forward ignores that, and :meth:`INQSchedule.step` rewrites them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dse.errors import SpecError

__all__ = [
    "QUANT_MODES",
    "INQSchedule",
    "PACTQuant",
    "Pow2Quant",
    "QConv2d",
    "QLinear",
    "QuantSpec",
    "RoundSTE",
    "SignSTE",
    "dorefa_weight",
    "inq_exponent_range",
    "layer_bits",
    "mbn_activation",
    "mbn_weight",
    "pact",
    "pact_alpha_init",
    "pow2_weight",
    "quantize_model",
]

QUANT_MODES = ("none", "fixed", "mbn", "pow2")

#: Bit-width ranges per field.
_MIN_BITS, _MAX_BITS = 1, 8
_MIN_POW2_BITS = 2
_MIN_BASES, _MAX_BASES = 1, 8
_FULL_PRECISION = 32
_MAX_FIRST_LAST_BITS = 16
#: Largest initial PACT clipping level (ReLU6-like).
PACT_ALPHA_MAX_INIT = 6.0
#: Ridge added to the MBN least-squares normal equations (relative to the number of weights).
_LSQ_RIDGE = 1e-6


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

    Raises:
        SpecError: One line naming the field of an impossible combination.
    """

    mode: str = "none"
    weight_bits: int | None = None
    act_bits: int | None = None
    weight_bases: int | None = None
    act_bases: int | None = None
    first_last_bits: int = 8

    def __post_init__(self) -> None:
        if self.mode not in QUANT_MODES:
            raise SpecError(f"quant: mode: unknown mode {self.mode!r} (known: {', '.join(QUANT_MODES)})")
        _check_range("first_last_bits", self.first_last_bits, 1, _MAX_FIRST_LAST_BITS, (_FULL_PRECISION,))
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
# Straight-through estimators
# --------------------------------------------------------------------------- #


class RoundSTE(torch.autograd.Function):
    """``round(x)``; backward: identity (straight through)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad


class SignSTE(torch.autograd.Function):
    """``sign(x)`` in ``{-1, +1}``: ``+1`` iff ``x > 0``; backward: ``grad * 1_{|x| <= 1}`` (BNN/XNOR hardtanh STE).

    ``sign(0) = -1`` so that a post-ReLU input (exact zeros) binarizes to the informative ``x > 0``.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.where(x > 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


class PACTQuant(torch.autograd.Function):
    """PACT: ``q = lo + round((clip(x, lo, alpha) - lo) / s) * s`` with ``s = (alpha - lo) / (2^k - 1)``.

    ``lo = 0`` (unsigned, PACT paper) or ``lo = -alpha`` (signed, symmetric variant).
    Backward (PACT's STE): ``dq/dx = 1`` for ``lo < x < alpha``, else 0;
    ``dq/dalpha = 1`` for ``x >= alpha``, ``-1`` for ``x <= -alpha`` when signed, else 0.

    Args of ``apply``: ``x``, ``alpha`` (0-d, > 0), ``signed`` (0-d float, 0 or 1), ``bits`` (int).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, alpha: Tensor, signed: Tensor, bits: int) -> Tensor:
        lo = -alpha * signed
        steps = 2**bits - 1
        scale = (alpha - lo) / steps
        y = torch.minimum(torch.maximum(x, lo), alpha)
        ctx.save_for_backward(x, alpha, signed)
        return lo + torch.round((y - lo) / scale) * scale

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, alpha, signed = ctx.saved_tensors
        lo = -alpha * signed
        above = x >= alpha
        below = x <= lo
        grad_x = grad * (~(above | below)).to(grad.dtype) if ctx.needs_input_grad[0] else None
        grad_alpha = None
        if ctx.needs_input_grad[1]:
            grad_alpha = (grad * above.to(grad.dtype)).sum() - signed * (grad * below.to(grad.dtype)).sum()
            grad_alpha = grad_alpha.reshape(alpha.shape)
        return grad_x, grad_alpha, None, None


class Pow2Quant(torch.autograd.Function):
    """INQ power-of-two rounding; backward: identity (straight through).

    ``q = sign(w) * 2^k`` with ``k = clamp(floor(log2(4|w| / 3)), n2, n1)`` for
    ``|w| >= 2^(n2 - 1)``, else 0. This is INQ's rule: ``beta sign(w)`` if
    ``(alpha + beta) / 2 <= |w| < 3 beta / 2`` for adjacent levels ``alpha < beta`` of
    ``{0, 2^n2, ..., 2^n1}``, i.e. rounding to the nearest level.

    Args of ``apply``: ``w``, ``n1`` and ``n2`` (ints or 0-d tensors, ``n2 <= n1``).
    """

    @staticmethod
    def forward(ctx: Any, w: Tensor, n1: Tensor | float, n2: Tensor | float) -> Tensor:
        mag = w.abs()
        n1_t = torch.as_tensor(n1, dtype=w.dtype, device=w.device)
        n2_t = torch.as_tensor(n2, dtype=w.dtype, device=w.device)
        k = torch.floor(torch.log2(mag.clamp_min(torch.finfo(w.dtype).tiny) * (4.0 / 3.0)))
        k = torch.minimum(torch.maximum(k, n2_t), n1_t)
        keep = mag >= torch.exp2(n2_t - 1)
        return torch.where(keep, torch.sign(w) * torch.exp2(k), torch.zeros_like(w))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad, None, None


# --------------------------------------------------------------------------- #
# Quantizers built from the STEs
# --------------------------------------------------------------------------- #


def dorefa_weight(w: Tensor, bits: int) -> Tensor:
    """Scale-preserving DoReFa weights: ``max|W| * (2 quantize_k(tanh(W) / (2 max|tanh W|) + 1/2) - 1)``.

    ``quantize_k(r) = round((2^k - 1) r) / (2^k - 1)`` (STE). For ``k = 1``: ``mean|W| * sign(W)``.
    The scale ``max|W|`` (or ``mean|W|``) is detached. At most ``2^k`` distinct values.
    """
    if bits == 1:
        return w.detach().abs().mean() * SignSTE.apply(w)
    t = torch.tanh(w)
    r = t / (2 * t.detach().abs().max().clamp_min(1e-12)) + 0.5
    steps = 2**bits - 1
    q = RoundSTE.apply(r * steps) / steps
    return (2 * q - 1) * w.detach().abs().max()


def pact_alpha_init(bits: int) -> float:
    """Initial PACT clipping level for ``bits``-bit activations: ``min(6, 1 + bits / 2)``.

    Inputs of quantized layers are BatchNorm outputs (unit variance, before or after ReLU); a
    clip near the MSE-optimal one for a unit Gaussian (ACIQ: about 1.7 at 2 bits, 2.6 at 4 bits,
    3.9 at 8 bits) keeps low-bit layers from rounding almost everything to zero, as ``alpha = 6``
    would at 1-2 bits. ``alpha`` is learned afterwards (PACT: weight decay on ``alpha`` pulls it down).
    """
    return min(PACT_ALPHA_MAX_INIT, 1.0 + bits / 2)


def pact(x: Tensor, alpha: Tensor, bits: int, *, signed: bool | Tensor = False) -> Tensor:
    """PACT activation quantization (see :class:`PACTQuant`); ``alpha`` is clamped to >= 1e-3."""
    sgn = torch.as_tensor(signed, device=x.device).to(dtype=x.dtype)  # a copy: safe for in-place flag updates
    return PACTQuant.apply(x, alpha.clamp_min(1e-3), sgn, bits)


def _weight_base_shifts(bases: int) -> list[float]:
    return [0.0] if bases == 1 else torch.linspace(-1.0, 1.0, bases).tolist()


def mbn_weight(w: Tensor, bases: int) -> tuple[Tensor, Tensor]:
    """ABC-Net weights: ``W ~ sum_m alpha_m B_m``, ``B_m = sign(W - mean(W) + u_m std(W))``.

    ``u_m`` evenly spaced in ``[-1, 1]``; for ``M = 1`` the base is ``sign(W)`` (XNOR-Net,
    ``alpha = mean|W|``). ``alpha`` is the least-squares solution for the current weights
    (detached). Gradient: ABC-Net eq. 3, ``sum_m alpha_m 1_{|x_m| <= 1}``.

    Returns:
        The approximated weights and the ``alpha`` vector (shape ``(M,)``).
    """
    wd = w.detach()
    if bases == 1:
        pre = [w]
    else:
        mean, std = wd.mean(), wd.std()
        pre = [w - mean + u * std for u in _weight_base_shifts(bases)]
    signs = [SignSTE.apply(p) for p in pre]
    mat = torch.stack([s.detach().reshape(-1) for s in signs], dim=1)  # (n, M)
    gram = mat.T @ mat + _LSQ_RIDGE * mat.shape[0] * torch.eye(bases, dtype=w.dtype, device=w.device)
    alpha = torch.linalg.solve(gram, mat.T @ wd.reshape(-1))
    approx = sum(a * s for a, s in zip(alpha, signs, strict=True))
    return approx, alpha  # type: ignore[return-value]


def mbn_activation(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """ABC-Net activations: ``A ~ sum_n beta_n H_{v_n}(A)``, ``H_v(x) = sign(x - (0.5 - v))``.

    ``H_v(x) = +1`` iff ``clip(x + v, 0, 1) > 0.5`` (ABC-Net's shifted binarization; the tie
    ``= 0.5`` goes to -1, see :class:`SignSTE`).
    ``beta_n = scale[n]`` and ``v_n = shift[n]`` are learned; STE window ``|x - (0.5 - v)| <= 1``.
    """
    out = None
    for n in range(scale.shape[0]):
        term = scale[n] * SignSTE.apply(x - (0.5 - shift[n]))
        out = term if out is None else out + term
    assert out is not None
    return out


def inq_exponent_range(max_abs: float, bits: int) -> tuple[int, int]:
    """INQ's exponents ``(n1, n2)``: ``n1 = floor(log2(4 s / 3))``, ``n2 = n1 + 1 - 2^(b-1) / 2``.

    One of the ``b`` bits codes zero, so ``2^(b-2)`` exponents per sign remain: the levels are
    ``{0} U {+-2^k : n2 <= k <= n1}``, ``2^(b-1) + 1 <= 2^b`` values.
    """
    n1 = math.floor(math.log2(4.0 * max(max_abs, 1e-30) / 3.0))
    return n1, n1 + 1 - 2 ** (bits - 1) // 2


def pow2_weight(w: Tensor, bits: int, n1: int | None = None) -> Tensor:
    """INQ power-of-two weights with an STE; ``n1`` defaults to the one of the current ``max|W|``."""
    if n1 is None:
        n1, n2 = inq_exponent_range(float(w.detach().abs().max()), bits)
    else:
        n2 = n1 + 1 - 2 ** (bits - 1) // 2
    return Pow2Quant.apply(w, n1, n2)


# --------------------------------------------------------------------------- #
# Layers
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _LayerQuant:
    """Per-layer quantization: mode, bits/bases and whether the input is quantized."""

    mode: str  # fixed | mbn | pow2
    weight_bits: int | None = None
    act_bits: int | None = None
    weight_bases: int | None = None
    act_bases: int | None = None
    quantize_input: bool = True


class _QuantMixin:
    """Parameters, buffers and quantizers shared by :class:`QConv2d` and :class:`QLinear`."""

    weight: nn.Parameter

    def __init__(self, *args: Any, quant: _LayerQuant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # nn.Conv2d / nn.Linear, next in the MRO
        self._init_quant(quant)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._quant_repr()}"

    def _init_quant(self, cfg: _LayerQuant) -> None:
        module: Any = self
        self.quant_mode = cfg.mode
        self.weight_bits = 1 if cfg.mode == "mbn" else cfg.weight_bits
        self.act_bits = 1 if cfg.mode == "mbn" else cfg.act_bits
        self.weight_bases = cfg.weight_bases
        self.act_bases = cfg.act_bases
        self.quantize_input = cfg.quantize_input
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
        if not self.quantize_input:
            return x
        if self.quant_mode == "mbn":
            return mbn_activation(x, self.act_scale, self.act_shift)  # type: ignore[attr-defined]
        if self.uses_pact:
            signed: Tensor = self.act_signed  # type: ignore[attr-defined]
            with torch.no_grad():
                torch.logical_or(signed, x.detach().amin() < 0, out=signed)
            assert self.act_bits is not None
            return pact(x, self.act_alpha, self.act_bits, signed=signed)  # type: ignore[attr-defined]
        return x

    def quantized_weight(self) -> Tensor:
        """The weights the layer computes with (differentiable through the STEs)."""
        w = self.weight
        if self.quant_mode == "fixed":
            assert self.weight_bits is not None
            return dorefa_weight(w, self.weight_bits)
        if self.quant_mode == "mbn":
            assert self.weight_bases is not None
            return mbn_weight(w, self.weight_bases)[0]
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
        return f"mode={self.quant_mode}, {bits}, quantize_input={self.quantize_input}"


class QConv2d(_QuantMixin, nn.Conv2d):
    """An ``nn.Conv2d`` whose weights and inputs are quantized (see :func:`quantize_model`).

    Args:
        *args: As for ``nn.Conv2d``.
        quant: Per-layer quantization.
        **kwargs: As for ``nn.Conv2d``.
    """

    @classmethod
    def from_float(cls, conv: nn.Conv2d, quant: _LayerQuant) -> QConv2d:
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
    def from_float(cls, linear: nn.Linear, quant: _LayerQuant) -> QLinear:
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



_QLAYERS = (QConv2d, QLinear)


def _layer_quant(spec: QuantSpec) -> _LayerQuant:
    if spec.mode == "mbn":
        return _LayerQuant("mbn", weight_bases=spec.weight_bases, act_bases=spec.act_bases)
    return _LayerQuant(spec.mode, weight_bits=spec.weight_bits, act_bits=spec.act_bits)


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
    if any(isinstance(m, _QLAYERS) for m in model.modules()):
        raise ValueError("model is already quantized")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    first = convs[0] if convs else None
    last = linears[-1] if linears else None
    body = _layer_quant(spec)
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
                quant = _LayerQuant("fixed", weight_bits=edge_bits, act_bits=edge_bits, quantize_input=not is_first)
            else:
                quant = body
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
    if isinstance(module, _QLAYERS):
        if module.quant_mode == "mbn":
            return 1, 1, int(module.weight_bases or 1) * int(module.act_bases or 1)
        wb = int(module.weight_bits or _FULL_PRECISION)
        ab = int(module.act_bits) if module.act_bits is not None else _FULL_PRECISION
        return wb, ab, 1
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return _FULL_PRECISION, _FULL_PRECISION, 1
    raise TypeError(f"layer_bits: expected a conv or linear layer, got {type(module).__name__}")


# --------------------------------------------------------------------------- #
# Incremental network quantization
# --------------------------------------------------------------------------- #


class INQSchedule:
    """Incremental network quantization (Zhou et al. 2017; seed 003) of a model's ``pow2`` layers.

    Creating the schedule fixes each layer's exponent range from its current weights (INQ's
    ``n1``, stored in the buffer ``inq_n1``) and switches the layers to INQ: weights train in full
    precision until frozen. ``step(i)`` freezes the largest-magnitude not-yet-frozen weights of
    each layer until ``fractions[i]`` of them are frozen, rounds them to powers of two (written
    into ``weight``) and marks them in the buffer ``inq_frozen``; their gradient is zero from then
    on (the forward takes them from a detached tensor).

    Args:
        model: A model quantized with ``QuantSpec(mode="pow2", ...)``.
        fractions: Increasing accumulated fractions in ``(0, 1]``.

    Raises:
        ValueError: If ``fractions`` is not increasing in ``(0, 1]`` or the model has no pow2 layer.
    """

    def __init__(self, model: nn.Module, *, fractions: Sequence[float] = (0.5, 0.75, 0.875, 1.0)) -> None:
        fr = [float(f) for f in fractions]
        if not fr or any(not 0.0 < f <= 1.0 for f in fr) or any(b <= a for a, b in zip(fr, fr[1:])):
            raise ValueError(f"INQSchedule: fractions must increase within (0, 1], got {tuple(fractions)}")
        self.fractions = tuple(fr)
        self.layers: list[QConv2d | QLinear] = [
            m for m in model.modules() if isinstance(m, _QLAYERS) and m.quant_mode == "pow2"
        ]
        if not self.layers:
            raise ValueError("INQSchedule: the model has no pow2-quantized layer")
        with torch.no_grad():
            for layer in self.layers:
                if bool(torch.isnan(layer.inq_n1)):
                    assert layer.weight_bits is not None
                    n1, _ = inq_exponent_range(float(layer.weight.abs().max()), layer.weight_bits)
                    layer.inq_n1.fill_(n1)

    def step(self, index: int) -> None:
        """Freezes and quantizes ``fractions[index]`` of each pow2 layer's weights (largest magnitudes first)."""
        fraction = self.fractions[index]
        with torch.no_grad():
            for layer in self.layers:
                frozen: Tensor = layer.inq_frozen
                w = layer.weight
                target = min(w.numel(), round(fraction * w.numel()))
                todo = target - int(frozen.sum())
                if todo > 0:
                    mag = w.abs().reshape(-1).masked_fill(frozen.reshape(-1), -1.0)
                    idx = torch.topk(mag, todo).indices
                    frozen.view(-1)[idx] = True
                assert layer.weight_bits is not None
                snapped = pow2_weight(w, layer.weight_bits, int(layer.inq_n1))
                w.copy_(torch.where(frozen, snapped, w))

    def frozen_fraction(self) -> float:
        """The fraction of all pow2 weights frozen so far."""
        total = sum(layer.weight.numel() for layer in self.layers)
        return sum(int(layer.inq_frozen.sum()) for layer in self.layers) / total
