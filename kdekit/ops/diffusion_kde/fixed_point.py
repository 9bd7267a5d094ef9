"""Botev's fixed-point functions ``f(t)`` for a batch, as kde_diffusion evaluates them (float64 whatever the input).

2-D: the 18 memoised quadratic forms ``psi(i, j)``, ``2 <= i + j <= 5`` (kde_diffusion evaluates 45 with identical
values), ``gamma = (2 pi N (psi02 + psi20 + 2 psi11))^(-1/3)``, ``f(t) = t - (t - gamma) / gamma``; each evaluation of
the forms is four batched matmuls of the squared DCT coefficients with the weight vectors of all active items,
truncated to the wavenumbers whose weight ``exp(-pi^2 k^2 t)`` is a normal float64. 1-D: ``f(t) = t - xi
gamma^[7](t)`` (``k^14`` overflows float32 for grids >= 512). ``f(t, idx)`` takes ``(b, M)`` times for items ``idx``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

PI = math.pi
NEG_PI2 = -(math.pi**2)
# exp(x) < 2.2e-308 (subnormal or 0) in float64 for x < -708.4: wavenumbers beyond sqrt(708.4 / (pi^2 t)) are dropped
# (they cannot change a sum of normal numbers, and subnormal arithmetic is ~10x slower)
EXP_ZERO = 708.4
TINY64 = torch.finfo(torch.float64).tiny
# psi sums below this (underflow at a fallback item's large t) make the recursion's derivative overflow (1 / sum^2)
DIFFERENTIABLE_SUM = 1e-100


def cutoff(t: torch.Tensor, n: int) -> int:
    """Number of leading wavenumbers whose weight exp(-pi^2 k^2 t) can be non-zero for every finite t > 0 in ``t``.

    On a GPU always ``n``: reading the times back would stall the device for a saving its matmuls do not need (the
    weights beyond the cut are 0 either way, see :func:`quadratic_forms`)."""
    if t.device.type != "cpu":
        return n
    t = t.detach()
    finite = t[torch.isfinite(t) & (t > 0)]
    if finite.numel() < t.numel() or finite.numel() == 0:
        return n
    t_min = float(finite.min())
    return min(n, int(math.sqrt(EXP_ZERO / (math.pi**2 * t_min))) + 2)


class ItemCache:
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


class LeadingBlocks:
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


def quadratic_forms(blocks: LeadingBlocks, t: torch.Tensor, k2: torch.Tensor, neg_pi2_k2: torch.Tensor, pairs):
    """sum_{r,c} a2[r,c] w_t[r] k_r^(2 j) w_t[c] k_c^(2 i) for each item, each column of ``t`` and each pair (i, j).

    a2: (b, n, n) rows = x; t: (b, P) one time per pair; returns (b, P). kde_diffusion's ``wy @ a2 @ wx`` with
    ``wx = w k^(2i)`` on columns and ``wy = w k^(2j)`` on rows, ``w = [1, 1/2, ...] exp(-pi^2 k^2 t)``.
    """
    a2 = blocks.full
    n = a2.shape[-1]
    K = cutoff(t, n)
    base = torch.full((K,), 0.5, dtype=a2.dtype, device=a2.device)
    base[0] = 1.0
    w = base * torch.exp(neg_pi2_k2[:K] * t.unsqueeze(-1))  # (b, P, K)
    w = torch.where(w < TINY64, 0.0, w)  # items with larger t than the batch minimum: no subnormal weights
    i_pow = torch.stack([k2[:K] ** i for i, _ in pairs])  # (P, K)
    j_pow = torch.stack([k2[:K] ** j for _, j in pairs])
    cols = w * i_pow
    rows = w * j_pow
    v = torch.matmul(blocks.block(K), cols.transpose(1, 2))  # (b, K, P)
    return torch.einsum("bpk,bkp->bp", rows, v)


class Psi2d:
    """Memoised recursion of kde_diffusion's ``psi(i, j, t)`` and the solved function ``f(t)`` for 2-D items."""

    def __init__(self, a2: torch.Tensor, N: torch.Tensor):
        n = a2.shape[-1]
        self.a2 = ItemCache(a2)
        self.blocks = None
        self.N = N
        k = torch.arange(n, dtype=torch.float64, device=a2.device)
        self.k2 = k**2
        self.neg_pi2_k2 = NEG_PI2 * self.k2

    def psi2(self, t: torch.Tensor, a2, N: torch.Tensor, with_validity: bool = False):
        """(b, M) times -> (b, M, 3) level-2 values psi(0,2), psi(1,1), psi(2,0) (all recursion stages memoised).

        ``a2``: (b, n, n) tensor or :class:`LeadingBlocks` of one. ``with_validity``: also return (b, M) bool, True
        where every stage was finite and every sum the next stage divides by was far from 0 (where the recursion is
        differentiable with finite derivatives).
        """
        blocks = a2 if isinstance(a2, LeadingBlocks) else LeadingBlocks(a2, copies=False)
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
                    valid &= (torch.isfinite(total.detach()) & (total.detach() > DIFFERENTIABLE_SUM)).all(-1)
                coef = torch.tensor(
                    [(1 + 1 / 2 ** (level + 1)) / 3 * odd_product(i) * odd_product(j) for i, j in pairs],
                    dtype=torch.float64,
                    device=t.device,
                )
                times = (coef / ((PI * N)[:, None, None] * total)) ** (1 / (2 + level))
            forms = quadratic_forms(
                blocks, times.reshape(b, M * (level + 1)), self.k2, self.neg_pi2_k2, pairs * M
            ).reshape(b, M, level + 1)
            prev = (-1) ** level * PI ** (2 * level) * forms
        if with_validity:
            return prev, valid & torch.isfinite(prev.detach()).all(-1)
        return prev

    def f(self, t: torch.Tensor, idx: torch.Tensor, a2=None) -> torch.Tensor:
        """f(t) = t - (t - gamma)/gamma for items ``idx`` at times ``t`` (b, M); ``a2`` overrides the stored one."""
        if a2 is None:
            sub, pos = self.a2.view(idx)
            if self.blocks is None or self.blocks.full is not sub:
                self.blocks = LeadingBlocks(sub)
            if sub.shape[0] != idx.numel():
                tt = torch.full((sub.shape[0], t.shape[1]), 0.05, dtype=t.dtype, device=t.device)
                tt[pos] = t
                return self.f(tt, self.a2.idx, self.blocks)[pos]
            a2 = self.blocks
        N = self.N[idx]
        return f_of_psi(t, self.psi2(t, a2, N), N[:, None])


