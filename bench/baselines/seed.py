"""Seed-style baseline: the batched diffusion-KDE pipeline of the seed project, re-implemented for benchmarking.

Written from the description in ``shared/notes/diffusion-kde.md`` ("Seed usage", "The seed's own pipeline,
measured"); no seed code is copied. It keeps the seed's *algorithmic choices*, which are what make it slow, and
computes the same maths as ``kde_diffusion.kde2d`` wherever that converges:

* 200 pseudo-observations per utterance (mean of a random non-empty annotator subset + uniform noise
  ``U(+-(0.5 sd + 1e-12))``, ``sd`` unbiased, clamped to [-1, 1]), redrawn on every call;
* histogram on [-1, 1]^2: soft (sigmoid matrices ``(B, N, n)`` per axis and one ``bmm``) or hard;
* ``torch_dct.dct_2d`` / ``idct_2d`` (``norm=None``);
* the 45 psi quadratic forms of kde_diffusion's recursion recomputed, without memoisation, at every evaluation of
  the fixed-point function ``f(t) = t - (t - gamma(t)) / gamma(t)``;
* a batched Brent on [0, 0.1] with the seed's per-dtype ``xtol``/``rtol`` that runs a *fixed* number of
  iterations over the whole batch (the seed's loop was measured to take 35 / 15 / 6 evaluations in float64 / float32 /
  float16; the steps here are scipy's ``brentq`` steps, so the root is the one ``brentq`` finds), with the autograd
  graph kept through every iteration, and a ``BracketError`` if *any* item has no sign change;
* negatives set to ``eps``; block-mean pooling to ``k x k`` (rows = activation) divided by the sum;
* on a ``BracketError`` or a NaN density the whole batch is redrawn, up to 15 attempts.

Assumption (not documented for the seed): torch-dct has no float16 FFT on CPU, so float16 inputs are computed in
float32 with the float16 solver tolerances and the result is cast back to float16.

Shapes: ratings/predictions ``(B, R)`` with NaN for a missing annotator; points ``(B, N)``; densities
``(B, n, n)`` indexed ``[x, y]``; pooled tables ``(B, k, k)``.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
import torch_dct

PSEUDO_OBSERVATIONS = 200
MAX_ATTEMPTS = 15
LIMITS = (-1.0, 1.0)

# (xtol, rtol, iterations after the two end-point evaluations) of the seed's batched Brent, per dtype.
BRENT_SETTINGS = {
    torch.float64: (2e-12, 8.9e-16, 35),
    torch.float32: (2e-6, 4.8e-7, 15),
    torch.float16: (2e-3, 3.9e-3, 6),
}


class BracketError(ValueError):
    """Raised when at least one item of the batch has no sign change of f on [0, 0.1]."""


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype == torch.float16 else dtype


def pseudo_observations(
    a: torch.Tensor, v: torch.Tensor, count: int = PSEUDO_OBSERVATIONS, generator: Optional[torch.Generator] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Seed upsampling: ``count`` pseudo-observations per utterance from ratings ``a``, ``v`` of shape ``(B, R)``.

    Each pseudo-observation is the mean of a random non-empty subset of the utterance's valid (non-NaN) annotators
    (size uniform in ``1..M``, then a uniform subset of that size; the same subset for both dimensions), plus
    ``U(-h, h)`` noise with ``h = 0.5 * sd + 1e-12`` (``sd`` the unbiased per-utterance std of each dimension; NaN
    for a single annotator, as in the seed), clamped to [-1, 1]. Returns two ``(B, count)`` tensors, differentiable
    with respect to ``a`` and ``v``.
    """
    if a.shape != v.shape or a.dim() != 2:
        raise ValueError(f"a and v must both be (B, R), got {tuple(a.shape)} and {tuple(v.shape)}")
    valid = ~(torch.isnan(a) | torch.isnan(v))
    n_valid = valid.sum(-1)
    if (n_valid == 0).any():
        raise ValueError(f"a: item {int(torch.nonzero(n_valid == 0)[0, 0])} has no valid rating")
    B, R = a.shape
    # subset size uniform in 1..M, then the `size` annotators with the smallest random keys (kdekit draws the same
    # distribution; the notes only say "a random non-empty subset")
    size = 1 + (torch.rand(B, count, generator=generator, device=a.device) * n_valid[:, None]).floor().long()
    size = torch.minimum(size, n_valid[:, None])
    keys = torch.rand(B, count, R, generator=generator, device=a.device).masked_fill(~valid[:, None, :], 2.0)
    threshold = keys.sort(-1).values.gather(-1, (size - 1)[..., None])
    chosen = (keys <= threshold).to(a.dtype)
    chosen_count = chosen.sum(-1)
    a0, v0 = torch.where(valid, a, 0.0), torch.where(valid, v, 0.0)
    observations = []
    for ratings in (a0, v0):
        mean = (chosen * ratings[:, None, :]).sum(-1) / chosen_count
        centre = ratings.sum(-1, keepdim=True) / n_valid[:, None]
        sd = (((ratings - centre) * valid).pow(2).sum(-1) / (n_valid - 1)).sqrt()
        half = 0.5 * sd + 1e-12
        noise = (2 * torch.rand(B, count, generator=generator, device=a.device, dtype=a.dtype) - 1) * half[:, None]
        observations.append((mean + noise).clamp(*LIMITS))
    return observations[0], observations[1]


