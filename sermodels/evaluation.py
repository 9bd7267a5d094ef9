"""Evaluation of the individual-annotator models as in the paper (Tavernor et al., IS 2024, section 3.4).

Every number is computed with kdekit's metric functions (``kdekit.tvd``, ``kdekit.jsd`` (natural log),
``kdekit.CCCMoments``), accumulated over batches and reduced over ranks, so a reported metric equals kdekit's on the
concatenated tensors and does not depend on the batching or on the number of processes.

- **Distributions:** the baseline's ``softmax`` over its ``k * k`` logits; for annotator models the k x k pooling of
  a diffusion KDE over pseudo-observations of the per-annotator predictions (:func:`sermodels.losses.
  predicted_distribution`), with a *soft* histogram (the DiffKDE of training, grid 64, sharpness 8, float64) or a
  *hard* histogram (grid 512, float64, as the labels), from the utterance's *own* annotators or from *all* trained
  annotators (the only option zero-shot). Coarser tables (2 x 2 from 4 x 4) are block sums, which equals pooling the
  same density to the coarser grid.
- **TVD, JSD** per utterance between the predicted and the target table, averaged over utterances.
- **Consensus CCC** (activation, valence): the marginal expectation of the predicted table, ``sum_i p_i * pos_i``
  along each axis, against the mean of the utterance's scaled individual ratings. ``pos`` is set by
  ``bin_positions``: ``"paper"`` (default: the paper's section 3.4, ``-1, -0.5, 0.5, 1`` for k = 4, ``-1, 1`` for
  k = 2), ``"centres"`` (the true bin centres, ``+-0.25, +-0.75`` for k = 4, ``+-0.5`` for k = 2) or
  ``"linspace"`` (the authors' code: ``linspace(-1, 1, k)``, i.e. ``-1, -1/3, 1/3, 1``).
- **Annotator-level CCC** (annotator models, own annotators): one CCC per dimension over every (utterance,
  annotator) pair.
- CCC uses ``unbiased=True`` (ddof 1, the authors' code and torchmetrics) unless configured otherwise.
- **Seeds:** :func:`summarize_seeds` gives mean +- std (``ddof=1`` by default) over seeds and, with at least
  :data:`MIN_SEEDS_FOR_TEST` seeds, a paired two-sided t-test (``scipy.stats.ttest_rel``, seeds paired by position)
  against the baseline; :func:`format_table1` and
  :func:`format_table2` print the layout of the paper's Tables 1 and 2 (``*`` = significant improvement, ``†`` =
  significant decline at ``alpha``, the papers' marks); :func:`format_seed_cell` is one such cell with its p-value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import stats

import kdekit

from .train.distributed import DistInfo, all_reduce_sums

BIN_POSITIONS = ("paper", "centres", "linspace")
LOWER_IS_BETTER = ("tvd", "jsd", "loss")
MIN_SEEDS_FOR_TEST = 3  # fewer paired seeds give a t-test with 1 degree of freedom or none: no marks


def bin_positions(k: int, convention: str = "paper", dtype=torch.float64, device=None) -> torch.Tensor:
    """Positions ``(k,)`` in ``[-1, 1]`` given to the k bins of each axis when taking expectations (module doc)."""
    if convention not in BIN_POSITIONS:
        raise ValueError(f"bin_positions must be one of {BIN_POSITIONS}, got {convention!r}")
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if convention == "centres":
        pos = -1.0 + (2.0 * torch.arange(k, dtype=torch.float64) + 1.0) / k
    elif convention == "linspace":
        pos = torch.linspace(-1.0, 1.0, k, dtype=torch.float64)
    else:
        table = {2: [-1.0, 1.0], 4: [-1.0, -0.5, 0.5, 1.0]}
        if k not in table:
            raise ValueError(f"bin_positions='paper' is defined for k = 2 and 4 only, got k={k}")
        pos = torch.tensor(table[k], dtype=torch.float64)
    return pos.to(dtype=dtype, device=device)


def expected_values(dist: torch.Tensor, convention: str = "paper") -> torch.Tensor:
    """``(B, k, k)`` tables (rows = activation) -> ``(B, 2)`` marginal expectations ``[activation, valence]``."""
    if dist.dim() != 3 or dist.shape[1] != dist.shape[2]:
        raise ValueError(f"dist must have shape (B, k, k), got {tuple(dist.shape)}")
    pos = bin_positions(dist.shape[1], convention, dtype=dist.dtype, device=dist.device)
    return torch.stack([dist.sum(-1) @ pos, dist.sum(-2) @ pos], dim=-1)


def coarsen(dist: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, K, K)`` -> ``(B, k, k)`` block sums; ``k`` must divide ``K``."""
    K = dist.shape[-1]
    if K % k:
        raise ValueError(f"cannot coarsen a {K}x{K} table to {k}x{k}: {k} does not divide {K}")
    return dist.reshape(*dist.shape[:-2], k, K // k, k, K // k).sum(dim=(-3, -1))


class DistributionMetrics:
    """Streaming TVD/JSD/consensus-CCC of predicted vs target tables at one or more table sizes ``ks``."""

    def __init__(self, ks: Sequence[int] = (4,), convention: str = "paper", unbiased: bool = True):
        self.ks, self.convention, self.unbiased = tuple(ks), convention, unbiased
        self.sums: Dict[str, float] = {}
        self.cccs = {k: kdekit.CCCMoments(dim=0) for k in self.ks}

    def update(self, pred: torch.Tensor, target: torch.Tensor, consensus: torch.Tensor) -> None:
        """``pred``, ``target`` ``(B, K, K)`` probabilities; ``consensus`` ``(B, 2)`` mean ratings."""
        pred, target, consensus = pred.double(), target.double(), consensus.double()
        for k in self.ks:
            p, q = coarsen(pred, k), coarsen(target, k)
            self._add(f"k{k}_tvd", kdekit.tvd(p, q, dim=(-2, -1)).sum())
            self._add(f"k{k}_jsd", kdekit.jsd(p, q, dim=(-2, -1)).sum())
            self.cccs[k].update(expected_values(p, self.convention), consensus)
        self._add("n", torch.tensor(float(pred.shape[0])))

    def _add(self, key: str, value: torch.Tensor) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def compute(self, info: Optional[DistInfo] = None) -> Dict[str, float]:
        info = info or DistInfo()
        sums = all_reduce_sums(self.sums, info)
        n = sums.pop("n")
        out = {key: v / n for key, v in sums.items()}
        for k, acc in self.cccs.items():
            c = acc.all_reduce().compute(unbiased=self.unbiased)
            out[f"k{k}_ccc_activation"], out[f"k{k}_ccc_valence"] = float(c[0]), float(c[1])
        return out


class AnnotatorMetrics:
    """Streaming annotator-level CCC over every valid (utterance, annotator) pair, per dimension."""

    def __init__(self, unbiased: bool = True):
        self.unbiased = unbiased
        self.acc = kdekit.CCCMoments(dim=0)

    def update(self, pred: torch.Tensor, ratings: torch.Tensor) -> None:
        """``pred``, ``ratings`` ``(B, M, 2)`` with NaN where there is no rating."""
        mask = ~(torch.isnan(ratings) | torch.isnan(pred))
        self.acc.update(pred.reshape(-1, 2).double(), ratings.reshape(-1, 2).double(), mask=mask.reshape(-1, 2))

    def compute(self, info: Optional[DistInfo] = None) -> Dict[str, float]:
        c = self.acc.all_reduce().compute(unbiased=self.unbiased)
        return {"annotator_ccc_activation": float(c[0]), "annotator_ccc_valence": float(c[1])}


# -- seeds, significance, tables --------------------------------------------------------------------------------


IMPROVEMENT, DECLINE = "*", "†"  # the papers' marks (Tavernor et al. 2023, 2024)


@dataclass
class SeedSummary:
    mean: float
    std: float
    n: int
    p_value: float = math.nan
    mark: str = ""  # IMPROVEMENT: significant improvement over the baseline, DECLINE: significant decline


def _lower_is_better(metric: str) -> bool:
    return any(metric.endswith(s) for s in LOWER_IS_BETTER)


def seed_std(values: Sequence[float], ddof: int = 1) -> float:
    """Standard deviation over seeds with ``ddof`` (1: the sample std, the t-test's estimator); NaN when there are
    not more than ``ddof`` values."""
    v = np.asarray(values, dtype=float)
    return float(np.std(v, ddof=ddof)) if len(v) > ddof else math.nan


def paired_test(values: Sequence[float], base: Sequence[float], lower_is_better: bool = False,
                alpha: float = 0.05) -> Tuple[float, str]:
    """``(p_value, mark)`` of a paired two-sided t-test (``scipy.stats.ttest_rel``) of ``values`` against ``base``,
    paired by position (the same seeds in the same order). ``mark`` is :data:`IMPROVEMENT` when the difference is
    significant at ``alpha`` and in the better direction, :data:`DECLINE` when significant the other way, else ``""``.
    ``(nan, "")`` with fewer than :data:`MIN_SEEDS_FOR_TEST` pairs, unequal lengths, a non-finite value or identical
    sequences (no test is defined)."""
    v, b = np.asarray(values, dtype=float), np.asarray(base, dtype=float)
    if (len(v) != len(b) or len(v) < MIN_SEEDS_FOR_TEST or not np.all(np.isfinite(v)) or not np.all(np.isfinite(b))
            or not np.any(v != b)):
        return math.nan, ""
    p = float(stats.ttest_rel(v, b).pvalue)
    if not p < alpha:
        return p, ""
    better = (float(np.mean(v)) < float(np.mean(b))) == lower_is_better
    return p, IMPROVEMENT if better else DECLINE


def summarize_seeds(results: Mapping[str, Sequence[Mapping[str, float]]], baseline: Optional[str] = "baseline",
                    alpha: float = 0.05, variant: Optional[Mapping[str, str]] = None, ddof: int = 1
                    ) -> Dict[str, Dict[str, SeedSummary]]:
    """Per model and metric: mean, std (``ddof``, default 1) over seeds and, with at least
    :data:`MIN_SEEDS_FOR_TEST` seeds on both sides, a paired two-sided t-test against ``baseline``
    (:func:`paired_test`).

    ``results[model]`` is a list of per-seed metric dicts in seed order (the baseline's list in the same order).
    ``variant`` maps models to the key prefix they report (e.g. ``{"baseline": "model", "mt": "hard_own"}``): a
    model's ``<its prefix>_<metric>`` is then tested against the baseline's ``<baseline prefix>_<metric>``; other
    keys against the baseline's same key.
    """
    out: Dict[str, Dict[str, SeedSummary]] = {}
    base = results.get(baseline) if baseline else None
    for model, runs in results.items():
        out[model] = {}
        keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float))] if runs else []
        for key in keys:
            vals = [float(r[key]) for r in runs]
            s = SeedSummary(mean=float(np.mean(vals)), std=seed_std(vals, ddof), n=len(vals))
            base_key = key
            if variant and model in variant and baseline in variant and key.startswith(variant[model] + "_"):
                base_key = variant[baseline] + key[len(variant[model]):]
            if base is not None and model != baseline and base_key in base[0]:
                s.p_value, s.mark = paired_test(vals, [r[base_key] for r in base], _lower_is_better(key), alpha)
            out[model][key] = s
    return out


