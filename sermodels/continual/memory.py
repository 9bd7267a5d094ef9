"""Episodic memories of paper 003: 261 utterances per corpus, chosen by a ring buffer or by bucketed sampling.

Buckets: activation x valence, each binned low / medium / high on [-1, 1] with edges -1/3 and 1/3 (9 buckets;
261 = 9 x 29). Strategies (section 3.5):

- ``random``: a :class:`RingBuffer` of the most recently seen training items, kept when training on the corpus ends
  (the recipe feeds it every training batch); :func:`select_memory` with ``"random"`` draws the same number of items
  uniformly when no training stream is available.
- ``length``: per bucket, 30 % from the first and fourth quartiles of audio length (quartiles over the corpus),
  70 % from the second and third.
- ``gender``: per bucket, balanced between female and male speakers; unknown gender is never a candidate.
- ``speaker``: per bucket, balanced over speakers (round robin over speakers in random order); unknown speaker is
  never a candidate.

A bucket with fewer candidates than its quota gives all it has; the shortfall is filled with random leftover
candidates of the other buckets so the memory reaches ``size`` whenever the corpus has enough candidates.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..data.labels import bin_low_medium_high

STRATEGIES = ("random", "length", "gender", "speaker")
MEMORY_SIZE = 261


def bucket_of(activation: Sequence[float], valence: Sequence[float]) -> np.ndarray:
    """Bucket ``3 * level(activation) + level(valence)`` in 0..8 per item, levels from
    :func:`sermodels.data.labels.bin_low_medium_high` (low / medium / high; NaN -> -1 gives a negative bucket)."""
    return 3 * bin_low_medium_high(np.asarray(activation, float)) + bin_low_medium_high(np.asarray(valence, float))


class RingBuffer:
    """The ``capacity`` most recently added item indices (paper 003's random memory)."""

    def __init__(self, capacity: int = MEMORY_SIZE):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: List[int] = []
        self._next = 0

    def add(self, indices: Sequence[int]) -> None:
        for i in indices:
            if len(self._items) < self.capacity:
                self._items.append(int(i))
            else:
                self._items[self._next] = int(i)
            self._next = (self._next + 1) % self.capacity

    def items(self) -> List[int]:
        return list(self._items)


def _split_quota(total: int, parts: int) -> List[int]:
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def _round_robin(groups: Dict[object, List[int]], quota: int, rng: np.random.Generator) -> List[int]:
    """Take items one group at a time (groups and their items in random order) until ``quota`` or exhaustion."""
    keys = list(groups)
    order = [keys[k] for k in rng.permutation(len(keys))]
    queues = {k: list(rng.permutation(groups[k])) for k in order}
    out: List[int] = []
    while len(out) < quota and any(queues.values()):
        for k in order:
            if queues[k] and len(out) < quota:
                out.append(int(queues[k].pop()))
    return out


def select_memory(activation: Sequence[float], valence: Sequence[float], strategy: str = "random",
                  size: int = MEMORY_SIZE, durations: Optional[Sequence[float]] = None,
                  genders: Optional[Sequence[Optional[str]]] = None, speakers: Optional[Sequence[Optional[str]]] = None,
                  seed: int = 0) -> List[int]:
    """Indices of the items kept in memory (at most ``size``, no repeats) for the given strategy.

    ``activation``/``valence`` are the items' labels on [-1, 1]; ``durations`` (seconds) are needed by ``length``,
    ``genders`` ('F'/'M'/None) by ``gender``, ``speakers`` by ``speaker``; items without one are never chosen, and
    ValueError is raised when no item has one (the memory would be silently empty).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    act, val = np.asarray(activation, float), np.asarray(valence, float)
    n = len(act)
    if len(val) != n:
        raise ValueError(f"activation has {n} items but valence has {len(val)}")
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return sorted(int(i) for i in rng.permutation(n)[:size])
    needed = {"length": durations, "gender": genders, "speaker": speakers}[strategy]
    what = {"length": "durations", "gender": "genders", "speaker": "speakers"}[strategy]
    if needed is None or len(needed) != n:
        raise ValueError(f"strategy {strategy!r} needs {what} with one entry per item ({n})")
    candidates = np.array([v is not None and v == v for v in needed], dtype=bool)  # None/NaN are never candidates
    if strategy == "gender":
        candidates &= np.array([v in ("F", "M") for v in needed], dtype=bool)
    if n and not candidates.any():
        raise ValueError(f"strategy {strategy!r}: none of the {n} items has {what} (all None/NaN"
                         f"{'/unknown' if strategy == 'gender' else ''}), so the memory would be empty")
    buckets = bucket_of(act, val)
    quotas = _split_quota(size, 9)
    if strategy == "length":
        d = np.asarray([v if c else np.nan for v, c in zip(needed, candidates)], float)
        q1, q3 = np.nanquantile(d, [0.25, 0.75]) if candidates.any() else (0.0, 0.0)
        outer = (d <= q1) | (d >= q3)
    chosen: List[int] = []
    for b in range(9):
        idx = np.flatnonzero((buckets == b) & candidates)
        if strategy == "length":
            n_outer = int(round(0.3 * quotas[b]))
            groups_outer = list(rng.permutation(idx[outer[idx]]))[:n_outer]
            groups_inner = list(rng.permutation(idx[~outer[idx]]))[:quotas[b] - len(groups_outer)]
            take = groups_outer + groups_inner
            if len(take) < quotas[b]:  # one side ran short: top up from the other side
                rest = [i for i in rng.permutation(idx) if i not in set(take)]
                take += rest[:quotas[b] - len(take)]
        else:
            groups: Dict[object, List[int]] = defaultdict(list)
            for i in idx:
                groups[needed[i]].append(int(i))
            take = _round_robin(groups, quotas[b], rng)
        chosen += [int(i) for i in take]
    if len(chosen) < size:
        taken = set(chosen)
        leftovers = [int(i) for i in rng.permutation(np.flatnonzero(candidates)) if int(i) not in taken]
        chosen += leftovers[:size - len(chosen)]
    return sorted(chosen)
