"""2-D diffusion KDE: histogram -> DCT -> Botev's fixed point per item -> smoothed density or pooled blocks.

The rules (statuses, fallbacks, gradients) are the package's (:mod:`kdekit.ops.diffusion_kde`). Paths: the torch
reference (any device, dtype and histogram; differentiable), the fused CPU kernels ``kdekit::kde2d_points`` (hard
histograms without a graph: label generation) and ``kdekit::soft_kde2d_pooled`` (soft histograms pooled to k x k:
the training loss, with its own backward op), and ``kdekit::kde2d_solve`` (C++/CUDA) for the fixed point of every
other 2-D call. The fused kernels leave the items brentq does not solve to the torch path.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from ..._backend import select
from .._checks import compute_dtype, finite_items
from ..dct import dct, dct2, idct, idct2
from ..hard_histogram import hard_histogram2d
from ..pooling import pool_density
from ..soft_histogram import soft_histogram2d
from .fixed_point import NEG_PI2, Psi2d, axis_times, f_of_psi
from .implicit import implicit_bandwidth
from .inputs import (Binned, Options, Points, axis_limits, binned_input, check_histogram, check_pool, chunks, concat,
                     grids, prepare_points, round_grid, single_location, solve_in_chunks, split_limits_2d, with_dtype)
from .root import BRACKET, BRENTQ_MAXITER, BRENTQ_RTOL, BRENTQ_XTOL, solve_fixed_point
from .status import KDEStatus, KernelStatus, initial_status


class KDE2dResult(NamedTuple):
    """Result of :func:`diffusion_kde2d`; ``B`` items, grid ``n``."""

    density: torch.Tensor  #: (B, n, n) indexed [x, y], input dtype
    xgrid: torch.Tensor  #: (B, n) left bin edges along x
    ygrid: torch.Tensor  #: (B, n) left bin edges along y
    bandwidth: torch.Tensor  #: (B, 2) kernel sd along x and y, input dtype (inf for uniform items)
    t: torch.Tensor  #: (B,) float64 diffusion time t* (unit-square units)
    status: torch.Tensor  #: (B,) int64 KDEStatus
    converged: torch.Tensor  #: (B,) bool, status == BRENTQ (kde_diffusion would return this result)
    n_points: torch.Tensor  #: (B,) float64, N used (valid points, including those outside the limits)


def _dct2_of_counts(binned: torch.Tensor, N: torch.Tensor) -> torch.Tensor:
    """dct2 of a sparse (b, n, n) histogram divided by N (b,), as ``sum_bins (h_ij / N) M[i]^T M[j]`` (M = dct(I)).


    One (n x c) @ (c x n) product per item, c = most occupied bins of an item: ~n/c times cheaper than two dense
    (n x n) transforms when few bins are occupied (hard histograms of a few hundred points). Not differentiable.
    """
    b, n, _ = binned.shape
    bi, i, j = binned.nonzero(as_tuple=True)
    counts = torch.bincount(bi, minlength=b)
    width = int(counts.max()) if bi.numel() else 0
    if width == 0 or 2 * width >= n:
        return dct2(binned / N[:, None, None])
    table = _dct_rows(n, binned.dtype, binned.device)
    slot = torch.arange(bi.numel(), device=bi.device) - (torch.cumsum(counts, 0) - counts)[bi]
    rows_x = torch.zeros(b, width, n, dtype=binned.dtype, device=binned.device)
    rows_y = torch.zeros_like(rows_x)
    rows_x[bi, slot] = table[i] * (binned[bi, i, j] / N[bi]).unsqueeze(-1)
    rows_y[bi, slot] = table[j]
    return rows_x.transpose(1, 2) @ rows_y


_DCT_ROWS: dict = {}


def _dct_rows(n: int, dtype, device) -> torch.Tensor:
    """(n, n) matrix whose row m is dct(e_m) (cached)."""
    key = (n, dtype, device)
    if key not in _DCT_ROWS:
        _DCT_ROWS[key] = dct(torch.eye(n, dtype=dtype, device=device))
    return _DCT_ROWS[key]


def _pool_rows(n: int, k: int, dtype, device) -> torch.Tensor:
    """(n, k): R[c, q] = sum of idct(e_c) over the samples of block q, so block sums of idct2(S) = R^T S R."""
    inverse = idct(torch.eye(n, dtype=dtype, device=device))  # row c = idct(e_c)
    return inverse.reshape(n, k, n // k).sum(-1)


def _solve_2d(psi: Psi2d, a_raw: torch.Tensor, solve: torch.Tensor, status0: torch.Tensor, single_location):
    """``(t* (b,) float64 (inf where not ``solve``), status, is_root)`` of a chunk: :func:`solve_fixed_point`, or under
    the ``cpp`` (CPU tensors) or ``cuda`` (CUDA tensors) backend ``kdekit::kde2d_solve`` (the same brentq per item)
    with the items it does not solve (no sign change, NaN, ...) passed on to :func:`solve_fixed_point`."""
    b, n, _ = a_raw.shape
    dev = a_raw.device
    t = torch.full((b,), torch.inf, dtype=torch.float64, device=dev)
    status = status0.clone()
    is_root = torch.zeros(b, dtype=torch.bool, device=dev)
    kernel = {"cpu": "cpp", "cuda": "cuda"}.get(dev.type)  # the kdekit._C backend for this device
    if kernel is not None and select(a_raw, ("torch", kernel)) == kernel:
        half = a_raw.detach().to(torch.float64, copy=True)
        half[:, 0, :] *= 0.5
        half[:, :, 0] *= 0.5
        count = torch.where(solve, psi.N, 0.0)  # count 0: skipped (status 3)
        times, kstatus = torch.ops.kdekit.kde2d_solve(half, count, BRACKET[1], BRENTQ_XTOL, BRENTQ_RTOL, BRENTQ_MAXITER)
        done = solve & (kstatus == int(KernelStatus.OK))
        t = torch.where(done, times[:, 0], t)
        is_root |= done
        solve = solve & ~done
    if bool(solve.any()):
        sidx = solve.nonzero().squeeze(-1)
        sub = psi if sidx.numel() == b else Psi2d(psi.a2.data[sidx], psi.N[sidx])
        t_s, st_s, root_s = solve_fixed_point(sub.f, sidx.numel(), n, single_location[sidx], dev)
        t[sidx] = t_s
        status[sidx] = st_s
        is_root[sidx] = root_s
    return t, status, is_root


def _smoothing_weights(t: torch.Tensor, k2: torch.Tensor, dtype) -> torch.Tensor:
    """(b, n) ``exp(-pi^2 k^2 t / 2)`` in ``dtype``, 0 below ``sqrt(tiny)`` (1e-19 in float32): such terms cannot
    change the density at the dtype's precision, and their products would be subnormal (~10x slower arithmetic)."""
    g = torch.exp(NEG_PI2 * k2 * t[:, None] / 2).to(dtype)
    return torch.where(g < math.sqrt(torch.finfo(dtype).tiny), 0.0, g)


