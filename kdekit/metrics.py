"""kdekit's streaming CCC as a ``torchmetrics.Metric`` (needs ``pip install torchmetrics``; kdekit itself does not).

:class:`ConcordanceCorrCoef` keeps the exact, mergeable moments of :class:`kdekit.CCCMoments` as its state, so
``compute`` over batches and over processes (torchmetrics' ``dist_reduce_fx``) equals :func:`kdekit.ccc` on all the
data, with population moments by default (torchmetrics' own class uses ``unbiased`` moments).
"""
from __future__ import annotations

from typing import Optional

import torch

try:
    from torchmetrics import Metric
except ImportError as exc:  # pragma: no cover - exercised only without torchmetrics
    raise ImportError("kdekit.metrics needs torchmetrics: pip install torchmetrics") from exc

from .ops.ccc import CCCMoments

__all__ = ["ConcordanceCorrCoef"]


def _accumulator(moments: torch.Tensor, unbiased: bool) -> CCCMoments:
    acc = CCCMoments(dim=0, unbiased=unbiased)
    acc.state = tuple(moments)
    acc.dtype = torch.float64
    return acc


def _merge_stacked(stacked: torch.Tensor) -> torch.Tensor:
    """``dist_reduce_fx``: the ``(processes, 7, outputs)`` gathered states merged into one ``(7, outputs)``."""
    acc = _accumulator(stacked[0], False)
    for other in stacked[1:]:
        acc.merge(_accumulator(other, False))
    return torch.stack(acc.state)


class ConcordanceCorrCoef(Metric):
    """Lin's CCC over the samples (dim 0) of ``(N,)`` or ``(N, num_outputs)`` predictions, population moments unless
    ``unbiased``; ``compute`` returns a scalar for ``num_outputs=1``, else ``(num_outputs,)`` (float64)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_outputs: int = 1, unbiased: bool = False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
            raise ValueError(f"num_outputs must be a positive int, got {num_outputs!r}")
        self.num_outputs, self.unbiased = num_outputs, unbiased
        self.add_state("moments", default=torch.zeros(7, num_outputs, dtype=torch.float64),
                       dist_reduce_fx=_merge_stacked)

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> None:
        shape = (preds.shape[0], self.num_outputs)
        if preds.dim() not in (1, 2) or preds.reshape(preds.shape[0], -1).shape != shape:
            raise ValueError(f"preds must be (N,) or (N, {self.num_outputs}) for num_outputs={self.num_outputs}, "
                             f"got shape {tuple(preds.shape)}")
        as_2d = (lambda t: t.reshape(shape)) if preds.dim() == 1 else (lambda t: t)
        batch = CCCMoments(dim=0).update(as_2d(preds), as_2d(target), None if mask is None else as_2d(mask))
        acc = _accumulator(self.moments, self.unbiased).merge(batch)
        self.moments = torch.stack(acc.state)

    def compute(self) -> torch.Tensor:
        out = _accumulator(self.moments, self.unbiased).compute()
        return out[0] if self.num_outputs == 1 else out
