"""Batched diffusion KDE (Botev, Grotowski & Kroese 2010) in 1-D and 2-D, as KDE-diffusion 1.0.5 computes it.

Every item of a batch ``(B, N)`` gets its own bandwidth from Botev's fixed point, solved for all items at once:

* **Binning.** Hard histogram (``numpy.histogram``/``histogram2d`` bins, left-closed, last bin closed) or soft
  histogram (differentiable in the points). ``N`` = number of valid points *including those outside the limits*
  (kde_diffusion's convention): an item with points outside its limits has mass ``in-range / N < 1``. The DCT of a
  hard histogram is summed over its occupied bins (``sum h_ij M[i]^T M[j]``, one (n x c)(c x n) product per item),
  the DCT of a soft one uses :func:`~kdekit.ops.dct.dct2`.
* **Grid.** ``grid_size`` rounded up to a power of two. Default limits: data range +- 1/4 of it in 2-D (1/10 in
  1-D); an axis whose valid points have zero range gets ``value +- 0.5`` (numpy's convention for an empty range).
* **Fixed point.** 2-D: the 18 memoised quadratic forms ``psi(i, j)``, ``2 <= i + j <= 5`` (kde_diffusion evaluates
  45 with identical values), ``gamma = (2 pi N (psi02 + psi20 + 2 psi11))^(-1/3)`` and ``f(t) = t - (t - gamma) /
  gamma``. 1-D: ``f(t) = t - xi gamma^[7](t)``. Both are evaluated in **float64 whatever the input dtype** (1-D:
  ``k^14`` overflows float32 for grids >= 512; 2-D: the Brent tolerances are float64's). Each evaluation of the 2-D
  forms is four batched matmuls of the squared DCT coefficients with the weight vectors of all active items,
  truncated to the wavenumbers whose weight ``exp(-pi^2 k^2 t)`` is a normal float64 (smaller weights cannot change
  the sums; subnormal ones would only slow the arithmetic down).
* **Root.** :data:`KDEStatus.BRENTQ`: scipy's ``brentq`` on ``[0, 0.1]`` (``xtol=2e-12``, ``rtol=4 eps``, 100
  iterations), reproduced step by step with per-item state, so it returns the same root as kde_diffusion, also on
  sets with several roots. A NaN value of ``f`` during the iteration fails the item, as scipy's NaN check does.
  Items where it fails (kde_diffusion raises there) get Botev's 2015 rules, kept where a bandwidth means something on
  the grid: on ``[t_lo, 0.1]`` with ``t_lo = 1 / n^2`` (a bandwidth of one bin; 0.1 is the 2015 code's cap of its
  growing bracket), :data:`KDEStatus.SMALLEST_ROOT` is the first sign change of ``f`` on a log scan (ratio
  ``sqrt 2``) refined by the same Brent (the 2015 code grows its bracket from ``~1e-12`` and can return roots below
  one bin), else :data:`KDEStatus.MIN_ABS_F` is the argmin of ``|f|`` there (the 2015 code's ``fminbnd(|f|, 0,
  0.1)``; lightkde does the same), refined by two finer scans. Their per-axis times are clamped to ``[t_lo, 1]``, so
  every fallback bandwidth lies between one bin and the limits' range on each axis (1-D: ``sqrt(t*)``, already in
  ``[1/n, 0.32]`` of the range). ``f`` is NaN for ``t >~ 1`` (negative sum under a fractional power): such values
  are masked, never raised.
* **Density.** 2-D per-axis times ``tx1, tx2`` at ``t*`` (where they are not finite, e.g. psi underflow at the
  large ``t*`` of a fallback item, ``t*`` itself on both axes), Gaussian smoothing in DCT space (reflecting boundary),
  inverse DCT, scaled by ``n / width`` per axis; indexed ``[x, y]``; grids are the **left bin edges** (as
  kde_diffusion). bandwidth = ``[sqrt(tx2) * width_x, sqrt(tx1) * width_y]`` (2-D), ``sqrt(t*) * width`` (1-D).
  Negatives are kept (kde_diffusion); ``clip_negative=True`` raises every value below the dtype's eps to eps (the
  seed code and MATLAB 2015 set negatives to eps; values in ``[0, eps)`` differ by less than eps; one in-place
  ``clamp_min`` instead of a masked fill ~7x slower), **without renormalising** (the integral then exceeds 1 by the
  clipped negative mass; pooled tables divide by their sum anyway).
* **Degenerate items** never raise: no valid point, none inside the limits, or a non-finite valid point give a
  uniform density ``1 / (width_x width_y)``, ``t* = bandwidth = inf`` and their own status; a single point or all
  points at one location that brentq cannot solve get :data:`KDEStatus.SINGLE_LOCATION` (bandwidth from the fallback
  rules). Limits so narrow that ``n / width`` overflows (spreads below ~1e-150 in float64) give
  :data:`KDEStatus.NON_FINITE_DENSITY`: the density as computed (inf), no gradient.
* **Gradients** (soft histograms; the density is also differentiable in the limits), one rule per item, always
  finite, and a non-finite value in one item never reaches another item's gradient (an item's data enter the
  bandwidth recursion with a graph only where the recursion is differentiable, so no ``0 * inf`` in a backward
  pass). BRENTQ and SMALLEST_ROOT items (SINGLE_LOCATION ones whose ``t*`` is a root): the implicit function
  theorem, ``t = t0 - (f(t0; a) - f(t0; a).detach()) / f_t(t0)`` with ``t0`` the detached root, i.e. the value is
  unchanged and ``dt/da = -f_a / f_t``; the per-axis times get ``dpsi/da + dpsi/dt dt/da``. ``f_t`` and ``dpsi/dt``
  at fixed data come from a five-point central difference (relative step 1e-3, ~1e-12 relative error), the data
  derivatives from one graph evaluation at ``t0``. MIN_ABS_F items (and SINGLE_LOCATION ones from that rule): ``t*``
  is a constant, exactly as it is locally (an argmin over a fixed scan), and the per-axis times keep ``dpsi/da`` at
  that ``t*`` (zero where they are clamped): the gradient is exact almost everywhere. ``implicit_grad=False`` holds
  ``t*`` constant for every item in the same way. Items whose psi recursion is not differentiable at ``t*`` (a sum
  it divides by underflowed to 0) keep constant times; the degenerate statuses have a uniform density (zero
  gradient in the points, the limits' gradient through ``1 / (width_x width_y)``).
* **Backends** (``kdekit.use_backend``; default ``cpp`` for CPU tensors when ``kdekit._C`` is built). ``torch``:
  everything above in batched torch ops. ``cpp``, 2-D only: hard-histogram calls without a graph to the limits run
  the fused ``kdekit::kde2d_points`` (binning, DCT, the same brentq, smoothing and inverse DCT or pooling per item,
  in float64 whatever the input dtype, one item per thread); all other 2-D calls solve the fixed point with
  ``kdekit::kde2d_solve`` on the detached spectrum and keep the rest (and the implicit gradient) in torch. Items the
  kernels do not solve by brentq on [0, 0.1] (degenerate input, no sign change, NaN, ...) go through the torch
  rules above, so fields and statuses equal the torch path's (float64: to ~1e-12 relative). Results of the kernels
  do not depend on the number of threads. ``cuda`` (CUDA tensors, ``kdekit._C`` built with CUDA): the solve runs
  ``kdekit::kde2d_solve``'s CUDA kernel (one block per item), the rest is the torch path on the GPU.

dtypes: float64 and float32 computed in themselves (the fixed point always in float64); float16/bfloat16 in float32
and returned in the input dtype. Items are processed in chunks of ``chunk_size`` (default: about 32 MiB of float64
coefficients per chunk on the CPU, 1/16 of the free memory on a GPU: :func:`default_chunk_bytes`) to bound memory;
all items of a chunk are computed together.
"""
from __future__ import annotations

import math
from enum import IntEnum
from typing import Callable, NamedTuple, Optional

import torch

from .._backend import select
from ._utils import check_float_tensor, check_points, check_same, compute_dtype, resolve_mask
from .dct import dct, dct2, idct, idct2
from .hard_histogram import hard_histogram1d, hard_histogram2d
from .soft_histogram import soft_histogram1d, soft_histogram2d

