"""Declarative benchmark registry: every timed thing is a :class:`Case` (workload, variant, contender).

A *group* is the cases of one (workload, variant): they share ONE item set, and :mod:`bench.runner` times them side by
side in interleaved rounds. A case's ``setup()`` builds its inputs on the benchmark device (untimed) and returns the
timed closure, which returns ``None`` or a dict of per-call facts (e.g. how many items raised).

Same items: kdekit rows (every backend, and ``labels_from_ratings``) always process the group's whole item set in one
timed call. Slow contenders (the per-item ``kde_diffusion`` / ``lightkde`` loops and, on the CPU, the seed-style
baseline) may process every k-th item of the same set (``items < total``); the runner scales their times by
``total / items`` and the row's note says so. W2 contenders get the same tensors and reseed the same generator seed
at every call (each call draws the same pseudo-observations).

Ratios are to the group's reference row (``ref=True``): kdekit on its default backend (what ``import kdekit`` gives
without ``use_backend``). W6 (import overhead) reports a difference to its reference row (``import torch``) instead.

Workloads: W1 labels, W2 training step, W3 metrics, W4 scaling sweeps (:class:`Sweep`, kdekit only), W5 single
``kde2d`` calls (the drop-in vs KDE-diffusion), W6 ``import kdekit`` overhead. Targets: :data:`TARGETS`.

Sizes per mode live in :data:`MODES`: ``full`` (``python -m bench``), ``quick`` (``--quick``), ``smoke``
(``pytest bench --benchmark-disable``: tiny sizes, each closure runs once).
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from bench import workloads
from bench.baselines import seed as seed_baseline

UNIT_SQUARE = ((-1.0, 1.0), (-1.0, 1.0))
K = 4  # pooled table size
W2_SHARPNESS = 8.0
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")


@dataclass(frozen=True)
class Sizes:
    name: str
    w1_corpus: int  # utterances of the W1 corpus (the workload: 1300)
    w1_items: int  # utterances in the W1 item set on the CPU: all of the corpus, or a spread subset of it
    w1_items_gpu: int  # ... on a GPU
    w1_grid: int
    w1_loop_items: int  # per-item loops (kde_diffusion, lightkde): about this many items, every k-th of the set
    w1_seed_items: int  # seed-style baseline on the CPU: about this many items, every k-th (on a GPU: the whole set)
    w1_seed_chunk: int  # seed items per batch on the CPU (~30 MiB per item at grid 512); on a GPU one batch
    w1_warmup_items: int  # CPU warm-up call: the first items of the set (on a GPU: a whole call)
    w1_memory_sweep: Tuple[int, ...]  # utterances of the kdekit default-row memory sweep (spread over the corpus)
    w2_batch: int
    w2_annotators: Tuple[int, ...]
    w2_dtypes: Tuple[torch.dtype, ...]
    w2_grid: int
    w3_rows: int  # CCC (rows, 2) and JSD/TVD (rows, 4, 4)
    w3_masked: Tuple[int, int]  # CCC (rows, cols) with a ragged mask
    w5_items: int  # single-call workload: items (one per call), spread over the W1 corpus
    w5_grids: Tuple[int, ...]
    w4: Dict[str, Tuple[int, ...]]  # "B" / "N" / "n" -> values swept
    w4_base: Dict[str, Dict[str, int]]  # "W1" / "W2" -> base point {"B", "N", "n"}
    w4_point_s: float  # a sweep stops after a point predicted slower than this
    budget_s: Dict[str, float]  # time budget per group (per point for W4), by workload
    min_rounds: int = 3  # rounds every contender gets, whatever the budget
    slow_min_rounds: int = 3  # ... for slow contenders (per-item loops, the W1 seed baseline)
    w6_min_rounds: int = 10  # import overhead: interpreter start-up is noisy
    max_rounds: int = 200
    memory: bool = True  # peak memory per row (fresh subprocess each)

    def w1_count(self, device) -> int:
        return self.w1_items_gpu if on_gpu(device) else self.w1_items


MODES = {
    "full": Sizes(
        "full", 1300, 1300, 1300, 512, 100, 100, 16, 16, (130, 650, 1300),
        32, (8, 50, 1434), (torch.float32, torch.float16), 64, 1300, (32, 1434), 40, (64, 256),
        {"B": (32, 1300, 13000), "N": (8, 50, 200, 1434), "n": (64, 128, 256, 512)},
        {"W1": {"B": 32, "N": 200, "n": 64}, "W2": {"B": 32, "N": 8, "n": 64}}, 20.0,
        {"W1": 60.0, "W2": 10.0, "W3": 2.0, "W4": 1.0, "W5": 10.0, "W6": 30.0},
    ),
    "quick": Sizes(
        "quick", 1300, 130, 1300, 512, 10, 10, 16, 16, (130, 650, 1300),
        32, (8, 50), (torch.float32, torch.float16), 64, 1300, (32, 1434), 40, (64, 256),
        {"B": (32, 320, 1300), "N": (8, 50, 200), "n": (64, 128, 256)},
        {"W1": {"B": 16, "N": 200, "n": 64}, "W2": {"B": 32, "N": 8, "n": 64}}, 4.0,
        {"W1": 5.0, "W2": 3.0, "W3": 0.5, "W4": 0.3, "W5": 2.0, "W6": 0.0},
        slow_min_rounds=1, w6_min_rounds=3, memory=False,
    ),
    "smoke": Sizes(
        "smoke", 8, 8, 8, 64, 2, 2, 16, 2, (4, 8),
        4, (8,), (torch.float32, torch.float16), 64, 64, (4, 64), 2, (64,),
        {"B": (2, 4), "N": (8, 50), "n": (32, 64)},
        {"W1": {"B": 2, "N": 50, "n": 32}, "W2": {"B": 2, "N": 8, "n": 32}}, 60.0,
        {w: 0.0 for w in WORKLOADS}, min_rounds=1, slow_min_rounds=1, w6_min_rounds=1, memory=False,
    ),
}


@dataclass
class Case:
    workload: str
    variant: str
    contender: str
    setup: Callable[[], Callable[[], Optional[dict]]]
    items: int = 1  # items processed per timed call
    total: int = 1  # items in the group's item set (a time is scaled by total / items when items < total)
    ref: bool = False  # the group's reference row (kdekit's default backend; W6: import torch)
    kdekit: bool = False  # a kdekit row (always the whole item set)
    on_device: bool = True  # runs on the benchmark device (False: numpy / CPU-only contender)
    warmup: bool = True  # one untimed call first (the pytest-benchmark path; the runner: see warmup_setup)
    warmup_setup: Optional[Callable[[], Callable[[], object]]] = None  # a cheaper warm-up: same contender, few items
    slow: bool = False  # may get fewer rounds (Sizes.slow_min_rounds) once the group's budget is spent
    calls: int = 1  # calls per timed closure (W5: one call per item); times are reported per call
    min_rounds: Optional[int] = None  # overrides Sizes.min_rounds / slow_min_rounds
    subset: str = ""  # which items of the set a subset row runs, in words (e.g. "every 13-th item")
    compare: str = "ratio"  # "ratio" (median / ref median) or "difference" (median - ref median, W6)
    memory: bool = True  # peak memory measured for this row (python -m bench, W1 and W2)
    note: str = ""

    @property
    def id(self) -> str:
        return f"{self.workload}|{self.variant}|{self.contender}"

    @property
    def group(self) -> Tuple[str, str]:
        return self.workload, self.variant

    @property
    def scale(self) -> float:
        return self.total / self.items


@dataclass
class Sweep:
    workload: str  # "W1" or "W2"
    axis: str  # "B", "N" or "n"
    values: Sequence[int]
    make: Callable[[int], Callable[[], None]]  # value -> timed closure (inputs built, untimed)
    expected: str  # expected growth exponent, in words
    base: Dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """A target stated in the results table.

    kind ``speedup``: median of ``contender`` / median of the group's kdekit reference row >= value.
    kind ``memory``: peak memory of one call of the reference row, MB (10^6 bytes) above its inputs, <= value, at the
    full item set and flat over :attr:`Sizes.w1_memory_sweep` (peak at the largest <= 1.25 x the smallest + 32 MiB).
    kind ``overhead``: median of ``contender`` - median of the reference row (seconds) <= value.
    """

    label: str
    workload: str
    variant_has: Tuple[str, ...]  # substrings of the group's variant
    contender: str  # prefix of the compared row's contender name
    kind: str
    value: float
    full_items: Optional[int] = None  # the item count the target is stated for (W1: 1300 utterances)


TARGETS = (
    Target("W1 labels, 1300 utterances, grid 512: kdekit >= 50x the kde_diffusion.kde2d loop", "W1", ("grid 512",),
           "kde_diffusion.kde2d loop", "speedup", 50.0, 1300),
    Target("W1 labels, 1300 utterances, grid 512: kdekit <= 500 MB above its inputs, flat in utterances", "W1",
           ("grid 512",), "", "memory", 500.0, 1300),
    Target("W2 32 x 8, float32, fwd+bwd: kdekit >= 70x the seed-style baseline", "W2",
           ("32 x 8 predictions", "float32"), "seed baseline", "speedup", 70.0),
    Target("W2 32 x 50, float32, fwd+bwd: kdekit >= 40x the seed-style baseline", "W2",
           ("32 x 50 predictions", "float32"), "seed baseline", "speedup", 40.0),
    Target("W2 32 x 1434, float32, fwd+bwd: kdekit >= 10x the seed-style baseline", "W2",
           ("32 x 1434 predictions", "float32"), "seed baseline", "speedup", 10.0),
    Target("W5 single call, grid 64: kdekit.kde2d >= 1x kde_diffusion.kde2d per call", "W5", ("grid 64,",),
           "kde_diffusion.kde2d", "speedup", 1.0),
    Target("W5 single call, grid 256: kdekit.kde2d >= 1x kde_diffusion.kde2d per call", "W5", ("grid 256,",),
           "kde_diffusion.kde2d", "speedup", 1.0),
    Target("W6 import kdekit over import torch <= 0.3 s", "W6", ("",), "python -c 'import torch, kdekit'",
           "overhead", 0.3),
)


def on_gpu(device) -> bool:
    return str(device).startswith("cuda")


# ---- kdekit (public API only: kdekit.*, kdekit.use_backend, kdekit.backends) ----


def default_backend(device, float64: bool = False) -> str:
    """What kdekit's automatic choice is on ``device`` (``kdekit.backends()`` and the documented rule): on the CPU
    ``cpp`` when ``kdekit._C`` loaded, else ``torch``; on a GPU a mix per op and dtype (``auto``)."""
    import kdekit

    if on_gpu(device):
        return "auto"
    return "cpp" if kdekit.backends()["cpp"][0] else "torch"


def kdekit_backends(device, float64: bool = False) -> List[str]:
    """Forced kdekit backends to time on ``device`` besides the default row: the available ones of
    ``kdekit.backends()`` that run there (never the Triton interpreter on CPU; not Triton for float64 work, which it
    hands to the torch path), except the one the default resolves to on the CPU (that row would repeat the default)."""
    import kdekit

    runs_on = ("torch", "cuda") + (() if float64 else ("triton",)) if on_gpu(device) else ("torch", "cpp")
    default = default_backend(device, float64)
    return [name for name, (available, _) in kdekit.backends().items()
            if available and name in runs_on and name != default]


def _with_backend(backend: Optional[str], fn: Callable):
    """``fn`` under ``kdekit.use_backend(backend)``; ``None`` = kdekit's automatic choice."""
    if backend is None:
        return fn
    import kdekit

    def run():
        with kdekit.use_backend(backend):
            return fn()

    return run


