"""Generic long-format reader: one row per (utterance, annotator) in a CSV or Parquet file.

Required columns: ``utterance_id`` (or ``utterance``), ``annotator``, ``activation``, ``valence``. Optional:
``dominance``, ``category``, ``comment``, ``audio_path`` (relative paths are resolved against the file's folder; a missing file gives None, as in
every reader),
``transcript``, ``speaker``, ``gender``, ``split``, ``session``, ``duration``. Any other column is an unknown column.
A row with a blank ``annotator`` only carries utterance metadata. Blank rating cells are NaN; an annotator listed
twice for one utterance is averaged. ``root`` is the file itself or a folder holding ``ratings.csv`` or
``ratings.parquet``. Ratings keep whatever scale the file uses; ``rating_range=(lo, hi)`` declares it: ratings
outside it are dropped and recorded, and ``Corpus.rating_range`` lets :mod:`sermodels.data.labels` scale them
(without it, label functions need ``(lo, hi)`` explicitly).
"""
from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Dict, Iterator, Optional, Sequence, Tuple

from .corpus import Corpus, CsvFile, Issues, average_repeats, check_rating_range, normalise_gender, outside_scale
from .records import Utterance

NAME = "generic"
REQUIRED = ("annotator", "activation", "valence")
OPTIONAL = ("dominance", "category", "comment", "audio_path", "transcript", "speaker", "gender", "split", "session",
            "duration")
META = ("audio_path", "transcript", "speaker", "gender", "split", "session", "duration")


def _resolve(root: str) -> str:
    if os.path.isfile(root):
        return root
    for name in ("ratings.csv", "ratings.parquet"):
        p = os.path.join(root, name)
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(f"generic ratings file not found: {root} (a CSV/Parquet file, or a folder with "
                            f"ratings.csv or ratings.parquet)")


def _rows(path: str, issues: Issues) -> Tuple[list, Iterator[Tuple[int, Dict[str, str]]]]:
    if path.endswith(".parquet"):
        import pandas as pd

        df = pd.read_parquet(path)
        header = [str(c) for c in df.columns]

        def gen():
            for i, rec in enumerate(df.itertuples(index=False), 1):
                yield i, {k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
                          for k, v in zip(header, rec)}
        return header, gen()
    table = CsvFile(path, issues)
    return table.header, table.rows()


def _num(text: str) -> float:
    return math.nan if text == "" or text.lower() == "nan" else float(text)


def read(root: str, lenient: bool = True, name: str = NAME, rating_range: Optional[Sequence[float]] = None) -> Corpus:
    scale = check_rating_range(rating_range)
    path = _resolve(root)
    issues = Issues(lenient)
    header, rows = _rows(path, issues)
    id_col = "utterance_id" if "utterance_id" in header else "utterance" if "utterance" in header else None
    missing = [c for c in REQUIRED if c not in header] + ([] if id_col else ["utterance_id"])
    if missing:
        raise ValueError(f"{path}:1: missing column(s) {missing}; found {header}")
    for c in header:
        if c not in REQUIRED + OPTIONAL + (id_col,):
            issues.bad(path, 1, f"unknown column {c!r} ignored")
    base = os.path.dirname(os.path.abspath(path))
    utterances: Dict[str, Utterance] = {}
    reps: Dict[str, Dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for lineno, r in rows:
        uid = r[id_col]
        if not uid:
            issues.bad(path, lineno, "empty utterance id")
            continue
        try:
            avd = (_num(r["activation"]), _num(r["valence"]), _num(r.get("dominance", "")))
            meta = {k: r[k] for k in META if r.get(k, "") != ""}
            if "duration" in meta:
                meta["duration"] = float(meta["duration"])
        except ValueError as e:
            issues.bad(path, lineno, f"non-numeric value: {e}")
            continue
        if not 0 < meta.get("duration", 1.0) < math.inf:
            issues.bad(path, lineno, f"duration {meta['duration']} is not a positive number of seconds")
            continue
        if "audio_path" in meta:
            audio = os.path.join(base, meta["audio_path"])  # unchanged if already absolute
            if os.path.isfile(audio):
                meta["audio_path"] = audio
            else:
                del meta["audio_path"]
        if "gender" in meta:
            meta["gender"] = normalise_gender(meta["gender"])
        u = utterances.get(uid)
        if u is None:
            u = utterances[uid] = Utterance(utterance_id=uid, corpus=name)
        conflict = [k for k, v in meta.items() if getattr(u, k) is not None and getattr(u, k) != v]
        if conflict:
            issues.bad(path, lineno, f"{uid}: conflicting {conflict} across rows")
            continue
        for k, v in meta.items():
            setattr(u, k, v)
        ann = r["annotator"]
        if not ann:
            continue
        problem = scale and outside_scale(dict(zip(("activation", "valence", "dominance"), avd)), scale)
        if problem:
            issues.note(path, lineno, f"out-of-range rating dropped ({uid}, {ann}): {problem}")
            continue
        reps[uid][ann].append(avd)
        if r.get("category") and ann not in u.categories:
            u.categories[ann] = r["category"]
        if r.get("comment"):
            u.comments[ann] = (u.comments[ann] + ", " if ann in u.comments else "") + r["comment"]
    for uid, anns in reps.items():
        for ann, vals in anns.items():
            utterances[uid].ratings[ann] = average_repeats(vals)
    return Corpus(name, root, list(utterances.values()), issues.skipped, rating_range=scale)
