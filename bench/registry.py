"""Declarative benchmark registry: every timed thing is a :class:`Case` (workload, variant, contender).

A case's ``setup()`` builds its inputs on the benchmark device (untimed) and returns the timed closure, which
returns ``None`` or a dict of per-call facts (e.g. how many items raised). Slow Python-loop and seed contenders run
on ``items`` of the workload's ``total`` items; the runner scales their times by ``total / items`` and says so.
W4 is a set of :class:`Sweep` objects (one parameter grows, the rest stay at a base point).

Sizes per mode live in :data:`MODES`: ``full`` (``python -m bench``), ``quick`` (``--quick``), ``smoke``
(``pytest bench --benchmark-disable``: tiny sizes, each closure runs once).
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from bench import workloads
from bench.baselines import seed as seed_baseline

UNIT_SQUARE = ((-1.0, 1.0), (-1.0, 1.0))
K = 4  # pooled table size
W2_SHARPNESS = 8.0


@dataclass(frozen=True)
class Sizes:
    name: str
    w1_batch: int  # utterances in W1
    w1_grid: int
    w1_items: Dict[str, int]  # contender group -> items timed per call ("loop", "seed", "kdekit")
    w2_batch: int
    w2_annotators: Tuple[int, ...]
    w2_dtypes: Tuple[torch.dtype, ...]
    w2_grid: int
    w3_rows: int  # CCC (rows, 2) and JSD/TVD (rows, 4, 4)
    w3_masked: Tuple[int, int]  # CCC (rows, cols) with a ragged mask
    w4: Dict[str, Tuple[int, ...]]  # "B" / "N" / "n" -> values swept
    w4_base: Dict[str, Dict[str, int]]  # "W1" / "W2" -> base point {"B", "N", "n"}
    budget_s: float  # timing budget per case
    w4_point_s: float  # a sweep stops after a point slower than this
    memory: bool = True


MODES = {
    "full": Sizes(
        "full", 1300, 512, {"loop": 100, "seed": 16, "kdekit": 32}, 32, (8, 50, 1434),
        (torch.float32, torch.float16), 64, 1300, (32, 1434),
        {"B": (32, 1300, 13000), "N": (8, 50, 200, 1434), "n": (64, 128, 256, 512)},
        {"W1": {"B": 32, "N": 200, "n": 64}, "W2": {"B": 32, "N": 8, "n": 64}}, 3.0, 20.0,
    ),
    "quick": Sizes(
        "quick", 1300, 512, {"loop": 20, "seed": 4, "kdekit": 8}, 32, (8, 50),
        (torch.float32, torch.float16), 64, 1300, (32, 1434),
        {"B": (32, 320, 1300), "N": (8, 50, 200), "n": (64, 128, 256)},
        {"W1": {"B": 16, "N": 200, "n": 64}, "W2": {"B": 32, "N": 8, "n": 64}}, 1.0, 4.0, memory=False,
    ),
    "smoke": Sizes(
        "smoke", 8, 64, {"loop": 2, "seed": 2, "kdekit": 2}, 4, (8,), (torch.float32, torch.float16), 64,
        64, (4, 64), {"B": (2, 4), "N": (8, 50), "n": (32, 64)},
        {"W1": {"B": 2, "N": 50, "n": 32}, "W2": {"B": 2, "N": 8, "n": 32}}, 0.0, 60.0, memory=False,
    ),
}


@dataclass
class Case:
    workload: str
    variant: str
    contender: str
    setup: Callable[[], Callable[[], Optional[dict]]]
    items: int = 1  # items processed per timed call
    total: int = 1  # items in the workload (time is scaled by total / items)
    is_kdekit: bool = False  # ratios are to the fastest kdekit case of the same (workload, variant)
    on_device: bool = True  # runs on the benchmark device (False: numpy / CPU-only contender)
    warmup: bool = True  # one untimed call first (False for pure-Python/numpy loops)
    note: str = ""

    @property
    def id(self) -> str:
        return f"{self.workload}|{self.variant}|{self.contender}"


@dataclass
class Sweep:
    workload: str  # "W1" or "W2"
    axis: str  # "B", "N" or "n"
    values: Sequence[int]
    make: Callable[[int], Callable[[], None]]  # value -> timed closure (inputs built, untimed)
    expected: str  # expected growth exponent, in words
    base: Dict[str, int] = field(default_factory=dict)


# ---- kdekit ----


def kdekit_backends(device, float64: bool = False) -> List[str]:
    """kdekit backends to time on ``device``: the available ones of ``kdekit.backends()`` that run there (never the
    Triton interpreter on CPU; not Triton for float64 work, which it hands to the torch path), else ``["torch"]``.
    On a GPU also ``"auto"``: kdekit's own per-op choice (Triton and CUDA kernels mixed), what a user gets."""
    import kdekit

    if not hasattr(kdekit, "backends"):
        return ["torch"]
    on_gpu = str(device).startswith("cuda")
    runs_on = ("torch", "cuda") + (() if float64 else ("triton",)) if on_gpu else ("torch", "cpp")
    names = [name for name, (available, _) in kdekit.backends().items() if available and name in runs_on]
    return names + ["auto"] if on_gpu else names


