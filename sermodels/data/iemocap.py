"""IEMOCAP reader (per-dialog ``Session{n}/dialog/EmoEvaluation/<dialog>.txt`` files, transcriptions, wavs).

Block layout (tab separated)::

    [6.2901 - 8.2357]	Ses01F_impro01_F000	neu	[2.5000, 2.5000, 2.5000]
    C-E2:	Neutral;	()
    C-F1:	Frustration; Anger;	(annoyed, tense)
    A-E3:	val 3; act 2; dom  2;	()
    A-F1:	val 3; act 2; dom  1;	()

The header bracket is **valence, activation, dominance**; records store ``(activation, valence, dominance)``.
``C-E*`` lines are categorical votes (first word -> ``categories``, the rest -> ``secondary``, the parenthesised
comment -> ``comments``); ``A-E*`` lines are dimensional ratings. ``E<n>`` lines are the external evaluators and
become ``ratings``; ``F<n>``/``M<n>`` lines are the speakers' self-assessments and go to ``extra["self_ratings"]`` and
``extra["self_categories"]`` (never mixed into ``ratings``). Scale 1-5: a dimensional line with a blank or
out-of-range value is skipped and recorded (``drop_partial=True`` drops the whole utterance instead, the
papers' filter). Speaker = ``Ses<nn><gender of the last id group>`` (``Ses01F_impro01_M003`` -> ``Ses01M``),
session = ``Ses<nn>``, duration = header end - start. A block whose utterance id was already read (in any file; the
first is kept) or whose header bracket is outside 1-5 is skipped whole and recorded.
"""
from __future__ import annotations

import glob
import os
import re
from collections import defaultdict
from typing import Dict, List, Set

from .corpus import Corpus, Issues, average_repeats, outside_scale, text_lines
from .records import Utterance

NAME = "iemocap"
SCALE = (1.0, 5.0)
HEADER_RE = re.compile(
    r"^\[(?P<start>[0-9.]+)\s*-\s*(?P<end>[0-9.]+)\]\s+(?P<id>Ses\d\d[FM]_\S+)\s+(?P<cat>\w+)\s+"
    r"\[(?P<v>[0-9.]+|nan),\s*(?P<a>[0-9.]+|nan),\s*(?P<d>[0-9.]+|nan)\]\s*$"
)
CAT_RE = re.compile(r"^C-(?P<who>[EFM]\d+):\s*(?P<cats>[^(]*?)\s*(?:\((?P<comment>.*)\))?\s*$")
DIM_RE = re.compile(r"^A-(?P<who>[EFM]\d+):\s*(?P<body>[^(]*?)\s*(?:\((?P<comment>.*)\))?\s*$")
DIM_FIELD_RE = re.compile(r"(val|act|dom)\s*([^;]*);")
UTT_RE = re.compile(r"^Ses(?P<session>\d\d)[FM]_.*_(?P<gender>[FM])[A-Za-z]*\d+$")
TRANSCRIPT_RE = re.compile(r"^(?P<id>Ses\d\d[FM]_\S+)\s+\[[0-9.\-\s]+\]:\s?(?P<text>.*)$")


def _dim_values(body: str):
    """``'val 3; act 2; dom  3;'`` -> (act, val, dom) or None when a value is blank/non-numeric/out of range."""
    fields = {k: v.strip() for k, v in DIM_FIELD_RE.findall(body + ("" if body.rstrip().endswith(";") else ";"))}
    try:
        act, val, dom = (float(fields[k]) for k in ("act", "val", "dom"))
    except (KeyError, ValueError):
        return None
    if not all(SCALE[0] <= x <= SCALE[1] for x in (act, val, dom)):
        return None
    return act, val, dom


def _read_transcripts(session_dir: str, issues: Issues) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(session_dir, "dialog", "transcriptions", "*.txt"))):
        for line in text_lines(path, issues):
            m = TRANSCRIPT_RE.match(line.strip())
            if m:
                out[m["id"]] = m["text"].strip()
    return out


