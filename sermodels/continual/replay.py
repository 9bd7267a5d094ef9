"""Experience replay (ExpeR, paper 003 section 3.7): every stored memory is added to the current training set.

Under DDP nothing special is needed: the memories are ordinary training items, so ``DistributedSampler`` shards the
concatenated set like any other; the memories themselves are chosen from a fixed seed, identically on every rank.
"""
from __future__ import annotations

from typing import List, Sequence

from torch.utils.data import ConcatDataset, Dataset, Subset


def replay_training_set(current: Dataset, memories: Sequence[Subset]) -> Dataset:
    """``current`` followed by every memory (a ``Subset`` of an earlier corpus' training set)."""
    parts: List[Dataset] = [current, *memories]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)
