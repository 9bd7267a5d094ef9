"""1-D diffusion KDE as ``kde_diffusion.kde1d``: histogram -> DCT -> Botev's ``t = xi gamma^[7](t)`` per item ->
smoothed density (the torch path on every device; the rules are the package's, :mod:`kdekit.ops.diffusion_kde`)."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .._checks import compute_dtype, finite_items
from ..dct import dct, idct
from ..hard_histogram import hard_histogram1d
from ..soft_histogram import soft_histogram1d
from .fixed_point import NEG_PI2, Xi1d
from .implicit import implicit_bandwidth
from .inputs import (Binned, Options, axis_limits, binned_input, check_histogram, grids, prepare_points, round_grid,
                     single_location, solve_in_chunks, with_dtype)
from .root import solve_fixed_point
from .status import KDEStatus, initial_status


class KDE1dResult(NamedTuple):
    """Result of :func:`diffusion_kde1d`; ``B`` items, grid ``n``."""

    density: torch.Tensor  #: (B, n), input dtype
    grid: torch.Tensor  #: (B, n) left bin edges
    bandwidth: torch.Tensor  #: (B,) kernel sd, input dtype (inf for uniform items)
    t: torch.Tensor  #: (B,) float64 diffusion time t*
    status: torch.Tensor  #: (B,) int64 KDEStatus
    converged: torch.Tensor  #: (B,) bool, status == BRENTQ
    n_points: torch.Tensor  #: (B,) float64, N used


def _kde1d_chunk(batch: Binned, opts: Options):
    """``(density, bandwidth, t, status)`` of one chunk: density (b, n)."""
    binned, N, status0, single = batch.hist, batch.N, batch.status0, batch.single
    b, n = binned.shape
    dev = binned.device
    cdtype = binned.dtype
    width = (batch.limits[:, 0, 1] - batch.limits[:, 0, 0]).to(cdtype)
    uniform = status0 != int(KDEStatus.BRENTQ)
    N_safe = torch.where(uniform, torch.ones_like(N), N)
    a_raw = dct(binned / N_safe.to(cdtype)[:, None])
    half = torch.ones(n, dtype=cdtype, device=dev)
    half[0] = 0.5
    a2_graph = (a_raw * half / 2).to(torch.float64) ** 2
    xi = Xi1d(a2_graph.detach(), N)
    t = torch.full((b,), torch.inf, dtype=torch.float64, device=dev)
    status = status0.clone()
    is_root = torch.zeros(b, dtype=torch.bool, device=dev)
    solve = ~uniform
    if bool(solve.any()):
        sidx = solve.nonzero().squeeze(-1)
        sub = Xi1d(a2_graph.detach()[sidx], N[sidx])
        t_s, st_s, root_s = solve_fixed_point(sub.f, sidx.numel(), n, single[sidx], dev)
        t[sidx] = t_s
        status[sidx] = st_s
        is_root[sidx] = root_s
    ok = torch.isfinite(t) & (t > 0)
    status = torch.where(~uniform & ~ok, int(KDEStatus.NON_FINITE_FIXED_POINT), status)
    t_safe = torch.where(ok, t, torch.ones_like(t))
    if a2_graph.requires_grad:
        all_idx = torch.arange(b, device=dev)

        def evaluate(tt, a2):
            f, valid = xi.f(tt, all_idx, a2, with_validity=True)
            return f, f.new_zeros(*f.shape, 0), valid

        t_used, _ = implicit_bandwidth(evaluate, a2_graph, t_safe, ok, is_root, opts.implicit_grad)
    else:
        t_used = t_safe
    k2 = torch.arange(n, dtype=torch.float64, device=dev) ** 2
    g = torch.exp(NEG_PI2 * t_used[:, None] / 2 * k2).to(cdtype)
    scale = n / width
    finite_scale = torch.isfinite(scale.detach())
    density = idct(a_raw * g) * torch.where(finite_scale, scale, 1.0)[:, None]
    if not bool(finite_scale.all()):  # limits too narrow for the dtype: the density overflows, without a gradient
        density = torch.where(finite_scale[:, None], density, density.detach() * scale.detach()[:, None])
    status = torch.where(ok & ~finite_items(density), int(KDEStatus.NON_FINITE_DENSITY), status)
    flat = (1 / width)[:, None].expand_as(density)
    density = torch.where(ok[:, None], density, flat)
    if opts.clip_negative:
        density = density.clamp_min(torch.finfo(cdtype).eps)
    bandwidth = torch.where(ok, torch.sqrt(t_used).to(cdtype) * width, torch.inf)
    return density, bandwidth, torch.where(ok, t_used, torch.inf), status


def diffusion_kde1d(
    x: torch.Tensor,
    *,
    grid_size: int = 1024,
    limits=None,
    mask: Optional[torch.Tensor] = None,
    lengths: Optional[torch.Tensor] = None,
    histogram: str = "hard",
    sharpness: float = 8.0,
    clip_negative: bool = False,
    implicit_grad: bool = True,
    chunk_size: Optional[int] = None,
    out_dtype: Optional[torch.dtype] = None,
) -> KDE1dResult:
    """1-D diffusion KDE of B point sets ``x`` (B, N) or (N,), as ``kde_diffusion.kde1d`` (limits: range +- 1/10).

    ``limits``: None, c (= (-c, c)), (lo, hi) with None entries, or a (2,)/(B, 2) tensor. Other arguments as in
    :func:`diffusion_kde2d`. The fixed point (``k^14`` terms) is always computed in float64.
    """
    check_histogram(histogram)
    opts = Options(round_grid(grid_size), clip_negative, implicit_grad, chunk_size)
    (x,), valid, bad_input = prepare_points(("x",), (x,), mask, lengths)
    cdtype = compute_dtype(x.dtype)
    lim = axis_limits("limits", limits, x, valid, 0.1)
    N = valid.sum(1).to(torch.float64)
    xq = torch.where(valid, x.to(cdtype), 0.0)
    if histogram == "hard":
        hist = hard_histogram1d(xq.detach(), opts.grid, lim, mask=valid)
    else:
        hist = soft_histogram1d(xq, opts.grid, lim.to(cdtype), sharpness, mask=valid)
    in_limits = valid & (x.detach() >= lim[:, :1]) & (x.detach() <= lim[:, 1:])
    batch = Binned(hist.to(cdtype), N, lim[:, None], initial_status(N, in_limits.any(1), bad_input),
                   single_location((x,), valid), counts=histogram == "hard")
    return with_dtype(_result(batch, opts), x.dtype if out_dtype is None else out_dtype)


def _result(batch: Binned, opts: Options) -> KDE1dResult:
    """Solve ``batch`` in chunks and assemble the result (in the compute dtype)."""
    density, bandwidth, t, status = solve_in_chunks(batch, opts, _kde1d_chunk)
    return KDE1dResult(density, grids(batch.limits, opts.grid)[:, 0], bandwidth, t, status,
                       status == int(KDEStatus.BRENTQ), batch.N)


def diffusion_kde1d_binned(
    binned: torch.Tensor,
    n_points,
    limits,
    *,
    clip_negative: bool = False,
    implicit_grad: bool = True,
    chunk_size: Optional[int] = None,
) -> KDE1dResult:
    """1-D diffusion KDE from histograms ``binned`` (B, n), n a power of two; ``n_points`` and ``limits`` as in
    :func:`~kdekit.ops.diffusion_kde.diffusion_kde2d_binned` (limits: (lo, hi) or a (B, 2) tensor)."""
    batch = binned_input(binned, n_points, [limits], 0.1)
    opts = Options(batch.hist.shape[-1], clip_negative, implicit_grad, chunk_size)
    return with_dtype(_result(batch, opts), binned.dtype)