def _kdekit_name(backend: Optional[str], device, float64: bool = False) -> str:
    return f"kdekit[default={default_backend(device, float64)}]" if backend is None else f"kdekit[{backend}]"


def kdekit_labels(x: torch.Tensor, y: torch.Tensor, grid: int):
    """W1's kdekit call: hard-histogram diffusion KDE of points ``(B, 200)`` on [-1, 1]^2, negatives clipped (as the
    seed), pooled to ``K x K`` block probabilities in the call (``pool=K``: no ``(B, n, n)`` density is kept)."""
    import kdekit

    return kdekit.diffusion_kde2d(x, y, grid_size=grid, limits=UNIT_SQUARE, clip_negative=True, implicit_grad=False,
                                  pool=K)


def _kdekit_loss(ratings: torch.Tensor, target: torch.Tensor, grid: int, generator: torch.Generator) -> torch.Tensor:
    import kdekit

    obs = kdekit.pseudo_observations(ratings, generator=generator)
    table = kdekit.points_to_distribution(obs[..., 0], obs[..., 1], k=target.shape[-1], grid=grid,
                                          sharpness=W2_SHARPNESS, clip_negative=True).probs
    return -(target * torch.log(table + 1e-8)).sum((-2, -1)).mean()


# ---- W1 labels ----


