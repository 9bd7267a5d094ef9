"""MSP-Podcast reader (v1.6-v1.12, v2.0).

Consensus: ``<labels dir>/labels_consensus.csv`` (``labels_concensus.csv`` up to v1.9; older releases also ship
``labels_concensus.json`` / ``labels_consensus.json`` keyed by file name), columns
``FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set``; the labels dir is ``Labels``, ``labels``
(v1.9) or ``label`` (v1.6). Individual ratings: ``labels_detailed.csv`` in one of three layouts:

- v1.x ``FileName, EmoDetail`` with ``"WORKER00001234; Neutral; <secondary, comma-sep>; A:4.0; V:4.0; D:5.0;"``;
- v1.6 ``FileName, Workers, EmoClass_Major, EmoClass_Second, EmoAct, EmoVal, EmoDom``;
- v2.0 ``FileName, WorkerID, EmoClass_Major, EmoClass_Second, EmoAct, EmoVal, EmoDom``.

A worker listed twice for one file is averaged; rows with a NaN attribute are dropped and recorded. Scale 1-7:
individual ratings outside it are dropped and recorded, a consensus row outside it is malformed.
Utterance id = file name without ``.wav``; ``split`` = train / val (Development or Validation) / test1 / test2 /
test3; ``SpkrID`` ``Unknown`` -> speaker None; gender -> 'F'/'M'/None. Audio is looked up in ``Audios``,
``audio_16kHz`` or ``Audio``; transcripts in ``Transcripts/<id>.txt``. The corpus has no duration column: durations
come from the audio headers (:func:`sermodels.data.load_corpus`).
"""
from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from typing import Dict, Optional

from .corpus import (Corpus, Issues, average_repeats, csv_header, csv_rows, normalise_gender, outside_scale, read_text,
                     read_transcript, strip_wav)
from .records import Utterance

NAME = "msp-podcast"
SCALE = (1.0, 7.0)
LABEL_DIRS = ("Labels", "labels", "label")
CONSENSUS_FILES = ("labels_consensus.csv", "labels_concensus.csv", "labels_consensus.json", "labels_concensus.json")
CONSENSUS_COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")
SPLITS = {"train": "train", "development": "val", "validation": "val", "test1": "test1", "test2": "test2",
          "test3": "test3"}
DETAIL_LAYOUTS = {  # worker column -> layout name
    "EmoDetail": "v1.x", "Workers": "v1.6", "WorkerID": "v2.0",
}
DETAIL_COLUMNS = ("EmoClass_Major", "EmoClass_Second", "EmoAct", "EmoVal", "EmoDom")
_NUM = r"(?:[0-9]+(?:\.[0-9]*)?|NaN|nan|)"
EMODETAIL_RE = re.compile(
    rf"^\s*(?P<ann>WORKER\d+);\s*(?P<cat>[^;]*?);\s*(?P<sec>[^;]*?);\s*A:\s*(?P<a>{_NUM});\s*V:\s*(?P<v>{_NUM});"
    rf"\s*D:\s*(?P<d>{_NUM});?\s*$"
)
AUDIO_DIRS = ("Audios", "audio_16kHz", "Audio")


def _num(text) -> float:
    if text is None:
        return math.nan
    text = str(text).strip()
    if text == "" or text.lower() == "nan":
        return math.nan
    return float(text)


def _find(root: str, names) -> Optional[str]:
    for d in LABEL_DIRS:
        for n in names:
            p = os.path.join(root, d, n)
            if os.path.isfile(p):
                return p
    return None


def _consensus_rows(path: str, issues: Issues):
    """Yield (line, row dict) from the consensus CSV or JSON (whose entries have no line: 0, the reasons name the
    file name)."""
    if path.endswith(".json"):
        try:
            data = json.loads(read_text(path, issues))
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}:1: expected a JSON object keyed by file name, got {type(data).__name__}")
        for fname, row in data.items():
            if not isinstance(row, dict):
                issues.bad(path, 0, f"entry for {fname!r} is not an object")
                continue
            yield 0, dict(row, FileName=fname)
        return
    yield from csv_rows(path, CONSENSUS_COLUMNS, issues)


