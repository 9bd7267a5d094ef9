"""Corpus readers, annotator-level labels, splits, cached features and a synthetic corpus.

``load_corpus(name, root, **opts)`` reads one corpus in its real on-disk format into
:class:`~sermodels.data.records.Utterance` records; see the reader modules for each format and their options.
"""
from __future__ import annotations

import os
from typing import Callable, Dict

from . import compare_share, generic, iemocap, msp_improv, msp_podcast, muse
from .cache import audio_durations
from .corpus import Corpus, Issues, check_rating_range, corpus_name
from .records import Utterance

READERS: Dict[str, Callable[..., Corpus]] = {
    "msp-improv": msp_improv.read,      # opts: flip_activation=True
    "iemocap": iemocap.read,            # opts: drop_partial=False
    "msp-podcast": msp_podcast.read,
    "muse": muse.read,                  # opts: context=False
    "compare-share": compare_share.read,
    "generic": generic.read,            # opts: name="generic"
}


def load_corpus(name: str, root, lenient: bool = True, min_annotators: int = 0, probe_audio: bool = True,
                rating_range=None, **opts) -> Corpus:
    """Read corpus ``name`` from ``root``.

    ``name`` is a key of :data:`READERS` or an alias (:func:`corpus_name`: ``MSP_Podcast``, ``podcast``, ...).
    ``lenient=True`` (default): malformed lines and unknown columns are skipped and listed in ``Corpus.skipped``
    and ``Corpus.summary()``; ``lenient=False`` raises ``ValueError('<file>:<line>: <reason>')`` at the first one.
    A missing labels file always raises ``FileNotFoundError`` naming the path(s) tried. ``min_annotators`` drops
    utterances with fewer individual ratings (the papers use 2), recording each drop in ``skipped``; utterances
    kept without any rating are recorded too. ``duration`` comes from the labels file where the corpus has one,
    else (``probe_audio``) from the audio file's header, cached (:func:`sermodels.data.cache.audio_durations`).
    Ratings stay on the corpus' own scale, ``Corpus.rating_range`` (see :mod:`sermodels.data.labels` for scaling):
    the corpus' fixed scale, or ``rating_range=(lo, hi)``, which a generic corpus needs for labels (its reader drops
    ratings outside it) and which replaces a fixed scale.
    """
    key = corpus_name(name)
    if key not in READERS:
        raise ValueError(f"unknown corpus name {name!r}; expected one of {sorted(READERS)} (case and _/- do not "
                         f"matter)")
    if not os.path.exists(root):
        raise FileNotFoundError(f"data root {root} does not exist (the {key} corpus' folder)")
    scale = check_rating_range(rating_range)
    if key == "generic":
        opts["rating_range"] = scale
    corpus = READERS[key](str(root), lenient=lenient, **opts)
    if scale is not None:
        corpus.rating_range = scale
    issues = Issues(lenient, corpus.skipped)
    if probe_audio:
        todo = [u for u in corpus.utterances if u.duration is None and u.audio_path is not None]
        found, errors = audio_durations([u.audio_path for u in todo], group=corpus.root)
        for u in todo:
            if u.audio_path in errors:
                issues.bad(u.audio_path, 0, errors[u.audio_path])
            u.duration = found.get(u.audio_path)
    kept = []
    for u in corpus.utterances:
        if len(u.ratings) < min_annotators:
            issues.note(u.utterance_id, 0, f"fewer than {min_annotators} annotators ({len(u.ratings)})")
            continue
        if not u.ratings and key != "compare-share":
            issues.note(u.utterance_id, 0, "no individual ratings (kept; min_annotators=1 drops it)")
        kept.append(u)
    corpus.utterances = kept
    return corpus


__all__ = ["Corpus", "Utterance", "READERS", "load_corpus", "corpus_name"]