@contextlib.contextmanager
def _backend(name: str):
    """Force a kdekit backend for the duration of a call (``KDEKIT_BACKEND``); ``"auto"`` forces none."""
    if name == "auto":
        yield
        return
    old = os.environ.get("KDEKIT_BACKEND")
    os.environ["KDEKIT_BACKEND"] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ["KDEKIT_BACKEND"]
        else:
            os.environ["KDEKIT_BACKEND"] = old


def _kdekit_labels(x: torch.Tensor, y: torch.Tensor, grid: int) -> torch.Tensor:
    import kdekit

    res = kdekit.diffusion_kde2d(x, y, grid_size=grid, limits=UNIT_SQUARE, clip_negative=True, implicit_grad=False)
    return kdekit.pool_density(res.density, K)


def _kdekit_loss(ratings: torch.Tensor, target: torch.Tensor, grid: int, generator: torch.Generator) -> torch.Tensor:
    import kdekit

    obs = kdekit.pseudo_observations(ratings, generator=generator)
    table = kdekit.points_to_distribution(obs[..., 0], obs[..., 1], k=target.shape[-1], grid=grid,
                                          sharpness=W2_SHARPNESS, clip_negative=True).probs
    return -(target * torch.log(table + 1e-8)).sum((-2, -1)).mean()


# ---- W1 labels ----


