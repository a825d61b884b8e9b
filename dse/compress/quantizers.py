"""Quantizer maths as straight-through estimators (STEs): DoReFa, PACT, ABC-Net/XNOR, INQ powers of two.

Every quantizer is a tiny :class:`torch.autograd.Function` whose forward is the quantizer's maths
and whose backward passes the incoming gradient (optionally clipped to a window). No quantizer
ever blocks the gradient w.r.t. its input, so gradient-based attacks (``dse.robust.attacks``) see
the STE path. The layers that use them are in :mod:`dse.compress.quant`.

Choices (documented here once):

* DoReFa is scale-preserving: its ``[-1, 1]`` output is multiplied by the (detached) ``max|W|``,
  so quantized layers keep roughly the magnitudes of their float weights (matters for the last
  linear layer, which no BatchNorm follows). 1-bit weights are ``mean|W| * sign(W)``.
* MBN weights: ``B_m = sign(W - mean(W) + u_m std(W))`` with ``u_m`` evenly spaced in
  ``[-1, 1]``; for ``M = 1`` the base is ``sign(W)`` (XNOR-Net). The ``alpha_m`` are solved by
  least squares at every forward (no parameters; always optimal for the current weights); the
  weight gradient is ABC-Net's eq. 3: ``sum_m alpha_m 1_{|x_m| <= 1}``.
* MBN activations: ABC-Net's shifted binarization ``H_v(x) = +1 if clip(x + v, 0, 1) > 0.5
  else -1`` (ties to -1, so post-ReLU zeros are -1), i.e. ``sign(x - t)`` with threshold
  ``t = 0.5 - v``; the STE window is XNOR-Net's ``|x - t| <= 1``.
* INQ levels: ``{0} U {+-2^k : n2 <= k <= n1}`` (:func:`inq_exponent_range`).
* LSQ (Esser et al. 2020) is a *gradient* for PACT's clip, not another quantizer: the same
  levels (``alpha`` is LSQ's step times the top level), but the clip also learns from the
  rounding error of every unclipped input, with LSQ's gradient scale (:class:`LSQClipQuant`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CLIP_GRADS",
    "PACT_ALPHA_MAX_INIT",
    "LSQClipQuant",
    "PACTQuant",
    "Pow2Quant",
    "RoundSTE",
    "SignSTE",
    "dorefa_weight",
    "inq_exponent_range",
    "mbn_activation",
    "mbn_weight",
    "pact",
    "pact_alpha_init",
    "pow2_weight",
]

#: Largest initial PACT clipping level (ReLU6-like).
PACT_ALPHA_MAX_INIT = 6.0
#: Ridge added to the MBN least-squares normal equations (relative to the number of weights).
_LSQ_RIDGE = 1e-6


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


def _pact_levels(x: Tensor, alpha: Tensor, signed: Tensor, bits: int) -> Tensor:
    lo = -alpha * signed
    scale = (alpha - lo) / (2**bits - 1)
    y = torch.minimum(torch.maximum(x, lo), alpha)
    return lo + torch.round((y - lo) / scale) * scale


class PACTQuant(torch.autograd.Function):
    """PACT: ``q = lo + round((clip(x, lo, alpha) - lo) / s) * s`` with ``s = (alpha - lo) / (2^k - 1)``.

    ``lo = 0`` (unsigned, PACT paper) or ``lo = -alpha`` (signed, symmetric variant).
    Backward (PACT's STE): ``dq/dx = 1`` for ``lo < x < alpha``, else 0;
    ``dq/dalpha = 1`` for ``x >= alpha``, ``-1`` for ``x <= -alpha`` when signed, else 0.

    Args of ``apply``: ``x``, ``alpha`` (0-d, > 0), ``signed`` (0-d float, 0 or 1), ``bits`` (int).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, alpha: Tensor, signed: Tensor, bits: int) -> Tensor:
        ctx.save_for_backward(x, alpha, signed)
        return _pact_levels(x, alpha, signed, bits)

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