def _kde2d_chunk(batch: Binned, opts: Options):
    """``(density, bandwidth, t, status)`` of one chunk (density (b, n, n), or (b, k, k) block probabilities)."""
    binned, N, status0 = batch.hist, batch.N, batch.status0
    b, n, _ = binned.shape
    dev = binned.device
    cdtype = binned.dtype
    width = batch.limits[..., 1] - batch.limits[..., 0]
    wx, wy = width[:, 0].to(cdtype), width[:, 1].to(cdtype)
    uniform = (status0 != int(KDEStatus.BRENTQ))
    N_safe = torch.where(uniform, torch.ones_like(N), N)
    if batch.counts:
        a_raw = _dct2_of_counts(binned, N_safe.to(cdtype))
    else:
        a_raw = dct2(binned / N_safe.to(cdtype)[:, None, None])
    # kde_diffusion halves a[0, :] and a[:, 0] before squaring: (a/2)^2 = a^2/4 exactly
    a2_graph = torch.square(a_raw.to(torch.float64))
    a2_graph[:, 0, :] *= 0.25
    a2_graph[:, :, 0] *= 0.25
    psi = Psi2d(a2_graph.detach(), N)
    t, status, is_root = _solve_2d(psi, a_raw, ~uniform, status0, batch.single)
    finite_t = torch.isfinite(t) & (t > 0)
    t_safe = torch.where(finite_t, t, torch.full_like(t, 0.05))
    if a2_graph.requires_grad:

        def evaluate(tt, a2):
            p, valid = psi.psi2(tt, a2, N, with_validity=True)
            return f_of_psi(tt, p, N[:, None]), p, valid

        t_used, p = implicit_bandwidth(evaluate, a2_graph, t_safe, finite_t, is_root, opts.implicit_grad)
    else:
        t_used = t_safe
        p = psi.psi2(t_used[:, None], a2_graph, N)[:, 0]
    # kde_diffusion's naming: tx2 smooths rows (x; MATLAB's t_x), tx1 columns (y; MATLAB's t_y)
    # psi underflows at large t (fallback items): isotropic smoothing with t* itself on both axes (such items get
    # their per-axis times from detached values, so that NaN/inf there never reaches a gradient)
    times = torch.stack(axis_times(p.detach(), N))
    bad_times = ~(torch.isfinite(times) & (times > 0)).all(0)
    tx1, tx2 = axis_times(torch.where(bad_times[:, None], 1.0, p), N)  # finite stand-ins where replaced below
    ok = finite_t
    tx1 = torch.where(bad_times, t_used, tx1)
    tx2 = torch.where(bad_times, t_used, tx2)
    # the fallback rules keep each axis's bandwidth between one bin and the whole range
    fallback = finite_t & (status != int(KDEStatus.BRENTQ))
    tx1 = torch.where(fallback, tx1.clamp(1.0 / n**2, 1.0), tx1)
    tx2 = torch.where(fallback, tx2.clamp(1.0 / n**2, 1.0), tx2)
    k2 = torch.arange(n, dtype=torch.float64, device=dev) ** 2
    gx = _smoothing_weights(tx2, k2, cdtype)
    gy = _smoothing_weights(tx1, k2, cdtype)
    pool = opts.pool
    if pool is None or opts.clip_negative:  # clipping is not linear: pool the clipped density
        smoothed = a_raw * (gx[:, :, None] * gy[:, None, :])
        if smoothed.device.type == "cpu":  # no subnormals: ~10x slower arithmetic on a CPU (a GPU does not care)
            smoothed = torch.where(smoothed.abs() < torch.finfo(cdtype).tiny, 0.0, smoothed)
        scale = (n / wx) * (n / wy)
        finite_scale = torch.isfinite(scale.detach())
        density = idct2(smoothed) * torch.where(finite_scale, scale, 1.0)[:, None, None]
        if not bool(finite_scale.all()):  # limits too narrow for the dtype: the density overflows, without a gradient
            overflow = density.detach() * scale.detach()[:, None, None]
            density = torch.where(finite_scale[:, None, None], density, overflow)
        flat = (1 / (wx * wy))[:, None, None].expand_as(density)
    else:
        # block sums of idct2(a_raw * gx gy^T) = (gx R)^T a_raw (gy R), no n x n density (pooling is linear)
        R = _pool_rows(n, pool, cdtype, dev)
        blocks = (gx[:, :, None] * R).transpose(1, 2) @ a_raw @ (gy[:, :, None] * R)
        total = blocks.sum((1, 2), keepdim=True)  # items that get the flat table below: 1, so no 0/0 in the backward
        density = blocks / torch.where(ok[:, None, None], total, 1.0)
        flat = torch.full_like(density, 1 / pool**2)
    bad_density = ok & ~finite_items(density)
    status = torch.where(bad_density, int(KDEStatus.NON_FINITE_DENSITY), status)
    if not bool(ok.all()):
        density = torch.where(ok[:, None, None], density, flat)
    if opts.clip_negative:
        density = density.clamp_min(torch.finfo(cdtype).eps)
        if pool is not None:
            density = pool_density(density, pool)
    bandwidth = torch.stack([torch.sqrt(tx2).to(cdtype) * wx, torch.sqrt(tx1).to(cdtype) * wy], 1)
    bandwidth = torch.where(ok[:, None], bandwidth, torch.inf)
    return density, bandwidth, torch.where(ok, t_used, torch.inf), status