def _pool_numpy(density: np.ndarray) -> np.ndarray:
    n = density.shape[0]
    blocks = density.reshape(K, n // K, K, n // K).mean((1, 3))
    return blocks / blocks.sum()


def _w1_inputs(sizes: Sizes, items: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    x, y = workloads.label_points(sizes.w1_batch)
    return x[:items].to(device), y[:items].to(device)


def w1_cases(sizes: Sizes, device) -> List[Case]:
    from kde_diffusion import kde2d
    from lightkde import kde_2d

    n, total = sizes.w1_grid, sizes.w1_batch
    variant = f"{total} x {seed_baseline.PSEUDO_OBSERVATIONS} points, grid {n}, float64"
    # on a GPU the batched contenders (kdekit, the seed) run on the whole workload: one call does all the items
    on_gpu = str(device).startswith("cuda")
    batched_items = {key: total if on_gpu else sizes.w1_items[key] for key in ("seed", "kdekit")}
    eps = np.finfo(np.float64).eps

    def kde_diffusion_loop():
        x, y = (t.numpy() for t in _w1_inputs(sizes, sizes.w1_items["loop"], "cpu"))

        def run():
            failed = 0
            for xb, yb in zip(x, y):
                try:
                    density, _, _ = kde2d(xb, yb, n, UNIT_SQUARE)
                except ValueError:
                    failed += 1
                    continue
                _pool_numpy(np.where(density < 0, eps, density))
            return {"raised": failed}

        return run

    def lightkde_loop():
        x, y = (t.numpy() for t in _w1_inputs(sizes, sizes.w1_items["loop"], "cpu"))
        lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])

        def run():
            for xb, yb in zip(x, y):
                density = kde_2d(np.stack([xb, yb], 1), n, lo, hi)[0]
                _pool_numpy(density.T)  # lightkde returns image order [y, x]

        return run

    def seed_batched():
        x, y = _w1_inputs(sizes, batched_items["seed"], device)

        def run():
            try:
                seed_baseline.pool(seed_baseline.kde2d(x, y, n, soft=False)[0], K)
            except seed_baseline.BracketError:
                return {"raised": 1}
            return {"raised": 0}

        return run

    def kdekit_points(backend):
        def setup():
            x, y = _w1_inputs(sizes, batched_items["kdekit"], device)

            def run():
                with _backend(backend):
                    _kdekit_labels(x, y, n)

            return run

        return setup

    def kdekit_ratings():
        from kdekit import labels_from_ratings

        a, v = workloads.likert_ratings(total)
        items = batched_items["kdekit"]
        ratings = torch.stack([a[:items], v[:items]], -1).to(device)
        g = torch.Generator(device=device).manual_seed(workloads.SEED)
        return lambda: labels_from_ratings(ratings, grid=n, generator=g, clip_negative=True)

    loop_note = "kde_diffusion raises on unbracketed items (count in facts)"
    cases = [
        Case("W1", variant, "kde_diffusion.kde2d loop", kde_diffusion_loop, sizes.w1_items["loop"], total,
             on_device=False, warmup=False, note=loop_note),
        Case("W1", variant, "lightkde.kde_2d loop", lightkde_loop, sizes.w1_items["loop"], total, on_device=False,
             warmup=False),
        Case("W1", variant, "seed baseline (batched)", seed_batched, batched_items["seed"], total,
             note="one batch; the seed redraws the whole batch if any item raises"),
    ]
    for backend in kdekit_backends(device, float64=True):
        cases.append(Case("W1", variant, f"kdekit[{backend}] diffusion_kde2d+pool_density", kdekit_points(backend),
                          batched_items["kdekit"], total, is_kdekit=True))
    cases.append(Case("W1", variant, "kdekit labels_from_ratings (default backend, incl. upsampling)", kdekit_ratings,
                      batched_items["kdekit"], total, note="input: ratings, not points"))
    return cases


# ---- W2 training loss ----


def _w2_inputs(batch: int, annotators: int, dtype: torch.dtype, device):
    a, v = workloads.annotator_predictions(batch, annotators)
    target = workloads.target_tables(batch, K).to(device=device, dtype=dtype)
    return a.to(device=device, dtype=dtype), v.to(device=device, dtype=dtype), target


def w2_seed_step(batch: int, annotators: int, dtype: torch.dtype, grid: int, device) -> Callable[[], None]:
    a, v, target = _w2_inputs(batch, annotators, dtype, device)
    a.requires_grad_(True)
    v.requires_grad_(True)
    g = torch.Generator(device=device).manual_seed(workloads.SEED)

    def step():
        a.grad = v.grad = None
        seed_baseline.training_loss(a, v, target, grid=grid, sharpness=W2_SHARPNESS, generator=g).backward()

    return step


def w2_kdekit_step(batch: int, annotators: int, dtype: torch.dtype, grid: int, device, backend: str = "torch"):
    a, v, target = _w2_inputs(batch, annotators, dtype, device)
    ratings = torch.stack([a, v], -1).requires_grad_(True)
    g = torch.Generator(device=device).manual_seed(workloads.SEED)

    def step():
        ratings.grad = None
        with _backend(backend):
            _kdekit_loss(ratings, target, grid, g).backward()

    return step