def _cell(s: Optional[SeedSummary]) -> str:
    if s is None or not math.isfinite(s.mean):
        return "n/a"
    std = f"+-{s.std:.3f}" if math.isfinite(s.std) else ""
    return f"{s.mean:.3f}{std}{s.mark}"


def format_seed_cell(s: Optional[SeedSummary], p_value: bool = True) -> str:
    """The ``mean+-std`` cell of :func:`format_table1` (with its ``*`` / ``†`` mark), followed by ``(p=...)`` when
    ``p_value`` and the t-test against the baseline was run."""
    cell = _cell(s)
    if p_value and s is not None and math.isfinite(s.p_value):
        cell += f" (p={s.p_value:.3g})"
    return cell


def significance_note(summary: Mapping[str, Mapping[str, SeedSummary]], alpha: float = 0.05,
                      against: str = "the baseline") -> str:
    """The note under a table: what ``*`` / ``†`` mean, or why there are no marks (fewer than 3 seeds)."""
    n = min((s.n for m in summary.values() for s in m.values()), default=0)
    return seeds_note(n, alpha, against)


def seeds_note(n: int, alpha: float = 0.05, against: str = "the baseline") -> str:
    """:func:`significance_note` for ``n`` paired seeds compared with ``against``."""
    if n < MIN_SEEDS_FOR_TEST:
        return (f"no significance marks: {n} seed(s); the paired t-test against {against} needs >= "
                f"{MIN_SEEDS_FOR_TEST}")
    return (f"{IMPROVEMENT} significant improvement vs {against}, {DECLINE} significant decline (paired two-sided "
            f"t-test over {n} seeds, alpha {alpha})")