__all__ = [
    "KDEStatus",
    "KDE1dResult",
    "KDE2dResult",
    "diffusion_kde1d",
    "diffusion_kde1d_binned",
    "diffusion_kde2d",
    "diffusion_kde2d_binned",
]

BRENTQ_XTOL = 2e-12
BRENTQ_RTOL = 4 * torch.finfo(torch.float64).eps
BRENTQ_MAXITER = 100
BRACKET = (0.0, 0.1)
SCAN_RATIO = math.sqrt(2.0)  # log-scan step of the fallback rules
_PI = math.pi
_NEG_PI2 = -(math.pi**2)
# exp(x) < 2.2e-308 (subnormal or 0) in float64 for x < -708.4: wavenumbers beyond sqrt(708.4 / (pi^2 t)) are dropped
# (they cannot change a sum of normal numbers, and subnormal arithmetic is ~10x slower)
_EXP_ZERO = 708.4
_TINY64 = torch.finfo(torch.float64).tiny
# psi sums below this (underflow at a fallback item's large t) make the recursion's derivative overflow (1 / sum^2)
_DIFFERENTIABLE_SUM = 1e-100
# five-point central difference of f and psi in t (implicit gradient): t0 + h * node, h = _FD_STEP * t0
_FD_STEP = 1e-3
_FD_NODES = (-2.0, -1.0, 0.0, 1.0, 2.0)  # the centre gives the values at t0
_FD_WEIGHTS = (1 / 12, -8 / 12, 0.0, 8 / 12, -1 / 12)


class KDEStatus(IntEnum):
    """Which rule chose an item's bandwidth, or why the item is degenerate (``t_lo = 1 / n^2``: one bin).

    Gradients (soft histograms, see the module doc): BRENTQ and SMALLEST_ROOT items (and SINGLE_LOCATION ones whose
    t* is a root) get the implicit-function gradient of t*; MIN_ABS_F items hold t* constant (it is locally
    constant) with the per-axis times differentiated at it; the uniform densities of the degenerate statuses do not
    depend on the points (zero gradient). Gradients are finite for every status.
    """

    BRENTQ = 0  #: scipy brentq on [0, 0.1] converged: the same t* as kde_diffusion
    SMALLEST_ROOT = 1  #: brentq failed; the first sign change of f on a log scan of [t_lo, 0.1], refined by Brent
    MIN_ABS_F = 2  #: no sign change on [t_lo, 0.1]: argmin |f| there (Botev 2015's fminbnd); t* is not a root
    SINGLE_LOCATION = 3  #: all valid points at one location and brentq failed; t* from the two rules above
    NO_POINTS = 4  #: no valid point: uniform density, t* = bandwidth = inf
    NO_POINTS_IN_LIMITS = 5  #: no valid point inside the limits: uniform density, t* = bandwidth = inf
    NON_FINITE_INPUT = 6  #: a valid point is NaN/inf: uniform density, t* = inf (mask such points to drop them)
    NON_FINITE_FIXED_POINT = 7  #: f or the per-axis times were not finite at any usable t: uniform density
    NON_FINITE_DENSITY = 8  #: a bandwidth was found but the density overflows the dtype (limits narrower than
    #: ~1e-150 in float64): values as computed (inf), no gradient


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


class KDE1dResult(NamedTuple):
    """Result of :func:`diffusion_kde1d`; ``B`` items, grid ``n``."""

    density: torch.Tensor  #: (B, n), input dtype
    grid: torch.Tensor  #: (B, n) left bin edges
    bandwidth: torch.Tensor  #: (B,) kernel sd, input dtype (inf for uniform items)
    t: torch.Tensor  #: (B,) float64 diffusion time t*
    status: torch.Tensor  #: (B,) int64 KDEStatus
    converged: torch.Tensor  #: (B,) bool, status == BRENTQ
    n_points: torch.Tensor  #: (B,) float64, N used


# ---------------------------------------------------------------------------------------------------------------
# Fixed-point functions f(t) for a batch, evaluated at t of shape (b, M) for items idx (b,)
# ---------------------------------------------------------------------------------------------------------------


def _cutoff(t: torch.Tensor, n: int) -> int:
    """Number of leading wavenumbers whose weight exp(-pi^2 k^2 t) can be non-zero for every finite t > 0 in ``t``.

    On a GPU always ``n``: reading the times back would stall the device for a saving its matmuls do not need (the
    weights beyond the cut are 0 either way, see :func:`_quadratic_forms`)."""
    if t.device.type != "cpu":
        return n
    t = t.detach()
    finite = t[torch.isfinite(t) & (t > 0)]
    if finite.numel() < t.numel() or finite.numel() == 0:
        return n
    t_min = float(finite.min())
    return min(n, int(math.sqrt(_EXP_ZERO / (math.pi**2 * t_min))) + 2)


class _ItemCache:
    """Holds per-item tensors and serves the subset ``idx`` cheaply as the active set of a solver shrinks."""

    def __init__(self, data: torch.Tensor):
        self.data = data
        self.idx = torch.arange(data.shape[0], device=data.device)
        self.cur = data

    def view(self, idx: torch.Tensor):
        """``(subset, pos)``: a tensor holding at least the items ``idx`` and their positions ``pos`` in it."""
        pos = torch.searchsorted(self.idx, idx).clamp(max=self.idx.numel() - 1)
        if idx.numel() < 0.5 * self.idx.numel() or not bool((self.idx[pos] == idx).all()):
            self.idx = idx
            self.cur = self.data[idx]
            pos = torch.arange(idx.numel(), device=idx.device)
        return self.cur, pos


class _LeadingBlocks:
    """Serves the leading K x K blocks of a2 (b, n, n); once the cutoffs drop below 3/4 n (the solver has left
    t = 0), from a contiguous copy of a slightly larger block (strided slices halve the matmul speed)."""

    def __init__(self, a2: torch.Tensor, copies: bool = True):
        self.full = a2
        self.copies = copies and not a2.requires_grad
        self.copy = None

    def block(self, K: int) -> torch.Tensor:
        n = self.full.shape[-1]
        if self.copy is not None and K <= self.copy.shape[-1] <= 1.5 * K:
            return self.copy[:, :K, :K]
        if self.copies and K < 0.75 * n:
            kc = min(n, int(1.2 * K) + 1)
            self.copy = self.full[:, :kc, :kc].contiguous()
            return self.copy[:, :K, :K]
        return self.full[:, :K, :K]


def _quadratic_forms(blocks: _LeadingBlocks, t: torch.Tensor, k2: torch.Tensor, neg_pi2_k2: torch.Tensor, pairs):
    """sum_{r,c} a2[r,c] w_t[r] k_r^(2 j) w_t[c] k_c^(2 i) for each item, each column of ``t`` and each pair (i, j).

    a2: (b, n, n) rows = x; t: (b, P) one time per pair; returns (b, P). kde_diffusion's ``wy @ a2 @ wx`` with
    ``wx = w k^(2i)`` on columns and ``wy = w k^(2j)`` on rows, ``w = [1, 1/2, ...] exp(-pi^2 k^2 t)``.
    """
    a2 = blocks.full
    n = a2.shape[-1]
    K = _cutoff(t, n)
    base = torch.full((K,), 0.5, dtype=a2.dtype, device=a2.device)
    base[0] = 1.0
    w = base * torch.exp(neg_pi2_k2[:K] * t.unsqueeze(-1))  # (b, P, K)
    w = torch.where(w < _TINY64, 0.0, w)  # items with larger t than the batch minimum: no subnormal weights
    i_pow = torch.stack([k2[:K] ** i for i, _ in pairs])  # (P, K)
    j_pow = torch.stack([k2[:K] ** j for _, j in pairs])
    cols = w * i_pow
    rows = w * j_pow
    v = torch.matmul(blocks.block(K), cols.transpose(1, 2))  # (b, K, P)
    return torch.einsum("bpk,bkp->bp", rows, v)


