"""The papers' train/val/test splits (shipped as JSON in ``sermodels/data/splits/<corpus>.json``) and k-fold.

Each JSON file maps scheme name -> ``{"by": <attribute>, "source": <where it comes from>, "groups": {split: [values]}}``
with ``by`` one of ``speaker``, ``session``, ``split`` (the corpus' own partition column), ``stress`` (MuSE
``extra["stress"]``). Every corpus also has the built-in scheme ``all`` (every utterance in ``test``: cross-corpus
evaluation).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .records import Utterance

SPLIT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "splits")
ATTRIBUTES: Dict[str, Callable[[Utterance], Optional[str]]] = {
    "speaker": lambda u: u.speaker,
    "session": lambda u: u.session,
    "split": lambda u: u.split,
    "stress": lambda u: u.extra.get("stress"),
}


def schemes(corpus: str) -> Dict[str, dict]:
    """All split schemes of ``corpus`` as stored in its JSON file (plus the built-in ``all``)."""
    path = os.path.join(SPLIT_DIR, f"{corpus}.json")
    if not os.path.isfile(path):
        raise ValueError(f"no split file for corpus {corpus!r} ({path}); known: "
                         f"{sorted(f[:-5] for f in os.listdir(SPLIT_DIR) if f.endswith('.json'))}")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    out = dict(data["schemes"])
    out["all"] = {"by": None, "source": "every utterance in test (cross-corpus evaluation)", "groups": {"test": []}}
    return out


def assign_split(utterances: Sequence[Utterance], corpus: str, scheme: str) -> Dict[str, List[Utterance]]:
    """Split ``utterances`` by a named scheme -> ``{split name: [utterances]}`` in input order.

    Utterances whose speaker/session/partition is in no group of the scheme are left out. MSP-Improv:
    ``speaker_independent_is2024`` (train F01 F03 F05 F06 M02 M03 M04 M06 / val F02 M01 / test F04 M05),
    ``session_is2023`` (sessions 1-4 / 5 / 6); IEMOCAP: ``session`` (Ses01-03 / Ses04 / Ses05), ``session_05F``,
    ``session_05M``; MSP-Podcast: ``official`` (train / val / test1 / test2); MuSE: ``speaker``, ``stressed``,
    ``non_stressed``, ``full``; ComParE and generic: ``official``; every corpus: ``all``.
    """
    table = schemes(corpus)
    if scheme not in table:
        raise ValueError(f"unknown split scheme {scheme!r} for {corpus}; expected one of {sorted(table)}")
    spec = table[scheme]
    if spec["by"] is None:
        return {"test": list(utterances)}
    get = ATTRIBUTES[spec["by"]]
    where = {v: split for split, values in spec["groups"].items() for v in values}
    out: Dict[str, List[Utterance]] = {split: [] for split in spec["groups"]}
    for u in utterances:
        split = where.get(get(u))
        if split is not None:
            out[split].append(u)
    return out


def kfold(utterances: Sequence[Utterance], k: int, by: str = "speaker", seed: int = 0
          ) -> List[Dict[str, List[Utterance]]]:
    """Group k-fold (the legacy ASRU folds): ``k`` dicts ``{"train", "val", "test"}``.

    Groups (speakers or sessions) are dealt largest first to the currently smallest fold (ties by name), as
    scikit-learn's ``GroupKFold``; fold i's groups are its test set, and a quarter of the remaining groups (at
    least one) drawn with ``numpy.random.default_rng(seed)`` form its validation set.
    """
    if by not in ("speaker", "session"):
        raise ValueError(f"by must be 'speaker' or 'session', got {by!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an int >= 2, got {k!r}")
    get = ATTRIBUTES[by]
    missing = [u.utterance_id for u in utterances if get(u) is None]
    if missing:
        raise ValueError(f"{len(missing)} utterances have no {by} (e.g. {missing[:3]}); filter them first")
    sizes = Counter(get(u) for u in utterances)
    if len(sizes) < max(k, 3):
        raise ValueError(f"k={k} folds need at least {max(k, 3)} {by} groups (one test group per fold and "
                         f"train + val groups in each), found {len(sizes)}")
    fold_of: Dict[str, int] = {}
    load = [0] * k
    for g, n in sorted(sizes.items(), key=lambda gn: (-gn[1], gn[0])):
        f = min(range(k), key=lambda i: (load[i], i))
        fold_of[g] = f
        load[f] += n
    rng = np.random.default_rng(seed)
    folds = []
    for f in range(k):
        rest = sorted(g for g, i in fold_of.items() if i != f)
        val = set(rng.choice(rest, size=max(1, len(rest) // 4), replace=False).tolist())
        fold = {"train": [], "val": [], "test": []}
        for u in utterances:
            g = get(u)
            fold["test" if fold_of[g] == f else "val" if g in val else "train"].append(u)
        folds.append(fold)
    return folds
