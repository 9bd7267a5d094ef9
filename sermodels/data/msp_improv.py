"""MSP-Improv reader (``Evaluation.txt`` blocks, ``Audio/**/*.wav``, ``Text/<utt_id>.txt``).

Some copies spell the labels file ``Evalution.txt``; both are accepted. The corpus has no duration column: durations
come from the audio headers (:func:`sermodels.data.load_corpus`).

Layout of ``Evaluation.txt``: blocks separated by blank lines; a header
``UTD-IMPROV-<id>.avi; <cat letter>; A:<x>; V:<x>; D:<x|NaN> ; N:<x|NaN>;`` followed by one line per evaluator
``<evaluator>; <category word>; <secondary emotions>; A:<x>; V:<x>; D:<x|NaN>; N:<x|NaN>;``. Scale 1-5.
Utterance ids are returned as ``MSP-IMPROV-<id>`` (the audio/transcript stem).

**Activation orientation (decision).** Ratings are returned on the corpus' 1-5 scale with activation re-oriented
so that 5 = most active: ``activation = 6 - A`` for the header and for every evaluator (``flip_activation=True``,
the default); valence and dominance are returned as stored. Why: the corpus release ships no machine-readable
statement of the scale direction, and the only documentation of the stored files we have is the loader of the
lab that co-authored the corpus (Mower Provost's group; jtavernor/SER-Datasets, used for the IS-2024 paper):
it states that "Improv stores activation values high to low (1 to 5)" and applies ``6 - A`` to both the consensus
and each evaluator. ``6 - A`` keeps the 1-5 range (its IS-2023 state's ``5 - A`` maps 1-5 to 4-0, off the scale,
so that variant is not adopted). Dominance is not flipped because nothing documents it as reversed. Users who
have checked their copy otherwise pass ``flip_activation=False``. The check is easy on a real copy: with the flip,
utterances whose consensus category is A (angry) or H (happy) must have a higher mean activation than S (sad)
and N (neutral); :func:`activation_by_category` prints exactly that.

Evaluators who rated a clip twice are averaged (NaN-aware); the first category word is kept. A block whose header
repeats an earlier utterance id (the first is kept) or holds a consensus outside 1-5 is skipped whole and recorded.
Naturalness goes to ``extra["naturalness"]`` (consensus) and ``extra["naturalness_ratings"]`` (per evaluator); the
parsed id fields to ``extra["sentence"]``, ``extra["intended"]`` (A/H/S/N), ``extra["scenario"]`` (P/R/S/T).
"""
from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from typing import Dict, List

from .corpus import (Corpus, Issues, average_repeats, first_existing, index_audio, outside_scale, read_transcript,
                     text_lines)
from .records import Utterance

NAME = "msp-improv"
_NUM = r"(?:[0-9]+(?:\.[0-9]*)?|NaN|nan)"
HEADER_RE = re.compile(
    rf"^(?:UTD|MSP)-IMPROV-(?P<id>[A-Za-z0-9\-]+)\.avi;\s*(?P<cat>\w);\s*A:\s*(?P<a>{_NUM})\s*;\s*V:\s*(?P<v>{_NUM})\s*;"
    rf"\s*D:\s*(?P<d>{_NUM})\s*;\s*N:\s*(?P<n>{_NUM})\s*;\s*$"
)
RATER_RE = re.compile(
    rf"^(?P<ann>[^;\s]+);\s*(?P<cat>[^;]*?)\s*(?:;\s*(?P<sec>.*?))?;\s*A:\s*(?P<a>{_NUM})\s*;\s*V:\s*(?P<v>{_NUM})\s*;"
    rf"\s*D:\s*(?P<d>{_NUM})\s*;\s*N:\s*(?P<n>{_NUM})\s*;\s*$"
)
UTT_RE = re.compile(
    r"S(?P<sentence>\d\d)(?P<intended>[AHSN])-(?P<speaker>(?P<gender>[MF])(?P<session>\d\d))-(?P<scenario>[PRST])-"
    r"(?P<listener>[FM])(?P<dyad>[FM])(?P<turn>\d\d)"
)
SCALE = (1.0, 5.0)
LABEL_FILES = ("Evaluation.txt", "Evalution.txt")
_SKIP = object()  # the current block is being skipped (already recorded)


