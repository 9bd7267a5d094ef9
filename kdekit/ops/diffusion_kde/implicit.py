"""The gradient of the bandwidth: the implicit function theorem at a root, constants elsewhere (one rule for 1-D and
2-D), with each item's data cut from the graph where the fixed-point recursion is not differentiable."""
from __future__ import annotations

import torch

# five-point central difference of f and psi in t: t0 + h * node, h = FD_STEP * t0 (the centre gives the values)
FD_STEP = 1e-3
FD_NODES = (-2.0, -1.0, 0.0, 1.0, 2.0)
FD_WEIGHTS = (1 / 12, -8 / 12, 0.0, 8 / 12, -1 / 12)


def gate_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x`` with its graph kept only in the items (first dim) where ``rows``: the other items enter the following
    ops as constants, so a non-finite local derivative there can never reach a gradient (``torch.where`` routes no
    gradient to the unselected branch)."""
    return torch.where(rows.view(-1, *[1] * (x.dim() - 1)), x, x.detach())


def implicit_bandwidth(evaluate, a2: torch.Tensor, t0: torch.Tensor, solved: torch.Tensor, is_root: torch.Tensor,
                       implicit: bool):
    """The bandwidth's gradient rule: ``(t (b,), extra (b, E))`` with the values of ``t0`` and ``evaluate`` at it.

    ``evaluate(t (b, M), a2) -> (f (b, M), extra (b, M, E), valid (b, M))`` is the fixed-point function, the
    quantities that depend on t and the data (2-D: the level-2 psi that give the per-axis times; 1-D: none) and
    where the recursion is differentiable. ``solved`` items whose recursion is valid around ``t0`` keep the data
    derivative of the extras at fixed t; with ``implicit``, those where ``is_root`` (the solver found a root there;
    simple: ``f_t != 0``) also get ``dt/da = -f_a / f_t`` (implicit function theorem) and the extras ``de/da + de/dt
    dt/da``. For every other item t and the extras are constants. ``f_t`` and ``de/dt`` at fixed data come from a five-point
    central difference (relative step 1e-3, ~1e-12 relative error) in one batched evaluation; the data derivatives
    from one graph evaluation at ``t0``, into which only those items' data enter with a graph (:func:`gate_rows`).
    """
    h = FD_STEP * t0
    nodes = torch.tensor(FD_NODES, dtype=torch.float64, device=t0.device)
    weights = torch.tensor(FD_WEIGHTS, dtype=torch.float64, device=t0.device)
    f_s, e_s, ok_s = evaluate(t0[:, None] + h[:, None] * nodes, a2.detach())
    f_t = (f_s * weights).sum(1) / h
    e_t = (e_s * weights[:, None]).sum(1) / h[:, None]
    f0 = f_s[:, FD_NODES.index(0.0)]
    graph_rows = solved & ok_s.all(1) & torch.isfinite(f0) & torch.isfinite(e_t).all(-1)
    f_a, e_a, _ = evaluate(t0[:, None], gate_rows(a2, graph_rows))
    f_a, e_a = f_a[:, 0], e_a[:, 0]
    if not implicit:
        return t0.detach(), e_a
    rows = graph_rows & is_root & torch.isfinite(f_t) & (f_t != 0)  # a simple root
    dt = torch.where(rows, (f_a.detach() - f_a) / torch.where(rows, f_t, 1.0), 0.0)  # value 0
    return t0.detach() + dt, e_a + torch.where(rows[:, None], e_t, 0.0) * dt[:, None]