def w2_cases(sizes: Sizes, device) -> List[Case]:
    cases = []
    B, n = sizes.w2_batch, sizes.w2_grid
    for dtype in sizes.w2_dtypes:
        for R in sizes.w2_annotators:
            variant = f"{B} x {R} predictions, grid {n}, {str(dtype).replace('torch.', '')}, fwd+bwd"
            seed_setup = functools.partial(w2_seed_step, B, R, dtype, n, device)
            cases.append(Case("W2", variant, "seed baseline", seed_setup,
                              note="incl. 200 pseudo-observations per utterance"))
            for backend in kdekit_backends(device):
                kdekit_setup = functools.partial(w2_kdekit_step, B, R, dtype, n, device, backend)
                cases.append(Case("W2", variant, f"kdekit[{backend}] pseudo_observations+points_to_distribution",
                                  kdekit_setup, is_kdekit=True))
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
        Case("W3", variant, "torchmetrics concordance_corrcoef", tm_ccc),
        Case("W3", variant, "scipy pearsonr + numpy moments", scipy_ccc, on_device=False),
        Case("W3", variant, "seed ccc (numpy, per column)", seed_ccc, on_device=False),
        Case("W3", variant, "kdekit ccc", kdekit_ccc, is_kdekit=True),
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
        Case("W3", variant, "torchmetrics concordance_corrcoef (row loop)", tm_ccc_masked),
        Case("W3", variant, "scipy pearsonr + numpy moments (row loop)", scipy_ccc_masked, on_device=False),
        Case("W3", variant, "seed ccc (row loop)", seed_ccc_masked, on_device=False),
        Case("W3", variant, "kdekit ccc (mask)", kdekit_ccc_masked, is_kdekit=True),
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
        Case("W3", variant, "torchmetrics kl_divergence x2", tm_jsd),
        Case("W3", variant, "scipy jensenshannon(axis=1)**2", lambda: lambda: jensenshannon(*flat, axis=1) ** 2,
             on_device=False),
        Case("W3", variant, "seed jsd (numpy)", lambda: lambda: seed_baseline.jsd(*flat), on_device=False),
        Case("W3", variant, "kdekit jsd", kdekit_jsd, is_kdekit=True),
    ]

    variant = f"TVD ({sizes.w3_rows}, {K}, {K})"

    def kdekit_tvd():
        p, q = on_dev(p_tab, q_tab)
        return lambda: tvd(p, q, dim=(-2, -1))

    cases += [
        Case("W3", variant, "numpy 0.5*|p-q|.sum", lambda: lambda: 0.5 * np.abs(flat[0] - flat[1]).sum(-1),
             on_device=False, note="neither scipy nor torchmetrics has a TVD"),
        Case("W3", variant, "seed total_variation_1d (numpy)", lambda: lambda: seed_baseline.total_variation_1d(*flat),
             on_device=False, note="computes sum (p-q)^2, not the TVD"),
        Case("W3", variant, "kdekit tvd", kdekit_tvd, is_kdekit=True),
    ]
    return cases


# ---- W4 scaling ----


def w4_sweeps(sizes: Sizes, device) -> List[Sweep]:
    """kdekit (default backend) cost of W1 (hard, float64, forward) and W2 (soft, float32, fwd+bwd) as B, N, n grow."""
    sweeps = []
    w1, w2 = sizes.w4_base["W1"], sizes.w4_base["W2"]

    def w1_point(axis):
        def make(value):
            p = dict(w1, **{axis: value})
            a, v = workloads.likert_ratings(p["B"])
            x, y = seed_baseline.pseudo_observations(a, v, count=p["N"], generator=torch.Generator().manual_seed(1))
            x, y = x.to(device), y.to(device)
            return lambda: _kdekit_labels(x, y, p["n"])

        return make

    def w2_point(axis):
        def make(value):
            p = dict(w2, **{axis: value})
            return w2_kdekit_step(p["B"], p["N"], torch.float32, p["n"], device, backend="auto")

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
    builders = {"W1": w1_cases, "W2": w2_cases, "W3": w3_cases}
    return [c for w, build in builders.items() if only is None or w in only for c in build(sizes, device)]
