"""Inputs of the diffusion KDE: grid rounding, limits (kde_diffusion's forms and data-derived defaults), points and
masks (the ops' one mask/range parser), chunking, and the small records the 1-D and 2-D paths pass around."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence, Tuple

import torch

from .._checks import check_float_tensor, check_points, check_same, compute_dtype, is_finite, resolve_mask
from .status import initial_status


class Points(NamedTuple):
    """Validated points of one call: ``coords`` (one ``(B, N)`` tensor per axis), ``valid`` (B, N) (mask and finite),
    ``bad_input`` (B,) (a valid point was NaN/inf), ``limits`` (B, D, 2) float64 ``[lo, hi]`` per axis."""

    coords: Tuple[torch.Tensor, ...]
    valid: torch.Tensor
    bad_input: torch.Tensor
    limits: torch.Tensor

    def take(self, idx: torch.Tensor) -> "Points":
        """The items ``idx`` (e.g. to re-solve them on another path)."""
        return Points(tuple(c[idx] for c in self.coords), self.valid[idx], self.bad_input[idx], self.limits[idx])


@dataclass(frozen=True)
class Options:
    """What the caller asked for, beyond the points (see :func:`~kdekit.ops.diffusion_kde.diffusion_kde2d`)."""

    grid: int
    clip_negative: bool = False
    implicit_grad: bool = True
    chunk_size: Optional[int] = None
    pool: Optional[int] = None


def round_grid(grid_size) -> int:
    if isinstance(grid_size, bool) or not isinstance(grid_size, int):
        raise TypeError(f"grid_size must be an int, got {type(grid_size).__name__}")
    if grid_size < 2:
        raise ValueError(f"grid_size must be >= 2, got {grid_size}")
    return 1 << (grid_size - 1).bit_length()


def axis_limits(name: str, spec, values: torch.Tensor, valid: torch.Tensor, margin: float) -> torch.Tensor:
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
        if lo_s is not None and hi_s is not None:  # fixed limits: checked as numbers, no pass over the data
            check_limit_pair(name, float(lo_s), float(hi_s), 0)
            return torch.tensor([float(lo_s), float(hi_s)], dtype=torch.float64, device=dev).expand(B, 2)
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
    bad = ~(torch.isfinite(lo) & torch.isfinite(hi) & (lo < hi))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        check_limit_pair(name, float(lo[i]), float(hi[i]), i)
    return torch.stack([lo, hi], 1)


def check_limit_pair(name: str, lo: float, hi: float, item: int) -> None:
    """Raise unless ``lo < hi``, both finite (``item``: the batch item they belong to, for the message)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite")
    if lo >= hi:
        raise ValueError(f"{name} needs lo < hi, got lo={lo} hi={hi} (item {item})")


def split_limits_2d(limits):
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


def prepare_points(names, arrays, mask, lengths):
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
    finite = is_finite(arrays[0].detach())
    for a in arrays[1:]:
        finite &= is_finite(a.detach())
    if valid is None:  # every point counts: the finite ones are the valid ones
        return arrays, finite, ~finite.all(1)
    return arrays, valid & finite, (valid & ~finite).any(1)


def single_location(arrays, valid) -> torch.Tensor:
    """(B,) True where the item has >= 1 valid point and all valid points coincide."""
    same = valid.any(1)
    for a in arrays:
        v = a.detach()
        first = torch.where(valid, v, torch.inf).amin(1)
        last = torch.where(valid, v, -torch.inf).amax(1)
        same &= first == last
    return same


def default_chunk_bytes(device) -> int:
    """float64 coefficient bytes per chunk of items: 32 MiB on the CPU (cache-sized); on a GPU 1/16 of the free device
    memory within [256 MiB, 4 GiB] (a chunk's intermediates take about ten times its coefficients; large chunks
    mean one launch per op for many items)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(4 * 2**30, max(256 * 2**20, free // 16)))
    return 32 * 2**20


def chunks(B: int, n: int, dim: int, chunk_size: Optional[int], device="cpu"):
    if chunk_size is None:
        chunk_size = max(1, default_chunk_bytes(device) // (8 * n**dim))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return [(s, min(B, s + chunk_size)) for s in range(0, B, chunk_size)]


def concat(parts) -> torch.Tensor:
    """The chunks' results as one tensor (no copy for a single chunk)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def check_histogram(histogram: str) -> None:
    if histogram not in ("hard", "soft"):
        raise ValueError(f"histogram must be 'hard' or 'soft', got {histogram!r}")


def check_pool(pool, n: int) -> None:
    if pool is None:
        return
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1 or n % pool:
        raise ValueError(f"pool must be a positive int dividing the grid size {n}, got {pool!r}")