def diffusion_kde2d(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    grid_size: int = 256,
    limits=None,
    mask: Optional[torch.Tensor] = None,
    lengths: Optional[torch.Tensor] = None,
    histogram: str = "hard",
    sharpness: float = 8.0,
    clip_negative: bool = False,
    implicit_grad: bool = True,
    chunk_size: Optional[int] = None,
    pool: Optional[int] = None,
    out_dtype: Optional[torch.dtype] = None,
) -> KDE2dResult:
    """Diffusion KDE of B point sets ``(x[b], y[b])`` on an ``n x n`` grid, n = grid_size rounded up to 2^k.

    Args:
        x, y: (B, N) or (N,) coordinates (float16/bfloat16/float32/float64, same dtype and device).
        grid_size: bins per axis (rounded up to a power of two).
        limits: None (data range +- 1/4 per item), c (= (-c, c) on both axes), ``((xlo, xhi), (ylo, yhi))`` where
            an axis may be None, c or have None entries (kde_diffusion's forms), or a (2, 2)/(B, 2, 2) tensor
            ``[[xlo, xhi], [ylo, yhi]]`` (differentiable).
        mask, lengths: which points are valid (``resolve_mask``); N counts valid points, also those outside limits.
        histogram: "hard" (numpy histogram2d bins) or "soft" (differentiable; ``sharpness`` = the logistic slope).
        clip_negative: raise density values below the dtype's eps to eps (seed / MATLAB 2015); no renormalisation.
        implicit_grad: differentiate t* by the implicit function theorem; False detaches t*.
        chunk_size: items per chunk (memory bound of the torch path); None = :func:`default_chunk_bytes` of float64
            coefficients per chunk.
        pool: if given (k, dividing n), ``density`` holds the (B, k, k) block probabilities (block sums / total,
            as :func:`~kdekit.ops.pooling.pool_density`) computed as ``R^T S R`` from the smoothed coefficients
            ``S`` without forming the n x n density (exact, pooling is linear); with ``clip_negative``, the blocks
            of the clipped density (one item's grid at a time on the fused CPU paths).
        out_dtype: dtype of density, grids and bandwidth (default: the points'); e.g. float32 for float16 points
            keeps the float32 computation's precision (float16-in, float32-out training).

    Returns:
        :class:`KDE2dResult`; see the module docstring for the rules and the statuses.
    """
    check_histogram(histogram)
    opts = Options(round_grid(grid_size), clip_negative, implicit_grad, chunk_size, pool)
    check_pool(pool, opts.grid)
    chunks(1, opts.grid, 2, chunk_size)  # validates chunk_size
    (x, y), valid, bad_input = prepare_points(("x", "y"), (x, y), mask, lengths)
    xs, ys = split_limits_2d(limits)
    limits = torch.stack([axis_limits("limits (x axis)", xs, x, valid, 0.25),
                          axis_limits("limits (y axis)", ys, y, valid, 0.25)], 1)
    points = Points((x, y), valid, bad_input, limits)
    if histogram == "hard" and _points_kernel_applies(points):
        res = _kde2d_points_cpp(points, opts)
    elif histogram == "soft" and _soft_pooled_kernel_applies(points, opts):
        res = _kde2d_soft_pooled_cpp(points, opts, sharpness)
    else:
        res = _kde2d_points_torch(points, opts, histogram, sharpness)
    return with_dtype(res, x.dtype if out_dtype is None else out_dtype)


