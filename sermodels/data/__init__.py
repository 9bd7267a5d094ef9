"""Corpus readers, annotator-level labels, splits, cached features and a synthetic corpus.

``load_corpus(name, root, **opts)`` reads one corpus in its real on-disk format into
:class:`~sermodels.data.records.Utterance` records; see the reader modules for each format and their options.
"""
from __future__ import annotations

from typing import Callable, Dict

from . import compare_share, generic, iemocap, msp_improv, msp_podcast, muse
from .corpus import Corpus
from .records import Utterance

READERS: Dict[str, Callable[..., Corpus]] = {
    "msp-improv": msp_improv.read,      # opts: flip_activation=True
    "iemocap": iemocap.read,            # opts: drop_partial=False
    "msp-podcast": msp_podcast.read,
    "muse": muse.read,                  # opts: context=False
    "compare-share": compare_share.read,
    "generic": generic.read,            # opts: name="generic"
}


def load_corpus(name: str, root, lenient: bool = True, min_annotators: int = 0, **opts) -> Corpus:
    """Read corpus ``name`` from ``root``.

    ``lenient=True`` (default): malformed lines and unknown columns are skipped and listed in ``Corpus.skipped``
    and ``Corpus.summary()``; ``lenient=False`` raises ``ValueError('<file>:<line>: <reason>')`` at the first one.
    A missing labels file always raises ``FileNotFoundError`` naming the path(s) tried. ``min_annotators`` drops
    utterances with fewer individual ratings (the papers use 2), recording each drop in ``skipped``.
    Ratings stay on the corpus' own scale (see :mod:`sermodels.data.labels` for scaling).
    """
    if name not in READERS:
        raise ValueError(f"unknown corpus name {name!r}; expected one of {sorted(READERS)}")
    corpus = READERS[name](str(root), lenient=lenient, **opts)
    if min_annotators > 0:
        kept = []
        for u in corpus.utterances:
            if len(u.ratings) >= min_annotators:
                kept.append(u)
            else:
                corpus.skipped.append((u.utterance_id, 0, f"fewer than {min_annotators} annotators ({len(u.ratings)})"))
        corpus.utterances = kept
    return corpus


__all__ = ["Corpus", "Utterance", "READERS", "load_corpus"]