def check_counts(binned: torch.Tensor) -> None:
    """Histogram counts are >= 0 (NaN/inf entries are flagged per item as NON_FINITE_INPUT, not raised)."""
    negative = binned.detach() < 0
    if bool(negative.any()):
        raise ValueError(f"binned holds {int(negative.sum())} negative count(s) (smallest "
                         f"{float(binned.detach().min())}); histogram counts must be >= 0")


def check_n_points(n_points, B: int, device) -> torch.Tensor:
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


def with_dtype(res, dtype: torch.dtype):
    """A :class:`KDE2dResult`/:class:`KDE1dResult` (computed in the compute dtype) with its floating fields in
    ``dtype`` (t and n_points stay float64)."""
    cast = {f: getattr(res, f).to(dtype) for f in ("density", "xgrid", "ygrid", "grid", "bandwidth") if hasattr(res, f)}
    return res._replace(**cast)


def grids(limits: torch.Tensor, n: int) -> torch.Tensor:
    """(B, D, n) left bin edges of each axis of (B, D, 2) ``limits``."""
    steps = torch.arange(n, dtype=torch.float64, device=limits.device)
    return steps * ((limits[..., 1:] - limits[..., :1]) / n) + limits[..., :1]


class Binned(NamedTuple):
    """A batch ready for the bandwidth solve: ``hist`` (B, n) or (B, n, n) in the compute dtype (rows = x), ``N``
    (B,) float64 points per item, ``limits`` (B, D, 2), ``status0`` (B,) :func:`~.status.initial_status`,
    ``single`` (B,) all points at one location, ``counts``: a hard histogram (its 2-D DCT is summed over the occupied
    bins)."""

    hist: torch.Tensor
    N: torch.Tensor
    limits: torch.Tensor
    status0: torch.Tensor
    single: torch.Tensor
    counts: bool

    def chunk(self, s: int, e: int) -> "Binned":
        return Binned(self.hist[s:e], self.N[s:e], self.limits[s:e], self.status0[s:e], self.single[s:e],
                      self.counts)


def binned_input(binned: torch.Tensor, n_points, limit_specs: Sequence, margin: float) -> Binned:
    """Validate a ``*_binned`` call: ``binned`` (B, n) or (B, n, n) counts >= 0, n a power of two; ``n_points`` a
    number or (B,); one limit spec per axis (no data-derived defaults: the data range is unknown). Items whose
    histogram holds NaN/inf are flagged (NON_FINITE_INPUT) and zeroed, not raised."""
    D = len(limit_specs)
    check_float_tensor("binned", binned, ndim=D + 1)
    check_counts(binned)
    B, n = binned.shape[:2]
    if B == 0:
        raise ValueError("binned is an empty batch; need B >= 1")
    if any(s != n for s in binned.shape[1:]) or n < 2 or n & (n - 1):
        shape = "(B, n)" if D == 1 else "(B, n, n)"
        raise ValueError(f"binned must be {shape} with n a power of two >= 2, got shape {tuple(binned.shape)}")
    dev = binned.device
    N = check_n_points(n_points, B, dev)
    if any(spec is None for spec in limit_specs):
        raise ValueError("limits must be given for binned input (the data range is unknown)")
    dummy = torch.zeros(B, 1, dtype=torch.float64, device=dev)
    no_valid = torch.zeros(B, 1, dtype=torch.bool, device=dev)
    names = ["limits"] if D == 1 else ["limits (x axis)", "limits (y axis)"]
    limits = torch.stack([axis_limits(nm, spec, dummy, no_valid, margin) for nm, spec in zip(names, limit_specs)], 1)
    cdtype = compute_dtype(binned.dtype)
    flat = binned.detach().flatten(1)
    finite = torch.isfinite(flat).all(1)
    status0 = initial_status(N, flat.sum(1) != 0, ~finite)
    single = (flat != 0).sum(1) == 1
    hist = torch.where(finite.view(-1, *[1] * D), binned.to(cdtype), torch.zeros((), dtype=cdtype, device=dev))
    return Binned(hist, N, limits, status0, single, counts=False)


def solve_in_chunks(batch: Binned, opts: Options, core):
    """``core(chunk, opts) -> (density, bandwidth, t, status)`` over memory-bounded chunks of ``batch``, joined."""
    B, n, D = batch.hist.shape[0], batch.hist.shape[1], batch.hist.dim() - 1
    parts = [core(batch.chunk(s, e), opts) for s, e in chunks(B, n, D, opts.chunk_size, batch.hist.device)]
    return tuple(concat(p) for p in zip(*parts))