def read(root: str, lenient: bool = True, drop_partial: bool = False) -> Corpus:
    sessions = sorted(d for d in glob.glob(os.path.join(root, "Session*")) if os.path.isdir(d))
    files = [p for s in sessions for p in sorted(glob.glob(os.path.join(s, "dialog", "EmoEvaluation", "*.txt")))]
    if not files:
        raise FileNotFoundError(
            f"no IEMOCAP evaluation files found: {os.path.join(root, 'Session*', 'dialog', 'EmoEvaluation', '*.txt')}")
    issues = Issues(lenient)
    utterances: List[Utterance] = []
    seen: Set[str] = set()
    for session_dir in sessions:
        transcripts = _read_transcripts(session_dir, issues)
        for path in sorted(glob.glob(os.path.join(session_dir, "dialog", "EmoEvaluation", "*.txt"))):
            utterances.extend(_read_file(path, session_dir, transcripts, issues, drop_partial, seen))
    return Corpus(NAME, root, utterances, issues.skipped, rating_range=SCALE)


def _read_file(path, session_dir, transcripts, issues: Issues, drop_partial: bool, seen: Set[str]) -> List[Utterance]:
    dialog = os.path.splitext(os.path.basename(path))[0]
    out: List[Utterance] = []
    u = None
    dims: Dict[str, list] = {}
    partial = False
    skipping = False  # inside a block that is skipped whole (already recorded)

    def finish():
        if u is None:
            return
        for who, reps in dims.items():
            target = u.ratings if who.startswith("E") else u.extra["self_ratings"]
            target[who] = average_repeats(reps)
        if partial and drop_partial:
            issues.note(path, 0, f"utterance dropped (partial or out-of-range ratings): {u.utterance_id}")
        else:
            out.append(u)

    for lineno, raw in enumerate(text_lines(path, issues), 1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        if line.startswith("["):
            finish()
            u, dims, partial, skipping = None, defaultdict(list), False, False
            m = HEADER_RE.match(line)
            if m is None:
                issues.bad(path, lineno, f"malformed header line: {line[:80]!r}")
                continue
            uid = m["id"]
            avd = (float(m["a"]), float(m["v"]), float(m["d"]))
            start, end = float(m["start"]), float(m["end"])
            problem = f"duplicate utterance {uid} (first kept)" if uid in seen else \
                f"end time {end} before start time {start}" if end < start else \
                outside_scale(dict(zip(("act", "val", "dom"), avd)), SCALE)
            if problem:
                issues.bad(path, lineno, f"block skipped: {problem}")
                skipping = True
                continue
            seen.add(uid)
            um = UTT_RE.match(uid)
            u = Utterance(utterance_id=uid, corpus=NAME, consensus=avd,
                          consensus_category=m["cat"], duration=end - start,
                          transcript=transcripts.get(uid))
            wav = os.path.join(session_dir, "sentences", "wav", dialog, uid + ".wav")
            u.audio_path = wav if os.path.isfile(wav) else None
            if um:
                u.session = f"Ses{um['session']}"
                u.gender = um["gender"]
                u.speaker = u.session + um["gender"]
            else:
                issues.note(path, lineno, f"cannot parse speaker from id {uid}")
            u.extra.update(dialog=dialog, start=start, end=end,
                           self_ratings={}, self_categories={})
            continue
        if skipping:
            continue
        if u is None:
            issues.bad(path, lineno, "rating line outside a block (no valid header above it)")
            continue
        if line.startswith("C-"):
            m = CAT_RE.match(line)
            if m is None:
                issues.bad(path, lineno, f"malformed categorical line: {line[:80]!r}")
                continue
            cats = [c.strip() for c in m["cats"].split(";") if c.strip()]
            if not cats:
                issues.note(path, lineno, "blank categorical line skipped")
                continue
            who = m["who"]
            if who.startswith("E"):
                u.categories[who], u.secondary[who] = cats[0], cats[1:]
                if m["comment"] and m["comment"].strip():
                    u.comments[who] = m["comment"].strip()
            else:
                u.extra["self_categories"][who] = cats
        elif line.startswith("A-"):
            m = DIM_RE.match(line)
            if m is None:
                issues.bad(path, lineno, f"malformed dimensional line: {line[:80]!r}")
                continue
            vals = _dim_values(m["body"])
            if vals is None:
                partial = True
                issues.note(path, lineno, f"blank or out-of-range dimensional line skipped: {line[:80]!r}")
                continue
            dims[m["who"]].append(vals)
        else:
            issues.bad(path, lineno, f"unrecognised line: {line[:80]!r}")
    finish()
    return out