def _result(batch: Binned, opts: Options) -> KDE2dResult:
    """Solve ``batch`` in chunks and assemble the result (in the compute dtype)."""
    density, bandwidth, t, status = solve_in_chunks(batch, opts, _kde2d_chunk)
    edges = grids(batch.limits, opts.grid)
    return KDE2dResult(density, edges[:, 0], edges[:, 1], bandwidth, t, status, status == int(KDEStatus.BRENTQ),
                       batch.N)


def _points_status(points: Points, N: torch.Tensor) -> torch.Tensor:
    """:func:`~.status.initial_status` of points: mass = a valid point inside the limits."""
    lim = points.limits  # (B, D, 2)
    v = torch.stack([c.detach() for c in points.coords], 1)  # (B, D, N)
    inside = ((v >= lim[..., :1]) & (v <= lim[..., 1:])).all(1)
    return initial_status(N, (points.valid & inside).any(1), points.bad_input)


def _kde2d_points_torch(points: Points, opts: Options, histogram: str = "hard",
                        sharpness: float = 8.0) -> KDE2dResult:
    """Reference path of :func:`diffusion_kde2d` (any device, dtype, histogram; differentiable)."""
    (x, y), valid = points.coords, points.valid
    cdtype = compute_dtype(x.dtype)
    N = valid.sum(1).to(torch.float64)
    xq = torch.where(valid, x.to(cdtype), 0.0)
    yq = torch.where(valid, y.to(cdtype), 0.0)
    n = opts.grid
    if histogram == "hard":
        hist = hard_histogram2d(xq.detach(), yq.detach(), n, points.limits, mask=valid)
    else:
        hist = soft_histogram2d(xq, yq, n, points.limits.to(cdtype), sharpness, mask=valid)
    batch = Binned(hist.to(cdtype), N, points.limits, _points_status(points, N), single_location((x, y), valid),
                   counts=histogram == "hard")
    return _result(batch, opts)


