"""Per-item statuses: which rule chose an item's bandwidth or why it is degenerate (:class:`KDEStatus`), the mirror of
the C++ solver's codes (:class:`KernelStatus`, ``csrc/common/brentq.h``) and the one rule for items not to solve."""
from __future__ import annotations

from enum import IntEnum

import torch


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
    NON_FINITE_DENSITY = 8  #: limits so narrow (~1e-150 in float64) that the density overflows: inf, no gradient


class KernelStatus(IntEnum):
    """Status codes of ``kdekit::kde2d_solve``/``kde2d_points`` (``csrc/common/brentq.h``, ``enum Status``)."""

    OK = 0  #: brentq on [0, t_max] converged
    NO_SIGN_CHANGE = 1  #: f(t_max) has the sign of f(0)
    NOT_CONVERGED = 2  #: maxiter iterations
    INVALID = 3  #: no mass, a non-finite spectrum or count, non-finite per-axis times (or pooled blocks)


def initial_status(N: torch.Tensor, has_mass: torch.Tensor, non_finite: torch.Tensor) -> torch.Tensor:
    """(B,) BRENTQ for the items to solve, else why not: NO_POINTS (no valid point, ``N == 0``),
    NO_POINTS_IN_LIMITS (no mass inside the limits: no point there, or an all-zero histogram), NON_FINITE_INPUT (a
    non-finite valid point or histogram entry)."""
    status = torch.where(has_mass, int(KDEStatus.BRENTQ), int(KDEStatus.NO_POINTS_IN_LIMITS))
    status = torch.where(N == 0, int(KDEStatus.NO_POINTS), status)
    return torch.where(non_finite, int(KDEStatus.NON_FINITE_INPUT), status)