def soft_histogram2d(x: torch.Tensor, y: torch.Tensor, bins: int, sharpness: float) -> torch.Tensor:
    """Seed soft histogram on [-1, 1]^2: ``A[r, i] = sig(s(x_r - c_i + d/2)) - sig(s(x_r - c_i - d/2))``, ``Ax^T Ay``.

    ``x``, ``y``: ``(B, N)``. Returns the unnormalised ``(B, bins, bins)`` counts, rows = x.
    """
    lo, hi = LIMITS
    d = (hi - lo) / bins
    centres = lo + d * (torch.arange(bins, device=x.device, dtype=x.dtype) + 0.5)

    def memberships(p):
        u = p[..., None] - centres
        return torch.sigmoid(sharpness * (u + d / 2)) - torch.sigmoid(sharpness * (u - d / 2))

    return torch.bmm(memberships(x).transpose(1, 2), memberships(y))


def hard_histogram2d(x: torch.Tensor, y: torch.Tensor, bins: int) -> torch.Tensor:
    """Counts on [-1, 1]^2 with ``numpy.histogram2d`` binning (left-closed, last bin closed, outside dropped).

    ``x``, ``y``: ``(B, N)``. Returns ``(B, bins, bins)``, rows = x. Not differentiable (counts).
    """
    lo, hi = LIMITS
    scale = bins / (hi - lo)
    inside = (x >= lo) & (x <= hi) & (y >= lo) & (y <= hi)
    ix = ((x - lo) * scale).floor().long().clamp(0, bins - 1)
    iy = ((y - lo) * scale).floor().long().clamp(0, bins - 1)
    counts = torch.zeros(x.shape[0], bins * bins, dtype=x.dtype, device=x.device)
    counts.scatter_add_(1, ix * bins + iy, inside.to(x.dtype))
    return counts.view(-1, bins, bins)


def _odd_product(m: int) -> float:
    return float(math.prod(range(1, 2 * m, 2)))