def _clip_floor(opts: Options, cdtype: torch.dtype) -> float:
    """The fused kernels' ``clip``: the dtype's eps with ``clip_negative`` (as the torch path), else -inf."""
    return torch.finfo(cdtype).eps if opts.clip_negative else -math.inf


def _points_kernel_applies(points: Points) -> bool:
    """The fused CPU kernel ``kdekit::kde2d_points`` serves hard-histogram calls without a graph to the limits."""
    x = points.coords[0]
    no_graph = not (torch.is_grad_enabled() and points.limits.requires_grad)
    return no_graph and x.device.type == "cpu" and select(x, ("torch", "cpp")) == "cpp"


def _kde2d_points_cpp(points: Points, opts: Options) -> KDE2dResult:
    """Hard histogram -> density in one ``kdekit::kde2d_points`` call (float64, one item per thread).

    Items the kernel does not finish with a brentq root on [0, 0.1] (degenerate input, no sign change, NaN, ...) are
    recomputed by :func:`_kde2d_points_torch`, so every field equals the torch path's (to float64 rounding; inputs of
    lower precision are computed in float64 here).
    """
    (x, y), valid = points.coords, points.valid
    limits = points.limits.detach()
    N = valid.sum(1).to(torch.float64)
    solve = _points_status(points, N) == int(KDEStatus.BRENTQ)
    count = torch.where(solve, N, 0.0)  # count 0: the kernel skips the item (status INVALID)
    density, times, kstatus = torch.ops.kdekit.kde2d_points(
        x.detach().to(torch.float64).contiguous(), y.detach().to(torch.float64).contiguous(), valid.to(torch.float64),
        limits[:, 0].contiguous(), limits[:, 1].contiguous(), count, opts.grid, opts.pool or 0,
        _clip_floor(opts, compute_dtype(x.dtype)), BRACKET[1], BRENTQ_XTOL, BRENTQ_RTOL, BRENTQ_MAXITER,
    )
    bandwidth = times[:, [2, 1]].sqrt() * (limits[..., 1] - limits[..., 0])  # x smoothed with tx2, y with tx1
    t = times[:, 0]
    solved = kstatus == int(KernelStatus.OK)
    status = torch.where(solved & ~finite_items(density), int(KDEStatus.NON_FINITE_DENSITY),
                         int(KDEStatus.BRENTQ))
    if not bool(solved.all()):
        idx = (~solved).nonzero().squeeze(-1)
        sub = _kde2d_points_torch(points.take(idx), opts)
        density[idx] = sub.density.to(torch.float64)
        bandwidth[idx] = sub.bandwidth.to(torch.float64)
        t[idx] = sub.t
        status[idx] = sub.status
    cdtype = compute_dtype(x.dtype)
    edges = grids(limits, opts.grid)
    return KDE2dResult(density.to(cdtype), edges[:, 0].to(cdtype), edges[:, 1].to(cdtype), bandwidth.to(cdtype), t,
                       status, status == int(KDEStatus.BRENTQ), N)


def _soft_pooled_kernel_applies(points: Points, opts: Options) -> bool:
    """The fused CPU kernel ``kdekit::soft_kde2d_pooled`` serves pooled soft-histogram calls (the training loss)
    without a graph to the limits."""
    x = points.coords[0]
    no_graph = not (torch.is_grad_enabled() and points.limits.requires_grad)
    pooled = opts.pool is not None and opts.pool <= 64
    return pooled and no_graph and x.device.type == "cpu" and select(x, ("torch", "cpp")) == "cpp"