class _Psi2d:
    """Memoised recursion of kde_diffusion's ``psi(i, j, t)`` and the solved function ``f(t)`` for 2-D items."""

    def __init__(self, a2: torch.Tensor, N: torch.Tensor):
        n = a2.shape[-1]
        self.a2 = _ItemCache(a2)
        self.blocks = None
        self.N = N
        k = torch.arange(n, dtype=torch.float64, device=a2.device)
        self.k2 = k**2
        self.neg_pi2_k2 = _NEG_PI2 * self.k2

    def psi2(self, t: torch.Tensor, a2, N: torch.Tensor, with_validity: bool = False):
        """(b, M) times -> (b, M, 3) level-2 values psi(0,2), psi(1,1), psi(2,0) (all recursion stages memoised).

        ``a2``: (b, n, n) tensor or :class:`_LeadingBlocks` of one. ``with_validity``: also return (b, M) bool, True
        where every stage was finite and every sum the next stage divides by was far from 0 (where the recursion is
        differentiable with finite derivatives).
        """
        blocks = a2 if isinstance(a2, _LeadingBlocks) else _LeadingBlocks(a2, copies=False)
        b, M = t.shape
        prev = None
        valid = torch.ones(b, M, dtype=torch.bool, device=t.device)
        for level in (5, 4, 3, 2):
            pairs = [(i, level - i) for i in range(level + 1)]
            if level == 5:
                times = t.unsqueeze(-1).expand(b, M, level + 1)
            else:
                # psi(i, j) at t_ij from psi(i+1, j) + psi(i, j+1) of the level above (same input t for all)
                total = (prev[..., 1:] + prev[..., :-1]).abs()
                if with_validity:  # the derivative of the power below squares the sum: keep it well above tiny
                    valid &= (torch.isfinite(total.detach()) & (total.detach() > _DIFFERENTIABLE_SUM)).all(-1)
                coef = torch.tensor(
                    [(1 + 1 / 2 ** (level + 1)) / 3 * _odd_product(i) * _odd_product(j) for i, j in pairs],
                    dtype=torch.float64,
                    device=t.device,
                )
                times = (coef / ((_PI * N)[:, None, None] * total)) ** (1 / (2 + level))
            forms = _quadratic_forms(
                blocks, times.reshape(b, M * (level + 1)), self.k2, self.neg_pi2_k2, pairs * M
            ).reshape(b, M, level + 1)
            prev = (-1) ** level * _PI ** (2 * level) * forms
        if with_validity:
            return prev, valid & torch.isfinite(prev.detach()).all(-1)
        return prev

    def f(self, t: torch.Tensor, idx: torch.Tensor, a2=None) -> torch.Tensor:
        """f(t) = t - (t - gamma)/gamma for items ``idx`` at times ``t`` (b, M); ``a2`` overrides the stored one."""
        if a2 is None:
            sub, pos = self.a2.view(idx)
            if self.blocks is None or self.blocks.full is not sub:
                self.blocks = _LeadingBlocks(sub)
            if sub.shape[0] != idx.numel():
                tt = torch.full((sub.shape[0], t.shape[1]), 0.05, dtype=t.dtype, device=t.device)
                tt[pos] = t
                return self.f(tt, self.a2.idx, self.blocks)[pos]
            a2 = self.blocks
        N = self.N[idx]
        return _f_of_psi(t, self.psi2(t, a2, N), N[:, None])


def _f_of_psi(t: torch.Tensor, p: torch.Tensor, N: torch.Tensor) -> torch.Tensor:
    """kde_diffusion's ``t - (t - gamma) / gamma`` from the level-2 values ``p`` (..., 3) = (psi02, psi11, psi20)."""
    sigma = p[..., 0] + p[..., 2] + 2 * p[..., 1]
    gamma = (2 * _PI * N * sigma) ** (-1 / 3)
    return t - (t - gamma) / gamma


def _gate_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x`` with its graph kept only in the items (first dim) where ``rows``: the other items enter the following
    ops as constants, so a non-finite local derivative there can never reach a gradient (``torch.where`` routes no
    gradient to the unselected branch)."""
    return torch.where(rows.view(-1, *[1] * (x.dim() - 1)), x, x.detach())


def _implicit(evaluate, a2: torch.Tensor, t0: torch.Tensor, solved: torch.Tensor, is_root: torch.Tensor,
              implicit: bool):
    """The bandwidth's gradient rule: ``(t (b,), extra (b, E))`` with the values of ``t0`` and ``evaluate`` at it.

    ``evaluate(t (b, M), a2) -> (f (b, M), extra (b, M, E), valid (b, M))`` is the fixed-point function, the
    quantities that depend on t and the data (2-D: the level-2 psi that give the per-axis times; 1-D: none) and
    where the recursion is differentiable. ``solved`` items whose recursion is valid around ``t0`` keep the data
    derivative of the extras at fixed t; with ``implicit``, those where ``is_root`` (a simple root: ``f(t0) ~ 0``,
    ``f_t != 0``) also get ``dt/da = -f_a / f_t`` (implicit function theorem) and the extras ``de/da + de/dt dt/da``.
    For every other item t and the extras are constants. ``f_t`` and ``de/dt`` at fixed data come from a five-point
    central difference (relative step 1e-3, ~1e-12 relative error) in one batched evaluation; the data derivatives
    from one graph evaluation at ``t0``, into which only those items' data enter with a graph (:func:`_gate_rows`).
    """
    h = _FD_STEP * t0
    nodes = torch.tensor(_FD_NODES, dtype=torch.float64, device=t0.device)
    weights = torch.tensor(_FD_WEIGHTS, dtype=torch.float64, device=t0.device)
    f_s, e_s, ok_s = evaluate(t0[:, None] + h[:, None] * nodes, a2.detach())
    f_t = (f_s * weights).sum(1) / h
    e_t = (e_s * weights[:, None]).sum(1) / h[:, None]
    f0 = f_s[:, _FD_NODES.index(0.0)]
    graph_rows = solved & ok_s.all(1) & torch.isfinite(f0) & torch.isfinite(e_t).all(-1)
    f_a, e_a, _ = evaluate(t0[:, None], _gate_rows(a2, graph_rows))
    f_a, e_a = f_a[:, 0], e_a[:, 0]
    if not implicit:
        return t0.detach(), e_a
    # |f| < 1e-6 (f(0) = 1): t0 is a root (not the min |f| point of a SINGLE_LOCATION item)
    rows = graph_rows & is_root & (f0.abs() < 1e-6) & torch.isfinite(f_t) & (f_t != 0)
    dt = torch.where(rows, (f_a.detach() - f_a) / torch.where(rows, f_t, 1.0), 0.0)  # value 0
    return t0.detach() + dt, e_a + torch.where(rows[:, None], e_t, 0.0) * dt[:, None]


def _odd_product(m: int) -> int:
    """1 * 3 * ... * (2m - 1) (1 for m = 0)."""
    return math.prod(range(1, 2 * m, 2))


class _Xi1d:
    """kde_diffusion's 1-D ``t - xi gamma^[7](t)`` for a batch of squared half DCT coefficients ``a2 = (a/2)^2``."""

    STAGES = 7

    def __init__(self, a2: torch.Tensor, N: torch.Tensor):
        n = a2.shape[-1]
        self.a2 = a2
        self.N = N
        k = torch.arange(n, dtype=torch.float64, device=a2.device)
        self.k2 = k**2
        self.neg_pi2_k2 = _NEG_PI2 * self.k2

    def f(self, t: torch.Tensor, idx: torch.Tensor, a2: Optional[torch.Tensor] = None, with_validity: bool = False):
        """f at times ``t`` (b, M) for items ``idx``; ``a2`` overrides the stored one. ``with_validity``: also (b, M)
        bool, True where every stage's functional was finite and positive (the recursion divides by it)."""
        a2 = self.a2[idx] if a2 is None else a2
        N = self.N[idx][:, None]
        a2 = a2.unsqueeze(1)  # (b, 1, n)

        def functional(s: int, ts: torch.Tensor) -> torch.Tensor:
            return 2 * _PI ** (2 * s) * (self.k2**s * a2 * torch.exp(self.neg_pi2_k2 * ts.unsqueeze(-1))).sum(-1)

        l = self.STAGES
        val = functional(l, t)
        valid = torch.ones_like(t, dtype=torch.bool)
        for s in range(l - 1, 1, -1):
            K = _odd_product(s) / math.sqrt(2 * _PI)
            C = (1 + 0.5 ** (s + 0.5)) / 3
            valid &= torch.isfinite(val.detach()) & (val.detach() > 0)
            ts = (2 * C * K / N / val) ** (2 / (3 + 2 * s))
            val = functional(s, ts)
        f = t - (2 * N * math.sqrt(_PI) * val) ** (-2 / 5)
        return (f, valid & torch.isfinite(f.detach())) if with_validity else f