def pool_numpy(density: np.ndarray) -> np.ndarray:
    """Block means of an ``(n, n)`` density to ``K x K``, divided by their sum (what kdekit's ``pool`` returns)."""
    n = density.shape[0]
    blocks = density.reshape(K, n // K, K, n // K).mean((1, 3))
    return blocks / blocks.sum()


def kde_diffusion_tables(x: np.ndarray, y: np.ndarray, grid: int) -> Tuple[List[Optional[np.ndarray]], int]:
    """W1 with ``kde_diffusion.kde2d``, one item at a time: pooled tables (None where it raises) and the raise count."""
    from kde_diffusion import kde2d

    eps = np.finfo(np.float64).eps
    out, failed = [], 0
    for xb, yb in zip(x, y):
        try:
            density, _, _ = kde2d(xb, yb, grid, UNIT_SQUARE)
        except ValueError:
            failed += 1
            out.append(None)
            continue
        out.append(pool_numpy(np.where(density < 0, eps, density)))  # the seed clipped negatives to eps
    return out, failed


def lightkde_tables(x: np.ndarray, y: np.ndarray, grid: int) -> List[np.ndarray]:
    from lightkde import kde_2d

    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    return [pool_numpy(kde_2d(np.stack([xb, yb], 1), grid, lo, hi)[0].T) for xb, yb in zip(x, y)]  # image order


def seed_tables(x: torch.Tensor, y: torch.Tensor, grid: int, chunk: int) -> Tuple[List[Optional[torch.Tensor]], int]:
    """W1 with the seed-style batched pipeline in batches of ``chunk`` items (a batch with one unbracketed item
    raises as a whole: its tables are None)."""
    out, failed = [], 0
    for s in range(0, len(x), chunk):
        try:
            out.append(seed_baseline.pool(seed_baseline.kde2d(x[s:s + chunk], y[s:s + chunk], grid, soft=False)[0], K))
        except seed_baseline.BracketError:
            failed += 1
            out.append(None)
    return out, failed


def w1_variant(sizes: Sizes, device) -> str:
    items, corpus = sizes.w1_count(device), sizes.w1_corpus
    head = f"{items} utterances x {seed_baseline.PSEUDO_OBSERVATIONS} points, grid {sizes.w1_grid}, float64"
    return head if items >= corpus else f"{head} (spread subset of the {corpus}-utterance corpus)"


def w1_cases(sizes: Sizes, device) -> List[Case]:
    import kdekit

    n, gpu = sizes.w1_grid, on_gpu(device)
    total = sizes.w1_count(device)
    variant = w1_variant(sizes, device)
    x_all, y_all, a_all, v_all = workloads.label_item_set(sizes.w1_corpus, total)
    loop_idx = workloads.every_kth(total, sizes.w1_loop_items)
    seed_idx = torch.arange(total) if gpu else workloads.every_kth(total, sizes.w1_seed_items)
    seed_chunk = total if gpu else sizes.w1_seed_chunk
    warm_idx = torch.arange(min(total, sizes.w1_warmup_items))

    def loop(fn, idx):
        def setup():
            x, y = x_all[idx].numpy(), y_all[idx].numpy()
            return lambda: fn(x, y)

        return setup

    def kde_diffusion_loop(x, y):
        return {"raised": kde_diffusion_tables(x, y, n)[1]}

    def lightkde_loop(x, y):
        lightkde_tables(x, y, n)

    def seed_batched(idx):
        def setup():
            x, y = x_all[idx].to(device), y_all[idx].to(device)
            return lambda: {"raised batches": seed_tables(x, y, n, seed_chunk)[1]}

        return setup

    def kdekit_points(backend, idx):
        def setup():
            x, y = x_all[idx].to(device), y_all[idx].to(device)

            def run():
                res = kdekit_labels(x, y, n)
                return {"not brentq": int((~res.converged).sum())}

            return _with_backend(backend, run)

        return setup

    def kdekit_ratings(idx):
        def setup():
            ratings = torch.stack([a_all[idx], v_all[idx]], -1).to(device)
            g = torch.Generator(device=device)

            def run():
                g.manual_seed(workloads.SEED)
                res = kdekit.labels_from_ratings(ratings, grid=n, generator=g, clip_negative=True)
                return {"not brentq": int((~res.converged).sum())}

            return run

        return setup

    def every(idx):
        return f"every {int(idx[1] - idx[0]) if len(idx) > 1 else total}-th item"

    loops = len(loop_idx)
    cases = [
        Case("W1", variant, "kde_diffusion.kde2d loop", loop(kde_diffusion_loop, loop_idx), loops, total,
             on_device=False, slow=True, warmup_setup=loop(kde_diffusion_loop, loop_idx[:1]), subset=every(loop_idx),
             note="kde_diffusion raises on unbracketed items (count in facts)"),
        Case("W1", variant, "lightkde.kde_2d loop", loop(lightkde_loop, loop_idx), loops, total, on_device=False,
             slow=True, warmup_setup=loop(lightkde_loop, loop_idx[:1]), subset=every(loop_idx)),
        Case("W1", variant, f"seed baseline (batched, {'one batch' if gpu else f'batches of {seed_chunk}'})",
             seed_batched(seed_idx), len(seed_idx), total, slow=True,
             warmup_setup=None if gpu else seed_batched(seed_idx[:2]), subset=every(seed_idx),
             note="a batch with an unbracketed item raises as a whole (count in facts)"),
    ]
    for backend in [None] + kdekit_backends(device, float64=True):
        cases.append(Case("W1", variant, f"{_kdekit_name(backend, device, True)} diffusion_kde2d(pool=4)",
                          kdekit_points(backend, torch.arange(total)), total, total, ref=backend is None, kdekit=True,
                          warmup_setup=None if gpu else kdekit_points(backend, warm_idx)))
    cases.append(Case("W1", variant, f"{_kdekit_name(None, device, True)} labels_from_ratings (incl. upsampling)",
                      kdekit_ratings(torch.arange(total)), total, total, kdekit=True,
                      warmup_setup=None if gpu else kdekit_ratings(warm_idx),
                      note="input: the ratings the points came from"))
    return cases


def w1_memory_case(sizes: Sizes, device, items: int) -> Case:
    """The kdekit default W1 row on ``items`` utterances of the corpus (the memory sweep)."""
    from dataclasses import replace

    sized = replace(sizes, w1_items=items, w1_items_gpu=items)
    return next(c for c in w1_cases(sized, device) if c.ref)


# ---- W2 training loss ----


def _w2_inputs(batch: int, annotators: int, dtype: torch.dtype, device):
    a, v = workloads.annotator_predictions(batch, annotators)
    target = workloads.target_tables(batch, K).to(device=device, dtype=dtype)
    return a.to(device=device, dtype=dtype), v.to(device=device, dtype=dtype), target


def w2_seed_step(batch: int, annotators: int, dtype: torch.dtype, grid: int, device) -> Callable[[], torch.Tensor]:
    """One seed-style training step (forward + backward; returns the loss); the generator is reseeded every call."""
    a, v, target = _w2_inputs(batch, annotators, dtype, device)
    a.requires_grad_(True)
    v.requires_grad_(True)
    g = torch.Generator(device=device)

    def step():
        g.manual_seed(workloads.SEED)
        a.grad = v.grad = None
        loss = seed_baseline.training_loss(a, v, target, grid=grid, sharpness=W2_SHARPNESS, generator=g)
        loss.backward()
        return loss.detach()

    return step


def w2_kdekit_step(batch: int, annotators: int, dtype: torch.dtype, grid: int, device,
                   backend: Optional[str] = None):
    """One kdekit training step (forward + backward; returns the loss) on ``backend`` (None: kdekit's default); the
    generator is reseeded every call."""
    a, v, target = _w2_inputs(batch, annotators, dtype, device)
    ratings = torch.stack([a, v], -1).requires_grad_(True)
    g = torch.Generator(device=device)

    def step():
        g.manual_seed(workloads.SEED)
        ratings.grad = None
        loss = _kdekit_loss(ratings, target, grid, g)
        loss.backward()
        return loss.detach()

    return _with_backend(backend, step)


def w2_cases(sizes: Sizes, device) -> List[Case]:
    cases = []
    B, n = sizes.w2_batch, sizes.w2_grid
    for dtype in sizes.w2_dtypes:
        for R in sizes.w2_annotators:
            variant = f"{B} x {R} predictions, grid {n}, {str(dtype).replace('torch.', '')}, fwd+bwd"
            cases.append(Case("W2", variant, "seed baseline", functools.partial(w2_seed_step, B, R, dtype, n, device),
                              B, B, note="incl. 200 pseudo-observations per utterance"))
            for backend in [None] + kdekit_backends(device):
                setup = functools.partial(w2_kdekit_step, B, R, dtype, n, device, backend)
                cases.append(Case("W2", variant, f"{_kdekit_name(backend, device)} pseudo_observations+"
                                  "points_to_distribution", setup, B, B, ref=backend is None, kdekit=True))
    return cases


# ---- W3 metrics ----


def _scipy_ccc(pred: np.ndarray, target: np.ndarray, axis: int) -> np.ndarray:
    from scipy.stats import pearsonr

    r = pearsonr(pred, target, axis=axis).statistic
    vp, vt = pred.var(axis=axis, ddof=1), target.var(axis=axis, ddof=1)
    diff = pred.mean(axis=axis) - target.mean(axis=axis)
    return 2 * r * np.sqrt(vp * vt) / (vp + vt + diff**2)


def w3_cases(sizes: Sizes, device) -> List[Case]:
    from scipy.spatial.distance import jensenshannon
    from torchmetrics.functional import concordance_corrcoef, kl_divergence

    from kdekit import ccc, jsd, tvd

    def W3(variant, contender, setup, **kw):
        return Case("W3", variant, contender, setup, memory=False, **kw)

    cases = []
    # CCC over (rows, 2), reduced over the rows
    full = workloads.ccc_inputs(sizes.w3_rows, 2, masked=False)
    variant = f"CCC ({sizes.w3_rows}, 2) over dim 0, unbiased"

    def on_dev(*ts):
        return [t.to(device) for t in ts]

    def tm_ccc():
        p, t = on_dev(full.pred, full.target)
        return lambda: concordance_corrcoef(p, t)

    def scipy_ccc():
        p, t = full.pred.numpy(), full.target.numpy()
        return lambda: _scipy_ccc(p, t, 0)

    def seed_ccc():
        p, t = full.pred.numpy(), full.target.numpy()
        return lambda: [seed_baseline.ccc(p[:, d], t[:, d]) for d in range(p.shape[1])]

    def kdekit_ccc():
        p, t = on_dev(full.pred, full.target)
        return lambda: ccc(p, t, dim=0, unbiased=True)

    cases += [
        W3(variant, "torchmetrics concordance_corrcoef", tm_ccc),
        W3(variant, "scipy pearsonr + numpy moments", scipy_ccc, on_device=False),
        W3(variant, "seed ccc (numpy, per column)", seed_ccc, on_device=False),
        W3(variant, "kdekit ccc", kdekit_ccc, ref=True, kdekit=True),
    ]

    # CCC over ragged rows (mask)
    rows, cols = sizes.w3_masked
    ragged = workloads.ccc_inputs(rows, cols, masked=True)
    variant = f"CCC ({rows}, {cols}) masked rows, unbiased"

    def tm_ccc_masked():
        p, t, m = on_dev(ragged.pred, ragged.target, ragged.mask)
        return lambda: [concordance_corrcoef(p[b][m[b]], t[b][m[b]]) for b in range(rows)]

    def scipy_ccc_masked():
        p, t, m = ragged.pred.numpy(), ragged.target.numpy(), ragged.mask.numpy()
        return lambda: [_scipy_ccc(p[b][m[b]], t[b][m[b]], 0) for b in range(rows)]

    def seed_ccc_masked():
        p, t, m = ragged.pred.numpy(), ragged.target.numpy(), ragged.mask.numpy()
        return lambda: [seed_baseline.ccc(p[b][m[b]], t[b][m[b]]) for b in range(rows)]

    def kdekit_ccc_masked():
        p, t, m = on_dev(ragged.pred, ragged.target, ragged.mask)
        return lambda: ccc(p, t, dim=-1, mask=m, unbiased=True)

    cases += [
        W3(variant, "torchmetrics concordance_corrcoef (row loop)", tm_ccc_masked),
        W3(variant, "scipy pearsonr + numpy moments (row loop)", scipy_ccc_masked, on_device=False),
        W3(variant, "seed ccc (row loop)", seed_ccc_masked, on_device=False),
        W3(variant, "kdekit ccc (mask)", kdekit_ccc_masked, ref=True, kdekit=True),
    ]

    # JSD and TVD over (rows, 4, 4) tables
    p_tab, q_tab = workloads.distribution_pairs(sizes.w3_rows, K)
    flat = (p_tab.reshape(len(p_tab), -1).numpy(), q_tab.reshape(len(q_tab), -1).numpy())
    variant = f"JSD ({sizes.w3_rows}, {K}, {K}), natural log"

    def tm_jsd():
        p, q = on_dev(p_tab.flatten(1), q_tab.flatten(1))

        def run():
            m = (p + q) / 2
            return 0.5 * kl_divergence(p, m, reduction="none") + 0.5 * kl_divergence(q, m, reduction="none")

        return run

    def kdekit_jsd():
        p, q = on_dev(p_tab, q_tab)
        return lambda: jsd(p, q, dim=(-2, -1))

    cases += [
        W3(variant, "torchmetrics kl_divergence x2", tm_jsd),
        W3(variant, "scipy jensenshannon(axis=1)**2", lambda: lambda: jensenshannon(*flat, axis=1) ** 2,
           on_device=False),
        W3(variant, "seed jsd (numpy)", lambda: lambda: seed_baseline.jsd(*flat), on_device=False),
        W3(variant, "kdekit jsd", kdekit_jsd, ref=True, kdekit=True),
    ]

    variant = f"TVD ({sizes.w3_rows}, {K}, {K})"

    def kdekit_tvd():
        p, q = on_dev(p_tab, q_tab)
        return lambda: tvd(p, q, dim=(-2, -1))

    cases += [
        W3(variant, "numpy 0.5*|p-q|.sum", lambda: lambda: 0.5 * np.abs(flat[0] - flat[1]).sum(-1),
           on_device=False, note="neither scipy nor torchmetrics has a TVD"),
        W3(variant, "seed total_variation_1d (numpy)", lambda: lambda: seed_baseline.total_variation_1d(*flat),
           on_device=False, note="computes sum (p-q)^2, not the TVD"),
        W3(variant, "kdekit tvd", kdekit_tvd, ref=True, kdekit=True),
    ]
    return cases


# ---- W5 single calls: the drop-in kdekit.kde2d vs kde_diffusion.kde2d ----


def w5_items(sizes: Sizes) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The single-call items: ``w5_items`` utterances spread over the W1 corpus, 200 float64 points each."""
    x, y = workloads.label_points(sizes.w1_corpus)
    idx = workloads.spread(sizes.w1_corpus, sizes.w5_items)
    return [(x[i].numpy(), y[i].numpy()) for i in idx.tolist()]


def w5_cases(sizes: Sizes, device) -> List[Case]:
    from kde_diffusion import kde2d as kde_diffusion_kde2d

    import kdekit

    items = w5_items(sizes)
    cases = []
    for n in sizes.w5_grids:
        variant = f"one item (200 points) per call, grid {n}, float64 numpy in and out, {len(items)} items"

        def kde_diffusion_calls(part, n=n):
            def run():
                raised = 0
                for xb, yb in part:
                    try:
                        kde_diffusion_kde2d(xb, yb, n, UNIT_SQUARE)
                    except ValueError:
                        raised += 1
                return {"raised": raised}

            return lambda: run

        def kdekit_calls(part, n=n):
            def run():
                with warnings.catch_warnings():  # where kde_diffusion raises, the drop-in warns and falls back
                    warnings.simplefilter("ignore", RuntimeWarning)
                    for xb, yb in part:
                        kdekit.kde2d(xb, yb, n, UNIT_SQUARE)

            return lambda: run

        common = {"items": len(items), "total": len(items), "calls": len(items), "on_device": False, "memory": False}
        cases += [
            Case("W5", variant, "kde_diffusion.kde2d", kde_diffusion_calls(items),
                 warmup_setup=kde_diffusion_calls(items[:1]), **common),
            Case("W5", variant, f"kdekit.kde2d (drop-in, default backend={default_backend('cpu')})",
                 kdekit_calls(items), warmup_setup=kdekit_calls(items[:1]), ref=True, kdekit=True,
                 note="kdekit.compat.kde2d: same signature and return values", **common),
        ]
    return cases


# ---- W6 import overhead ----


def _import_env() -> Dict[str, str]:
    """The environment of the import subprocesses: this process's, with the directory kdekit was imported from first
    on PYTHONPATH (a source tree imports the same kdekit as here)."""
    import kdekit

    env = dict(os.environ)
    root = str(Path(kdekit.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def w6_cases(sizes: Sizes, device) -> List[Case]:
    variant = "a fresh interpreter: python -c '<imports>' (wall time of the process)"
    env = _import_env()

    def interpreter(code):
        def setup():
            def run():
                subprocess.run([sys.executable, "-c", code], env=env, check=True, stdout=subprocess.DEVNULL)

            return run

        return setup

    common = {"on_device": False, "memory": False, "compare": "difference", "min_rounds": sizes.w6_min_rounds}
    return [
        Case("W6", variant, "python -c 'import torch'", interpreter("import torch"), ref=True, **common),
        Case("W6", variant, "python -c 'import torch, kdekit'", interpreter("import torch, kdekit"), kdekit=True,
             note="difference to import torch: median of the per-round differences", **common),
    ]


# ---- W4 scaling ----


def w4_sweeps(sizes: Sizes, device) -> List[Sweep]:
    """kdekit (default backend) cost of W1 (hard, float64, forward, pooled in the call) and W2 (soft, float32,
    fwd+bwd) as B, N, n grow."""
    sweeps = []
    w1, w2 = sizes.w4_base["W1"], sizes.w4_base["W2"]

    def w1_point(axis):
        def make(value):
            p = dict(w1, **{axis: value})
            a, v = workloads.likert_ratings(p["B"])
            x, y = seed_baseline.pseudo_observations(a, v, count=p["N"], generator=torch.Generator().manual_seed(1))
            x, y = x.to(device), y.to(device)
            return lambda: kdekit_labels(x, y, p["n"])

        return make

    def w2_point(axis):
        def make(value):
            p = dict(w2, **{axis: value})
            return w2_kdekit_step(p["B"], p["N"], torch.float32, p["n"], device)

        return make

    expected = {
        ("W1", "B"): "1",
        ("W1", "N"): "~0 (binning O(N) is small next to the O(n^2) fixed point)",
        ("W1", "n"): "2-3 (psi forms n^2, DCT n^2 log n .. n^3)",
        ("W2", "B"): "1",
        ("W2", "N"): "0..1 (upsampling O(200 N); the KDE sees 200 points whatever N)",
        ("W2", "n"): "2-3 (soft histogram 200 n^2, DCT n^2 log n .. n^3)",
    }
    for workload, base, point in (("W1", w1, w1_point), ("W2", w2, w2_point)):
        for axis in ("B", "N", "n"):
            sweeps.append(Sweep(workload, axis, sizes.w4[axis], point(axis), expected[(workload, axis)], base))
    return sweeps


def all_cases(sizes: Sizes, device, only: Optional[Sequence[str]] = None) -> List[Case]:
    builders = {"W1": w1_cases, "W2": w2_cases, "W3": w3_cases, "W5": w5_cases, "W6": w6_cases}
    return [c for w, build in builders.items() if only is None or w in only for c in build(sizes, device)]
