"""MuSE (Multimodal Stressed Emotion) reader.

Labels: ``SurveyInformation/`` (or ``Survey Information (Questions, Data etc)/``)
``Emotion data from crowdsourcing (C is when annotators had access to all previous sentences).csv`` with columns
``Sentence_name, Duration, Gender, Type, Ques_Type, Activation_Mean, Activation_SD, Valence_Mean, Valence_SD,
Activation_Annotation, Valence_Annotation, C_Activation_Mean, ..., C_Valence_Annotation, S_Activation, S_Valence``.
``*_Annotation`` cells hold the individual ratings as ``;``-separated integers (scale 1-9).

Annotators are anonymous in the public release: the i-th activation value and the i-th valence value of a cell are
taken to come from the same rater and are stored under positional ids ``r1, r2, ...``. These ids name positions
within one utterance, not people: use MuSE for distribution targets and zero-shot evaluation (as the papers do),
never to fit per-annotator heads. ``context=False`` (default, the IS-2024 choice) reads the no-context columns,
``context=True`` the ``C_`` columns; the other set is kept in ``extra["ratings_context"]`` /
``extra["ratings_no_context"]``. Self-reports ``S_*`` go to ``extra["self_report"]`` (activation, valence).
Utterance id = ``Sentence_name`` without a ``.wav`` suffix (some releases carry one); speaker = its first 2
characters; ``extra["stress"]`` = 'stressed' / 'non_stressed' from ``Type``. Consensus = (Activation_Mean,
Valence_Mean, NaN) of the chosen column set; a row whose consensus is outside 1-9 is malformed. ``duration`` =
``Duration`` (seconds); a blank one is read from the audio header (:func:`sermodels.data.load_corpus`).
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Tuple

from .corpus import Corpus, Issues, csv_rows, index_audio, normalise_gender, outside_scale, read_transcript, strip_wav
from .records import Utterance

NAME = "muse"
SCALE = (1.0, 9.0)
LABEL_DIRS = ("SurveyInformation", "Survey Information (Questions, Data etc)")
LABEL_FILE = "Emotion data from crowdsourcing (C is when annotators had access to all previous sentences).csv"
COLUMNS = ("Sentence_name", "Duration", "Gender", "Type", "Ques_Type", "Activation_Mean", "Activation_SD",
           "Valence_Mean", "Valence_SD", "Activation_Annotation", "Valence_Annotation", "C_Activation_Mean",
           "C_Activation_SD", "C_Valence_Mean", "C_Valence_SD", "C_Activation_Annotation", "C_Valence_Annotation",
           "S_Activation", "S_Valence")
STRESS = {"S": "stressed", "NS": "non_stressed"}
AUDIO_DIRS = (os.path.join("Stressed", "Audio"), os.path.join("NotStressed", "Audio"))


def _num(text: str) -> float:
    text = (text or "").strip()
    return math.nan if text == "" or text.lower() == "nan" else float(text)


def parse_annotations(activation: str, valence: str) -> Dict[str, Tuple[float, float, float]]:
    """Two ``;``-separated cells -> {'r1': (act, val, nan), ...}; ValueError if the counts differ or a value is bad."""
    acts = [x.strip() for x in (activation or "").split(";") if x.strip()]
    vals = [x.strip() for x in (valence or "").split(";") if x.strip()]
    if len(acts) != len(vals):
        raise ValueError(f"{len(acts)} activation ratings but {len(vals)} valence ratings")
    out = {}
    for i, (a, v) in enumerate(zip(acts, vals), 1):
        a, v = float(a), float(v)
        if not (SCALE[0] <= a <= SCALE[1] and SCALE[0] <= v <= SCALE[1]):
            raise ValueError(f"rating {i} out of range 1-9: activation {a}, valence {v}")
        out[f"r{i}"] = (a, v, math.nan)
    return out


def _label_file(root: str) -> str:
    tried = [os.path.join(root, d, LABEL_FILE) for d in LABEL_DIRS]
    for p in tried:
        if os.path.isfile(p):
            return p
    raise FileNotFoundError("MuSE crowdsourcing labels not found; tried: " + ", ".join(tried))


def read(root: str, lenient: bool = True, context: bool = False) -> Corpus:
    path = _label_file(root)
    issues = Issues(lenient)
    audio: Dict[str, str] = {}
    for d in AUDIO_DIRS:
        audio.update(index_audio(os.path.join(root, d)))
    chosen, other = ("C_", "") if context else ("", "C_")
    utterances: List[Utterance] = []
    seen = set()
    for lineno, r in csv_rows(path, COLUMNS, issues):
        uid = strip_wav(r["Sentence_name"])
        if not uid or uid in seen:
            issues.bad(path, lineno, f"empty or duplicate Sentence_name {uid!r}")
            continue
        try:
            ratings = parse_annotations(r[f"{chosen}Activation_Annotation"], r[f"{chosen}Valence_Annotation"])
            consensus = (_num(r[f"{chosen}Activation_Mean"]), _num(r[f"{chosen}Valence_Mean"]), math.nan)
            duration: Optional[float] = _num(r["Duration"])
            self_report = (_num(r["S_Activation"]), _num(r["S_Valence"]))
        except ValueError as e:
            issues.bad(path, lineno, str(e))
            continue
        problem = outside_scale({f"{chosen}Activation_Mean": consensus[0], f"{chosen}Valence_Mean": consensus[1]},
                                SCALE)
        if not problem and not (math.isnan(duration) or 0 < duration < math.inf):
            problem = f"Duration {duration} is not a positive number of seconds"
        if problem:
            issues.bad(path, lineno, problem)
            continue
        try:
            other_ratings = parse_annotations(r[f"{other}Activation_Annotation"], r[f"{other}Valence_Annotation"])
        except ValueError as e:
            issues.note(path, lineno, f"{'no-context' if context else 'context'} ratings ignored: {e}")
            other_ratings = {}
        seen.add(uid)
        u = Utterance(utterance_id=uid, corpus=NAME, audio_path=audio.get(uid),
                      transcript=read_transcript(os.path.join(root, "Combined", "Utterance Transcripts",
                                                              uid + ".txt"), issues),
                      speaker=uid[:2], gender=normalise_gender(r["Gender"]),
                      duration=None if math.isnan(duration) else duration, ratings=ratings, consensus=consensus)
        u.extra.update({"stress": STRESS.get(r["Type"].upper(), r["Type"] or None), "question_type": r["Ques_Type"],
                        "self_report": self_report,
                        ("ratings_no_context" if context else "ratings_context"): other_ratings})
        utterances.append(u)
    return Corpus(NAME, root, utterances, issues.skipped, rating_range=SCALE)
