"""Gradient Episodic Memory (Lopez-Paz & Ranzato 2017) as used by paper 003: projection, gradients, optimiser hook.

Projection. Given the current gradient ``g`` (p,) and the memory gradients ``M`` (t, p), one row per past corpus,
GEM replaces ``g`` by the ``z`` closest to it with ``M z >= 0``. It solves the dual QP of the reference code

    min_v  1/2 v^T P v + (M g)^T v   s.t.  v >= margin,     P = M M^T + ridge * I,

and returns ``z = M^T v + g``. ``margin`` (the reference ``memory_strength``, 0.5) bounds the *dual* variable;
``ridge`` (1e-3) keeps ``P`` positive definite. At the optimum ``M z = lambda - ridge * v`` with ``lambda >= 0``:
every inner product ``<z, g_k>`` is ``>= -ridge * v_k``. The reference only projects when some ``<g, g_k> < 0``.

The QP is solved exactly as a non-negative least-squares problem: with ``u = v - margin >= 0`` and
``P = A^T A`` (symmetric square root from ``eigh``, pseudo-inverse on a zero eigenvalue when ``ridge = 0``),
the objective is ``1/2 ||A u - b||^2 + const`` with ``A^T b = -(M g + P margin)``; scipy's active-set NNLS
finds the exact minimiser in finitely many steps. ``solver="quadprog"`` calls ``quadprog.solve_qp`` instead.

DDP. :class:`GEMOptimizer` computes each memory gradient on this rank's shard of the memory (items
``rank::world_size``), then ``all_reduce``-averages every memory gradient; the current gradient has already been
averaged by DistributedDataParallel. Every rank therefore holds the same ``g`` and ``M``, solves the same QP in
float64 and applies the same update: the replicas stay identical.
"""
from __future__ import annotations

from typing import Callable, List, Sequence

import numpy as np
import torch
import torch.distributed as dist
from scipy.optimize import nnls

SOLVERS = ("nnls", "quadprog")


def solve_gem_dual(memory_grads: np.ndarray, grad: np.ndarray, margin: float = 0.5, ridge: float = 1e-3,
                   solver: str = "nnls") -> np.ndarray:
    """The dual solution ``v`` (t,) of GEM's QP for ``memory_grads`` (t, p) and ``grad`` (p,), float64."""
    M = np.asarray(memory_grads, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64).reshape(-1)
    if M.ndim != 2 or M.shape[0] == 0:
        raise ValueError(f"memory_grads must be (t, p) with t >= 1, got shape {M.shape}")
    if M.shape[1] != g.shape[0]:
        raise ValueError(f"memory_grads has {M.shape[1]} columns but grad has {g.shape[0]} entries")
    if not (np.isfinite(M).all() and np.isfinite(g).all()):
        raise ValueError("memory_grads and grad must be finite (found NaN or inf)")
    if ridge < 0 or margin < 0:
        raise ValueError(f"ridge and margin must be >= 0, got ridge={ridge}, margin={margin}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    t = M.shape[0]
    P = M @ M.T
    P = 0.5 * (P + P.T) + ridge * np.eye(t)
    c = M @ g
    if solver == "quadprog":
        import quadprog

        return quadprog.solve_qp(P, -c, np.eye(t), np.full(t, float(margin)))[0]
    lam, U = np.linalg.eigh(P)
    keep = lam > lam.max() * t * np.finfo(np.float64).eps if lam.max() > 0 else np.zeros(t, bool)
    root = np.zeros_like(lam)
    root[keep] = np.sqrt(lam[keep])
    A = root[:, None] * U.T  # A^T A = P
    c_shift = c + P @ np.full(t, float(margin))
    inv_root = np.zeros_like(lam)
    inv_root[keep] = 1.0 / root[keep]
    b = -inv_root * (U.T @ c_shift)  # A^T b = -c_shift on range(P), which holds c_shift
    u, _ = nnls(A, b, maxiter=50 * t + 100)
    return u + margin


def project_gradient(grad: torch.Tensor, memory_grads: torch.Tensor, margin: float = 0.5, ridge: float = 1e-3,
                     solver: str = "nnls") -> torch.Tensor:
    """GEM's projected gradient ``M^T v + g`` (p,) in ``grad``'s dtype and device; ``memory_grads`` is (t, p)."""
    if grad.dim() != 1 or memory_grads.dim() != 2 or memory_grads.shape[1] != grad.shape[0]:
        raise ValueError(f"need grad (p,) and memory_grads (t, p); got {tuple(grad.shape)} and "
                         f"{tuple(memory_grads.shape)}")
    M = memory_grads.detach().double().cpu().numpy()
    g = grad.detach().double().cpu().numpy()
    v = solve_gem_dual(M, g, margin=margin, ridge=ridge, solver=solver)
    return torch.from_numpy(v @ M + g).to(dtype=grad.dtype, device=grad.device)


def flat_grad(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Every parameter's ``.grad`` flattened into one vector (zeros where a parameter has no gradient)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def assign_flat_grad(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Write the vector ``flat`` back into the parameters' ``.grad`` (the inverse of :func:`flat_grad`)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


class GEMOptimizer(torch.optim.Optimizer):
    """Wraps a base optimiser; ``step()`` projects the gradient already in ``.grad`` before the base update.

    ``memory_loss(batch) -> scalar`` evaluates the model on one memory batch; ``memories`` holds one list of batches
    per past corpus (filled by :meth:`add_memory`). Each memory gradient is the gradient of the loss summed over its
    batches, weighted by batch size, i.e. the mean loss over the memory. With no memories ``step()`` is the base step.
    ``projections`` counts the steps that were projected (some ``<g, g_k> < 0``).
    """

    def __init__(self, base: torch.optim.Optimizer, memory_loss: Callable[[object], torch.Tensor],
                 margin: float = 0.5, ridge: float = 1e-3, solver: str = "nnls"):
        self.base = base
        self.memory_loss = memory_loss
        self.margin, self.ridge, self.solver = float(margin), float(ridge), solver
        self.memories: List[List[object]] = []
        self.projections = 0
        self.steps = 0
        super().__init__([p for g in base.param_groups for p in g["params"]], dict(base.defaults))
        # alias the base optimiser's groups and state so schedulers and checkpoints act on one optimiser
        self.param_groups = base.param_groups
        self.state = base.state

    def state_dict(self):
        return self.base.state_dict()

    def load_state_dict(self, state_dict):
        self.base.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True):
        self.base.zero_grad(set_to_none=set_to_none)

    def add_memory(self, batches: List[object]) -> None:
        """Register the memory of a corpus that training has finished with (a list of batches)."""
        if not batches:
            raise ValueError("a GEM memory needs at least one batch")
        self.memories.append(list(batches))

    def _params(self) -> List[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    def _memory_grad(self, params, batches) -> torch.Tensor:
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        mine = batches[rank::world]
        for p in params:
            p.grad = None
        with torch.enable_grad():
            for batch in mine:
                (self.memory_loss(batch) * (1.0 / len(batches))).backward()
        flat = flat_grad(params)
        if world > 1:  # each rank holds its shard's share of the memory mean: the sum is the whole memory's
            dist.all_reduce(flat)
        return flat

    @torch.no_grad()
    def step(self, closure=None):
        self.steps += 1
        params = self._params()
        if self.memories:
            g = flat_grad(params)
            M = torch.stack([self._memory_grad(params, mem) for mem in self.memories])
            if bool((M @ g < 0).any()):
                g = project_gradient(g, M, margin=self.margin, ridge=self.ridge, solver=self.solver)
                self.projections += 1
            assign_flat_grad(params, g)
        return self.base.step(closure)