# ---------------------------------------------------------------------------------------------------------------
# Batched root finding: scipy's brentq step by step, then the 2015 smallest-root / min |f| fallbacks
# ---------------------------------------------------------------------------------------------------------------

FixedPointFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def brentq_batched(
    fn: FixedPointFn,
    xa: torch.Tensor,
    xb: torch.Tensor,
    xtol: float = BRENTQ_XTOL,
    rtol: float = BRENTQ_RTOL,
    maxiter: int = BRENTQ_MAXITER,
    fa: Optional[torch.Tensor] = None,
    fb: Optional[torch.Tensor] = None,
):
    """Brent's method exactly as scipy's ``brentq.c``, vectorised over items with per-item state.

    ``fn(t, idx)`` evaluates ``(b, 1)`` times for the items ``idx`` (b,) and returns ``(b, 1)`` float64 values.
    ``xa, xb``: (B,) float64 brackets. Returns ``(root (B,), converged (B,) bool)``; an item fails (converged False,
    root NaN) on no sign change, a NaN value (scipy's NaN check) or ``maxiter`` iterations.
    """
    B = xa.shape[0]
    dev = xa.device
    all_idx = torch.arange(B, device=dev)

    def call(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return fn(x[idx].unsqueeze(-1), idx).squeeze(-1)

    xpre, xcur = xa.clone(), xb.clone()
    fpre = call(xpre, all_idx) if fa is None else fa.clone()
    fcur = call(xcur, all_idx) if fb is None else fb.clone()
    root = torch.full((B,), float("nan"), dtype=torch.float64, device=dev)
    ok = torch.zeros(B, dtype=torch.bool, device=dev)
    failed = torch.isnan(fpre) | torch.isnan(fcur)
    at_a = ~failed & (fpre == 0)
    at_b = ~failed & ~at_a & (fcur == 0)
    root = torch.where(at_a, xpre, torch.where(at_b, xcur, root))
    ok = at_a | at_b
    failed |= ~ok & (torch.signbit(fpre) == torch.signbit(fcur))
    active = ~(ok | failed)
    zeros = torch.zeros(B, dtype=torch.float64, device=dev)
    xblk, fblk, spre, scur = zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone()
    for _ in range(maxiter):
        if not bool(active.any()):
            break
        new_bracket = active & (fpre != 0) & (fcur != 0) & (torch.signbit(fpre) != torch.signbit(fcur))
        xblk = torch.where(new_bracket, xpre, xblk)
        fblk = torch.where(new_bracket, fpre, fblk)
        spre = torch.where(new_bracket, xcur - xpre, spre)
        scur = torch.where(new_bracket, xcur - xpre, scur)
        swap = active & (fblk.abs() < fcur.abs())
        xpre, xcur, xblk = torch.where(swap, xcur, xpre), torch.where(swap, xblk, xcur), torch.where(swap, xcur, xblk)
        fpre, fcur, fblk = torch.where(swap, fcur, fpre), torch.where(swap, fblk, fcur), torch.where(swap, fcur, fblk)

        delta = (xtol + rtol * xcur.abs()) / 2
        sbis = (xblk - xcur) / 2
        done = active & ((fcur == 0) | (sbis.abs() < delta))
        root = torch.where(done, xcur, root)
        ok |= done
        active &= ~done
        if not bool(active.any()):
            break

        interpolate = (spre.abs() > delta) & (fcur.abs() < fpre.abs())
        secant = -fcur * (xcur - xpre) / (fcur - fpre)
        dpre = (fpre - fcur) / (xpre - xcur)
        dblk = (fblk - fcur) / (xblk - xcur)
        inverse_quad = -fcur * (fblk * dblk - fpre * dpre) / (dblk * dpre * (fblk - fpre))
        stry = torch.where(xpre == xblk, secant, inverse_quad)
        good = interpolate & (2 * stry.abs() < torch.minimum(spre.abs(), 3 * sbis.abs() - delta))
        spre = torch.where(active, torch.where(good, scur, sbis), spre)
        scur = torch.where(active, torch.where(good, stry, sbis), scur)
        xpre = torch.where(active, xcur, xpre)
        fpre = torch.where(active, fcur, fpre)
        step = torch.where(scur.abs() > delta, scur, torch.where(sbis > 0, delta, -delta))
        xcur = torch.where(active, xcur + step, xcur)
        idx = active.nonzero().squeeze(-1)
        fnew = call(xcur, idx)
        fcur = fcur.index_put((idx,), fnew)
        is_nan = torch.zeros(B, dtype=torch.bool, device=dev).index_put((idx,), torch.isnan(fnew))
        failed |= is_nan
        active &= ~is_nan
    return root, ok


def fallback_range(n: int):
    """``(t_lo, t_hi)`` of the fallback rules on an ``n`` grid: a bandwidth of one bin (``sqrt(t) = 1 / n`` of the
    range) up to Botev's 2015 cap of the bracket, 0.1 (0.32 of the range)."""
    return 1.0 / n**2, BRACKET[1]


def _scan_grid(n: int, device) -> torch.Tensor:
    """Log-spaced times from ``t_lo`` to ``t_hi`` of :func:`fallback_range`, ratio at most ``SCAN_RATIO``."""
    lo, hi = fallback_range(n)
    count = int(math.ceil(math.log(hi / lo) / math.log(SCAN_RATIO))) + 1
    return torch.logspace(math.log10(lo), math.log10(hi), count, dtype=torch.float64, device=device)


def _scan(fn: FixedPointFn, idx: torch.Tensor, grid: torch.Tensor, block: int = 8) -> torch.Tensor:
    """f at every grid time for items ``idx``: (b, G), in blocks of ``block`` times (one truncation per block)."""
    return torch.cat([fn(grid[s : s + block].expand(idx.numel(), -1), idx) for s in range(0, grid.numel(), block)], 1)


def _solve_fallback(fn: FixedPointFn, idx: torch.Tensor, n: int):
    """The rules for items where brentq on [0, 0.1] failed, on ``[t_lo, t_hi]`` of :func:`fallback_range`:
    ``(t (b,), status (b,), is_root (b,))``.

    SMALLEST_ROOT: the first sign change of f on the log scan, refined by Brent (the smallest root at least one bin
    wide); MIN_ABS_F: else the argmin of |f| over the scan, refined (Botev 2015: ``fminbnd(|f|, 0, 0.1)``);
    NON_FINITE_FIXED_POINT: f is nowhere finite."""
    b = idx.numel()
    dev = idx.device
    grid = _scan_grid(n, dev)
    vals = _scan(fn, idx, grid)
    finite = torch.isfinite(vals)
    change = finite[:, :-1] & finite[:, 1:] & (torch.signbit(vals[:, :-1]) != torch.signbit(vals[:, 1:]))
    change |= finite[:, :-1] & (vals[:, :-1] == 0)
    has_root = change.any(1)
    first = torch.where(has_root, change.float().argmax(1), torch.zeros_like(has_root, dtype=torch.long))
    t = torch.full((b,), float("nan"), dtype=torch.float64, device=dev)
    status = torch.full((b,), int(KDEStatus.NON_FINITE_FIXED_POINT), dtype=torch.int64, device=dev)
    is_root = torch.zeros(b, dtype=torch.bool, device=dev)
    if bool(has_root.any()):
        sel = has_root.nonzero().squeeze(-1)
        j = first[sel]
        xa, xb = grid[j], grid[j + 1]
        fa, fb = vals[sel, j], vals[sel, j + 1]
        sub_fn = lambda tt, ii: fn(tt, idx[sel[ii]])  # noqa: E731
        root, ok = brentq_batched(sub_fn, xa, xb, fa=fa, fb=fb)
        t[sel] = torch.where(ok, root, torch.nan)
        status[sel[ok]] = int(KDEStatus.SMALLEST_ROOT)
        is_root[sel[ok]] = True
    need_min = (status == int(KDEStatus.NON_FINITE_FIXED_POINT)) & finite.any(1)
    if bool(need_min.any()):
        sel = need_min.nonzero().squeeze(-1)
        t_min = _refine_min_abs(fn, idx[sel], grid, vals[sel])
        t[sel] = t_min
        status[sel] = int(KDEStatus.MIN_ABS_F)
    return t, status, is_root


def _refine_min_abs(fn: FixedPointFn, idx: torch.Tensor, grid: torch.Tensor, vals: torch.Tensor, points: int = 9):
    """argmin |f| over the finite scan values, refined twice on a log grid spanning the neighbouring scan points
    (never leaves the scanned range)."""
    absf = torch.where(torch.isfinite(vals), vals.abs(), torch.inf)
    j = absf.argmin(1)
    log_grid = grid.log()
    log_min, log_max = log_grid[0], log_grid[-1]
    log_lo = log_grid[(j - 1).clamp(min=0)]
    log_hi = log_grid[(j + 1).clamp(max=grid.numel() - 1)]
    best_t, best_f = grid[j], absf.gather(1, j[:, None]).squeeze(1)
    frac = torch.linspace(0, 1, points, dtype=torch.float64, device=grid.device)
    for _ in range(2):
        tt = torch.exp(log_lo[:, None] + (log_hi - log_lo)[:, None] * frac)
        ff = fn(tt, idx).abs()
        ff = torch.where(torch.isfinite(ff), ff, torch.inf)
        m = ff.argmin(1)
        fm = ff.gather(1, m[:, None]).squeeze(1)
        better = fm < best_f
        best_t = torch.where(better, tt.gather(1, m[:, None]).squeeze(1), best_t)
        best_f = torch.where(better, fm, best_f)
        step = (log_hi - log_lo) / (points - 1)
        centre = best_t.log()
        log_lo, log_hi = (centre - step).clamp(min=log_min), (centre + step).clamp(max=log_max)
    return best_t


def solve_fixed_point(fn: FixedPointFn, B: int, n: int, single_location: torch.Tensor, device):
    """``(t* (B,) float64, status (B,), is_root (B,) bool)`` for B items: brentq on [0, 0.1], else the fallback rules
    of :func:`_solve_fallback` (all points at one location: status SINGLE_LOCATION whichever rule applied).
    ``is_root``: t* is a root of f (brentq or the smallest root), so the implicit gradient applies."""
    xa = torch.full((B,), BRACKET[0], dtype=torch.float64, device=device)
    xb = torch.full((B,), BRACKET[1], dtype=torch.float64, device=device)
    t, ok = brentq_batched(fn, xa, xb)
    status = torch.full((B,), int(KDEStatus.BRENTQ), dtype=torch.int64, device=device)
    is_root = ok.clone()
    if not bool(ok.all()):
        bad = (~ok).nonzero().squeeze(-1)
        t_fb, st_fb, root_fb = _solve_fallback(fn, bad, n)
        t[bad] = t_fb
        st_fb = torch.where(
            single_location[bad] & (st_fb <= int(KDEStatus.MIN_ABS_F)), int(KDEStatus.SINGLE_LOCATION), st_fb
        )
        status[bad] = st_fb
        is_root[bad] = root_fb
    return t, status, is_root


# ---------------------------------------------------------------------------------------------------------------
# Limits, validity and binning helpers
# ---------------------------------------------------------------------------------------------------------------


def _round_grid(grid_size) -> int:
    if isinstance(grid_size, bool) or not isinstance(grid_size, int):
        raise TypeError(f"grid_size must be an int, got {type(grid_size).__name__}")
    if grid_size < 2:
        raise ValueError(f"grid_size must be >= 2, got {grid_size}")
    return 1 << (grid_size - 1).bit_length()


def _axis_limits(name: str, spec, values: torch.Tensor, valid: torch.Tensor, margin: float) -> torch.Tensor:
    """(B, 2) float64 limits from ``spec``: None, c (-> (-c, c)), (lo, hi) with None entries, or a (B, 2)/(2,) tensor.

    Missing entries: data min/max of the valid points -+ margin * range (value +- 0.5 when the range is 0).
    """
    B = values.shape[0]
    dev = values.device
    if isinstance(spec, torch.Tensor):
        lim = spec.to(device=dev, dtype=torch.float64)
        if lim.shape == (2,):
            lim = lim.expand(B, 2)
        if lim.shape != (B, 2):
            raise ValueError(f"{name} must be (lo, hi) or a ({B}, 2) tensor, got shape {tuple(spec.shape)}")
        lo, hi = lim[:, 0], lim[:, 1]
    else:
        if spec is None:
            lo_s = hi_s = None
        elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
            lo_s, hi_s = -float(spec), float(spec)
        elif isinstance(spec, (tuple, list)) and len(spec) == 2:
            lo_s, hi_s = spec
        else:
            raise ValueError(f"{name} must be None, a number c (meaning (-c, c)) or a pair (lo, hi), got {spec!r}")
        v = values.detach().to(torch.float64)
        big = torch.tensor(torch.inf, dtype=torch.float64, device=dev)
        vmin = torch.where(valid, v, big).amin(1)
        vmax = torch.where(valid, v, -big).amax(1)
        empty = ~valid.any(1)
        vmin = torch.where(empty, torch.zeros_like(vmin), vmin)
        vmax = torch.where(empty, torch.zeros_like(vmax), vmax)
        delta = vmax - vmin
        flat = delta == 0
        lo = vmin - delta * margin if lo_s is None else torch.full((B,), float(lo_s), dtype=torch.float64, device=dev)
        hi = vmax + delta * margin if hi_s is None else torch.full((B,), float(hi_s), dtype=torch.float64, device=dev)
        if lo_s is None:
            lo = torch.where(flat, vmin - 0.5, lo)
        if hi_s is None:
            hi = torch.where(flat, vmax + 0.5, hi)
    if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
        raise ValueError(f"{name} must be finite")
    if bool((lo >= hi).any()):
        bad = int((lo >= hi).nonzero()[0, 0])
        raise ValueError(f"{name} needs lo < hi, got lo={float(lo[bad])} hi={float(hi[bad])} (item {bad})")
    return torch.stack([lo, hi], 1)


def _split_limits_2d(limits):
    """kde_diffusion's 2-D limit forms -> (x spec, y spec)."""
    if limits is None:
        return None, None
    if isinstance(limits, torch.Tensor):
        if limits.dim() == 3 or limits.shape == (2, 2):
            return limits[..., 0, :], limits[..., 1, :]
        raise ValueError(f"limits tensor must be (2, 2) or (B, 2, 2), got shape {tuple(limits.shape)}")
    if isinstance(limits, (tuple, list)) and len(limits) == 2:
        return limits[0], limits[1]
    if isinstance(limits, (int, float)) and not isinstance(limits, bool):
        return limits, limits
    raise ValueError(f"limits must be None, c, ((xlo, xhi), (ylo, yhi)) or a (B, 2, 2) tensor, got {limits!r}")


def _prepare_points(names, arrays, mask, lengths):
    """Validate (B, N) point tensors (1-D -> one item); returns (arrays, valid, finite_ok)."""
    arrays = [a.unsqueeze(0) if isinstance(a, torch.Tensor) and a.dim() == 1 else a for a in arrays]
    for name, a in zip(names, arrays):
        check_points(name, a)
    for name, a in zip(names[1:], arrays[1:]):
        check_same(names[0], arrays[0], name, a)
    if mask is not None and mask.dim() == 1:
        mask = mask.unsqueeze(0)
    if lengths is not None and isinstance(lengths, torch.Tensor) and lengths.dim() == 0:
        lengths = lengths.unsqueeze(0)
    valid = resolve_mask(arrays[0], mask, lengths)
    if valid is None:
        valid = torch.ones(arrays[0].shape, dtype=torch.bool, device=arrays[0].device)
    finite = torch.ones_like(valid)
    for a in arrays:
        finite &= torch.isfinite(a.detach())
    bad_input = (valid & ~finite).any(1)
    return arrays, valid & finite, bad_input


def default_chunk_bytes(device) -> int:
    """float64 coefficient bytes per chunk of items: 32 MiB on the CPU (cache-sized); on a GPU 1/16 of the free device
    memory within [256 MiB, 4 GiB] (a chunk's intermediates take about ten times its coefficients; large chunks
    mean one launch per op for many items)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(4 * 2**30, max(256 * 2**20, free // 16)))
    return 32 * 2**20


def _concat(parts) -> torch.Tensor:
    """The chunks' results as one tensor (no copy for a single chunk)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _chunks(B: int, n: int, dim: int, chunk_size: Optional[int], device="cpu"):
    if chunk_size is None:
        chunk_size = max(1, default_chunk_bytes(device) // (8 * n**dim))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return [(s, min(B, s + chunk_size)) for s in range(0, B, chunk_size)]


def _check_histogram(histogram: str) -> None:
    if histogram not in ("hard", "soft"):
        raise ValueError(f"histogram must be 'hard' or 'soft', got {histogram!r}")


def _check_pool(pool, n: int, clip_negative: bool) -> None:
    if pool is None:
        return
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1 or n % pool:
        raise ValueError(f"pool must be a positive int dividing the grid size {n}, got {pool!r}")
    if clip_negative:
        raise ValueError("pool cannot be combined with clip_negative (clipping is not linear)")


def _check_counts(binned: torch.Tensor) -> None:
    """Histogram counts are >= 0 (NaN/inf entries are flagged per item as NON_FINITE_INPUT, not raised)."""
    negative = binned.detach() < 0
    if bool(negative.any()):
        raise ValueError(f"binned holds {int(negative.sum())} negative count(s) (smallest "
                         f"{float(binned.detach().min())}); histogram counts must be >= 0")


def _check_n_points(n_points, B: int, device) -> torch.Tensor:
    if isinstance(n_points, torch.Tensor):
        N = n_points.detach().to(device=device, dtype=torch.float64)
        if N.dim() == 0:
            N = N.expand(B)
    else:
        N = torch.full((B,), float(n_points), dtype=torch.float64, device=device)
    if N.shape != (B,):
        raise ValueError(f"n_points must be a number or a ({B},) tensor, got shape {tuple(N.shape)}")
    if bool((~torch.isfinite(N) | (N < 0)).any()):
        raise ValueError("n_points must be finite and >= 0")
    return N


# ---------------------------------------------------------------------------------------------------------------
# 2-D
# ---------------------------------------------------------------------------------------------------------------


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


def _solve_2d(psi: _Psi2d, a_raw: torch.Tensor, solve: torch.Tensor, status0: torch.Tensor, single_location):
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
        done = solve & (kstatus == 0)
        t = torch.where(done, times[:, 0], t)
        is_root |= done
        solve = solve & ~done
    if bool(solve.any()):
        sidx = solve.nonzero().squeeze(-1)
        sub = psi if sidx.numel() == b else _Psi2d(psi.a2.data[sidx], psi.N[sidx])
        t_s, st_s, root_s = solve_fixed_point(sub.f, sidx.numel(), n, single_location[sidx], dev)
        t[sidx] = t_s
        status[sidx] = st_s
        is_root[sidx] = root_s
    return t, status, is_root


def _axis_times(p: torch.Tensor, N: torch.Tensor):
    """kde_diffusion's per-axis times ``(tx1, tx2)`` from the level-2 psi ``p`` (b, 3) = (psi02, psi11, psi20)."""
    p02, p11, p20 = p[:, 0], p[:, 1], p[:, 2]
    root = torch.sqrt(p02 * p20)
    tx1 = (p02 ** (3 / 4) / (4 * _PI * N * p20 ** (3 / 4) * (p11 + root))) ** (1 / 3)
    tx2 = (p20 ** (3 / 4) / (4 * _PI * N * p02 ** (3 / 4) * (p11 + root))) ** (1 / 3)
    return tx1, tx2


def _smoothing_weights(t: torch.Tensor, k2: torch.Tensor, dtype) -> torch.Tensor:
    """(b, n) ``exp(-pi^2 k^2 t / 2)`` in ``dtype``, 0 below ``sqrt(tiny)`` (1e-19 in float32): such terms cannot
    change the density at the dtype's precision, and their products would be subnormal (~10x slower arithmetic)."""
    g = torch.exp(_NEG_PI2 * k2 * t[:, None] / 2).to(dtype)
    return torch.where(g < math.sqrt(torch.finfo(dtype).tiny), 0.0, g)


def _kde2d_from_binned(
    binned, N, xlim, ylim, status0, single_location, clip_negative, implicit_grad, sparse_counts=False, pool=None
):
    """Core for one chunk: binned (b, n, n) counts in compute dtype (rows = x); N, status0 (b,); limits (b, 2)."""
    b, n, _ = binned.shape
    dev = binned.device
    cdtype = binned.dtype
    wx = (xlim[:, 1] - xlim[:, 0]).to(cdtype)
    wy = (ylim[:, 1] - ylim[:, 0]).to(cdtype)
    uniform = (status0 != int(KDEStatus.BRENTQ))
    N_safe = torch.where(uniform, torch.ones_like(N), N)
    if sparse_counts:
        a_raw = _dct2_of_counts(binned, N_safe.to(cdtype))
    else:
        a_raw = dct2(binned / N_safe.to(cdtype)[:, None, None])
    # kde_diffusion halves a[0, :] and a[:, 0] before squaring: (a/2)^2 = a^2/4 exactly
    a2_graph = torch.square(a_raw.to(torch.float64))
    a2_graph[:, 0, :] *= 0.25
    a2_graph[:, :, 0] *= 0.25
    psi = _Psi2d(a2_graph.detach(), N)
    t, status, is_root = _solve_2d(psi, a_raw, ~uniform, status0, single_location)
    finite_t = torch.isfinite(t) & (t > 0)
    t_safe = torch.where(finite_t, t, torch.full_like(t, 0.05))
    if a2_graph.requires_grad:

        def evaluate(tt, a2):
            p, valid = psi.psi2(tt, a2, N, with_validity=True)
            return _f_of_psi(tt, p, N[:, None]), p, valid

        t_used, p = _implicit(evaluate, a2_graph, t_safe, finite_t, is_root, implicit_grad)
    else:
        t_used = t_safe
        p = psi.psi2(t_used[:, None], a2_graph, N)[:, 0]
    # kde_diffusion's naming: tx2 smooths rows (x; MATLAB's t_x), tx1 columns (y; MATLAB's t_y)
    # psi underflows at large t (fallback items): isotropic smoothing with t* itself on both axes (such items get
    # their per-axis times from detached values, so that NaN/inf there never reaches a gradient)
    times = torch.stack(_axis_times(p.detach(), N))
    bad_times = ~(torch.isfinite(times) & (times > 0)).all(0)
    tx1, tx2 = _axis_times(torch.where(bad_times[:, None], 1.0, p), N)  # finite stand-ins where replaced below
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
    if pool is None:
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
        density = blocks / blocks.sum((1, 2), keepdim=True)
        flat = torch.full_like(density, 1 / pool**2)
    bad_density = ok & ~torch.isfinite(density.detach()).flatten(1).all(1)
    status = torch.where(bad_density, int(KDEStatus.NON_FINITE_DENSITY), status)
    if not bool(ok.all()):
        density = torch.where(ok[:, None, None], density, flat)
    if clip_negative:
        density = density.clamp_min(torch.finfo(cdtype).eps)
    bandwidth = torch.stack([torch.sqrt(tx2).to(cdtype) * wx, torch.sqrt(tx1).to(cdtype) * wy], 1)
    bandwidth = torch.where(ok[:, None], bandwidth, torch.inf)
    return density, bandwidth, torch.where(ok, t_used, torch.inf), status


def _single_location(arrays, valid) -> torch.Tensor:
    """(B,) True where the item has >= 1 valid point and all valid points coincide."""
    same = valid.any(1)
    for a in arrays:
        v = a.detach()
        first = torch.where(valid, v, torch.inf).amin(1)
        last = torch.where(valid, v, -torch.inf).amax(1)
        same &= first == last
    return same


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
            ``S`` without forming the n x n density (exact, pooling is linear); not with ``clip_negative``.
        out_dtype: dtype of density, grids and bandwidth (default: the points'); e.g. float32 for float16 points
            keeps the float32 computation's precision (float16-in, float32-out training).

    Returns:
        :class:`KDE2dResult`; see the module docstring for the rules and the statuses.
    """
    _check_histogram(histogram)
    n = _round_grid(grid_size)
    _check_pool(pool, n, clip_negative)
    _chunks(1, n, 2, chunk_size)  # validates chunk_size
    (x, y), valid, bad_input = _prepare_points(("x", "y"), (x, y), mask, lengths)
    xs, ys = _split_limits_2d(limits)
    xlim = _axis_limits("limits (x axis)", xs, x, valid, 0.25)
    ylim = _axis_limits("limits (y axis)", ys, y, valid, 0.25)
    args = (x, y, valid, bad_input, xlim, ylim, n, clip_negative, chunk_size, pool)
    if histogram == "hard" and _points_kernel_applies(x, xlim, ylim):
        res = _kde2d_points_cpp(*args)
    else:
        res = _kde2d_points_torch(*args, histogram, sharpness, implicit_grad)
    return _with_dtype(res, x.dtype if out_dtype is None else out_dtype)


def _with_dtype(res, dtype: torch.dtype):
    """A :class:`KDE2dResult`/:class:`KDE1dResult` (computed in the compute dtype) with its floating fields in
    ``dtype`` (t and n_points stay float64)."""
    cast = {f: getattr(res, f).to(dtype) for f in ("density", "xgrid", "ygrid", "grid", "bandwidth") if hasattr(res, f)}
    return res._replace(**cast)


def _status0(x, y, valid, bad_input, xlim, ylim, N) -> torch.Tensor:
    """(B,) BRENTQ for items to solve, else NO_POINTS / NO_POINTS_IN_LIMITS / NON_FINITE_INPUT."""
    xd, yd = x.detach(), y.detach()
    in_limits = valid & (xd >= xlim[:, :1]) & (xd <= xlim[:, 1:]) & (yd >= ylim[:, :1]) & (yd <= ylim[:, 1:])
    status0 = torch.where(~in_limits.any(1), int(KDEStatus.NO_POINTS_IN_LIMITS), int(KDEStatus.BRENTQ))
    status0 = torch.where(N == 0, int(KDEStatus.NO_POINTS), status0)
    return torch.where(bad_input, int(KDEStatus.NON_FINITE_INPUT), status0)


def _kde2d_points_torch(
    x, y, valid, bad_input, xlim, ylim, n, clip_negative, chunk_size, pool, histogram="hard", sharpness=8.0,
    implicit_grad=False,
) -> KDE2dResult:
    """Reference path of :func:`diffusion_kde2d` (any device, dtype, histogram; differentiable)."""
    cdtype = compute_dtype(x.dtype)
    N = valid.sum(1).to(torch.float64)
    xc, yc = x.to(cdtype), y.to(cdtype)
    xq = torch.where(valid, xc, torch.zeros_like(xc))
    yq = torch.where(valid, yc, torch.zeros_like(yc))
    if histogram == "hard":
        binned = hard_histogram2d(xq.detach(), yq.detach(), n, torch.stack([xlim, ylim], 1), mask=valid)
    else:
        binned = soft_histogram2d(xq, yq, n, torch.stack([xlim, ylim], 1).to(cdtype), sharpness, mask=valid)
    binned = binned.to(cdtype)
    status0 = _status0(xc, yc, valid, bad_input, xlim, ylim, N)
    single = _single_location((x, y), valid)
    return _finish_2d(
        binned, N, xlim, ylim, status0, single, clip_negative, implicit_grad, chunk_size, cdtype,
        sparse_counts=histogram == "hard", pool=pool,
    )


def _points_kernel_applies(x: torch.Tensor, xlim: torch.Tensor, ylim: torch.Tensor) -> bool:
    """The fused CPU kernel ``kdekit::kde2d_points`` serves hard-histogram calls without a graph to the limits."""
    no_graph = not (torch.is_grad_enabled() and (xlim.requires_grad or ylim.requires_grad))
    return no_graph and x.device.type == "cpu" and select(x, ("torch", "cpp")) == "cpp"


def _kde2d_points_cpp(x, y, valid, bad_input, xlim, ylim, n, clip_negative, chunk_size, pool) -> KDE2dResult:
    """Hard histogram -> density in one ``kdekit::kde2d_points`` call (float64, one item per thread).

    Items the kernel does not finish with a brentq root on [0, 0.1] (degenerate input, no sign change, NaN, ...) are
    recomputed by :func:`_kde2d_points_torch`, so every field equals the torch path's (to float64 rounding; inputs of
    lower precision are computed in float64 here).
    """
    xlim, ylim = xlim.detach(), ylim.detach()
    B = x.shape[0]
    N = valid.sum(1).to(torch.float64)
    status0 = _status0(x, y, valid, bad_input, xlim, ylim, N)
    solve = status0 == int(KDEStatus.BRENTQ)
    xd = x.detach().to(torch.float64).contiguous()
    yd = y.detach().to(torch.float64).contiguous()
    count = torch.where(solve, N, 0.0)  # count 0: the kernel skips the item (status 3)
    density, times, kstatus = torch.ops.kdekit.kde2d_points(
        xd, yd, valid.to(torch.float64), xlim.contiguous(), ylim.contiguous(), count, n, pool or 0,
        BRACKET[1], BRENTQ_XTOL, BRENTQ_RTOL, BRENTQ_MAXITER,
    )
    if clip_negative:
        density.clamp_min_(torch.finfo(compute_dtype(x.dtype)).eps)
    wx, wy = xlim[:, 1] - xlim[:, 0], ylim[:, 1] - ylim[:, 0]
    bandwidth = torch.stack([times[:, 2].sqrt() * wx, times[:, 1].sqrt() * wy], 1)
    t = times[:, 0]
    status = torch.full((B,), int(KDEStatus.BRENTQ), dtype=torch.int64, device=x.device)
    overflow = (kstatus == 0) & ~torch.isfinite(density).flatten(1).all(1)
    status = torch.where(overflow, int(KDEStatus.NON_FINITE_DENSITY), status)
    redo = kstatus != 0
    if bool(redo.any()):
        idx = redo.nonzero().squeeze(-1)
        sub = _kde2d_points_torch(
            x[idx], y[idx], valid[idx], bad_input[idx], xlim[idx], ylim[idx], n, clip_negative, chunk_size, pool
        )
        density[idx] = sub.density.to(torch.float64)
        bandwidth[idx] = sub.bandwidth.to(torch.float64)
        t[idx] = sub.t
        status[idx] = sub.status
    xgrid, ygrid = _grids(xlim, ylim, n)
    dtype = compute_dtype(x.dtype)
    return KDE2dResult(
        density.to(dtype), xgrid.to(dtype), ygrid.to(dtype), bandwidth.to(dtype), t, status,
        status == int(KDEStatus.BRENTQ), N,
    )


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
    get a uniform density (NO_POINTS / NO_POINTS_IN_LIMITS).
    """
    check_float_tensor("binned", binned, ndim=3)
    _check_counts(binned)
    B, n, n2 = binned.shape
    if B == 0:
        raise ValueError("binned is an empty batch; need B >= 1")
    if n != n2 or n < 2 or n & (n - 1):
        raise ValueError(f"binned must be (B, n, n) with n a power of two >= 2, got shape {tuple(binned.shape)}")
    dev = binned.device
    N = _check_n_points(n_points, B, dev)
    xs, ys = _split_limits_2d(limits)
    if xs is None or ys is None:
        raise ValueError("limits must be given for binned input (the data range is unknown)")
    dummy = torch.zeros(B, 1, dtype=torch.float64, device=dev)
    no_valid = torch.zeros(B, 1, dtype=torch.bool, device=dev)
    xlim = _axis_limits("limits (x axis)", xs, dummy, no_valid, 0.25)
    ylim = _axis_limits("limits (y axis)", ys, dummy, no_valid, 0.25)
    cdtype = compute_dtype(binned.dtype)
    finite = torch.isfinite(binned.detach()).flatten(1).all(1)
    mass = binned.detach().flatten(1).sum(1).to(torch.float64)
    status0 = torch.full((B,), int(KDEStatus.BRENTQ), dtype=torch.int64, device=dev)
    status0 = torch.where(mass == 0, int(KDEStatus.NO_POINTS_IN_LIMITS), status0)
    status0 = torch.where(N == 0, int(KDEStatus.NO_POINTS), status0)
    status0 = torch.where(~finite, int(KDEStatus.NON_FINITE_INPUT), status0)
    single = (binned.detach() != 0).flatten(1).sum(1) == 1
    binned_c = torch.where(finite[:, None, None], binned.to(cdtype), torch.zeros((), dtype=cdtype, device=dev))
    return _finish_2d(binned_c, N, xlim, ylim, status0, single, clip_negative, implicit_grad, chunk_size, binned.dtype)


def _grids(xlim: torch.Tensor, ylim: torch.Tensor, n: int):
    """(B, n) left bin edges along x and y."""
    steps = torch.arange(n, dtype=torch.float64, device=xlim.device)
    return tuple(steps * ((lim[:, 1:] - lim[:, :1]) / n) + lim[:, :1] for lim in (xlim, ylim))


def _finish_2d(
    binned, N, xlim, ylim, status0, single, clip_negative, implicit_grad, chunk_size, out_dtype,
    sparse_counts=False, pool=None,
):
    B, n, _ = binned.shape
    parts = [
        _kde2d_from_binned(
            binned[s:e], N[s:e], xlim[s:e], ylim[s:e], status0[s:e], single[s:e], clip_negative, implicit_grad,
            sparse_counts, pool,
        )
        for s, e in _chunks(B, n, 2, chunk_size, binned.device)
    ]
    density, bandwidth, t, status = (_concat(p) for p in zip(*parts))
    xgrid, ygrid = _grids(xlim, ylim, n)
    return KDE2dResult(
        density.to(out_dtype),
        xgrid.to(out_dtype),
        ygrid.to(out_dtype),
        bandwidth.to(out_dtype),
        t,
        status,
        status == int(KDEStatus.BRENTQ),
        N,
    )


# ---------------------------------------------------------------------------------------------------------------
# 1-D
# ---------------------------------------------------------------------------------------------------------------


def _kde1d_from_binned(binned, N, lim, status0, single, clip_negative, implicit_grad):
    b, n = binned.shape
    dev = binned.device
    cdtype = binned.dtype
    width = (lim[:, 1] - lim[:, 0]).to(cdtype)
    uniform = status0 != int(KDEStatus.BRENTQ)
    N_safe = torch.where(uniform, torch.ones_like(N), N)
    a_raw = dct(binned / N_safe.to(cdtype)[:, None])
    half = torch.ones(n, dtype=cdtype, device=dev)
    half[0] = 0.5
    a2_graph = (a_raw * half / 2).to(torch.float64) ** 2
    xi = _Xi1d(a2_graph.detach(), N)
    t = torch.full((b,), torch.inf, dtype=torch.float64, device=dev)
    status = status0.clone()
    is_root = torch.zeros(b, dtype=torch.bool, device=dev)
    solve = ~uniform
    if bool(solve.any()):
        sidx = solve.nonzero().squeeze(-1)
        sub = _Xi1d(a2_graph.detach()[sidx], N[sidx])
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

        t_used, _ = _implicit(evaluate, a2_graph, t_safe, ok, is_root, implicit_grad)
    else:
        t_used = t_safe
    k2 = torch.arange(n, dtype=torch.float64, device=dev) ** 2
    g = torch.exp(_NEG_PI2 * t_used[:, None] / 2 * k2).to(cdtype)
    scale = n / width
    finite_scale = torch.isfinite(scale.detach())
    density = idct(a_raw * g) * torch.where(finite_scale, scale, 1.0)[:, None]
    if not bool(finite_scale.all()):  # limits too narrow for the dtype: the density overflows, without a gradient
        density = torch.where(finite_scale[:, None], density, density.detach() * scale.detach()[:, None])
    status = torch.where(ok & ~torch.isfinite(density.detach()).all(1), int(KDEStatus.NON_FINITE_DENSITY), status)
    flat = (1 / width)[:, None].expand_as(density)
    density = torch.where(ok[:, None], density, flat)
    if clip_negative:
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
    _check_histogram(histogram)
    n = _round_grid(grid_size)
    (x,), valid, bad_input = _prepare_points(("x",), (x,), mask, lengths)
    B = x.shape[0]
    dev = x.device
    cdtype = compute_dtype(x.dtype)
    lim = _axis_limits("limits", limits, x, valid, 0.1)
    N = valid.sum(1).to(torch.float64)
    xc = x.to(cdtype)
    xq = torch.where(valid, xc, torch.zeros_like(xc))
    if histogram == "hard":
        binned = hard_histogram1d(xq.detach(), n, lim, mask=valid)
    else:
        binned = soft_histogram1d(xq, n, lim.to(cdtype), sharpness, mask=valid)
    binned = binned.to(cdtype)
    in_limits = valid & (xc.detach() >= lim[:, :1]) & (xc.detach() <= lim[:, 1:])
    status0 = torch.full((B,), int(KDEStatus.BRENTQ), dtype=torch.int64, device=dev)
    status0 = torch.where(~in_limits.any(1), int(KDEStatus.NO_POINTS_IN_LIMITS), status0)
    status0 = torch.where(N == 0, int(KDEStatus.NO_POINTS), status0)
    status0 = torch.where(bad_input, int(KDEStatus.NON_FINITE_INPUT), status0)
    single = _single_location((x,), valid)
    res = _finish_1d(binned, N, lim, status0, single, clip_negative, implicit_grad, chunk_size, cdtype)
    return _with_dtype(res, x.dtype if out_dtype is None else out_dtype)


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
    :func:`diffusion_kde2d_binned` (limits: (lo, hi) or a (B, 2) tensor)."""
    check_float_tensor("binned", binned, ndim=2)
    _check_counts(binned)
    B, n = binned.shape
    if B == 0:
        raise ValueError("binned is an empty batch; need B >= 1")
    if n < 2 or n & (n - 1):
        raise ValueError(f"binned must be (B, n) with n a power of two >= 2, got shape {tuple(binned.shape)}")
    dev = binned.device
    N = _check_n_points(n_points, B, dev)
    if limits is None:
        raise ValueError("limits must be given for binned input (the data range is unknown)")
    dummy = torch.zeros(B, 1, dtype=torch.float64, device=dev)
    lim = _axis_limits("limits", limits, dummy, torch.zeros(B, 1, dtype=torch.bool, device=dev), 0.1)
    cdtype = compute_dtype(binned.dtype)
    finite = torch.isfinite(binned.detach()).all(1)
    mass = binned.detach().sum(1).to(torch.float64)
    status0 = torch.full((B,), int(KDEStatus.BRENTQ), dtype=torch.int64, device=dev)
    status0 = torch.where(mass == 0, int(KDEStatus.NO_POINTS_IN_LIMITS), status0)
    status0 = torch.where(N == 0, int(KDEStatus.NO_POINTS), status0)
    status0 = torch.where(~finite, int(KDEStatus.NON_FINITE_INPUT), status0)
    single = (binned.detach() != 0).sum(1) == 1
    binned_c = torch.where(finite[:, None], binned.to(cdtype), torch.zeros((), dtype=cdtype, device=dev))
    return _finish_1d(binned_c, N, lim, status0, single, clip_negative, implicit_grad, chunk_size, binned.dtype)


def _finish_1d(binned, N, lim, status0, single, clip_negative, implicit_grad, chunk_size, out_dtype):
    B, n = binned.shape
    parts = [
        _kde1d_from_binned(binned[s:e], N[s:e], lim[s:e], status0[s:e], single[s:e], clip_negative, implicit_grad)
        for s, e in _chunks(B, n, 1, chunk_size, binned.device)
    ]
    density, bandwidth, t, status = (_concat(p) for p in zip(*parts))
    steps = torch.arange(n, dtype=torch.float64, device=binned.device)
    grid = steps * ((lim[:, 1:] - lim[:, :1]) / n) + lim[:, :1]
    return KDE1dResult(
        density.to(out_dtype),
        grid.to(out_dtype),
        bandwidth.to(out_dtype),
        t,
        status,
        status == int(KDEStatus.BRENTQ),
        N,
    )
