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
from .inputs import default_chunk_bytes
from .kde1d import KDE1dResult, diffusion_kde1d, diffusion_kde1d_binned
from .kde2d import KDE2dResult, diffusion_kde2d, diffusion_kde2d_binned
from .root import brentq_batched, fallback_range
from .status import KDEStatus

__all__ = [
    "KDEStatus",
    "KDE1dResult",
    "KDE2dResult",
    "diffusion_kde1d",
    "diffusion_kde1d_binned",
    "diffusion_kde2d",
    "diffusion_kde2d_binned",
    "default_chunk_bytes",
    "brentq_batched",
    "fallback_range",
]