def f_of_psi(t: torch.Tensor, p: torch.Tensor, N: torch.Tensor) -> torch.Tensor:
    """kde_diffusion's ``t - (t - gamma) / gamma`` from the level-2 values ``p`` (..., 3) = (psi02, psi11, psi20)."""
    sigma = p[..., 0] + p[..., 2] + 2 * p[..., 1]
    gamma = (2 * PI * N * sigma) ** (-1 / 3)
    return t - (t - gamma) / gamma


def axis_times(p: torch.Tensor, N: torch.Tensor):
    """kde_diffusion's per-axis times ``(tx1, tx2)`` from the level-2 psi ``p`` (b, 3) = (psi02, psi11, psi20)."""
    p02, p11, p20 = p[:, 0], p[:, 1], p[:, 2]
    root = torch.sqrt(p02 * p20)
    tx1 = (p02 ** (3 / 4) / (4 * PI * N * p20 ** (3 / 4) * (p11 + root))) ** (1 / 3)
    tx2 = (p20 ** (3 / 4) / (4 * PI * N * p02 ** (3 / 4) * (p11 + root))) ** (1 / 3)
    return tx1, tx2


def odd_product(m: int) -> int:
    """1 * 3 * ... * (2m - 1) (1 for m = 0)."""
    return math.prod(range(1, 2 * m, 2))


class Xi1d:
    """kde_diffusion's 1-D ``t - xi gamma^[7](t)`` for a batch of squared half DCT coefficients ``a2 = (a/2)^2``."""

    STAGES = 7

    def __init__(self, a2: torch.Tensor, N: torch.Tensor):
        n = a2.shape[-1]
        self.a2 = a2
        self.N = N
        k = torch.arange(n, dtype=torch.float64, device=a2.device)
        self.k2 = k**2
        self.neg_pi2_k2 = NEG_PI2 * self.k2

    def f(self, t: torch.Tensor, idx: torch.Tensor, a2: Optional[torch.Tensor] = None, with_validity: bool = False):
        """f at times ``t`` (b, M) for items ``idx``; ``a2`` overrides the stored one. ``with_validity``: also (b, M)
        bool, True where every stage's functional was finite and positive (the recursion divides by it)."""
        a2 = self.a2[idx] if a2 is None else a2
        N = self.N[idx][:, None]
        a2 = a2.unsqueeze(1)  # (b, 1, n)

        def functional(s: int, ts: torch.Tensor) -> torch.Tensor:
            return 2 * PI ** (2 * s) * (self.k2**s * a2 * torch.exp(self.neg_pi2_k2 * ts.unsqueeze(-1))).sum(-1)

        l = self.STAGES
        val = functional(l, t)
        valid = torch.ones_like(t, dtype=torch.bool)
        for s in range(l - 1, 1, -1):
            K = odd_product(s) / math.sqrt(2 * PI)
            C = (1 + 0.5 ** (s + 0.5)) / 3
            valid &= torch.isfinite(val.detach()) & (val.detach() > 0)
            ts = (2 * C * K / N / val) ** (2 / (3 + 2 * s))
            val = functional(s, ts)
        f = t - (2 * N * math.sqrt(PI) * val) ** (-2 / 5)
        return (f, valid & torch.isfinite(f.detach())) if with_validity else f
