"""A synthetic corpus written in each real on-disk format (tests and end-to-end runs without a licence).

``write_synthetic_corpus(root, fmt)`` draws utterances with a latent (activation, valence) in [-1, 1]² around one of
four emotions, a population of annotators with individual biases and noise who give Likert ratings on the corpus'
scale, speakers with genders, transcripts and (``audio=True``) voice-like clips whose prosody follows the same
utterance's latent state: f0 level and range, loudness, spectral tilt and syllable rate rise with activation; the f0
slope and the formants rise with valence. It returns the ground truth as :class:`Utterance` records equal to what
``load_corpus(fmt, root)`` reads back (every field but ``extra``, which holds only MuSE's ``stress``), durations
included (label-file durations of IEMOCAP and MuSE equal their clips' lengths).

Audio engine: ``engine="numpy"`` (a harmonic source through two formant resonators, used by CI), ``"espeak-ng"``
(needs the ``espeak-ng`` binary: pitch, speed and amplitude follow the latent state), or ``"auto"`` (espeak-ng when
``shutil.which('espeak-ng')`` finds it, else numpy).
"""
from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from . import compare_share, muse
from .corpus import average_repeats, corpus_name
from .records import Utterance

FORMATS = ("msp-improv", "iemocap", "msp-podcast", "muse", "compare-share", "generic")
LABEL_DURATIONS = ("iemocap", "muse")  # formats whose label files hold the duration; the others' come from audio
Written = Tuple[List[Utterance], Callable[[Utterance], object]]  # records in generation order, key of the read order
SCALES = {"msp-improv": (1, 5), "iemocap": (1, 5), "msp-podcast": (1, 7), "muse": (1, 9), "generic": (1, 5)}
EMOTIONS = {  # code -> (activation, valence) centre
    "ang": (0.7, -0.6), "hap": (0.5, 0.7), "sad": (-0.6, -0.6), "neu": (0.0, 0.0),
}
WORDS = {  # per-format category words for the codes above
    "msp-improv": {"ang": "Angry", "hap": "Happy", "sad": "Sad", "neu": "Neutral"},
    "iemocap": {"ang": "Anger", "hap": "Happiness", "sad": "Sadness", "neu": "Neutral"},
    "msp-podcast": {"ang": "Angry", "hap": "Happy", "sad": "Sad", "neu": "Neutral"},
    "generic": {"ang": "anger", "hap": "happiness", "sad": "sadness", "neu": "neutral"},
}
LETTERS = {"ang": "A", "hap": "H", "sad": "S", "neu": "N"}
SENTENCES = ("I can't believe you did that", "we should go home now", "that is wonderful news",
             "nobody called me back", "the meeting starts at nine", "leave me alone please",
             "thank you so much for coming", "it is raining again")
COMMENTS = ("annoyed", "tense", "calm", "bored", "cheerful", "a bit sarcastic", "tired, upset")


# ----------------------------------------------------------------------------------------------------- audio


def synth_voice(activation: float, valence: float, gender: str, duration: float, sample_rate: int,
                rng: np.random.Generator) -> np.ndarray:
    """A voice-like float32 clip in [-1, 1] whose prosody follows (activation, valence) in [-1, 1]."""
    from scipy.signal import lfilter

    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    f0_mean = (120.0 if gender == "M" else 210.0) * 2.0 ** (0.45 * activation)
    f0 = f0_mean * (1 + (0.1 + 0.1 * activation) * np.sin(2 * np.pi * 1.3 * t + rng.uniform(0, 6.3)))
    f0 *= 1 + 0.2 * valence * (t / duration - 0.5) + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(n)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    tilt = 1.6 - 0.5 * activation  # amplitude of harmonic k ~ k^-tilt: flatter (brighter) when active
    n_harm = int(min(40, (sample_rate / 2 - 200) / f0.max()))
    source = sum(k ** -tilt * np.sin(k * phase) for k in range(1, n_harm + 1))
    source += 0.02 * rng.standard_normal(n)
    voice = source
    for fc, bw in ((600 + 80 * valence, 90), (1400 + 250 * valence, 120)):
        r = np.exp(-np.pi * bw / sample_rate)
        voice = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * fc / sample_rate), r * r], voice)
    rate = 4.0 + 1.5 * activation  # syllables per second
    envelope = np.clip(np.sin(np.pi * rate * t + rng.uniform(0, 1)), 0, None) ** 0.7
    ramp = np.minimum(1.0, np.minimum(t, duration - t) / 0.02)
    y = voice * envelope * ramp
    y = y / (np.abs(y).max() + 1e-9) * 0.25 * 10 ** (0.4 * activation)
    return np.clip(y, -1, 1).astype(np.float32)