class LSQClipQuant(torch.autograd.Function):
    """PACT's forward (:class:`PACTQuant`) with LSQ's gradient for the clipping level.

    With step ``s = (alpha - lo) / (2^k - 1)`` and ``u = (clip(x) - lo) / s``, LSQ's
    ``dq/ds`` is ``round(u) - u`` inside the range and the top (bottom) level's index at the
    clips; through ``alpha = lo + s (2^k - 1)`` that gives ``dq/dalpha = (round(u) - u) s / alpha``
    inside, ``1`` at ``x >= alpha`` and ``-1`` at ``x <= -alpha`` when signed (PACT's values).
    The summed clip gradient is multiplied by LSQ's scale ``g = 1 / sqrt(n Q_P)`` (``n``
    inputs per sample, ``Q_P`` the top level's index), which keeps the step's updates in
    proportion to the weights'. PACT's clip only learns from clipped inputs: at 2 bits, where
    most inputs round to zero and few are clipped, it barely moves (README, compression).
    The gradient w.r.t. ``x`` is PACT's, so attacks see the same STE path.

    Args of ``apply``: as :class:`PACTQuant`.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, alpha: Tensor, signed: Tensor, bits: int) -> Tensor:
        ctx.save_for_backward(x, alpha, signed)
        ctx.bits = bits
        return _pact_levels(x, alpha, signed, bits)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, alpha, signed = ctx.saved_tensors
        lo = -alpha * signed
        steps = 2**ctx.bits - 1
        above = x >= alpha
        below = x <= lo
        inside = ~(above | below)
        grad_x = grad * inside.to(grad.dtype) if ctx.needs_input_grad[0] else None
        grad_alpha = None
        if ctx.needs_input_grad[1]:
            s = (alpha - lo) / steps
            u = (x - lo) / s
            d_inside = (torch.round(u) - u) * (s / alpha)
            d = torch.where(inside, d_inside, above.to(grad.dtype) - signed * below.to(grad.dtype))
            per_sample = x[0].numel() if x.dim() > 1 else x.numel()
            g = torch.rsqrt(per_sample * steps / (1.0 + signed))  # Q_P = alpha / s = steps / (1 + signed)
            grad_alpha = ((grad * d).sum() * g).reshape(alpha.shape)
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


def _channel_max(x: Tensor, per_channel: bool) -> Tensor:
    """``max|x|`` over the whole tensor, or per output channel (dim 0, broadcastable), detached."""
    x = x.detach().abs()
    if not per_channel:
        return x.max()
    return x.reshape(x.shape[0], -1).amax(1).reshape(-1, *([1] * (x.dim() - 1)))


def _channel_mean(x: Tensor, per_channel: bool) -> Tensor:
    x = x.detach()
    if not per_channel:
        return x.mean()
    return x.reshape(x.shape[0], -1).mean(1).reshape(-1, *([1] * (x.dim() - 1)))


def dorefa_weight(w: Tensor, bits: int, *, per_channel: bool = False) -> Tensor:
    """Scale-preserving DoReFa weights: ``max|W| * (2 quantize_k(tanh(W) / (2 max|tanh W|) + 1/2) - 1)``.

    ``quantize_k(r) = round((2^k - 1) r) / (2^k - 1)`` (STE). For ``k = 1``: ``mean|W| * sign(W)``.
    The scale ``max|W|`` (or ``mean|W|``) is detached; with ``per_channel`` each output channel
    (dim 0) has its own scale and ``tanh`` normalisation (a depthwise kernel whose weights are all
    small then keeps ``2^k`` levels of its own instead of rounding to one). At most ``2^k``
    distinct values per tensor (per channel with ``per_channel``).
    """
    if bits == 1:
        return _channel_mean(w.abs(), per_channel) * SignSTE.apply(w)
    t = torch.tanh(w)
    r = t / (2 * _channel_max(t, per_channel).clamp_min(1e-12)) + 0.5
    steps = 2**bits - 1
    q = RoundSTE.apply(r * steps) / steps
    return (2 * q - 1) * _channel_max(w, per_channel)


def pact_alpha_init(bits: int) -> float:
    """Initial PACT clipping level for ``bits``-bit activations: ``min(6, 1 + bits / 2)``.

    Inputs of quantized layers are BatchNorm outputs (unit variance, before or after ReLU); a
    clip near the MSE-optimal one for a unit Gaussian (ACIQ: about 1.7 at 2 bits, 2.6 at 4 bits,
    3.9 at 8 bits) keeps low-bit layers from rounding almost everything to zero, as ``alpha = 6``
    would at 1-2 bits. ``alpha`` is learned afterwards (PACT: weight decay on ``alpha`` pulls it down).
    """
    return min(PACT_ALPHA_MAX_INIT, 1.0 + bits / 2)


#: Gradients of the PACT clipping level (:func:`pact`'s ``clip_grad``).
CLIP_GRADS = ("pact", "lsq")


def pact(x: Tensor, alpha: Tensor, bits: int, *, signed: bool | Tensor = False, clip_grad: str = "pact") -> Tensor:
    """PACT activation quantization; ``alpha`` is clamped to >= 1e-3.

    ``clip_grad``: ``"pact"`` (:class:`PACTQuant`) or ``"lsq"`` (:class:`LSQClipQuant`: the
    same values and input gradient, LSQ's gradient for ``alpha``).
    """
    sgn = torch.as_tensor(signed, device=x.device).to(dtype=x.dtype)  # a copy: safe for in-place flag updates
    if clip_grad not in CLIP_GRADS:
        raise ValueError(f"clip_grad: {clip_grad!r} is not one of {', '.join(CLIP_GRADS)}")
    fn = LSQClipQuant if clip_grad == "lsq" else PACTQuant
    return fn.apply(x, alpha.clamp_min(1e-3), sgn, bits)


def _weight_base_shifts(bases: int) -> list[float]:
    return [0.0] if bases == 1 else torch.linspace(-1.0, 1.0, bases).tolist()


def mbn_weight(w: Tensor, bases: int, *, per_channel: bool = False) -> tuple[Tensor, Tensor]:
    """ABC-Net weights: ``W ~ sum_m alpha_m B_m``, ``B_m = sign(W - mean(W) + u_m std(W))``.

    ``u_m`` evenly spaced in ``[-1, 1]``; for ``M = 1`` the base is ``sign(W)`` (XNOR-Net,
    ``alpha = mean|W|``). ``alpha`` is the least-squares solution for the current weights
    (detached). Gradient: ABC-Net eq. 3, ``sum_m alpha_m 1_{|x_m| <= 1}``. With ``per_channel``
    the mean, std and ``alpha`` are per output channel (dim 0), as XNOR-Net's per-filter scales.

    Returns:
        The approximated weights and the ``alpha`` values (shape ``(M,)``, or ``(C, M)`` per channel).
    """
    wd = w.detach()
    rows = wd.reshape(wd.shape[0], -1) if per_channel else wd.reshape(1, -1)  # (C, K)
    shape = (-1, *([1] * (w.dim() - 1))) if per_channel else ()
    if bases == 1:
        pre = [w]
    else:
        mean, std = rows.mean(1), rows.std(1) if rows.shape[1] > 1 else torch.zeros(rows.shape[0], dtype=w.dtype, device=w.device)
        mean = mean.reshape(shape) if per_channel else mean[0]
        std = std.reshape(shape) if per_channel else std[0]
        pre = [w - mean + u * std for u in _weight_base_shifts(bases)]
    signs = [SignSTE.apply(p) for p in pre]
    mat = torch.stack([s.detach().reshape(rows.shape) for s in signs], dim=2)  # (C, K, M)
    eye = torch.eye(bases, dtype=w.dtype, device=w.device)
    gram = mat.transpose(1, 2) @ mat + _LSQ_RIDGE * mat.shape[1] * eye
    alpha = torch.linalg.solve(gram, (mat.transpose(1, 2) @ rows.unsqueeze(2)).squeeze(2))  # (C, M)
    if not per_channel:
        alpha = alpha[0]
        approx = sum(a * s for a, s in zip(alpha, signs, strict=True))
    else:
        approx = sum(alpha[:, m].reshape(shape) * s for m, s in enumerate(signs))
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
