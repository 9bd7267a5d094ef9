"""The loaded-corpus container, the text/CSV opener every reader uses, and the skip/raise policy they share."""
from __future__ import annotations

import codecs
import csv
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from .records import Utterance

Skip = Tuple[str, int, str]  # (path, 1-based line number or 0 for the whole file, reason)


class Issues:
    """Collects problems found while reading.

    ``lenient=True`` (the default of :func:`sermodels.data.load_corpus`): a malformed line is skipped and recorded.
    ``lenient=False``: the first malformed line raises ``ValueError("<path>:<line>: <reason>")``.
    ``note`` records data quirks that are never errors (blank or out-of-range rating lines, NaN rows).
    """

    def __init__(self, lenient: bool = True, skipped: Optional[List[Skip]] = None):
        self.lenient = lenient
        self.skipped: List[Skip] = [] if skipped is None else skipped

    def bad(self, path: str, line: int, reason: str) -> None:
        if not self.lenient:
            raise ValueError(f"{path}:{line}: {reason}")
        self.skipped.append((str(path), int(line), reason))

    def note(self, path: str, line: int, reason: str) -> None:
        self.skipped.append((str(path), int(line), reason))


CORPUS_ALIASES = {"podcast": "msp-podcast", "msppodcast": "msp-podcast", "improv": "msp-improv",
                  "mspimprov": "msp-improv", "compare": "compare-share", "emotion-share": "compare-share",
                  "compare-emotion-share": "compare-share"}


def corpus_name(name) -> str:
    """Canonical corpus name: case-insensitive, ``_`` and spaces read as ``-`` (``MSP_Podcast`` -> ``msp-podcast``),
    plus the short names of the papers' code (``podcast``, ``improv``, ``compare``)."""
    key = re.sub(r"[\s_]+", "-", str(name).strip().lower())
    return CORPUS_ALIASES.get(key, key)


def text_lines(path: str, issues: "Issues") -> Iterator[str]:
    """The decoded lines of a UTF-8 text file, line endings kept: the one opener every reader uses.

    A byte-order mark is dropped. Bytes that are not valid UTF-8 are decoded as U+FFFD and recorded through
    ``issues`` with their line (strict mode raises).
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                issues.bad(path, lineno, f"bytes that are not UTF-8 ({raw[e.start:e.end]!r} at column {e.start + 1}) "
                                         f"replaced by U+FFFD")
                yield raw.decode("utf-8", "replace")


def read_text(path: str, issues: "Issues") -> str:
    """The whole text of a file read through :func:`text_lines`."""
    return "".join(text_lines(path, issues))


class CsvFile:
    """A CSV file read through :func:`text_lines`: ``header`` (stripped names) and :meth:`rows`.

    Line numbers are physical lines of the file (a quoted field may span several), so errors cite the line an editor
    shows.
    """

    def __init__(self, path: str, issues: "Issues"):
        self.path, self.issues = path, issues
        self._lines = text_lines(path, issues)
        self._reader = csv.reader(self._lines)
        self.header = [h.strip() for h in next(self._reader, [])]

    def rows(self) -> Iterator[Tuple[int, Dict[str, str]]]:
        """Yield ``(line, {column: stripped value})``; blank rows are skipped, rows with the wrong number of fields
        reported."""
        start = self._reader.line_num + 1
        try:
            for row in self._reader:
                if row and any(x.strip() for x in row):
                    if len(row) != len(self.header):
                        self.issues.bad(self.path, start, f"expected {len(self.header)} fields, got {len(row)}")
                    else:
                        yield start, {k: v.strip() for k, v in zip(self.header, row)}
                start = self._reader.line_num + 1
        except csv.Error as e:
            raise ValueError(f"{self.path}:{start}: {e}") from None
        finally:
            self.close()

    def close(self) -> None:
        self._lines.close()


def csv_header(path: str, issues: "Issues") -> List[str]:
    """The stripped column names of a CSV file's first line (``[]`` for an empty file)."""
    table = CsvFile(path, issues)
    table.close()
    return table.header


def csv_rows(path: str, columns, issues: "Issues"):
    """Yield ``(line, {column: stripped value})`` for the data rows of a CSV file.

    The header must hold every name in ``columns`` (ValueError naming the file otherwise); other columns are reported
    through ``issues`` and ignored; blank rows are skipped; rows with the wrong number of fields are reported.
    """
    table = CsvFile(path, issues)
    missing = [c for c in columns if c not in table.header]
    if missing:
        raise ValueError(f"{path}:1: missing column(s) {missing}; found {table.header}")
    for c in table.header:
        if c not in columns:
            issues.bad(path, 1, f"unknown column {c!r} ignored")
    yield from table.rows()


def strip_wav(name: str) -> str:
    """A file name or id without a trailing ``.wav`` (any case): the utterance id readers and split files key on."""
    name = name.strip()
    return name[:-4] if name.lower().endswith(".wav") else name


def outside_scale(values: Dict[str, float], scale: Tuple[float, float], nan_ok: bool = True) -> Optional[str]:
    """None if every value is within ``scale`` (NaN = missing counts as within unless ``nan_ok=False``); else a
    reason naming the values outside it."""
    lo, hi = scale
    bad = [f"{k}={v:g}" for k, v in values.items() if not (lo <= v <= hi or nan_ok and math.isnan(v))]
    return f"{', '.join(bad)} outside the scale {lo:g}-{hi:g}" if bad else None


def check_rating_range(value) -> Optional[Tuple[float, float]]:
    """``(lo, hi)`` as floats from any pair (None stays None); ValueError unless both are finite and lo < hi."""
    if value is None:
        return None
    try:
        lo, hi = (float(x) for x in value)
    except (TypeError, ValueError):
        raise ValueError(f"rating_range must be (lo, hi), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"rating_range needs finite lo < hi, got {value!r}")
    return lo, hi


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

    ``skipped`` holds ``(path, line, reason)`` tuples; line 0 means the whole file or utterance (whose id is then
    the first element). ``rating_range`` is the ``(lo, hi)`` scale of the individual ratings (None: unknown, e.g. a
    generic corpus read without ``rating_range``, or a corpus without ratings).
    """

    name: str
    root: str
    utterances: List[Utterance]
    skipped: List[Skip] = field(default_factory=list)
    rating_range: Optional[Tuple[float, float]] = None

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
                         f"missing transcript: {sum(u.transcript is None for u in us)}; "
                         f"missing duration: {sum(u.duration is None for u in us)}")
        if self.skipped:
            reasons = Counter(r.split(":")[0] for _, _, r in self.skipped)
            lines.append(f"  skipped {len(self.skipped)} entries: "
                         + "; ".join(f"{r} x{c}" for r, c in reasons.most_common()))
            for path, line, reason in self.skipped[:5]:
                lines.append(f"    {path}:{line}: {reason}")
            if len(self.skipped) > 5:
                lines.append(f"    ... {len(self.skipped) - 5} more in Corpus.skipped")
        return "\n".join(lines)


def read_transcript(path: str, issues: "Issues") -> Optional[str]:
    """The stripped text of a transcript file, None if it does not exist."""
    if not os.path.isfile(path):
        return None
    return read_text(path, issues).strip()


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