def _espeak_voice(text: str, activation: float, valence: float, gender: str, sample_rate: int) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("engine='espeak-ng' needs the espeak-ng binary on PATH (apt-get install espeak-ng); "
                           "use engine='numpy'")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "x.wav")
        subprocess.run([exe, "-v", "en-us+" + ("m3" if gender == "M" else "f3"), "-w", out,
                        "-p", str(int(50 + 30 * activation + 10 * valence)), "-s", str(int(160 + 50 * activation)),
                        "-a", str(int(100 + 60 * activation)), text], check=True, capture_output=True)
        y, sr = sf.read(out, dtype="float32")
    if y.ndim > 1:
        y = y.mean(axis=1)
    if sr != sample_rate:
        g = math.gcd(sr, sample_rate)
        y = resample_poly(y, sample_rate // g, sr // g).astype(np.float32)
    return y


def _write_wav(path: str, text: str, activation: float, valence: float, gender: Optional[str], sample_rate: int,
               engine: str, rng: np.random.Generator, clip_seconds: Tuple[float, float],
               duration: Optional[float]) -> float:
    """Write one clip; ``duration`` (seconds) fixes its length (espeak-ng speech is cut or padded with silence),
    None draws it from ``clip_seconds`` (numpy engine) or keeps the speech's length. Returns the clip's duration."""
    import soundfile as sf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    g = gender or "F"
    if engine == "espeak-ng":
        y = _espeak_voice(text, activation, valence, g, sample_rate)
        if duration is not None:
            n = int(round(duration * sample_rate))
            y = np.pad(y[:n], (0, max(0, n - len(y))))
    else:
        seconds = float(rng.uniform(*clip_seconds)) if duration is None else duration
        y = synth_voice(activation, valence, g, seconds, sample_rate, rng)
    sf.write(path, y, sample_rate, subtype="PCM_16")
    return len(y) / sample_rate


# ------------------------------------------------------------------------------------------ latent population


class _Population:
    """Latent states, speakers and annotators shared by every format writer."""

    def __init__(self, n_utterances: int, n_annotators: int, rng: np.random.Generator, annotator_bias: float = 0.15,
                 clip_seconds: Tuple[float, float] = (0.8, 1.2)):
        if isinstance(n_utterances, bool) or not isinstance(n_utterances, int) or n_utterances < 1:
            raise ValueError(f"n_utterances must be an int >= 1, got {n_utterances!r}")
        if isinstance(n_annotators, bool) or not isinstance(n_annotators, int) or n_annotators < 2:
            raise ValueError(f"n_annotators must be an int >= 2, got {n_annotators!r}")
        self.rng = rng
        self.clip_seconds = clip_seconds
        codes = list(EMOTIONS)
        self.emotion = [codes[i % 4] for i in rng.permutation(n_utterances)]
        centre = np.array([EMOTIONS[c] for c in self.emotion])
        self.latent = np.clip(centre + rng.normal(0, 0.2, centre.shape), -1, 1)  # (U, 2) activation, valence
        self.bias = rng.normal(0, annotator_bias, (n_annotators, 2))
        self.noise = rng.uniform(0.1, 0.3, n_annotators)
        self.n_annotators = n_annotators

    def raters(self, i: int) -> np.ndarray:
        k = int(self.rng.integers(min(3, self.n_annotators), min(7, self.n_annotators) + 1))
        return np.sort(self.rng.choice(self.n_annotators, size=k, replace=False))

    def rate(self, i: int, a: int, scale: Tuple[int, int]) -> Tuple[float, float, float]:
        """Integer-valued (activation, valence, dominance) on ``scale`` for utterance i by annotator a."""
        lo, hi = scale
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        x = self.latent[i] + self.bias[a] + self.rng.normal(0, self.noise[a], 2)
        dom = self.latent[i, 0] * 0.5 + self.rng.normal(0, 0.3)
        return tuple(float(np.clip(np.rint(mid + half * v), lo, hi)) for v in (x[0], x[1], dom))

    def vote(self, i: int, a: int) -> str:
        x = self.latent[i] + self.bias[a] + self.rng.normal(0, self.noise[a], 2)
        return min(EMOTIONS, key=lambda c: (EMOTIONS[c][0] - x[0]) ** 2 + (EMOTIONS[c][1] - x[1]) ** 2)


def _mean(values) -> float:
    return float(sum(values) / len(values))


def _fmt(x: float, nd: int) -> str:
    return "NaN" if math.isnan(x) else f"{x:.{nd}f}"


def _majority(codes: List[str]) -> str:
    return Counter(codes).most_common(1)[0][0]


def _write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


# ---------------------------------------------------------------------------------------------- the writer


def write_synthetic_corpus(root, fmt: str = "msp-improv", n_utterances: int = 24, n_annotators: int = 12,
                           seed: int = 0, audio: bool = True, sample_rate: int = 16000,
                           engine: str = "auto", annotator_bias: float = 0.15,
                           clip_seconds: Tuple[float, float] = (0.8, 1.2), overwrite: bool = False
                           ) -> List[Utterance]:
    """Write a synthetic corpus of ``n_utterances`` in format ``fmt`` into the folder ``root``; return the
    ground-truth records in the order ``load_corpus(fmt, root)`` reads them.

    ``fmt`` is any :func:`sermodels.data.load_corpus` name or alias. ``root`` is created; an existing non-empty
    folder raises FileExistsError unless ``overwrite`` (files of the same names are then replaced, others kept).
    The same ``seed`` writes the same corpus. Ratings are integers on the corpus scale (MSP-Improv's activation is
    written in its stored, reversed orientation, so the reader's ``6 - A`` gives back the truth). Numpy-engine
    clips last ``clip_seconds`` (uniform; the real corpora's utterances last about 2-12 s, which
    ``clip_seconds=(2, 12)`` imitates at the cost of larger files). Each annotator's (activation, valence) bias is
    drawn from N(0, ``annotator_bias``²) on the [-1, 1] scale (one Likert step of a 1-5 scale is 0.5); per-rating
    noise has an annotator-specific sd in [0.1, 0.3].
    """
    name = corpus_name(fmt)
    if name not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS} (or an alias), got {fmt!r}")
    if engine not in ("auto", "numpy", "espeak-ng"):
        raise ValueError(f"engine must be 'auto', 'numpy' or 'espeak-ng', got {engine!r}")
    if not (annotator_bias >= 0 and math.isfinite(annotator_bias)):
        raise ValueError(f"annotator_bias must be a finite number >= 0, got {annotator_bias!r}")
    lo, hi = (float(x) for x in clip_seconds)
    if not 0 < lo <= hi < math.inf:
        raise ValueError(f"clip_seconds must be (lo, hi) with 0 < lo <= hi, got {clip_seconds!r}")
    if engine == "auto":
        engine = "espeak-ng" if shutil.which("espeak-ng") else "numpy"
    root = str(root)
    if os.path.isdir(root) and os.listdir(root) and not overwrite:
        raise FileExistsError(f"output folder {root} is not empty: choose an empty or new folder, or pass "
                              f"overwrite=True")
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    pop = _Population(n_utterances, n_annotators, rng, annotator_bias, (lo, hi))
    writer = {"msp-improv": _improv, "iemocap": _iemocap, "msp-podcast": _podcast, "muse": _muse,
              "compare-share": _compare, "generic": _generic}[name]
    utterances, read_order = writer(root, pop, rng)  # utterance i has the latent state pop.latent[i]
    for i, u in enumerate(utterances):
        if audio:
            seconds = _write_wav(u.audio_path, u.transcript or SENTENCES[i % len(SENTENCES)], *pop.latent[i],
                                 u.gender, sample_rate, engine, rng, (lo, hi), u.duration)
            u.duration = u.duration if name in LABEL_DURATIONS else seconds
        else:
            u.audio_path = None
    return sorted(utterances, key=read_order)


