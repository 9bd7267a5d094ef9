"""The loaded-corpus container and the skip/raise policy shared by every reader."""
from __future__ import annotations

import csv
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .records import Utterance

Skip = Tuple[str, int, str]  # (path, 1-based line number or 0 for the whole file, reason)


class Issues:
    """Collects problems found while reading.

    ``lenient=True`` (the default of :func:`sermodels.data.load_corpus`): a malformed line is skipped and recorded.
    ``lenient=False``: the first malformed line raises ``ValueError("<path>:<line>: <reason>")``.
    ``note`` records data quirks that are never errors (blank or out-of-range rating lines, NaN rows).
    """

    def __init__(self, lenient: bool = True):
        self.lenient = lenient
        self.skipped: List[Skip] = []

    def bad(self, path: str, line: int, reason: str) -> None:
        if not self.lenient:
            raise ValueError(f"{path}:{line}: {reason}")
        self.skipped.append((str(path), int(line), reason))

    def note(self, path: str, line: int, reason: str) -> None:
        self.skipped.append((str(path), int(line), reason))


def _header(reader) -> List[str]:
    return [h.strip() for h in next(reader, [])]


def csv_header(path: str) -> List[str]:
    """The stripped column names of a CSV file's first line (``[]`` for an empty file)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        return _header(csv.reader(f))


def csv_rows(path: str, columns, issues: "Issues"):
    """Yield ``(line number, {column: stripped value})`` for the data rows of a CSV file.

    The header must hold every name in ``columns`` (ValueError naming the file otherwise); other columns are reported
    through ``issues`` and ignored; blank rows are skipped; rows with the wrong number of fields are reported.
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = _header(reader)
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}:1: missing column(s) {missing}; found {header}")
        for c in header:
            if c not in columns:
                issues.bad(path, 1, f"unknown column {c!r} ignored")
        for lineno, row in enumerate(reader, 2):
            if not row or all(not x.strip() for x in row):
                continue
            if len(row) != len(header):
                issues.bad(path, lineno, f"expected {len(header)} fields, got {len(row)}")
                continue
            yield lineno, {k: v.strip() for k, v in zip(header, row)}


def require_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def first_existing(root: str, candidates: List[str], what: str) -> str:
    """The first of ``root/candidate`` that exists; FileNotFoundError listing every path tried."""
    tried = [os.path.join(root, c) for c in candidates]
    for p in tried:
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(f"{what} not found; tried: " + ", ".join(tried))


def average_repeats(values: List[Tuple[float, ...]]) -> Tuple[float, ...]:
    """Element-wise mean of repeated ratings by one annotator, ignoring NaN (NaN if every repeat is NaN)."""
    out = []
    for column in zip(*values):
        finite = [v for v in column if not math.isnan(v)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return tuple(out)


@dataclass
class Corpus:
    """Utterances read from one corpus plus what was skipped while reading.

    ``skipped`` holds ``(path, line, reason)`` tuples; line 0 means the whole file or utterance.
    """

    name: str
    root: str
    utterances: List[Utterance]
    skipped: List[Skip] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self):
        return iter(self.utterances)

    def by_id(self) -> Dict[str, Utterance]:
        return {u.utterance_id: u for u in self.utterances}

    def summary(self) -> str:
        """A few human-readable lines: counts, annotators, splits, missing audio/transcripts, skip reasons."""
        us = self.utterances
        n_ratings = sum(len(u.ratings) for u in us)
        annotators = {a for u in us for a in u.ratings}
        lines = [f"{self.name} at {self.root}: {len(us)} utterances, {n_ratings} individual ratings "
                 f"from {len(annotators)} annotators"]
        if us:
            per = [len(u.ratings) for u in us]
            lines.append(f"  annotators per utterance: min {min(per)}, mean {sum(per) / len(per):.2f}, max {max(per)}")
            splits = Counter(u.split for u in us)
            lines.append("  splits: " + ", ".join(f"{k}={v}" for k, v in sorted(splits.items(), key=lambda kv: str(kv[0]))))
            lines.append(f"  speakers: {len({u.speaker for u in us if u.speaker is not None})}; "
                         f"missing audio: {sum(u.audio_path is None for u in us)}; "
                         f"missing transcript: {sum(u.transcript is None for u in us)}")
        if self.skipped:
            reasons = Counter(r.split(":")[0] for _, _, r in self.skipped)
            lines.append(f"  skipped {len(self.skipped)} entries: "
                         + "; ".join(f"{r} x{c}" for r, c in reasons.most_common()))
            for path, line, reason in self.skipped[:5]:
                lines.append(f"    {path}:{line}: {reason}")
            if len(self.skipped) > 5:
                lines.append(f"    ... {len(self.skipped) - 5} more in Corpus.skipped")
        return "\n".join(lines)


def read_transcript(path: str) -> Optional[str]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read().strip()


def index_audio(directory: str, pattern_ext: str = ".wav") -> Dict[str, str]:
    """Map file stem -> path for every ``*.wav`` below ``directory`` (recursive; empty if it does not exist)."""
    found: Dict[str, str] = {}
    if not os.path.isdir(directory):
        return found
    for dirpath, _, files in os.walk(directory):
        for name in files:
            if name.lower().endswith(pattern_ext) and not name.startswith("._"):
                found.setdefault(name[: -len(pattern_ext)], os.path.join(dirpath, name))
    return found


def normalise_gender(value: Optional[str]) -> Optional[str]:
    """'Female'/'F'/'f' -> 'F', 'Male'/'M' -> 'M', anything else (Unknown, blank) -> None."""
    if value is None:
        return None
    v = str(value).strip().lower()
    if v in ("f", "female"):
        return "F"
    if v in ("m", "male"):
        return "M"
    return None