def _detailed_rows(path: str, issues: Issues):
    """Yield (line, file id, worker, (act, val, dom), category, secondary list)."""
    header = csv_header(path, issues)
    if "FileName" not in header:
        raise ValueError(f"{path}:1: missing column 'FileName'; found {header}")
    layout = next((DETAIL_LAYOUTS[c] for c in header if c in DETAIL_LAYOUTS), None)
    if layout is None:
        raise ValueError(f"{path}:1: unknown labels_detailed layout; need one of the columns "
                         f"{sorted(DETAIL_LAYOUTS)}, found {header}")
    expected = {"FileName", "EmoDetail"} if layout == "v1.x" else \
        {"FileName", "Workers" if layout == "v1.6" else "WorkerID", *DETAIL_COLUMNS}
    missing = expected - set(header)
    if missing:
        raise ValueError(f"{path}:1: {layout} layout is missing column(s) {sorted(missing)}")
    for lineno, r in csv_rows(path, expected, issues):
        uid = strip_wav(r["FileName"])
        if layout == "v1.x":
            m = EMODETAIL_RE.match(r["EmoDetail"])
            if m is None:
                issues.bad(path, lineno, f"malformed EmoDetail: {r['EmoDetail'][:80]!r}")
                continue
            worker, cat, sec = m["ann"], m["cat"].strip(), m["sec"]
            vals = (m["a"], m["v"], m["d"])
        else:
            worker = r["Workers" if layout == "v1.6" else "WorkerID"].strip()
            cat, sec = r["EmoClass_Major"].strip(), r["EmoClass_Second"]
            vals = (r["EmoAct"], r["EmoVal"], r["EmoDom"])
        try:
            avd = tuple(_num(x) for x in vals)
        except ValueError:
            issues.bad(path, lineno, f"non-numeric attribute {vals}")
            continue
        if not worker:
            issues.bad(path, lineno, "empty worker id")
            continue
        if any(math.isnan(x) for x in avd):
            issues.note(path, lineno, f"NaN attribute row dropped ({uid}, {worker})")
            continue
        if not all(SCALE[0] <= x <= SCALE[1] for x in avd):
            issues.note(path, lineno, f"out-of-range rating dropped ({uid}, {worker}): {avd}")
            continue
        secondary = [s.strip() for s in (sec or "").split(",") if s.strip()]
        yield lineno, uid, worker, avd, cat, secondary


def read(root: str, lenient: bool = True) -> Corpus:
    path = _find(root, CONSENSUS_FILES)
    if path is None:
        tried = [os.path.join(root, d, n) for d in LABEL_DIRS for n in CONSENSUS_FILES]
        raise FileNotFoundError("MSP-Podcast consensus labels not found; tried: " + ", ".join(tried))
    issues = Issues(lenient)
    audio_dir = next((os.path.join(root, d) for d in AUDIO_DIRS if os.path.isdir(os.path.join(root, d))), None)
    utterances: Dict[str, Utterance] = {}
    for lineno, row in _consensus_rows(path, issues):
        fname = str(row.get("FileName", "")).strip()
        try:
            avd = (_num(row.get("EmoAct")), _num(row.get("EmoVal")), _num(row.get("EmoDom")))
        except ValueError:
            issues.bad(path, lineno, f"non-numeric EmoAct/EmoVal/EmoDom in {row}")
            continue
        split = SPLITS.get(str(row.get("Split_Set", "")).strip().lower())
        if not fname or split is None:
            issues.bad(path, lineno, f"missing file name or unknown Split_Set {row.get('Split_Set')!r}")
            continue
        bad_scale = outside_scale(dict(zip(("EmoAct", "EmoVal", "EmoDom"), avd)), SCALE)
        if bad_scale:
            issues.bad(path, lineno, f"consensus {bad_scale} ({fname})")
            continue
        uid = strip_wav(fname)
        if uid in utterances:
            issues.bad(path, lineno, f"duplicate FileName {fname}")
            continue
        spk = str(row.get("SpkrID", "")).strip()
        wav = os.path.join(audio_dir, uid + ".wav") if audio_dir else None
        utterances[uid] = Utterance(
            utterance_id=uid, corpus=NAME, audio_path=wav if wav and os.path.isfile(wav) else None,
            transcript=read_transcript(os.path.join(root, "Transcripts", uid + ".txt"), issues),
            speaker=None if spk.lower() in ("", "unknown") else spk, gender=normalise_gender(row.get("Gender")),
            split=split, consensus=avd, consensus_category=str(row.get("EmoClass", "")).strip() or None)
    detailed = _find(root, ("labels_detailed.csv",))
    if detailed is None:
        issues.note(os.path.join(root, LABEL_DIRS[0], "labels_detailed.csv"), 0,
                    "labels_detailed.csv not found: no individual ratings")
    else:
        reps: Dict[str, Dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for lineno, uid, worker, avd, cat, secondary in _detailed_rows(detailed, issues):
            if uid not in utterances:
                issues.note(detailed, lineno, f"rating for {uid} which has no consensus row")
                continue
            reps[uid][worker].append((avd, cat, secondary))
        for uid, workers in reps.items():
            u = utterances[uid]
            for worker, rs in workers.items():
                u.ratings[worker] = average_repeats([r[0] for r in rs])
                u.categories[worker] = rs[0][1]
                u.secondary[worker] = [s for r in rs for s in r[2]]
    return Corpus(NAME, root, list(utterances.values()), issues.skipped, rating_range=SCALE)