class _FixedPoint:
    """``f(t)`` of kde_diffusion's kde2d for a batch, from the squared DCT coefficients ``a2`` ``(B, n, n)``."""

    def __init__(self, a2: torch.Tensor, count: float):
        self.a2 = a2.contiguous()
        self.N = count
        n = a2.shape[-1]
        k2 = torch.arange(n, device=a2.device, dtype=a2.dtype) ** 2
        self.k2 = k2
        self.first_half = torch.full((n,), 0.5, device=a2.device, dtype=a2.dtype)
        self.first_half[0] = 1.0

    def psi(self, i: int, j: int, t: torch.Tensor) -> torch.Tensor:
        """Quadratic form psi_ij at time ``t`` ``(B,)``; recursive and not memoised (15 forms for i+j = 2)."""
        if i + j <= 4:
            total = (self.psi(i + 1, j, t) + self.psi(i, j + 1, t)).abs()
            c = (1 + 2.0 ** -(i + j + 1)) / 3
            t = (c * _odd_product(i) * _odd_product(j) / (math.pi * self.N * total)) ** (1 / (2 + i + j))
        w = self.first_half * torch.exp(-(math.pi**2) * self.k2 * t[:, None])
        w_cols = w * self.k2**i
        w_rows = w * self.k2**j
        form = (w_rows * torch.bmm(self.a2, w_cols[..., None])[..., 0]).sum(-1)
        return (-1) ** (i + j) * math.pi ** (2 * (i + j)) * form

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        sigma = self.psi(0, 2, t) + self.psi(2, 0, t) + 2 * self.psi(1, 1, t)
        gamma = (2 * math.pi * self.N * sigma) ** (-1 / 3)
        return t - (t - gamma) / gamma


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with a zero denominator replaced by 1 (the quotient is then discarded by ``torch.where``)."""
    return num / torch.where(den == 0, torch.ones_like(den), den)


def brent_batched(f, a: float, b: float, like: torch.Tensor, xtol: float, rtol: float, iterations: int):
    """Batched scipy-``brentq`` steps on ``[a, b]`` for every item, ``iterations`` evaluations of ``f`` on the batch.

    ``like``: a ``(B,)`` tensor giving batch size, dtype and device. An item that meets the tolerance keeps its root
    and its state is frozen; the loop still evaluates ``f`` on the whole batch every iteration (the seed's fixed
    cost). Returns the roots ``(B,)`` (the last iterate for items that did not meet the tolerance).
    Raises ``BracketError`` if any item has ``f(a) * f(b) > 0``.
    """
    xpre = torch.full_like(like, a)
    xcur = torch.full_like(like, b)
    fpre, fcur = f(xpre), f(xcur)
    if (fpre * fcur > 0).any():
        bad = int(torch.nonzero(fpre * fcur > 0)[0, 0])
        raise BracketError(f"f has no sign change on [{a}, {b}] for item {bad} (and maybe others)")
    zero = torch.zeros_like(like)
    xblk, fblk, spre, scur = zero, zero, zero, zero
    done = (fpre == 0) | (fcur == 0)
    root = torch.where(fpre == 0, xpre, xcur)
    for _ in range(iterations):
        old = (xpre, xcur, xblk, fpre, fcur, fblk, spre, scur)
        flip = (fpre != 0) & (fcur != 0) & (torch.signbit(fpre) != torch.signbit(fcur))
        xblk, fblk = torch.where(flip, xpre, xblk), torch.where(flip, fpre, fblk)
        spre = scur = torch.where(flip, xcur - xpre, scur)
        swap = fblk.abs() < fcur.abs()
        xpre, xcur, xblk = torch.where(swap, xcur, xpre), torch.where(swap, xblk, xcur), torch.where(swap, xcur, xblk)
        fpre, fcur, fblk = torch.where(swap, fcur, fpre), torch.where(swap, fblk, fcur), torch.where(swap, fcur, fblk)
        delta = (xtol + rtol * xcur.abs()) / 2
        sbis = (xblk - xcur) / 2
        converged = ~done & ((fcur == 0) | (sbis.abs() < delta))
        root = torch.where(converged, xcur, root)
        done = done | converged
        secant = -fcur * _safe_div(xcur - xpre, fcur - fpre)
        dpre = _safe_div(fpre - fcur, xpre - xcur)
        dblk = _safe_div(fblk - fcur, xblk - xcur)
        inverse_quadratic = -fcur * _safe_div(fblk * dblk - fpre * dpre, dblk * dpre * (fblk - fpre))
        stry = torch.where(xpre == xblk, secant, inverse_quadratic)
        interpolate = (spre.abs() > delta) & (fcur.abs() < fpre.abs())
        accept = interpolate & (2 * stry.abs() < torch.minimum(spre.abs(), 3 * sbis.abs() - delta))
        spre, scur = torch.where(accept, scur, sbis), torch.where(accept, stry, sbis)
        step = torch.where(scur.abs() > delta, scur, torch.where(sbis > 0, delta, -delta))
        xnew = torch.where(done, xcur, xcur + step)  # a frozen item re-evaluates a point it already evaluated
        new = (xcur, xnew, xblk, fcur, f(xnew), fblk, spre, scur)
        xpre, xcur, xblk, fpre, fcur, fblk, spre, scur = (torch.where(done, o, n) for o, n in zip(old, new))
    return torch.where(done, root, xcur)


def kde2d(x: torch.Tensor, y: torch.Tensor, grid: int, soft: bool, sharpness: float = 8.0):
    """Seed-style batched kde2d of points ``x``, ``y`` ``(B, N)`` on [-1, 1]^2 with an ``grid x grid`` grid.

    Returns ``(density (B, grid, grid) [x, y] with negatives set to eps, t* (B,))`` in the input dtype.
    Raises ``BracketError`` if any item is unbracketed on [0, 0.1].
    """
    out_dtype = x.dtype
    dtype = _compute_dtype(out_dtype)
    xtol, rtol, iterations = BRENT_SETTINGS[out_dtype]
    x, y = x.to(dtype), y.to(dtype)
    count = x.shape[-1]
    counts = soft_histogram2d(x, y, grid, sharpness) if soft else hard_histogram2d(x, y, grid)
    halve = torch.ones(grid, device=x.device, dtype=dtype)
    halve[0] = 0.5
    transformed = torch_dct.dct_2d(counts / count) * halve[:, None] * halve
    f = _FixedPoint(transformed**2, count)
    t_star = brent_batched(f, 0.0, 0.1, counts[:, 0, 0], xtol, rtol, iterations)
    p02, p20, p11 = f.psi(0, 2, t_star), f.psi(2, 0, t_star), f.psi(1, 1, t_star)
    root = (p02 * p20).sqrt()
    tx1 = (p02**0.75 / (4 * math.pi * count * p20**0.75 * (p11 + root))) ** (1 / 3)
    tx2 = (p20**0.75 / (4 * math.pi * count * p02**0.75 * (p11 + root))) ** (1 / 3)
    k2 = f.k2
    smoothing = torch.exp(-(math.pi**2) * k2 * tx2[:, None] / 2)[:, :, None] * torch.exp(
        -(math.pi**2) * k2 * tx1[:, None] / 2
    )[:, None, :]
    smoothed = transformed * smoothing / halve[:, None] / halve
    width = LIMITS[1] - LIMITS[0]
    density = torch_dct.idct_2d(smoothed) * (grid / width) ** 2
    eps = torch.finfo(dtype).eps
    density = torch.where(density < 0, torch.full_like(density, eps), density)
    return density.to(out_dtype), t_star.to(out_dtype)


def pool(density: torch.Tensor, k: int = 4) -> torch.Tensor:
    """Block means of ``density`` ``(B, n, n)`` over integer edges ``linspace(0, n, k+1)``, divided by their sum."""
    n = density.shape[-1]
    edges = np.linspace(0, n, k + 1).astype(int)
    blocks = [
        [density[:, edges[r] : edges[r + 1], edges[c] : edges[c + 1]].mean((-2, -1)) for c in range(k)]
        for r in range(k)
    ]
    table = torch.stack([torch.stack(row, -1) for row in blocks], -2)
    return table / table.sum((-2, -1), keepdim=True)


def kde_probability(
    a: torch.Tensor,
    v: torch.Tensor,
    *,
    grid: int,
    soft: bool,
    sharpness: float = 8.0,
    k: int = 4,
    generator: Optional[torch.Generator] = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> Optional[torch.Tensor]:
    """Ratings or predictions ``(B, R)`` -> pooled ``(B, k, k)`` tables, the seed's way; ``None`` after
    ``max_attempts`` failed draws (a ``BracketError`` or a NaN density redraws the whole batch)."""
    for _ in range(max_attempts):
        x, y = pseudo_observations(a, v, generator=generator)
        try:
            density, _ = kde2d(x, y, grid, soft, sharpness)
        except BracketError:
            continue
        if torch.isnan(density).any():
            continue
        return pool(density, k)
    return None


def training_loss(
    pred_a: torch.Tensor,
    pred_v: torch.Tensor,
    target: torch.Tensor,
    *,
    grid: int = 64,
    sharpness: float = 8.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Seed training loss: soft-histogram KDE of the annotator predictions ``(B, R)``, pooled to the ``(B, k, k)``
    ``target``'s size, rows normalised, ``-sum target * log(p + 1e-8)`` averaged over the batch."""
    k = target.shape[-1]
    table = kde_probability(pred_a, pred_v, grid=grid, soft=True, sharpness=sharpness, k=k, generator=generator)
    if table is None:
        raise RuntimeError(f"seed baseline: every one of {MAX_ATTEMPTS} draws had an unbracketed item or a NaN")
    p = table / table.sum((-2, -1), keepdim=True)
    return -(target * torch.log(p + 1e-8)).sum((-2, -1)).mean()


# ---- the seed's metric definitions (numpy) ----


def ccc(pred: np.ndarray, gt: np.ndarray) -> float:
    """Seed CCC of two 1-D arrays: ``2 r sd_gt sd_pred / (var_gt + var_pred + (mu_gt - mu_pred)^2)``, unbiased
    moments."""
    mu_p, mu_g = pred.mean(), gt.mean()
    var_p, var_g = pred.var(ddof=1), gt.var(ddof=1)
    r = np.corrcoef(pred, gt)[0, 1]
    return 2 * r * np.sqrt(var_g) * np.sqrt(var_p) / (var_g + var_p + (mu_g - mu_p) ** 2)


def jsd(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Seed JSD (natural log) over the last axis; zeros are replaced by 1e-8 (on copies here; the seed mutates its
    inputs)."""
    p, q = p.copy(), q.copy()
    p[p == 0] = 1e-8
    q[q == 0] = 1e-8
    m = (p + q) / 2
    return 0.5 * (p * np.log(p / m)).sum(-1) + 0.5 * (q * np.log(q / m)).sum(-1)


def total_variation_1d(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The seed's ``total_variation_1d``: ``sum (p - q)^2`` over the last axis (not the total variation distance)."""
    return ((p - q) ** 2).sum(-1)