def flip_activation_value(a: float) -> float:
    """Stored MSP-Improv activation (5 = calm) -> activation with 5 = active, on the same 1-5 scale."""
    return 6.0 - a


def _f(text: str) -> float:
    return math.nan if text.lower() == "nan" else float(text)


def read(root: str, lenient: bool = True, flip_activation: bool = True) -> Corpus:
    path = first_existing(root, list(LABEL_FILES), "MSP-Improv labels file Evaluation.txt")
    issues = Issues(lenient)
    audio = index_audio(os.path.join(root, "Audio"))
    flip = flip_activation_value if flip_activation else (lambda a: a)

    order: List[str] = []
    headers: Dict[str, dict] = {}
    raw: Dict[str, Dict[str, list]] = defaultdict(lambda: defaultdict(list))
    current = None  # utterance id of the block being read, _SKIP, or None outside a block
    for lineno, line in enumerate(text_lines(path, issues), 1):
        line = line.strip()
        if not line:
            current = None
            continue
        m = HEADER_RE.match(line)
        if m:
            uid = "MSP-IMPROV-" + m["id"]
            avdn = tuple(_f(m[k]) for k in "avdn")
            problem = f"duplicate header for {uid} (first kept)" if uid in headers else \
                outside_scale(dict(zip("AVD", avdn)), SCALE)
            if problem:
                issues.bad(path, lineno, f"block skipped: {problem}")
                current = _SKIP
                continue
            headers[uid] = dict(line=lineno, cat=m["cat"], avdn=avdn)
            order.append(uid)
            current = uid
            continue
        if current is _SKIP:
            continue
        if line.startswith(("UTD-IMPROV-", "MSP-IMPROV-")):
            issues.bad(path, lineno, f"malformed header line: {line[:80]!r}")
            current = None
            continue
        m = RATER_RE.match(line)
        if m is None:
            issues.bad(path, lineno, f"malformed evaluator line: {line[:80]!r}")
            continue
        if current is None:
            issues.bad(path, lineno, "evaluator line outside a block (no header above it)")
            continue
        a, v, d, n = (_f(m[k]) for k in "avdn")
        if outside_scale(dict(zip("AVD", (a, v, d))), SCALE):
            issues.note(path, lineno, f"out-of-range rating skipped: {line[:80]!r}")
            continue
        sec = [s.strip() for s in re.split(r"[,;]", m["sec"] or "") if s.strip()]
        raw[current][m["ann"]].append((flip(a), v, d, n, m["cat"].strip(), sec))

    utterances = []
    for uid in order:
        h = headers[uid]
        a, v, d, n = h["avdn"]
        u = Utterance(utterance_id=uid, corpus=NAME, audio_path=audio.get(uid),
                      transcript=read_transcript(os.path.join(root, "Text", uid + ".txt"), issues),
                      consensus=(flip(a), v, d), consensus_category=h["cat"])
        u.extra["naturalness"] = n
        m = UTT_RE.search(uid)
        if m:
            u.speaker, u.gender, u.session = m["speaker"], m["gender"], f"session{int(m['session'])}"
            u.extra.update(sentence=m["sentence"], intended=m["intended"], scenario=m["scenario"])
        else:
            issues.note(path, h["line"], f"cannot parse speaker from id {uid}")
        nat = {}
        for ann, reps in raw.get(uid, {}).items():
            avdn = average_repeats([r[:4] for r in reps])
            u.ratings[ann] = avdn[:3]
            nat[ann] = avdn[3]
            u.categories[ann] = reps[0][4]
            u.secondary[ann] = [s for r in reps for s in r[5]]
        u.extra["naturalness_ratings"] = nat
        utterances.append(u)
    return Corpus(NAME, root, utterances, issues.skipped, rating_range=SCALE)


def activation_by_category(corpus: Corpus) -> Dict[str, float]:
    """Mean consensus activation per consensus category letter: the orientation check described above."""
    acc: Dict[str, List[float]] = defaultdict(list)
    for u in corpus.utterances:
        if u.consensus is not None and not math.isnan(u.consensus[0]):
            acc[u.consensus_category].append(u.consensus[0])
    return {k: sum(v) / len(v) for k, v in sorted(acc.items())}
