"""Independent reference implementations ("oracles") that kdekit's tests compare against.

Nothing here imports kdekit: every function computes its result from numpy, scipy, KDE-diffusion, torchmetrics or
plain float64 torch formulas, item by item where that is the simplest correct form. Importable without pytest
(``from tests.reference import ...`` from the repository root); KDE-diffusion and torchmetrics are imported only by
the functions that use them.

Conventions: batched inputs are ``(B, N)`` (or ``(..., K)`` for distributions), one item per row; functions named
``*_items`` loop over the rows and stack the per-item results; numpy results are float64.

=======================  =======================================================================================
soft histograms          :func:`soft_bin_mass`, :func:`soft_histogram1d`, :func:`soft_histogram2d`,
                         :func:`soft_histogram1d_grads`, :func:`soft_histogram2d_grads` (explicit loops, scipy
                         ``expit``)
hard histograms          :func:`histogram_items`, :func:`histogram2d_items` (``numpy.histogram``/``histogram2d``),
                         :func:`hard_histogram2d_weight_grad` (the bin gather of the cotangent)
CCC / Pearson            :func:`ccc_numpy`, :func:`ccc_items`, :func:`pearson_items` (``scipy.stats.pearsonr``),
                         :func:`concordance_torchmetrics`
divergences              :func:`kl_items`, :func:`entropy_items`, :func:`jsd_items`, :func:`tvd_items`,
                         :func:`divergence_items` (``scipy.special.rel_entr``, ``scipy.stats.entropy``,
                         ``scipy.spatial.distance.jensenshannon``),
                         :func:`divergence_torch64` (float64 torch forms for strictly positive inputs)
DCT                      :func:`dct`, :func:`idct`, :func:`dctn`, :func:`idctn` (``scipy.fft``), :func:`dct_vjp`
pooling                  :func:`pool2d`, :func:`pool1d`, :func:`pool2d_vjp` (block loops)
diffusion KDE            :func:`kde1d_kde_diffusion`, :func:`kde2d_kde_diffusion` (KDE-diffusion 1.0.5, None where
                         it raises), :func:`pooled_kde2d_kde_diffusion`, :func:`kde_diffusion` (the package, for
                         call-for-call comparisons), :func:`brentq` (``scipy.optimize.brentq``)
=======================  =======================================================================================
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence, Tuple

import numpy as np
import scipy.fft
import scipy.optimize
import scipy.spatial.distance
import scipy.special
import scipy.stats
import torch

Interval = Tuple[float, float]


def _rows(a) -> np.ndarray:
    """float64 numpy ``(items, K)`` view of a tensor/array whose last axis is the reduced one."""
    a = a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, np.float64)
    return a.reshape(-1, a.shape[-1])


# ---- soft histograms -------------------------------------------------------------------------------------------------


def soft_bin_mass(x, bins: int, lo: float, hi: float, s: float) -> Tuple[np.ndarray, np.ndarray]:
    """Sigmoid bin masses of one item's points and their derivative, by explicit loops over points and bins:
    ``A[n, i] = expit(s (x_n - c_i + d/2)) - expit(s (x_n - c_i - d/2))`` with ``d = (hi - lo) / bins`` and bin
    centres ``c_i = lo + d (i + 1/2)`` (the seed's centre formula); returns ``(A, dA/dx)``, each ``(N, bins)``."""
    d = (hi - lo) / bins
    a = np.zeros((len(x), bins))
    da = np.zeros((len(x), bins))
    for n, xn in enumerate(x):
        for i in range(bins):
            c = lo + d * (i + 0.5)
            left, right = scipy.special.expit(s * (xn - c + d / 2)), scipy.special.expit(s * (xn - c - d / 2))
            a[n, i] = left - right
            da[n, i] = s * (left * (1 - left) - right * (1 - right))
    return a, da


def soft_histogram1d(x, bins: int, rng: Interval, s: float, w=None) -> np.ndarray:
    """One item's soft histogram ``H[i] = sum_n w_n A[n, i]`` (w = 1 by default), ``(bins,)``."""
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    a, _ = soft_bin_mass(x, bins, *rng, s)
    return (w[:, None] * a).sum(0)


def soft_histogram2d(x, y, bins: int, rng2: Sequence[Interval], s: float, w=None) -> np.ndarray:
    """One item's soft 2-D histogram ``H[i, j] = sum_n w_n A_x[n, i] A_y[n, j]``, ``(bins, bins)`` ``[x, y]``."""
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    ax, _ = soft_bin_mass(x, bins, *rng2[0], s)
    ay, _ = soft_bin_mass(y, bins, *rng2[1], s)
    return np.einsum("n,ni,nj->ij", w, ax, ay)


def soft_histogram1d_grads(x, bins: int, rng: Interval, s: float, w, g) -> Tuple[np.ndarray, np.ndarray]:
    """Gradients of ``sum_i H[i] g[i]`` (one item, :func:`soft_histogram1d`) w.r.t. ``x`` and ``w``."""
    a, da = soft_bin_mass(x, bins, *rng, s)
    return np.asarray(w) * (da @ g), a @ g


def soft_histogram2d_grads(x, y, bins: int, rng2: Sequence[Interval], s: float, w, g):
    """Gradients of ``sum_ij H[i, j] g[i, j]`` (one item, :func:`soft_histogram2d`) w.r.t. ``x``, ``y``, ``w``."""
    ax, dax = soft_bin_mass(x, bins, *rng2[0], s)
    ay, day = soft_bin_mass(y, bins, *rng2[1], s)
    gx = np.einsum("n,ni,nj,ij->n", w, dax, ay, g)
    gy = np.einsum("n,ni,nj,ij->n", w, ax, day, g)
    gw = np.einsum("ni,nj,ij->n", ax, ay, g)
    return gx, gy, gw


# ---- hard histograms -------------------------------------------------------------------------------------------------


def histogram_items(x, bins: int, ranges, weights=None) -> np.ndarray:
    """``numpy.histogram`` of every row of ``x`` (``(B, N)``, its own dtype: numpy casts the edges to it);
    ``ranges`` is one ``(lo, hi)`` or one per row. Returns ``(B, bins)`` float64."""
    x = np.asarray(x)
    ranges = [ranges] * len(x) if np.ndim(ranges) == 1 else ranges
    return np.stack([np.histogram(row, bins, range=tuple(r), weights=None if weights is None else weights[b])[0]
                     for b, (row, r) in enumerate(zip(x, ranges))]).astype(np.float64)


def histogram2d_items(x, y, bins: int, ranges, weights=None) -> np.ndarray:
    """``numpy.histogram2d`` of every row pair (float64 edges whatever the dtype, numpy's 2-D rule); ``ranges`` is
    one ``((xlo, xhi), (ylo, yhi))`` or one per row. Returns ``(B, bins, bins)`` float64, ``[x_bin, y_bin]``."""
    x, y = np.asarray(x), np.asarray(y)
    ranges = [ranges] * len(x) if np.ndim(ranges) == 2 else ranges
    return np.stack([np.histogram2d(a, b, bins, range=tuple(map(tuple, r)),
                                    weights=None if weights is None else weights[i])[0]
                     for i, (a, b, r) in enumerate(zip(x, y, ranges))]).astype(np.float64)


def hard_histogram2d_weight_grad(x, y, bins: int, rng2: Sequence[Interval], cot) -> np.ndarray:
    """Gradient of ``sum H * cot`` w.r.t. the weights of a weighted 2-D histogram (one item): ``cot[bin_x(n),
    bin_y(n)]`` with numpy.histogram2d's bins (float64 edges, last bin closed), 0 for points outside the range or
    non-finite."""
    xb, yb = np.asarray(x, np.float64), np.asarray(y, np.float64)
    (xlo, xhi), (ylo, yhi) = rng2
    ix = np.clip(np.searchsorted(np.linspace(xlo, xhi, bins + 1), xb, side="right") - 1, 0, bins - 1)
    iy = np.clip(np.searchsorted(np.linspace(ylo, yhi, bins + 1), yb, side="right") - 1, 0, bins - 1)
    kept = (xb >= xlo) & (xb <= xhi) & (yb >= ylo) & (yb <= yhi)
    return np.where(kept, np.asarray(cot)[ix, iy], 0)


# ---- CCC and Pearson -------------------------------------------------------------------------------------------------


def ccc_numpy(x, y, ddof: int) -> float:
    """Lin's CCC of two 1-D samples from numpy moments (float64): ``2 s_xy / (s_x^2 + s_y^2 + (mu_x - mu_y)^2)``
    with ``ddof`` in every (co)variance."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    sxy = np.sum((x - x.mean()) * (y - y.mean())) / (x.size - ddof)
    return 2 * sxy / (x.var(ddof=ddof) + y.var(ddof=ddof) + (x.mean() - y.mean()) ** 2)


def _moved_rows(x: torch.Tensor, y: torch.Tensor, dim):
    dims = (dim,) if isinstance(dim, int) else dim
    dims = [d % x.dim() for d in dims]
    rows = [t.detach().cpu().double().movedim(dims, list(range(-len(dims), 0))).flatten(x.dim() - len(dims))
            for t in (x, y)]
    return rows[0], rows[1]


def ccc_items(x: torch.Tensor, y: torch.Tensor, dim=-1, ddof: int = 0) -> torch.Tensor:
    """:func:`ccc_numpy` of every item of float64 copies of ``x``, ``y``, with ``dim`` (int or tuple) reduced."""
    a, b = _moved_rows(x, y, dim)
    out = [ccc_numpy(u, v, ddof) for u, v in zip(_rows(a), _rows(b))]
    return torch.tensor(out, dtype=torch.float64).reshape(a.shape[:-1])


def pearson_items(x, y, dim=-1) -> torch.Tensor:
    """``scipy.stats.pearsonr`` of every item, ``dim`` (int or tuple) reduced (float64)."""
    a, b = _moved_rows(torch.as_tensor(x), torch.as_tensor(y), dim)
    out = [scipy.stats.pearsonr(u, v).statistic for u, v in zip(_rows(a), _rows(b))]
    return torch.tensor(out, dtype=torch.float64).reshape(a.shape[:-1])


def concordance_torchmetrics(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``torchmetrics.functional.concordance_corrcoef`` (dim 0, unbiased moments)."""
    from torchmetrics.functional import concordance_corrcoef

    return concordance_corrcoef(pred, target)


# ---- divergences -----------------------------------------------------------------------------------------------------


def kl_items(p, q, base: Optional[float] = None) -> np.ndarray:
    """``sum scipy.special.rel_entr(p, q)`` per item (last axis), divided by ``log(base)``; ``p.shape[:-1]``."""
    a, b = _rows(p), _rows(q)
    out = scipy.special.rel_entr(a, b).sum(-1) / (1.0 if base is None else np.log(base))
    return out.reshape(np.shape(p)[:-1])


def entropy_items(p, q, base: Optional[float] = None) -> np.ndarray:
    """``scipy.stats.entropy(p, q, base)`` per item (last axis): KL of the items normalised to sum 1."""
    return scipy.stats.entropy(_rows(p), _rows(q), base=base, axis=-1).reshape(np.shape(p)[:-1])


def jsd_items(p, q, base: Optional[float] = None) -> np.ndarray:
    """``scipy.spatial.distance.jensenshannon(p, q, base) ** 2`` per item (scipy normalises each item first)."""
    out = np.array([scipy.spatial.distance.jensenshannon(a, b, base=base) ** 2 for a, b in zip(_rows(p), _rows(q))])
    return out.reshape(np.shape(p)[:-1])


def tvd_items(p, q) -> np.ndarray:
    """``sum |p - q| / 2`` per item (last axis)."""
    return (0.5 * np.abs(_rows(p) - _rows(q)).sum(-1)).reshape(np.shape(p)[:-1])


def divergence_items(kind: str, p, q) -> torch.Tensor:
    """``kl``, ``jsd`` or ``tvd`` per item (last axis) from ``scipy.special.rel_entr`` (no normalisation: the
    definitions of kdekit.kl/jsd/tvd, ``jsd = (kl(p, m) + kl(q, m)) / 2``), float64, ``p.shape[:-1]``."""
    a, b = _rows(p), _rows(q)
    if kind == "kl":
        ref = scipy.special.rel_entr(a, b).sum(-1)
    elif kind == "jsd":
        m = (a + b) / 2
        ref = 0.5 * (scipy.special.rel_entr(a, m).sum(-1) + scipy.special.rel_entr(b, m).sum(-1))
    elif kind == "tvd":
        ref = 0.5 * np.abs(a - b).sum(-1)
    else:
        raise ValueError(f"kind must be 'kl', 'jsd' or 'tvd', got {kind!r}")
    return torch.from_numpy(ref).reshape(tuple(np.shape(p)[:-1]))


def divergence_torch64(p: torch.Tensor, q: torch.Tensor, kind: str) -> torch.Tensor:
    """float64 torch forms of kl/jsd/tvd along the last dim (differentiable; for strictly positive inputs)."""
    if kind == "kl":
        return (p * torch.log(p / q)).sum(-1)
    if kind == "jsd":
        m = 0.5 * (p + q)
        return 0.5 * ((p * torch.log(p / m)).sum(-1) + (q * torch.log(q / m)).sum(-1))
    if kind == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    raise ValueError(f"kind must be 'kl', 'jsd' or 'tvd', got {kind!r}")


# ---- DCT -------------------------------------------------------------------------------------------------------------


def dct(x, axis: int = -1) -> np.ndarray:
    """``scipy.fft.dct(x, type=2, norm=None, axis=axis)`` of a float64 copy."""
    return scipy.fft.dct(_as_numpy(x), type=2, norm=None, axis=axis)


def idct(x, axis: int = -1) -> np.ndarray:
    """``scipy.fft.idct(x, type=2, norm=None, axis=axis)`` of a float64 copy."""
    return scipy.fft.idct(_as_numpy(x), type=2, norm=None, axis=axis)


def dctn(x, axes=(-2, -1)) -> np.ndarray:
    """``scipy.fft.dctn(x, type=2, norm=None, axes=axes)`` of a float64 copy."""
    return scipy.fft.dctn(_as_numpy(x), type=2, norm=None, axes=axes)


def idctn(x, axes=(-2, -1)) -> np.ndarray:
    """``scipy.fft.idctn(x, type=2, norm=None, axes=axes)`` of a float64 copy."""
    return scipy.fft.idctn(_as_numpy(x), type=2, norm=None, axes=axes)


def dct_vjp(g, axis: int = -1) -> np.ndarray:
    """Gradient of ``sum(dct(x, axis) * g)`` w.r.t. ``x``: the transpose of the DCT-II matrix applied to ``g``,
    ``2 sum_k g_k cos(pi k (2n + 1) / 2N)`` = ``scipy.fft.dct(g, type=3) + g_0``."""
    g = _as_numpy(g)
    return scipy.fft.dct(g, type=3, norm=None, axis=axis) + np.take(g, [0], axis=axis)


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


# ---- pooling ---------------------------------------------------------------------------------------------------------


def pool2d(d, k: int) -> np.ndarray:
    """Explicit block loops over ``linspace(0, n, k + 1)`` edges of ``(..., n, m)``, divided by the item total."""
    d = _as_numpy(d)
    *lead, n, m = d.shape
    flat = d.reshape(-1, n, m)
    out = np.zeros((flat.shape[0], k, k))
    re, ce = np.linspace(0, n, k + 1).astype(int), np.linspace(0, m, k + 1).astype(int)
    for b in range(flat.shape[0]):
        for i in range(k):
            for j in range(k):
                out[b, i, j] = flat[b, re[i]:re[i + 1], ce[j]:ce[j + 1]].sum()
        out[b] /= out[b].sum()
    return out.reshape(*lead, k, k)


def pool1d(d, k: int) -> np.ndarray:
    """``(..., n)`` -> ``(..., k)`` block sums divided by the item total."""
    d = _as_numpy(d)
    blocks = d.reshape(*d.shape[:-1], k, d.shape[-1] // k).sum(-1)
    return blocks / blocks.sum(-1, keepdims=True)


def pool2d_vjp(d, k: int, g) -> np.ndarray:
    """Gradient of ``sum(pool2d(d, k) * g)`` w.r.t. ``d`` (``(B, n, m)``): for a cell in block ``c``,
    ``(g_c - sum_b g_b P_b) / T`` with ``P`` the pooled table and ``T`` the item total."""
    d, g = _as_numpy(d), _as_numpy(g)
    B, n, m = d.shape
    p = pool2d(d, k)
    total = d.reshape(B, -1).sum(-1)
    inner = (g * p).reshape(B, -1).sum(-1)
    per_block = (g - inner[:, None, None]) / total[:, None, None]  # (B, k, k)
    return np.repeat(np.repeat(per_block, n // k, axis=1), m // k, axis=2)


# ---- diffusion KDE ---------------------------------------------------------------------------------------------------


def kde_diffusion():
    """The KDE-diffusion 1.0.5 package itself (``kde1d``, ``kde2d``), for the drop-in tests of ``kdekit.compat`` that
    compare signatures, results and exceptions call for call."""
    import kde_diffusion as package

    return package


def kde2d_kde_diffusion(x, y, n: int, limits):
    """``kde_diffusion.kde2d(x, y, n, limits)`` -> ``(density, (xgrid, ygrid), bandwidth)``, or None where it raises
    ``ValueError`` (no root of the fixed point on [0, 0.1]); its RuntimeWarnings are silenced."""
    import kde_diffusion

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return kde_diffusion.kde2d(np.asarray(x), np.asarray(y), n=n, limits=limits)
    except ValueError:
        return None


def kde1d_kde_diffusion(x, n: int, limits):
    """``kde_diffusion.kde1d(x, n, limits)`` -> ``(density, grid, bandwidth)``, or None where it raises."""
    import kde_diffusion

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return kde_diffusion.kde1d(np.asarray(x), n=n, limits=limits)
    except ValueError:
        return None


def pooled_kde2d_kde_diffusion(x, y, n: int, k: int, limits=((-1, 1), (-1, 1))):
    """:func:`kde2d_kde_diffusion`'s density summed over ``k x k`` equal blocks and divided by its sum (the
    distribution labels of one item), or None where kde_diffusion raises."""
    ref = kde2d_kde_diffusion(x, y, n, limits)
    if ref is None:
        return None
    blocks = ref[0].reshape(k, n // k, k, n // k).sum(axis=(1, 3))
    return blocks / blocks.sum()


def brentq(f, a: float, b: float) -> float:
    """``scipy.optimize.brentq(f, a, b)`` with its default tolerances."""
    return scipy.optimize.brentq(f, a, b)
