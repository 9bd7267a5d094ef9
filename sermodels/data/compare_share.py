"""ComParE 2023 Emotion Share (Hume-Prosody) reader: ``wav/*.wav`` and ``lab/{train,devel,test}.csv``.

Columns ``filename`` plus the nine emotions; values are continuous shares in [0, 1] and are stored in
``Utterance.shares`` (emotion -> value). Test labels are blank: those rows get empty ``shares`` (not skipped).
A row with some but not all nine values blank, or with a share that is not a number in [0, 1], is malformed.
``split`` = train / val (devel) / test. Labels are keyed on ``filename`` (utterance id = without ``.wav``), never on
file order. No per-annotator ratings exist for this corpus; durations come from the audio headers.
"""
from __future__ import annotations

import os
from typing import List

from .corpus import Corpus, Issues, csv_rows, outside_scale, strip_wav
from .records import Utterance

NAME = "compare-share"
EMOTIONS = ("Anger", "Boredom", "Calmness", "Concentration", "Determination", "Excitement", "Interest", "Sadness",
            "Tiredness")
PARTITIONS = (("train", "train"), ("devel", "val"), ("test", "test"))
SHARE_RANGE = (0.0, 1.0)


def read(root: str, lenient: bool = True) -> Corpus:
    issues = Issues(lenient)
    utterances: List[Utterance] = []
    seen = set()
    found = False
    for part, split in PARTITIONS:
        path = os.path.join(root, "lab", f"{part}.csv")
        if not os.path.isfile(path):
            issues.note(path, 0, f"partition file missing: {part}")
            continue
        found = True
        for lineno, r in csv_rows(path, ("filename",) + EMOTIONS, issues):
            fname = r["filename"]
            uid = strip_wav(fname)
            if not uid or uid in seen:
                issues.bad(path, lineno, f"empty or duplicate filename {fname!r}")
                continue
            cells = [r[e] for e in EMOTIONS]
            blank = [c == "" for c in cells]
            if any(blank) and not all(blank):
                issues.bad(path, lineno, "some but not all emotion values are blank")
                continue
            try:
                shares = {} if all(blank) else {e: float(c) for e, c in zip(EMOTIONS, cells)}
            except ValueError:
                issues.bad(path, lineno, f"non-numeric emotion value in {cells}")
                continue
            problem = outside_scale(shares, SHARE_RANGE, nan_ok=False)
            if problem:
                issues.bad(path, lineno, f"share {problem}")
                continue
            seen.add(uid)
            wav = os.path.join(root, "wav", uid + ".wav")
            utterances.append(Utterance(utterance_id=uid, corpus=NAME,
                                        audio_path=wav if os.path.isfile(wav) else None, split=split,
                                        shares=shares))
    if not found:
        raise FileNotFoundError(f"no ComParE label files found under {os.path.join(root, 'lab')} "
                                f"(expected train.csv, devel.csv, test.csv)")
    return Corpus(NAME, root, utterances, issues.skipped)
