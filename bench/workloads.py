"""Benchmark inputs: deterministic (fixed seeds), built once per size and shared by every contender.

All inputs are CPU tensors; the registry moves them to the benchmark device before timing. Ratings and predictions
live on [-1, 1] (row = activation, column = valence), ``NaN`` marks a missing annotator.

Item sets: W1's corpus is :func:`label_points` of ``corpus`` utterances (1300); a smaller item set (quick mode, the
memory sweep) is a spread subset of that corpus (:func:`spread`), and a slow contender's subset is every k-th item of
the item set (:func:`every_kth`), so that every contender works on items of the same set.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Tuple

import torch

from bench.baselines import seed as seed_baseline

SEED = 20240611
LIKERT = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])


def _generator(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(SEED + hash(key) % 2**31)  # int-tuple hashes are not salted


def spread(total: int, count: int) -> torch.Tensor:
    """Indices of ``count`` items spread evenly over ``range(total)``: ``floor(i * total / count)`` (every
    ``total/count``-th item; all of them when ``count >= total``)."""
    count = min(count, total)
    return (torch.arange(count) * total) // count


def every_kth(items: int, about: int) -> torch.Tensor:
    """Indices ``0, k, 2k, ...`` of ``items`` with ``k = max(1, round(items / about))``: about ``about`` items spread
    over the whole set (1300 items, about 100: every 13th, 100 items)."""
    k = max(1, round(items / max(1, about)))
    return torch.arange(0, items, k)


@functools.lru_cache(maxsize=None)
def label_item_set(corpus: int, items: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """W1 item set: ``items`` utterances spread over a corpus of ``corpus`` (all of it when ``items >= corpus``).

    Returns ``(x, y, a, v)``: the ``(items, 200)`` float64 pseudo-observations (the points every points-input contender
    gets) and the ``(items, max_raters)`` ratings they were drawn from (labels_from_ratings' input)."""
    x, y = label_points(corpus)
    a, v = likert_ratings(corpus)
    if items >= corpus:
        return x, y, a, v
    idx = spread(corpus, items)
    return x[idx], y[idx], a[idx], v[idx]


@functools.lru_cache(maxsize=None)
def likert_ratings(batch: int, max_raters: int = 20, min_raters: int = 5) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(batch, max_raters)`` float64 activation and valence ratings on the 5-point grid {-1, -1/2, 0, 1/2, 1};
    each utterance has ``min_raters..max_raters`` raters (the rest NaN), a centre ~ U(-0.7, 0.7) and a rater spread
    ~ U(0.15, 0.5) per dimension."""
    g = _generator(1, batch, max_raters)
    raters = torch.randint(min_raters, max_raters + 1, (batch,), generator=g)
    present = torch.arange(max_raters) < raters[:, None]
    out = []
    for _ in range(2):
        centre = torch.rand(batch, 1, generator=g, dtype=torch.float64) * 1.4 - 0.7
        spread = torch.rand(batch, 1, generator=g, dtype=torch.float64) * 0.35 + 0.15
        raw = (centre + spread * torch.randn(batch, max_raters, generator=g, dtype=torch.float64)).clamp(-1, 1)
        snapped = torch.round(raw * 2) / 2
        out.append(torch.where(present, snapped, torch.nan))
    return out[0], out[1]


@functools.lru_cache(maxsize=None)
def label_points(batch: int, count: int = seed_baseline.PSEUDO_OBSERVATIONS) -> Tuple[torch.Tensor, torch.Tensor]:
    """W1 input: ``(batch, count)`` float64 pseudo-observations (seed upsampling) of :func:`likert_ratings`."""
    a, v = likert_ratings(batch)
    return seed_baseline.pseudo_observations(a, v, count=count, generator=_generator(2, batch, count))


@functools.lru_cache(maxsize=None)
def annotator_predictions(batch: int, annotators: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """W2 input: ``(batch, annotators)`` float64 per-annotator model outputs ``tanh(centre + 0.3 z)``."""
    g = _generator(3, batch, annotators)
    out = []
    for _ in range(2):
        centre = torch.rand(batch, 1, generator=g, dtype=torch.float64) * 1.4 - 0.7
        out.append(torch.tanh(centre + 0.3 * torch.randn(batch, annotators, generator=g, dtype=torch.float64)))
    return out[0], out[1]


@functools.lru_cache(maxsize=None)
def target_tables(batch: int, k: int = 4) -> torch.Tensor:
    """W2 target: ``(batch, k, k)`` float64 probability tables ~ Dirichlet(1)."""
    g = _generator(4, batch, k)
    e = -torch.log(torch.rand(batch, k * k, generator=g, dtype=torch.float64))
    return (e / e.sum(-1, keepdim=True)).view(batch, k, k)


@dataclass(frozen=True)
class CCCInputs:
    pred: torch.Tensor  # (..., n) float32
    target: torch.Tensor
    mask: torch.Tensor  # bool, True = valid
    dim: int  # reduced dim


@functools.lru_cache(maxsize=None)
def ccc_inputs(rows: int, cols: int, masked: bool) -> CCCInputs:
    """W3 CCC input. ``masked=False``: ``(rows, cols)`` reduced over dim 0 (e.g. 1300 utterances x 2 dimensions).
    ``masked=True``: ``(rows, cols)`` reduced over dim -1 with a ragged mask (each row keeps 10..cols entries)."""
    g = _generator(5, rows, cols, int(masked))
    target = torch.rand(rows, cols, generator=g) * 2 - 1
    pred = (0.7 * target + 0.3 * torch.randn(rows, cols, generator=g)).clamp(-1, 1)
    if masked:
        keep = torch.randint(10, cols + 1, (rows, 1), generator=g)
        order = torch.rand(rows, cols, generator=g).argsort(-1).argsort(-1)
        return CCCInputs(pred, target, order < keep, -1)
    return CCCInputs(pred, target, torch.ones(rows, cols, dtype=torch.bool), 0)


@functools.lru_cache(maxsize=None)
def distribution_pairs(batch: int, k: int = 4) -> Tuple[torch.Tensor, torch.Tensor]:
    """W3 JSD/TVD input: two ``(batch, k, k)`` float32 probability tables, about 10% zero cells."""
    g = _generator(6, batch, k)
    out = []
    for _ in range(2):
        e = -torch.log(torch.rand(batch, k * k, generator=g))
        e = torch.where(torch.rand(batch, k * k, generator=g) < 0.1, 0.0, e)
        e[:, 0] += 1e-3  # never an all-zero table
        out.append((e / e.sum(-1, keepdim=True)).view(batch, k, k))
    return out[0], out[1]
