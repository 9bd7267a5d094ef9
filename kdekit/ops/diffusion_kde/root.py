"""Root finding for a batch: scipy's ``brentq`` step for step with per-item state (the Python twin of
``csrc/common/brentq.h``: the same steps and stopping rule, so iterates match kde_diffusion's), then the fallback rules
for the items it does not solve (Botev's 2015 smallest root / min ``|f|`` on ``[one bin, 0.1]``)."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .status import KDEStatus

# kde_diffusion's brentq: bracket [0, 0.1], xtol 2e-12, rtol 4 eps, 100 iterations (passed to the C++ solver too)
BRENTQ_XTOL = 2e-12
BRENTQ_RTOL = 4 * torch.finfo(torch.float64).eps
BRENTQ_MAXITER = 100
BRACKET = (0.0, 0.1)
SCAN_RATIO = math.sqrt(2.0)  # log-scan step of the fallback rules

FixedPointFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def brentq_batched(
    fn: FixedPointFn,
    xa: torch.Tensor,
    xb: torch.Tensor,
    *,
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