def _in_order(u: Utterance):
    """The read order of formats read in generation order."""
    return 0


def _improv(root: str, pop: _Population, rng) -> Written:
    speakers = [f"{g}{s:02d}" for s in range(1, 7) for g in "FM"]
    ids = ["".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"), 13)) + f"-p{1 + a % 2}"
           for a in range(pop.n_annotators)]
    lines, out = [], []
    for i, code in enumerate(pop.emotion):
        spk = speakers[i % len(speakers)]
        sentence, turn = (i // 100) % 99 + 1, i % 100
        uid = f"MSP-IMPROV-S{sentence:02d}{LETTERS[code]}-{spk}-{'PRST'[i % 4]}-{'FM'[i % 2]}{spk[0]}{turn:02d}"
        raters = list(pop.raters(i))
        rows = []  # (annotator, stored A, V, D, N, word, secondary)
        for a in raters + ([raters[0]] if i == 0 else []):  # utterance 0: its first evaluator rates twice
            act, val, dom = pop.rate(i, a, SCALES["msp-improv"])
            dom = math.nan if (i + a) % 5 == 0 else dom
            nat = math.nan if (i + a) % 7 == 0 else float(rng.integers(1, 6))
            sec = "" if a % 3 else "Frustrated,Annoyed"
            rows.append((ids[a], 6.0 - act, val, dom, nat, WORDS["msp-improv"][pop.vote(i, a)], sec))
        header = [_mean([r[k] for r in rows]) for k in (1, 2)]
        dvals = [r[3] for r in rows if not math.isnan(r[3])]
        header += [_mean(dvals) if dvals and i % 6 else math.nan, 3.0 if i % 4 else math.nan]
        hs = [_fmt(x, 6) for x in header]
        cat = LETTERS[_majority([pop.vote(i, int(a)) for a in raters])] if i % 9 else "X"
        lines.append(f"UTD-IMPROV-{uid[len('MSP-IMPROV-'):]}.avi; {cat}; A:{hs[0]}; V:{hs[1]}; D:{hs[2]} ; N:{hs[3]};")
        u = Utterance(utterance_id=uid, corpus="msp-improv", speaker=spk, gender=spk[0],
                      session=f"session{int(spk[1:])}", consensus_category=cat,
                      consensus=(6.0 - float(hs[0]), float(hs[1]), float(hs[2])))
        reps: Dict[str, list] = {}
        for ann, a, v, d, n, word, sec in rows:
            lines.append(f"{ann}; {word}; {sec}; A:{_fmt(a, 6)}; V:{_fmt(v, 6)}; D:{_fmt(d, 6)}; N:{_fmt(n, 6)};")
            reps.setdefault(ann, []).append((6.0 - a, v, d))
            u.categories.setdefault(ann, word)
            u.secondary.setdefault(ann, []).extend(s for s in sec.split(",") if s)
        u.ratings = {ann: average_repeats(r) for ann, r in reps.items()}
        lines.append("")
        u.transcript = SENTENCES[i % len(SENTENCES)]
        _write_text(os.path.join(root, "Text", uid + ".txt"), u.transcript)
        u.audio_path = os.path.join(root, "Audio", u.session, uid[11:15], uid.split("-")[4], uid + ".wav")
        out.append(u)
    _write_text(os.path.join(root, "Evaluation.txt"), "\n".join(lines))
    return out, _in_order


def _iemocap(root: str, pop: _Population, rng) -> Written:
    cat_words = {"ang": "Anger", "hap": "Happiness", "sad": "Sadness", "neu": "Neutral"}
    per_dialog = 3
    out: List[Utterance] = []
    blocks: Dict[Tuple[int, str], List[str]] = {}
    for i, code in enumerate(pop.emotion):
        session = i // max(1, math.ceil(len(pop.emotion) / 5)) + 1
        d = i // per_dialog
        dialog = f"Ses{session:02d}{'FM'[d % 2]}_impro{d:02d}"
        g = "FM"[i % 2]
        uid = f"{dialog}_{g}{i:03d}"
        start = round(float(rng.uniform(0, 100)), 4)
        end = round(start + float(rng.uniform(*pop.clip_seconds)), 4)
        raters = list(pop.raters(i))
        ratings = {f"E{a + 1}": pop.rate(i, a, SCALES["iemocap"]) for a in raters}
        votes = {f"E{a + 1}": pop.vote(i, a) for a in raters}
        avd = [_mean([r[k] for r in ratings.values()]) for k in range(3)]
        hs = [f"{avd[1]:.4f}", f"{avd[0]:.4f}", f"{avd[2]:.4f}"]  # bracket order: V, A, D
        major = _majority(list(votes.values()))
        cat = "exc" if major == "hap" and i % 2 else major
        lines = [f"[{start:.4f} - {end:.4f}]\t{uid}\t{cat}\t[{hs[0]}, {hs[1]}, {hs[2]}]"]
        u = Utterance(utterance_id=uid, corpus="iemocap", session=f"Ses{session:02d}", gender=g,
                      speaker=f"Ses{session:02d}{g}", consensus=(float(hs[1]), float(hs[0]), float(hs[2])),
                      consensus_category=cat, duration=float(f"{end:.4f}") - float(f"{start:.4f}"),
                      transcript=SENTENCES[i % len(SENTENCES)])
        for who, c in votes.items():
            word = "Excited" if c == "hap" and i % 2 else cat_words[c]
            extra = ["Frustration"] if c == "ang" else []
            comment = COMMENTS[(i + len(who)) % len(COMMENTS)] if (i + int(who[1:])) % 3 == 0 else ""
            lines.append(f"C-{who}:\t{'; '.join([word] + extra)};\t({comment})")
            u.categories[who], u.secondary[who] = word, extra
            if comment:
                u.comments[who] = comment
        lines.append(f"C-{g}1:\tNeutral;\t()")
        for who, (a, v, dd) in ratings.items():
            lines.append(f"A-{who}:\tval {int(v)}; act {int(a)}; dom  {int(dd)};\t()")
        lines.append(f"A-{g}1:\tval 3; act 3; dom  3;\t()")
        u.ratings = dict(ratings)
        u.audio_path = os.path.join(root, f"Session{session}", "sentences", "wav", dialog, uid + ".wav")
        blocks.setdefault((session, dialog), []).append("\n".join(lines))
        u.extra["_transcript_line"] = f"{uid} [{start:08.4f}-{end:08.4f}]: {u.transcript}"
        out.append(u)
    for (session, dialog), bl in blocks.items():
        base = os.path.join(root, f"Session{session}", "dialog")
        _write_text(os.path.join(base, "EmoEvaluation", dialog + ".txt"),
                    "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n" + "\n\n".join(bl) + "\n")
        tr = [u.extra["_transcript_line"] for u in out if u.utterance_id.startswith(dialog + "_")]
        _write_text(os.path.join(base, "transcriptions", dialog + ".txt"), "\n".join(tr))
    for u in out:
        del u.extra["_transcript_line"]
    # the reader walks sessions, then dialog files in sorted order
    return out, lambda u: (u.session, u.utterance_id.rsplit("_", 1)[0])


def _podcast(root: str, pop: _Population, rng) -> Written:
    splits = (("Train", "train"), ("Development", "val"), ("Test1", "test1"), ("Test2", "test2"))
    letters = {"ang": "A", "hap": "H", "sad": "S", "neu": "N"}
    workers = [f"WORKER{100000 + 37 * a:08d}" for a in range(pop.n_annotators)]
    cons = [["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]]
    det = [["FileName", "EmoDetail"]]
    out = []
    for i, code in enumerate(pop.emotion):
        uid = f"MSP-PODCAST_{i // 5 + 1:04d}_{i % 5 + 1:04d}"
        raters = list(pop.raters(i))
        ratings = {workers[a]: pop.rate(i, a, SCALES["msp-podcast"]) for a in raters}
        avd = [f"{_mean([r[k] for r in ratings.values()]):.4f}" for k in range(3)]
        spk = "Unknown" if i % 7 == 3 else str(100 + i % 6)
        gender = "Unknown" if spk == "Unknown" else ("Female" if i % 6 % 2 == 0 else "Male")
        file_split, split = splits[i % 4]
        cons.append([uid + ".wav", letters[code], *avd, spk, gender, file_split])
        u = Utterance(utterance_id=uid, corpus="msp-podcast", speaker=None if spk == "Unknown" else spk,
                      gender={"Female": "F", "Male": "M"}.get(gender), split=split,
                      consensus=tuple(float(x) for x in avd), consensus_category=letters[code],
                      transcript=SENTENCES[i % len(SENTENCES)])
        for w, (a, v, d) in ratings.items():
            word = WORDS["msp-podcast"][pop.vote(i, workers.index(w))]
            sec = "Concerned,Frustrated" if (i + len(w)) % 3 == 0 else ""
            det.append([uid + ".wav", f"{w}; {word}; {sec}; A:{a:.1f}; V:{v:.1f}; D:{d:.1f};"])
            u.categories[w], u.secondary[w] = word, [s for s in sec.split(",") if s]
        u.ratings = ratings
        _write_text(os.path.join(root, "Transcripts", uid + ".txt"), u.transcript)
        u.audio_path = os.path.join(root, "Audios", uid + ".wav")
        out.append(u)
    os.makedirs(os.path.join(root, "Labels"), exist_ok=True)
    for name, rows in (("labels_consensus.csv", cons), ("labels_detailed.csv", det)):
        with open(os.path.join(root, "Labels", name), "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)
    return out, _in_order


def _muse(root: str, pop: _Population, rng) -> Written:
    speakers = ["20", "17", "24", "12", "27", "15", "19", "14"]  # train, val and test speakers of the fixed split
    genders = {"20": "F", "17": "F", "24": "M", "12": "M", "27": "F", "15": "M", "19": "F", "14": "M"}
    rows = [list(muse.COLUMNS)]
    out = []
    for i, code in enumerate(pop.emotion):
        spk = speakers[i % len(speakers)]
        stressed = i % 2 == 0
        uid = f"{spk}_{'s' if stressed else 'ns'}_q{i:03d}"
        raters = list(pop.raters(i))
        plain = [pop.rate(i, a, SCALES["muse"]) for a in raters]
        ctx = [pop.rate(i, a, SCALES["muse"]) for a in raters]

        def stats(rs, k):
            xs = [r[k] for r in rs]
            return f"{_mean(xs):.4f}", f"{float(np.std(xs, ddof=1)):.4f}", ";".join(str(int(x)) for x in xs)

        a0, v0, c0, cv = stats(plain, 0), stats(plain, 1), stats(ctx, 0), stats(ctx, 1)
        duration = f"{float(rng.uniform(*pop.clip_seconds)):.2f}"
        rows.append([uid, duration, "Female" if genders[spk] == "F" else "Male", "S" if stressed else "NS",
                     f"Q{i % 5 + 1}", a0[0], a0[1], v0[0], v0[1], a0[2], v0[2], c0[0], c0[1], cv[0], cv[1], c0[2],
                     cv[2], str(int(rng.integers(1, 10))), str(int(rng.integers(1, 10)))])
        u = Utterance(utterance_id=uid, corpus="muse", speaker=spk, gender=genders[spk], duration=float(duration),
                      consensus=(float(a0[0]), float(v0[0]), math.nan), transcript=SENTENCES[i % len(SENTENCES)],
                      ratings={f"r{k + 1}": (r[0], r[1], math.nan) for k, r in enumerate(plain)})
        u.extra["stress"] = "stressed" if stressed else "non_stressed"
        sub = os.path.join("Stressed", "Audio", "Stressed Question Monologue Audio") if stressed else \
            os.path.join("NotStressed", "Audio", "Non Stressed Question Monologue Audio")
        u.audio_path = os.path.join(root, sub, uid + ".wav")
        _write_text(os.path.join(root, "Combined", "Utterance Transcripts", uid + ".txt"), u.transcript)
        out.append(u)
    path = os.path.join(root, muse.LABEL_DIRS[0], muse.LABEL_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return out, _in_order


def _compare(root: str, pop: _Population, rng) -> Written:
    parts = {"train": [], "devel": [], "test": []}
    out = []
    names = [("train", "train"), ("devel", "val"), ("test", "test")]
    for i in range(len(pop.emotion)):
        part, split = names[i % 3]
        fname = f"{part}_{i:05d}"
        act, val = pop.latent[i]
        base = np.array([max(0, -val) * act, -act, -act, 0.3, act, act * (val > 0), 0.5, -val, -act])
        shares = {e: round(float(np.clip(0.5 + 0.4 * b + rng.normal(0, 0.05), 0, 1)), 6)
                  for e, b in zip(compare_share.EMOTIONS, base)}
        if part == "test":
            parts[part].append([fname + ".wav"] + [""] * 9)
            shares = {}
        else:
            parts[part].append([fname + ".wav"] + [repr(shares[e]) for e in compare_share.EMOTIONS])
        out.append(Utterance(utterance_id=fname, corpus="compare-share", split=split, shares=shares,
                             audio_path=os.path.join(root, "wav", fname + ".wav")))
    os.makedirs(os.path.join(root, "lab"), exist_ok=True)
    for part, rows in parts.items():
        with open(os.path.join(root, "lab", f"{part}.csv"), "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["filename", *compare_share.EMOTIONS]] + rows)
    order = {"train": 0, "val": 1, "test": 2}
    return out, lambda u: order[u.split]


def _generic(root: str, pop: _Population, rng) -> Written:
    header = ["utterance_id", "audio_path", "annotator", "activation", "valence", "dominance", "category", "comment",
              "transcript", "speaker", "gender", "split"]
    rows = [header]
    out = []
    for i, code in enumerate(pop.emotion):
        uid = f"utt{i:04d}"
        spk = f"spk{i % 4}"
        u = Utterance(utterance_id=uid, corpus="generic", speaker=spk, gender="FM"[i % 2],
                      split=("train", "val", "test")[i % 3], transcript=SENTENCES[i % len(SENTENCES)],
                      audio_path=os.path.join(root, "audio", uid + ".wav"))
        for a in pop.raters(i):
            ann = f"ann{a:03d}"
            r = pop.rate(i, int(a), SCALES["generic"])
            word = WORDS["generic"][pop.vote(i, int(a))]
            comment = COMMENTS[(i + int(a)) % len(COMMENTS)] if (i + int(a)) % 4 == 0 else ""
            rows.append([uid, os.path.join("audio", uid + ".wav"), ann, *(f"{x:.1f}" for x in r), word, comment,
                         u.transcript, spk, "female" if u.gender == "F" else "male", u.split])
            u.ratings[ann], u.categories[ann] = r, word
            if comment:
                u.comments[ann] = comment
        out.append(u)
    with open(os.path.join(root, "ratings.csv"), "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return out, _in_order


__all__ = ["write_synthetic_corpus", "synth_voice", "FORMATS"]
