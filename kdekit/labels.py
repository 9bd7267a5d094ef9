"""Distribution labels from annotator ratings (the seed's KDE labels) and the differentiable training path.

* :func:`pseudo_observations`: the seed's upsampling (jtavernor/SER-Datasets ``get_random_observations_fast``),
  batched: each of ``n`` pseudo-observations is the mean of a uniformly random non-empty subset of the item's
  annotators (subset size uniform in ``1..M``, then a uniformly random subset of that size; the same subset for both
  dimensions) plus independent noise ``U(-h, h)``, ``h = 0.5 sd + 1e-12`` per dimension, ``sd`` = unbiased std of the
  item's ratings (0 for a single annotator, where the seed would produce NaN), clamped to ``[-1, 1]``.
* :func:`labels_from_ratings`: pseudo-observations -> hard-histogram diffusion KDE on a ``grid x grid`` grid
  (default 512) on ``[-1, 1]^2`` in float64 (the fused ``kdekit::kde2d_points`` kernel under the ``cpp`` backend)
  -> ``k x k`` block sums / total (:func:`~kdekit.ops.pooling.pool_density`); :func:`labels_from_observations` is
  its second half, for observations drawn elsewhere (e.g. with a generator per item).
* :func:`points_to_distribution`: points -> soft histogram (sharpness 8) -> diffusion KDE (grid 64) -> ``k x k``
  table, differentiable in the points (the DiffKDE training path; upsample with :func:`pseudo_observations` first
  to reproduce the seed exactly). ``torch.ops.kdekit.points_to_distribution`` is the same computation as one opaque
  custom op (per-item bandwidth rules branch on data), which :class:`kdekit.nn.DiffusionKDE2d` calls under
  ``torch.compile`` so that ``fullgraph=True`` holds; its backward recomputes the forward with autograd.

Rows of a table are the first coordinate (activation), columns the second (valence), low to high.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import torch

from ._backend import select, use_backend
from .ops._checks import check_float_tensor, is_finite
from .ops.diffusion_kde import default_chunk_bytes, diffusion_kde2d
from .ops.pooling import probability_table
from .ops.uniform import rand

__all__ = ["DistributionLabels", "pseudo_observations", "labels_from_ratings", "labels_from_observations",
           "points_to_distribution"]

UNIT_SQUARE = ((-1.0, 1.0), (-1.0, 1.0))
NOISE_EPS = 1e-12
# float64 coefficients per KDE call in labels_from_ratings on the CPU (grid 512: 128 items); a GPU takes larger calls
_LABEL_CHUNK_BYTES = 256 * 2**20


class DistributionLabels(NamedTuple):
    """``U`` items: ``probs`` (U, k, k) (rows = activation, columns = valence; each table sums to 1)."""

    probs: torch.Tensor
    status: torch.Tensor  #: (U,) int64 KDEStatus of each item's KDE
    converged: torch.Tensor  #: (U,) bool, status == BRENTQ
    bandwidth: torch.Tensor  #: (U, 2) kernel sd along activation and valence


def _check_ratings(ratings: torch.Tensor) -> torch.Tensor:
    check_float_tensor("ratings", ratings, ndim=3)
    if ratings.shape[-1] != 2:
        raise ValueError(f"ratings must be (U, A, 2) (activation, valence), got shape {tuple(ratings.shape)}")
    if ratings.shape[0] == 0 or ratings.shape[1] == 0:
        raise ValueError(f"ratings is empty (shape {tuple(ratings.shape)}); need U >= 1 items and A >= 1 annotators")
    return ratings


def pseudo_observations(
    ratings: torch.Tensor, n: int = 200, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """The seed's pseudo-observations: ``(U, A, 2)`` ratings (NaN = missing annotator) -> ``(U, n, 2)``.

    An annotator counts when both of its ratings are finite. Items without any annotator give NaN observations.
    Differentiable w.r.t. the ratings (subset means and the noise scale). Random draws come from ``generator``
    (on the ratings' device), float32 whatever torch's default dtype, in this order: ``torch.rand(U, n)`` for the
    subset sizes (``1 + floor(u M)``), ``torch.rand(U, n, A)`` keys (a draw's subset is its ``size`` valid annotators
    with the smallest keys, ties to the lower index), ``torch.rand(U, n, 2)`` for the noise (on the ``cpp`` backend
    drawn by :func:`kdekit.ops.uniform.rand`: the same values, vectorised). The same generator state gives
    the same observations on every backend (the ``cpp`` kernel ``kdekit::pseudo_observations`` selects the subset by
    partial selection, O(A) a draw, and adds the noise in one op; the torch path sorts the keys stably).
    """
    _check_ratings(ratings)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    U, A, _ = ratings.shape
    dev = ratings.device
    dtype = ratings.dtype
    valid = is_finite(ratings.detach()).all(-1)  # (U, A)
    M = valid.sum(1)  # (U,)
    at_least_one = M.clamp(min=1)[:, None]
    # subset size uniform in 1..M (floor of a non-negative product: the integer cast), then the size smallest of
    # random keys among valid annotators
    cpp = select(ratings, ("torch", "cpp")) == "cpp"
    size = torch.minimum(1 + (rand((U, n), generator, dev, cpp) * at_least_one).long(), at_least_one)
    keys = rand((U, n, A), generator, dev, cpp)
    u = rand((U, n, 2), generator, dev, cpp)
    if cpp:
        return torch.ops.kdekit.pseudo_observations(ratings, keys, size, u)[0]
    means = _subset_means(ratings, valid, keys, size)
    r = torch.where(valid[..., None], ratings, torch.zeros((), dtype=dtype, device=dev))
    mean_all = r.sum(1) / at_least_one.to(dtype)
    var = ((r - mean_all[:, None]) ** 2 * valid[..., None]).sum(1) / (M - 1).clamp(min=1)[:, None].to(dtype)
    # sd 0 (one annotator, or all agree): gradient 0 there, not sqrt's infinite slope (which would give NaN)
    sd = torch.where(var > 0, torch.sqrt(torch.where(var > 0, var, 1.0)), 0.0)
    half_width = 0.5 * sd + NOISE_EPS  # (U, 2)
    obs = (means + (2 * u.to(dtype) - 1) * half_width[:, None, :]).clamp(-1, 1)
    return torch.where((M > 0)[:, None, None], obs, torch.full_like(obs, float("nan")))


def _subset_means(ratings: torch.Tensor, valid: torch.Tensor, keys: torch.Tensor,
                  size: torch.Tensor) -> torch.Tensor:
    """(U, n, 2) means of ``ratings`` (U, A, 2) over the ``size`` (U, n) ``valid`` annotators with the smallest keys
    (U, n, A) (ties: the lower index first): one stable argsort and a scatter, differentiable in the ratings."""
    keys = torch.where(valid[:, None, :], keys, 2.0)  # invalid annotators after every valid one
    r = torch.where(valid[..., None], ratings, 0.0)
    order = keys.argsort(dim=-1, stable=True)  # annotator order[j] has rank j: chosen where j < size
    first = (torch.arange(ratings.shape[1], device=ratings.device) < size[..., None]).to(ratings.dtype)
    chosen = torch.zeros_like(first).scatter_(-1, order, first)  # (U, n, A)
    return torch.einsum("una,uad->und", chosen, r) / size[..., None].to(ratings.dtype)


def _check_k(k: int, grid: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2 or grid & (grid - 1):
        raise ValueError(f"grid must be a power of two >= 2, got {grid!r}")
    if grid % k:
        raise ValueError(f"k={k} must divide grid={grid}")


def labels_from_ratings(
    ratings: torch.Tensor,
    *,
    k: int = 4,
    grid: int = 512,
    n_observations: int = 200,
    generator: Optional[torch.Generator] = None,
    clip_negative: bool = False,
) -> DistributionLabels:
    """``k x k`` distribution labels from ``(U, A, 2)`` ratings in [-1, 1] (NaN-padded annotators).

    pseudo-observations (float64) -> hard-histogram diffusion KDE on ``grid x grid`` over ``[-1, 1]^2`` -> block sums
    / total (:func:`labels_from_observations`). Items without annotators get a uniform table and status NO_POINTS;
    items where kde_diffusion would fail get the fallback bandwidth and their status (never an error).
    ``clip_negative`` as in :func:`~kdekit.ops.diffusion_kde.diffusion_kde2d` (the seed clipped; kde_diffusion
    does not); probs are float64, >= 0 and sum to 1 (:func:`~kdekit.ops.pooling.probability_table`: a block whose
    KDE mass is negative counts as 0).
    """
    _check_ratings(ratings)
    _check_k(k, grid)
    obs = pseudo_observations(ratings.detach().to(torch.float64), n_observations, generator)
    return labels_from_observations(obs, k=k, grid=grid, clip_negative=clip_negative)


def labels_from_observations(
    observations: torch.Tensor, *, k: int = 4, grid: int = 512, clip_negative: bool = False
) -> DistributionLabels:
    """The KDE half of :func:`labels_from_ratings`: ``(U, n, 2)`` pseudo-observations (NaN rows = none) -> labels.

    All items at once, in memory-bounded chunks; float64.
    """
    check_float_tensor("observations", observations, ndim=3)
    if observations.shape[-1] != 2 or observations.shape[0] == 0:
        raise ValueError(f"observations must be (U, n, 2) with U >= 1, got shape {tuple(observations.shape)}")
    _check_k(k, grid)
    obs = observations.detach().to(torch.float64)
    valid = torch.isfinite(obs).all(-1)
    chunk = max(1, max(_LABEL_CHUNK_BYTES, default_chunk_bytes(obs.device)) // (8 * grid * grid))
    parts = []
    for s in range(0, obs.shape[0], chunk):
        res = diffusion_kde2d(
            obs[s : s + chunk, :, 0],
            obs[s : s + chunk, :, 1],
            grid_size=grid,
            limits=UNIT_SQUARE,
            mask=valid[s : s + chunk],
            clip_negative=clip_negative,
            implicit_grad=False,
            pool=k,
        )
        probs = probability_table(res.density)
        parts.append((probs, res.status, res.converged, res.bandwidth))
    probs, status, converged, bandwidth = (torch.cat(p) for p in zip(*parts))
    return DistributionLabels(probs, status, converged, bandwidth)


def points_to_distribution(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    k: int = 4,
    grid: int = 64,
    sharpness: float = 8.0,
    limits=UNIT_SQUARE,
    mask: Optional[torch.Tensor] = None,
    lengths: Optional[torch.Tensor] = None,
    implicit_grad: bool = True,
    clip_negative: bool = False,
    out_dtype: Optional[torch.dtype] = None,
) -> DistributionLabels:
    """Differentiable ``k x k`` tables from points ``x, y`` (B, N): soft histogram -> diffusion KDE -> pooled.

    Gradients reach ``x, y`` through the soft histogram and (``implicit_grad``) the bandwidth, finite for every item
    (:class:`~kdekit.ops.diffusion_kde.KDEStatus` says which rule applied). probs has the points' dtype unless
    ``out_dtype`` is given (float16/bfloat16 are computed in float32; ``out_dtype=torch.float32`` returns that
    precision: float16-in, float32-out); every table is >= 0 and sums to 1 in every dtype: the pooled KDE mass is
    clamped at 0 and renormalised (:func:`~kdekit.ops.pooling.probability_table`; float32 rounding and the KDE's
    Gibbs lobes can give blocks down to about -1e-7).
    """
    _check_k(k, grid)
    res = diffusion_kde2d(
        x,
        y,
        grid_size=grid,
        limits=limits,
        mask=mask,
        lengths=lengths,
        histogram="soft",
        sharpness=sharpness,
        clip_negative=clip_negative,
        implicit_grad=implicit_grad,
        pool=k,
        out_dtype=out_dtype,
    )
    return DistributionLabels(probability_table(res.density), res.status, res.converged, res.bandwidth)



def _limits(limits: Optional[List[float]]):
    return None if limits is None else ((limits[0], limits[1]), (limits[2], limits[3]))


@torch.library.custom_op("kdekit::points_to_distribution", mutates_args=())
def points_to_distribution_op(x: torch.Tensor, y: torch.Tensor, mask: Optional[torch.Tensor], k: int, grid: int,
                              sharpness: float, limits: Optional[List[float]], implicit_grad: bool,
                              clip_negative: bool) -> torch.Tensor:
    """:func:`points_to_distribution` ``.probs`` as one custom op; ``limits`` = ``[x_lo, x_hi, y_lo, y_hi]`` or
    None (data range +- 1/4)."""
    return points_to_distribution(x, y, k=k, grid=grid, sharpness=sharpness, limits=_limits(limits), mask=mask,
                                  implicit_grad=implicit_grad, clip_negative=clip_negative).probs


@points_to_distribution_op.register_fake
def _(x, y, mask, k, grid, sharpness, limits, implicit_grad, clip_negative):
    return x.new_empty((x.shape[0], k, k))


@torch.library.custom_op("kdekit::points_to_distribution_backward", mutates_args=())
def _points_to_distribution_backward(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                                     mask: Optional[torch.Tensor], k: int, grid: int, sharpness: float,
                                     limits: Optional[List[float]], implicit_grad: bool,
                                     clip_negative: bool) -> List[torch.Tensor]:
    # torch.func.vjp: a custom op's kernel runs below the autograd dispatch key, where torch.autograd records nothing;
    # the torch backend: plain torch ops, which the functorch transform supports (values equal the kernels' to 1e-12)
    def probs(x, y):
        return points_to_distribution(x, y, k=k, grid=grid, sharpness=sharpness, limits=_limits(limits), mask=mask,
                                      implicit_grad=implicit_grad, clip_negative=clip_negative).probs

    with use_backend("torch"):
        _, vjp = torch.func.vjp(probs, x, y)
        return list(vjp(grad))


@_points_to_distribution_backward.register_fake
def _(grad, x, y, mask, k, grid, sharpness, limits, implicit_grad, clip_negative):
    return [torch.empty_like(x), torch.empty_like(y)]


def _setup(ctx, inputs, output):
    x, y, mask, *ctx.params = inputs
    ctx.save_for_backward(x, y, mask)


def _backward(ctx, grad):
    x, y, mask = ctx.saved_tensors
    gx, gy = _points_to_distribution_backward(grad, x, y, mask, *ctx.params)
    return (gx, gy) + (None,) * 8


points_to_distribution_op.register_autograd(_backward, setup_context=_setup)