def format_table1(summary: Mapping[str, Mapping[str, SeedSummary]], variant: Mapping[str, str],
                  k: int = 4, title: str = "", alpha: float = 0.05, against: str = "the baseline") -> str:
    """Paper Table 1 layout: rows = models; TVD, JSD, activation/valence consensus CCC (+ annotator-level CCC).

    ``variant[model]`` is the metric-key prefix to report for that model (e.g. ``"soft_own"`` or ``"model"``).
    """
    cols = [("TVD", "tvd", "v"), ("JSD", "jsd", "v"), ("Act. CCC", "ccc_activation", "v"),
            ("Val. CCC", "ccc_valence", "v"), ("Ann. Act. CCC", "annotator_ccc_activation", "a"),
            ("Ann. Val. CCC", "annotator_ccc_valence", "a")]
    header = ["Model"] + [c[0] + ("↓" if c[1] in ("tvd", "jsd") else "↑") for c in cols]
    rows = []
    for model, metrics in summary.items():
        row = [model]
        for _, key, kind in cols:
            full = key if kind == "a" else f"{variant[model]}_k{k}_{key}"
            row.append(_cell(metrics.get(full)))
        rows.append(row)
    return _render(header, rows, title, significance_note(summary, alpha, against) + "; n/a = not defined")