def _kde2d_soft_pooled_cpp(points: Points, opts: Options, sharpness: float) -> KDE2dResult:
    """Soft histogram -> pooled blocks in one ``kdekit::soft_kde2d_pooled`` call per chunk, differentiable through its
    backward op (the soft histogram's backward and the bandwidth's rule of :func:`implicit_bandwidth`, in C++).

    Computes as the torch path: the histogram and its DCT in the compute dtype, the fixed point and the smoothing in
    float64. Items the kernel does not solve with a brentq root (fallback rules, degenerate input) and items whose
    blocks are not finite are recomputed by :func:`_kde2d_points_torch`, so every field follows the torch path's rules.
    """
    (x, y), valid = points.coords, points.valid
    cdtype = compute_dtype(x.dtype)
    limits = points.limits.detach()
    N = valid.sum(1, dtype=torch.float64)
    # count 0: skipped (the kernel itself skips items without a valid point inside the limits)
    count = torch.where(points.bad_input, 0.0, N)
    if bool(valid.all()):  # (the kernel makes strided views contiguous itself, outside the autograd graph)
        xq, yq = x.to(cdtype), y.to(cdtype)
    else:
        xq, yq = torch.where(valid, x.to(cdtype), 0.0), torch.where(valid, y.to(cdtype), 0.0)
    args = (xq, yq, valid.to(cdtype), limits[:, 0], limits[:, 1], count)
    parts = []
    for s, e in chunks(x.shape[0], opts.grid, 2, opts.chunk_size):
        blocks, times, kstatus, *_ = torch.ops.kdekit.soft_kde2d_pooled(
            *(a if e - s == x.shape[0] else a[s:e] for a in args), opts.grid, opts.pool, float(sharpness),
            _clip_floor(opts, cdtype), BRACKET[1], BRENTQ_XTOL, BRENTQ_RTOL, BRENTQ_MAXITER, opts.implicit_grad,
        )
        parts.append((blocks, times, kstatus))
    blocks, times, kstatus = (concat(p) for p in zip(*parts))
    bandwidth = times[:, 1:].flip(1).sqrt() * (limits[..., 1] - limits[..., 0])  # x smoothed with tx2, y with tx1
    t = times[:, 0] if opts.implicit_grad else times[:, 0].detach()
    status = torch.full_like(kstatus, int(KDEStatus.BRENTQ), dtype=torch.int64)
    done = kstatus == int(KernelStatus.OK)  # (the kernel flags items whose blocks are not finite)
    if not bool(done.all()):
        idx = (~done).nonzero().squeeze(-1)
        sub = _kde2d_points_torch(points.take(idx), opts, "soft", sharpness)
        blocks = blocks.index_put((idx,), sub.density.to(blocks.dtype))
        bandwidth = bandwidth.index_put((idx,), sub.bandwidth.to(bandwidth.dtype))
        t = t.index_put((idx,), sub.t)
        status = status.index_put((idx,), sub.status)
    edges = grids(limits, opts.grid)
    return KDE2dResult(blocks, edges[:, 0].to(cdtype), edges[:, 1].to(cdtype), bandwidth.to(cdtype), t, status,
                       status == int(KDEStatus.BRENTQ), N)


def diffusion_kde2d_binned(
    binned: torch.Tensor,
    n_points,
    limits,
    *,
    clip_negative: bool = False,
    implicit_grad: bool = True,
    chunk_size: Optional[int] = None,
) -> KDE2dResult:
    """Diffusion KDE from precomputed histograms ``binned`` (B, n, n) (rows = x, n a power of two).

    ``n_points``: N per item (number or (B,) tensor; kde_diffusion divides the counts by it), ``limits``: the
    histogram's range as in :func:`diffusion_kde2d` (no None entries). Items with N = 0 or an all-zero histogram
    get a uniform density (NO_POINTS / NO_POINTS_IN_LIMITS); negative counts are refused.
    """
    batch = binned_input(binned, n_points, split_limits_2d(limits), 0.25)
    opts = Options(batch.hist.shape[-1], clip_negative, implicit_grad, chunk_size)
    return with_dtype(_result(batch, opts), binned.dtype)
