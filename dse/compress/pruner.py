"""Pruning during training: the gradual (cubic) schedule, ADMM and dynamic network surgery.

A :class:`Pruner` is a :class:`~dse.compress.hooks.TrainingHook`: the training loop adds its
penalty to the loss and calls it after each step and epoch. The masks and one-shot rules it
drives are in :mod:`dse.compress.pruning`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dse.compress.hooks import BaseHook
from dse.compress.pruning import (
    DNS_BAND,
    MASK_BUFFER,
    check_ratio,
    check_scheme,
    global_keep,
    masked_layers,
    masked_weight,
    prunable_layers,
    prune,
    set_mask,
)
from dse.errors import SpecError

__all__ = ["ADMM_RETRAIN_FRACTION", "Pruner", "admm_retrain_epochs_for", "cubic_schedule", "make_pruner"]

#: Default share of the epochs that ADMM retrains with fixed masks after its hard prune (the
#: recipe's ``admm_retrain_fraction``).
ADMM_RETRAIN_FRACTION = 0.2


def cubic_schedule(ratio: float, epoch: int, start_epoch: int, epochs: int) -> float:
    """Zhu & Gupta (2017) target after ``epoch`` (1-based): ``k (1 - (1 - p)^3)``, ``p`` the progress."""
    if epoch < start_epoch:
        return 0.0
    progress = min(1.0, (epoch - start_epoch + 1) / (epochs - start_epoch + 1))
    return ratio * (1.0 - (1.0 - progress) ** 3)


class Pruner(BaseHook):
    """Drives a pruning scheme during training through the training loop's hooks.

    The loop adds :meth:`penalty` to the loss, calls :meth:`after_step` after every optimizer
    step, :meth:`on_epoch_end` with the 1-based epoch after each epoch (as
    :func:`dse.training.train` does) and :meth:`finalize` after the last.

    * ``irregular``/``funnel``/``structured``: gradual magnitude pruning, one step at the end of
      each epoch from ``start_epoch`` (default 1) to ``epochs`` with the cubic schedule,
      reaching ``ratio`` at the end of the last epoch; the masks are re-applied after every step.
    * ``admm``: ``Z`` starts as the projection of the initial weights and ``U`` at zero; each
      epoch end updates ``Z = proj(W + U)``, ``U = U + W - Z``; the end of epoch
      ``epochs - admm_retrain_epochs`` hard-prunes to the support of ``Z``, the penalty becomes
      zero and the last ``admm_retrain_epochs`` epochs retrain with the masks fixed (ADMM
      pruning's masked retraining, Zhang et al. 2018). Without it a short recipe ends far from
      ``Z`` and the hard prune destroys the network: on digits, 10 epochs of PGD-AT with ADMM at
      0.5 reached 0.84 training accuracy and 0.10 after the final hard prune.
    * ``dns``: every ``dns_interval`` steps the masks are recomputed from the magnitude of the
      dense weights (kept by the pruner; masked weights keep receiving their updates) with
      the hysteresis band around the threshold of the scheduled ratio; the last epoch fixes the
      masks at exactly ``ratio``.

    Training-time state (ADMM ``Z``/``U``, DNS dense weights) lives in the pruner, not in the
    model's ``state_dict``; it follows the weights' device.

    Args:
        model: The network; masks are attached if missing.
        scheme: One of :data:`PRUNE_SCHEMES`.
        ratio: Target fraction of zero prunable weights, in [0, 1).
        epochs: Number of training epochs.
        start_epoch: First epoch (1-based) whose end prunes (gradual schemes and DNS).
        rho: ADMM penalty parameter.
        admm_retrain_epochs: Epochs of masked retraining after ADMM's hard prune (``None``:
            :func:`admm_retrain_epochs_for` of ``epochs``).
        dns_interval: Optimizer steps between DNS mask updates.
        dns_band: Half-width of the DNS hysteresis band, relative to the threshold.

    Raises:
        SpecError: Bad ``prune_ratio``, ``prune_scheme``, epochs or start epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        scheme: str,
        ratio: float,
        epochs: int,
        start_epoch: int | None = None,
        rho: float = 1e-3,
        admm_retrain_epochs: int | None = None,
        dns_interval: int = 1,
        dns_band: float = DNS_BAND,
    ) -> None:
        self.scheme = check_scheme(scheme)
        self.ratio = check_ratio(ratio)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise SpecError(f"epochs: expected an integer >= 1, got {epochs!r}")
        start = 1 if start_epoch is None else start_epoch
        if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start <= epochs:
            raise SpecError(f"start_epoch: {start_epoch!r} is outside [1, {epochs}]")
        if not rho > 0:
            raise SpecError(f"rho: expected a positive number, got {rho!r}")
        retrain = admm_retrain_epochs_for(epochs) if admm_retrain_epochs is None else admm_retrain_epochs
        if isinstance(retrain, bool) or not isinstance(retrain, int) or not 0 <= retrain < epochs:
            raise SpecError(f"admm_retrain_epochs: {admm_retrain_epochs!r} is outside [0, {epochs - 1}]")
        if isinstance(dns_interval, bool) or not isinstance(dns_interval, int) or dns_interval < 1:
            raise SpecError(f"dns_interval: expected an integer >= 1, got {dns_interval!r}")
        if not 0.0 <= dns_band < 1.0:
            raise SpecError(f"dns_band: {dns_band!r} is outside [0, 1)")
        self.model = model
        self.epochs = epochs
        self.start_epoch = start
        self.rho = float(rho)
        self.admm_retrain_epochs = retrain
        self.dns_interval = dns_interval
        self.dns_band = float(dns_band)
        self.active = self.scheme != "none" and self.ratio > 0.0
        self.layers = masked_layers(model) if self.active else prunable_layers(model)
        self.current_ratio = 0.0
        self.finalized = False
        self._steps = 0
        self._admm_done = False
        self._z: list[torch.Tensor] = []
        self._u: list[torch.Tensor] = []
        self._dense: list[torch.Tensor] = []
        if self.active and self.scheme == "admm":
            self._z = self._project([m.weight.detach() for m in self._modules])
            self._u = [torch.zeros_like(z) for z in self._z]
        if self.active and self.scheme == "dns":
            self._dense = [m.weight.detach().clone() for m in self._modules]

    @property
    def _modules(self) -> list[nn.Module]:
        return [m for _, m in self.layers]

    def _follow_device(self) -> None:
        """Moves the pruner's tensors to the weights' device (the model may move after init)."""
        for store in (self._z, self._u, self._dense):
            for i, (t, m) in enumerate(zip(store, self._modules)):
                if t.device != m.weight.device:
                    store[i] = t.to(m.weight.device)

    def _project(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Euclidean projection onto the sparsity set: keep the largest ``1 - ratio`` globally."""
        keeps = global_keep([t.abs() for t in tensors], self.ratio)
        return [t * k for t, k in zip(tensors, keeps)]

    def penalty(self) -> torch.Tensor:
        """ADMM augmented-Lagrangian term ``rho/2 * sum ||W - Z + U||^2`` (zero otherwise).

        Returns:
            A scalar tensor, differentiable in the weights for ADMM before hard pruning.
        """
        modules = self._modules
        device = modules[0].weight.device if modules else torch.device("cpu")
        if not (self.active and self.scheme == "admm") or self._admm_done:
            return torch.zeros((), device=device)
        self._follow_device()
        total = torch.zeros((), device=device)
        for m, z, u in zip(modules, self._z, self._u):
            total = total + (m.weight - z + u).pow(2).sum()
        return 0.5 * self.rho * total

    @torch.no_grad()
    def after_step(self) -> None:
        """Re-applies the masks; DNS also updates its dense weights and, every interval, its masks."""
        if not self.active:
            return
        self._steps += 1
        if self.scheme == "dns" and not self.finalized:
            self._follow_device()
            for i, m in enumerate(self._modules):
                mask = getattr(m, MASK_BUFFER).bool()
                # Masked weights were zero before the step: their value now is their update.
                self._dense[i] = torch.where(mask, m.weight, self._dense[i] + m.weight)
            if self.current_ratio > 0.0 and self._steps % self.dns_interval == 0:
                self._dns_update()
            for m, dense in zip(self._modules, self._dense):
                m.weight.copy_(masked_weight(dense, getattr(m, MASK_BUFFER)))
            return
        for m in self._modules:
            m.weight.masked_fill_(getattr(m, MASK_BUFFER) == 0, 0.0)

    def _dns_update(self) -> None:
        """Prune ``|w| < a``, splice ``|w| > b``, keep the rest as they are (hysteresis)."""
        flat = torch.cat([d.abs().reshape(-1) for d in self._dense])
        k = round(self.current_ratio * flat.numel())
        if k == 0:
            return
        threshold = torch.kthvalue(flat.float().cpu(), k).values.item()
        a, b = (1.0 - self.dns_band) * threshold, (1.0 + self.dns_band) * threshold
        for m, dense in zip(self._modules, self._dense):
            mask = getattr(m, MASK_BUFFER)
            magnitude = dense.abs()
            new = torch.where(magnitude < a, torch.zeros_like(mask), mask)
            new = torch.where(magnitude > b, torch.ones_like(mask), new)
            mask.copy_(new)

    def _hard_prune_dense(self) -> None:
        keeps = global_keep([d.abs() for d in self._dense], self.ratio)
        for m, dense, keep in zip(self._modules, self._dense, keeps):
            getattr(m, MASK_BUFFER).copy_(keep.to(m.weight.dtype))
            m.weight.copy_(masked_weight(dense, keep))

    def _hard_prune_admm(self) -> None:
        for m, z in zip(self._modules, self._z):
            set_mask(m, z != 0)
        self._admm_done = True

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> None:
        """One scheduled pruning step (gradual, DNS target) or ADMM ``Z``/``U`` update.

        Args:
            epoch: The epoch just finished, 1-based.
        """
        if not self.active or self.finalized:
            return
        self._follow_device()
        if self.scheme == "admm":
            if self._admm_done:
                return
            weights = [m.weight.detach() for m in self._modules]
            self._z = self._project([w + u for w, u in zip(weights, self._u)])
            self._u = [u + w - z for u, w, z in zip(self._u, weights, self._z)]
            if epoch >= self.epochs - self.admm_retrain_epochs:
                self._hard_prune_admm()
            return
        self.current_ratio = cubic_schedule(self.ratio, epoch, self.start_epoch, self.epochs)
        if self.scheme == "dns":
            if epoch >= self.epochs:
                self._hard_prune_dense()
                self.finalized = True
            elif self.current_ratio > 0.0:
                self._dns_update()
                for m, dense in zip(self._modules, self._dense):
                    m.weight.copy_(masked_weight(dense, getattr(m, MASK_BUFFER)))
            return
        if self.current_ratio > 0.0:
            prune(self.model, self.current_ratio, self.scheme)

    @torch.no_grad()
    def finalize(self) -> None:
        """Sets the final hard masks at exactly ``ratio`` (measured over the prunable layers).

        After this the masks are fixed: :meth:`after_step` only re-applies them and the ADMM
        penalty is zero.
        """
        if not self.active:
            return
        self._follow_device()
        if self.scheme == "admm" and not self._admm_done:
            weights = [m.weight.detach() for m in self._modules]
            self._z = self._project([w + u for w, u in zip(weights, self._u)])
            self._hard_prune_admm()
        elif self.scheme == "dns" and not self.finalized:
            self._hard_prune_dense()
        scheme = "irregular" if self.scheme in ("admm", "dns") else self.scheme
        prune(self.model, self.ratio, scheme)
        self.current_ratio = self.ratio
        self.finalized = True


def admm_retrain_epochs_for(epochs: int, fraction: float = ADMM_RETRAIN_FRACTION) -> int:
    """Masked-retraining epochs after ADMM's hard prune: ``fraction`` of ``epochs``, rounded, at
    least 1 (10 epochs: 2; 3 epochs: 1); 0 for a single epoch or fraction 0 (the hard prune then
    ends training)."""
    if not 0.0 <= fraction < 1.0:
        raise SpecError(f"admm_retrain_fraction: {fraction!r} is outside [0, 1)")
    if epochs < 2 or fraction == 0.0:
        return 0
    return min(epochs - 1, max(1, round(fraction * epochs)))


def make_pruner(model: nn.Module, scheme: str, ratio: float, epochs: int, *,
                admm_retrain_fraction: float = ADMM_RETRAIN_FRACTION) -> Pruner | None:
    """The training-time pruner of a candidate's scheme, or None when it does not prune.

    Args:
        model: The network (masks are attached when a pruner is made).
        scheme: ``prune_scheme``.
        ratio: ``prune_ratio`` in [0, 1).
        epochs: Training epochs.
        admm_retrain_fraction: ADMM: the fraction of ``epochs`` retrained with fixed masks after
            the hard prune (the recipe's ``admm_retrain_fraction``).

    Raises:
        SpecError: Bad ``prune_ratio`` or ``prune_scheme``.
    """
    scheme, ratio = check_scheme(scheme), check_ratio(ratio)
    if scheme == "none" or ratio == 0.0:
        return None
    return Pruner(model, scheme=scheme, ratio=ratio, epochs=epochs,
                  admm_retrain_epochs=admm_retrain_epochs_for(epochs, admm_retrain_fraction))
