"""The perturbation of "free" adversarial training (Shafahi et al. 2019, "Adversarial Training for Free!").

Free adversarial training replays every minibatch ``m`` times. Each replay runs ONE forward and
backward pass on ``x + delta``; that single backward gives both the weight gradient (the optimizer
step) and the gradient with respect to the input, from which ``delta`` takes one FGSM step of size
``eps``. ``delta`` then carries over to the next replay and to the next minibatch, so the attack
gets stronger over the replays at no extra cost.

:class:`FreePerturbation` holds ``delta`` between passes; the training loop
(:func:`dse.training.train`, ``method: free``) owns the forward/backward pass and the optimizer::

    free = FreePerturbation(eps=8 / 255)
    for x, y in batches:
        for _ in range(m):
            x_adv = free.inputs(x)             # a leaf that requires grad, in the ball and the box
            loss = F.cross_entropy(model(x_adv), y)
            optimizer.zero_grad()
            loss.backward()                    # weight gradient and x_adv.grad together
            free.update(x, x_adv)              # delta <- one eps step along x_adv.grad, projected
            optimizer.step()

Conventions of :mod:`dse.robust.kernel`: inputs in ``[0, 1]``; the gradient is taken with respect
to the clamped input itself (saturated pixels still get one); every input :meth:`inputs` returns
lies in the ``eps``-ball around ``x`` and in ``[0, 1]``. Unlike the attacks, the pass is the
training pass: the model stays in train mode (BatchNorm uses and updates batch statistics, as in
the paper's code) and the gradient comes from ``backward`` (the optimizer needs the weights' too).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dse.robust.kernel import ascent_step, check_threat, project

__all__ = ["FreePerturbation"]


class FreePerturbation:
    """The perturbation ``delta`` that free adversarial training carries across passes.

    ``delta`` starts at zero and is reset to zero whenever a batch's shape, dtype or device differs
    from the previous one (e.g. the smaller last batch of an epoch); otherwise it persists across
    replays and minibatches, as in the paper.

    Args:
        eps: Radius of the threat model's ball (>= 0); also the step of each update (the paper's).
        norm: ``"linf"`` (sign step, elementwise clip) or ``"l2"`` (normalized step, per-sample ball).

    Raises:
        SpecError: On an invalid ``eps`` or ``norm``.
    """

    def __init__(self, *, eps: float, norm: str = "linf") -> None:
        self.eps, self.norm = check_threat(eps, norm)
        self.delta: Tensor | None = None

    def inputs(self, x: Tensor) -> Tensor:
        """``x + delta`` projected into the ``eps``-ball around ``x`` and ``[0, 1]``.

        Args:
            x: Clean inputs in ``[0, 1]``, shape ``(N, ...)``.

        Returns:
            A new leaf tensor that requires grad: run the training pass on it, call ``backward``,
            then :meth:`update`.
        """
        x = x.detach()
        delta = self.delta
        if delta is None or delta.shape != x.shape or delta.dtype != x.dtype or delta.device != x.device:
            delta = self.delta = torch.zeros_like(x)
        with torch.no_grad():
            x_adv = project(x + delta, x, self.eps, self.norm)
        return x_adv.requires_grad_(True)

    def update(self, x: Tensor, x_adv: Tensor) -> None:
        """One step of ``delta`` along ``x_adv.grad``, after the pass's backward.

        ``delta <- P(x_adv + eps * sign(grad)) - x`` (``linf``; ``l2``: the normalized gradient),
        where ``P`` projects onto the ``eps``-ball around ``x`` and ``[0, 1]``. A ``grad`` of ``None``
        (the loss did not use ``x_adv``) leaves ``delta`` as it is; non-finite entries (a mixed
        precision overflow) count as zero. ``x_adv.grad`` is cleared.

        Args:
            x: The clean inputs :meth:`inputs` was called with.
            x_adv: The tensor :meth:`inputs` returned, after ``backward``.
        """
        grad = x_adv.grad
        if grad is None:
            return
        with torch.no_grad():
            # A scaled (AMP) gradient has the same sign and direction; inf / nan entries take no step.
            grad = torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad)).to(x_adv.dtype)
            stepped = project(ascent_step(x_adv.detach(), grad, self.eps, self.norm), x.detach(), self.eps, self.norm)
            self.delta = stepped - x.detach()
        x_adv.grad = None