def format_table2(summaries: Mapping[str, Mapping[str, Mapping[str, SeedSummary]]],
                  variant: Mapping[str, str], k: int = 4, title: str = "") -> str:
    """Paper Table 2 layout: for each metric, one row per test corpus; columns = models.

    ``summaries[corpus]`` is :func:`summarize_seeds` of that corpus' zero-shot results.
    """
    models = list(next(iter(summaries.values())).keys()) if summaries else []
    header = ["Metric", "Dataset"] + models
    rows = []
    for label, key in (("TVD↓", "tvd"), ("JSD↓", "jsd"), ("Act. CCC↑", "ccc_activation"),
                       ("Val. CCC↑", "ccc_valence")):
        for i, (corpus, summary) in enumerate(summaries.items()):
            rows.append([label if i == 0 else "", corpus]
                        + [_cell(summary[m].get(f"{variant[m]}_k{k}_{key}")) for m in models])
    first = next(iter(summaries.values()), {})
    return _render(header, rows, title, significance_note(first) + "; all trained annotators' heads are used "
                                                                   "zero-shot")


def _render(header: List[str], rows: List[List[str]], title: str, note: str) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    out = ([title] if title else []) + [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
    return "\n".join(out + [note])


# -- transcripts ------------------------------------------------------------------------------------------------


def normalize_transcript(text: str) -> List[str]:
    """Words of ``text`` for WER: lower case, punctuation other than in-word apostrophes and hyphens removed."""
    import re

    cleaned = re.sub(r"[^\w\s'-]|(?<!\w)['-]|['-](?!\w)", " ", str(text).lower())
    return cleaned.split()


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate: the word-level Levenshtein distance (substitutions + deletions + insertions) summed
    over the pairs, divided by the number of reference words (:func:`normalize_transcript` on both sides). NaN when
    the references hold no word; ValueError when the two lists differ in length."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = words = 0
    for ref, hyp in zip(references, hypotheses):
        r, h = normalize_transcript(ref), normalize_transcript(hyp)
        row = list(range(len(h) + 1))
        for i, rw in enumerate(r, 1):
            prev, row[0] = row[0], i
            for j, hw in enumerate(h, 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
        edits += row[-1]
        words += len(r)
    return edits / words if words else math.nan
