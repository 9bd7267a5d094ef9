"""Recipe: modelling individual annotators (Tavernor, El-Tawil, Mower Provost, Interspeech 2024).

Inputs are cached, frozen features: the wav2vec2 last hidden state mean-pooled over time and the BERT CLS vector of
the transcript (``features`` section: a hub id or folder, a ``tiny:<arch>`` random-init model, ``minilm``, or the
built-in ``logmel`` / ``mfcc`` / ``fbank40`` front ends), each with ``Dropout(0.2)`` in the model. Targets:
individual ratings min-max scaled to ``[-1, 1]`` per dimension (``data.scaling``: ``dataset`` = each dataset's own
lowest and highest rating, the paper's section 3.1 and the default; ``scale`` = the ends of the rating scale,
``data.rating_range`` or the corpus' fixed Likert range), and k x k distribution targets (pseudo-observations +
hard-histogram diffusion KDE on a ``data.labels.grid`` grid, :func:`sermodels.data.labels.distribution_targets`).
Models (``model.type``): ``baseline``, ``mt``, ``onehot`` (:mod:`sermodels.models.annotators`).

Tasks (``train.tasks``):

- ``baseline``: soft-target cross-entropy of the baseline's ``k * k`` logits.
- ``task1``: ``2 - CCC_act - CCC_val`` over every (utterance, annotator) rating in the batch.
- ``task2``: DiffKDE: the batch's per-annotator predictions -> 200 pseudo-observations -> soft histogram
  (sharpness 8, grid 64; float16 on GPU) -> diffusion KDE -> k x k -> ``+1e-8`` -> cross-entropy vs the target.
- ``task1`` + ``task2`` with ``train.task_scheme``:

  - ``interleaved`` (the authors' code and the default): for every batch, Task 1 gets its own forward, backward and
    ``optimizer.step()``, then Task 2 does the same with the updated weights. Two optimiser steps per batch, one
    shared SGD momentum buffer; each task's gradient is taken at a different point.
  - ``summed``: one forward, ``loss = task1 + task2``, one step per batch: half the steps, both gradients at the same
    weights; the relative scale of the two losses then matters (CCC loss in [0, 4], cross-entropy ~1-3).

``runs`` names the rows of the table: each entry is deep-merged over the shared settings (e.g. ``mt: {model: {type:
mt}, train: {tasks: [task1, task2]}}``); ``--run NAME`` trains some of them, and results merge into the folder's
``results.json``. ``ablation`` names the run of the paper's section 4.2 (Task 1 alone, ``mt_task1``) and its
reference (Task 1+2, ``mt``): its test tables built with the hard-histogram KDE and with DiffKDE are printed side by
side, with the paired t-test of DiffKDE against KDE; Table 1 leaves that run out. Validation loss (LR schedule,
early stopping, best checkpoint) is the sum of the run's task losses over the whole validation set (a Task 1 run also
reports its DiffKDE tables' metrics, ``val_diffkde_ce`` and ``val_k<k>_*``, outside its loss). After training, the
best checkpoint is evaluated on the ``test`` partition (and
zero-shot on ``eval.test_corpora``) with :mod:`sermodels.evaluation`; for annotator models the pseudo-observations
of a predicted table are drawn per utterance from a generator seeded with ``eval.seed``, so an utterance's table
does not depend on its batch (``sermodels predict`` gives the same table).

Run folder: ``config.yaml``, ``run.json``, ``run.log``, ``annotator_index.json``, ``label_scale.json`` (the ranges
mapped onto [-1, 1]), ``<run>/seed<s>/`` (trainer files,
``test.json``, ``examples.json``: a few test utterances' target and predicted tables for the plots) and
``results.json`` + ``table.txt``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .. import evaluation as ev
from .. import losses
from ..config import (REPLACE, ConfigError, DataConfig, EarlyStoppingConfig, RecipeConfig, SchedulerConfig,
                      TrainConfig, from_dict, merge, to_dict)
from ..models import build_model
from ..runs import data_fingerprint, read_config, say, write_json
from ..train import DistInfo, Trainer, load_checkpoint, seed_everything
from ..train.distributed import ShardSampler, all_reduce_sums, barrier
from ._common import corpus_names, encoder_path, read_corpus, split_utterances, start_run

TASKS = ("baseline", "task1", "task2")
ANONYMOUS_RATERS = ("muse",)  # corpora whose rater ids are positions within an utterance (sermodels.data.muse)
VARIANTS = ("soft_own", "soft_all", "hard_own", "hard_all")
CURVE_METRICS = ("val_k{k}_tvd", "val_k{k}_jsd", "val_loss")


# -- configuration ----------------------------------------------------------------------------------------------


@dataclass
class Labels:
    """Distribution targets: ``k`` x ``k`` tables pooled from a hard-histogram KDE on a ``grid`` x ``grid`` grid;
    ``seed`` draws the pseudo-observations."""

    k: int = 4
    grid: int = 512
    seed: int = 0


@dataclass
class Data(DataConfig):
    """``split`` null = the corpus' default scheme (MSP-Improv: ``speaker_independent_is2024``, the paper's);
    training needs partitions ``train``, ``val`` and ``test``. ``min_annotators``: fewer ratings drop an
    utterance. ``scaling``: what maps onto [-1, 1] per dimension: ``dataset`` (each corpus' own lowest and highest
    individual rating, the paper) or ``scale`` (the rating scale's ends)."""

    corpus: Optional[str] = "msp-improv"
    min_annotators: int = 2
    scaling: Literal["dataset", "scale"] = "dataset"
    labels: Labels = field(default_factory=Labels)

    def check(self) -> None:
        super().check()
        from ..data.labels import check_label_grid

        try:
            check_label_grid(self.labels.k, self.labels.grid, "data.labels")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


@dataclass
class Features:
    """Frozen encoders (a local folder or hub id, ``tiny:<wav2vec2|hubert|bert>[:layers]``, ``minilm``, or a built-in
    audio front end ``logmel`` / ``mfcc`` / ``fbank40``; null = no such modality), cached under ``cache_dir``
    (default ``<output folder>/features``)."""

    audio_model: Optional[str] = "facebook/wav2vec2-base"
    audio_layer: int = -1
    audio_pooling: Literal["mean", "max"] = "mean"
    text_model: Optional[str] = "google/bert_uncased_L-4_H-512_A-8"
    text_layer: int = -1
    text_pooling: Literal["cls", "mean", "max"] = "cls"
    cache_dir: Optional[str] = None


@dataclass
class Model:
    type: Literal["baseline", "mt", "onehot"] = "mt"
    hidden: int = 256
    dropout: float = 0.2


@dataclass
class DiffKDE:
    """Task 2 during training (and the soft-histogram evaluation); ``gpu_dtype``: float16 as the paper (CPU computes
    in float32); ``ccc_unbiased``: Task 1 CCC with ddof 1, as the authors' code."""

    sharpness: float = 8.0
    grid: int = 64
    n_pseudo: int = 200
    gpu_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    ccc_unbiased: bool = True


@dataclass
class Train(TrainConfig):
    """The paper's schedule by default: ReduceLROnPlateau (x0.1 after 5 epochs without improvement), early stopping
    with patience 10 after at least 30 epochs (section 3.3)."""

    scheduler: SchedulerConfig = field(default_factory=lambda: SchedulerConfig(name="plateau"))
    early_stopping: EarlyStoppingConfig = field(default_factory=lambda: EarlyStoppingConfig(patience=10,
                                                                                            min_epochs=30))
    tasks: List[Literal["baseline", "task1", "task2"]] = field(default_factory=lambda: ["task1", "task2"])
    task_scheme: Literal["interleaved", "summed"] = "interleaved"
    diffkde: DiffKDE = field(default_factory=DiffKDE)


@dataclass
class TestCorpus:
    """A zero-shot test corpus: its ``split`` (a scheme or a split file; ``all`` = every utterance, in partition
    ``test``), the ``partition`` of it evaluated and its ``rating_range`` (null = the corpus' fixed scale)."""

    corpus: str = ""
    root: Optional[str] = None
    split: str = "all"
    partition: str = "test"
    rating_range: Optional[Tuple[float, float]] = None


@dataclass
class Eval:
    """``histograms`` x ``annotators``: the variants of annotator models' tables (soft/hard histogram, the
    utterance's own annotators or all trained ones); ``report``: the variant printed in the table; ``ks``: table
    sizes evaluated (each divides ``data.labels.k``); ``bin_positions``: where the consensus CCC puts the k bins:
    paper ([-1, -0.5, 0.5, 1], section 3.4) | centres | linspace (the authors' code)
    (:func:`sermodels.evaluation.bin_positions`); ``alpha``: the t-test's level (needs >= 3 seeds)."""

    histograms: List[Literal["soft", "hard"]] = field(default_factory=lambda: ["soft", "hard"])
    annotators: List[Literal["own", "all"]] = field(default_factory=lambda: ["own", "all"])
    ks: List[int] = field(default_factory=lambda: [4, 2])
    soft_grid: int = 64
    hard_grid: int = 512
    bin_positions: Literal["paper", "centres", "linspace"] = "paper"
    report: Literal["soft_own", "soft_all", "hard_own", "hard_all"] = "soft_own"
    seed: int = 0
    alpha: float = 0.05
    test_corpora: List[TestCorpus] = field(default_factory=list)


def _default_runs() -> Dict[str, Any]:
    return {"baseline": {"model": {"type": "baseline"}, "train": {"tasks": ["baseline"]}},
            "mt": {"model": {"type": "mt"}, "train": {"tasks": ["task1", "task2"]}},
            "onehot": {"model": {"type": "onehot"}, "train": {"tasks": ["task1", "task2"]}},
            "mt_task1": {"model": {"type": "mt"}, "train": {"tasks": ["task1"]},
                         "eval": {"histograms": ["soft", "hard"]}}}


@dataclass
class Ablation:
    """The paper's section 4.2: ``run`` (Task 1 alone) evaluated with the hard-histogram KDE and with DiffKDE (its
    entry in ``runs`` must evaluate both histograms), beside ``reference`` (Task 1+2; null = no reference row)."""

    run: str = "mt_task1"
    reference: Optional[str] = "mt"


@dataclass
class RunConfig(RecipeConfig):
    """The settings of one run: every section, no ``runs``."""

    recipe: str = "annotators"
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    data: Data = field(default_factory=Data)
    features: Features = field(default_factory=Features)
    model: Model = field(default_factory=Model)
    train: Train = field(default_factory=Train)
    eval: Eval = field(default_factory=Eval)


@dataclass
class Config(RunConfig):
    """The annotators recipe; defaults are the paper's protocol (Table 1 and the section 4.2 ablation: MSP-Improv,
    5 seeds, SGD lr 1e-3, ReduceLROnPlateau 0.1 / 5, early stopping 10 after 30 epochs, at most 500 epochs); the
    shipped ``annotators_paper.yaml`` spells it out key by key."""

    runs: Dict[str, Any] = field(default_factory=_default_runs, metadata=REPLACE)
    baseline_run: Optional[str] = "baseline"
    ablation: Optional[Ablation] = field(default_factory=Ablation)

    def check(self) -> None:
        super().check()
        if not self.runs:
            raise ConfigError("runs must name at least one run")
        if self.baseline_run is not None and self.baseline_run not in self.runs:
            raise ConfigError(f"baseline_run {self.baseline_run!r} is not one of runs ({', '.join(self.runs)})")
        for name in self.runs:
            run_config(self, name)
        a = self.ablation
        if a is not None:
            for key, name in (("run", a.run), ("reference", a.reference)):
                if name is not None and name not in self.runs:
                    raise ConfigError(f"ablation.{key} {name!r} is not one of runs ({', '.join(self.runs)}); set "
                                      f"ablation: null when the runs have no section 4.2 ablation")
            rc = run_config(self, a.run)
            if rc.model.type == "baseline" or not {"soft", "hard"} <= set(rc.eval.histograms):
                raise ConfigError(f"ablation.run {a.run!r} must be an annotator model evaluated with both histograms: "
                                  f"set runs.{a.run}.eval.histograms=[soft,hard] (got model {rc.model.type!r}, "
                                  f"histograms {rc.eval.histograms})")


def run_names(cfg: Config) -> List[str]:
    return list(cfg.runs)


def run_config(cfg: Config, run: str) -> RunConfig:
    """The settings of one run (``runs[run]`` merged over the shared settings), checked."""
    if run not in cfg.runs:
        raise ConfigError(f"run {run!r} is not in the config's runs ({', '.join(cfg.runs)})")
    entry = cfg.runs[run]
    if not isinstance(entry, dict):
        raise ConfigError(f"runs.{run}: expected a mapping of settings, got {entry!r}")
    base = {k: v for k, v in to_dict(cfg).items() if k not in ("runs", "baseline_run", "ablation")}
    try:
        rc = from_dict(RunConfig, merge(base, entry))
    except ConfigError as exc:
        raise ConfigError(f"runs.{run}: {exc}") from None
    tasks = rc.train.tasks
    if not tasks:
        raise ConfigError(f"runs.{run}: train.tasks must be a non-empty subset of {TASKS}")
    if (rc.model.type == "baseline") != (tasks == ["baseline"]):
        raise ConfigError(f"runs.{run}: model type 'baseline' goes with train.tasks [baseline] only (got model "
                          f"{rc.model.type!r}, tasks {tasks})")
    bad = [kk for kk in rc.eval.ks if rc.data.labels.k % kk]
    if bad:
        raise ConfigError(f"runs.{run}: eval.ks {bad} do not divide data.labels.k={rc.data.labels.k}")
    return rc


# -- data -------------------------------------------------------------------------------------------------------


@dataclass
class AnnotatorData:
    """One corpus as tensors (row ``i`` = utterance ``utterance_ids[i]``).

    ``ratings`` ``(U, M, 2)`` scaled to ``[-1, 1]`` (NaN padding), ``annotator_ids`` ``(U, M)`` (index of the
    training annotators, ``-1`` = padding or an annotator unknown to the model), ``targets`` ``(U, k, k)``,
    ``consensus`` ``(U, 2)`` = mean of the utterance's scaled ratings, ``splits`` per utterance.
    """

    corpus: str
    utterance_ids: List[str]
    audio: torch.Tensor
    text: torch.Tensor
    ratings: torch.Tensor
    annotator_ids: torch.Tensor
    targets: torch.Tensor
    consensus: torch.Tensor
    splits: List[Optional[str]]

    def indices(self, split: str) -> List[int]:
        return [i for i, s in enumerate(self.splits) if s == split]

    def subset(self, keep: Sequence[int]) -> "AnnotatorData":
        idx = torch.as_tensor(list(keep), dtype=torch.long)
        return AnnotatorData(corpus=self.corpus, utterance_ids=[self.utterance_ids[i] for i in keep],
                             audio=self.audio[idx], text=self.text[idx], ratings=self.ratings[idx],
                             annotator_ids=self.annotator_ids[idx], targets=self.targets[idx],
                             consensus=self.consensus[idx], splits=[self.splits[i] for i in keep])


class AnnotatorDataset(Dataset):
    """Items of :class:`AnnotatorData` rows ``indices`` as dicts of tensors (see :func:`collate`)."""

    def __init__(self, data: AnnotatorData, indices: Sequence[int]):
        self.data, self.indices = data, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        j, d = self.indices[i], self.data
        return {"audio": d.audio[j], "text": d.text[j], "ratings": d.ratings[j], "annotator_ids": d.annotator_ids[j],
                "target": d.targets[j], "consensus": d.consensus[j]}


def collate(items: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Stack items and drop annotator columns that are padding for the whole batch."""
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    used = (batch["annotator_ids"] >= 0) | ~torch.isnan(batch["ratings"]).all(-1)
    width = int(used.any(0).nonzero().max()) + 1 if used.any() else 1
    batch["ratings"] = batch["ratings"][:, :width]
    batch["annotator_ids"] = batch["annotator_ids"][:, :width]
    return batch


def features(utterances, f: Features, cache_dir: Optional[str], device, progress: bool,
             models_dir: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """``{"audio": (U, Da), "text": (U, Dt)}`` float32 features of ``f`` (a modality without a model is ``(U, 0)``).
    ``tiny:`` model specs are written once under ``<models_dir>/tiny_models`` (default: ``cache_dir``'s folder)."""
    from ..data.features import extract_features

    out = {}
    for kind in ("audio", "text"):
        model = getattr(f, f"{kind}_model")
        if not model:
            out[kind] = torch.zeros(len(utterances), 0)
            continue
        model = encoder_path(model, models_dir or str(Path(cache_dir or ".").parent))
        feats = extract_features(utterances, model, kind=kind, layer=getattr(f, f"{kind}_layer"),
                                 pooling=getattr(f, f"{kind}_pooling"), cache_dir=cache_dir, device=device,
                                 progress=progress)
        missing = [u.utterance_id for u in utterances if u.utterance_id not in feats]
        if missing:
            raise ValueError(f"{kind} features missing for {len(missing)} utterances, e.g. {missing[:3]}"
                             + (" (no transcript: pass one)" if kind == "text" else ""))
        out[kind] = torch.from_numpy(np.stack([np.asarray(feats[u.utterance_id], dtype=np.float32).reshape(-1)
                                               for u in utterances]))
    return out


def load_utterances(source: DataConfig, cfg: RunConfig, require: Sequence[str] = ("train", "val", "test"), *,
                    log=say, range_hint: str = "data.rating_range=[{lo},{hi}]",
                    hint: str = "rename one, e.g. data.partitions.{new}={old}"):
    """``(corpus, utterances, partition per utterance)`` of ``source`` (``corpus``, ``root``, ``split``,
    ``partitions``, ``rating_range`` as in the ``data`` section): utterances with at least ``data.min_annotators``
    ratings of ``cfg``, partitions of ``source.split`` renamed by ``source.partitions`` (utterances in no partition
    get None); every partition of ``require`` must hold utterances (:func:`~sermodels.recipes._common.
    split_utterances`, with ``log`` and ``hint``; ``range_hint`` as :func:`~sermodels.recipes._common.read_corpus`)."""
    corpus = read_corpus(source.corpus, source.root, source.rating_range, min_annotators=cfg.data.min_annotators,
                         range_hint=range_hint)
    utts = corpus.utterances
    parts = split_utterances(utts, corpus.name, source.split, source.partitions, require, log=log, hint=hint)
    where = {u.utterance_id: part for part, members in parts.items() for u in members}
    return corpus, utts, [where.get(u.utterance_id) for u in utts]


def scale_of(corpus, cfg: RunConfig):
    """The :class:`~sermodels.data.labels.LabelScale` of a loaded corpus under ``data.scaling``: its own lowest and
    highest individual rating per dimension (``dataset``), or its rating scale (``scale``)."""
    from ..data import labels as L

    return L.label_scale(corpus.utterances, corpus, cfg.data.scaling)


def build_data(corpus, utts, splits, cfg: RunConfig, index, cache_dir: Optional[str], device,
               models_dir: Optional[str] = None, scale=None) -> AnnotatorData:
    """Rating/target tensors and features of ``utts`` of the loaded ``corpus``, ratings mapped onto [-1, 1] by
    ``scale`` (default :func:`scale_of` the corpus). Ratings of annotators outside ``index`` are dropped from
    ``ratings``/``annotator_ids`` but count in ``targets`` and ``consensus``, which use every annotator."""
    from ..data import labels as L

    lab = cfg.data.labels
    scale = scale or scale_of(corpus, cfg)
    ratings, ids = L.ratings_tensor(utts, scale, index=index)
    everyone, _ = L.ratings_tensor(utts, scale)
    targets = torch.as_tensor(L.distribution_targets(utts, scale, k=lab.k, seed=lab.seed, grid=lab.grid),
                              dtype=torch.float64)
    # the unclipped KDE leaves cells of about -1e-5 (DCT ringing): clip to 0 as the authors' code did, renormalise
    targets = targets.clamp(min=0.0)
    targets = targets / targets.sum(dim=(-2, -1), keepdim=True)
    feats = features(utts, cfg.features, cache_dir, device, cfg.train.progress, models_dir)
    return AnnotatorData(corpus=corpus.name, utterance_ids=[u.utterance_id for u in utts], audio=feats["audio"],
                         text=feats["text"], ratings=ratings.float(), annotator_ids=ids.long(),
                         targets=targets.float(), consensus=torch.nanmean(everyone.float(), dim=1), splits=splits)


# -- the task ---------------------------------------------------------------------------------------------------


class AnnotatorTask:
    """Losses and validation of one run (a :class:`sermodels.train.trainer.TrainTask`)."""

    def __init__(self, rc: RunConfig, device: torch.device):
        self.tasks = list(rc.train.tasks)
        self.step_groups = [self.tasks] if rc.train.task_scheme == "summed" else [[t] for t in self.tasks]
        self.k = rc.data.labels.k
        d = rc.train.diffkde
        self.unbiased = d.ccc_unbiased
        self.kde = dict(k=self.k, grid=d.grid, sharpness=d.sharpness, n_pseudo=d.n_pseudo)
        self.train_dtype = getattr(torch, d.gpu_dtype) if device.type == "cuda" else torch.float32
        self.eval_seed = rc.eval.seed

    def losses(self, model, batch, names):
        pred = model(batch["audio"], batch["text"], batch["annotator_ids"])
        out = {}
        for name in names:
            if name == "baseline":
                out[name] = losses.baseline_loss(pred.float(), batch["target"])
            elif name == "task1":
                out[name] = losses.annotator_ccc_loss(pred.float(), batch["ratings"], unbiased=self.unbiased)
            else:
                out[name] = losses.diffkde_loss(pred.float(), batch["target"], histogram="soft",
                                                dtype=self.train_dtype, **self.kde)
        return out

    def validate(self, model, loader, info: DistInfo) -> Dict[str, float]:
        gen = torch.Generator(device=info.device).manual_seed(self.eval_seed + info.rank)
        sums = {"n": 0.0}
        ann = ev.AnnotatorMetrics(unbiased=self.unbiased)
        dm = ev.DistributionMetrics(ks=(self.k,), unbiased=self.unbiased)
        for batch in loader:
            batch = {k: v.to(info.device) for k, v in batch.items()}
            pred = model(batch["audio"], batch["text"], batch["annotator_ids"]).float()
            B = pred.shape[0]
            sums["n"] += B
            if self.tasks == ["baseline"]:
                dist = torch.softmax(pred.double(), dim=-1).reshape(B, self.k, self.k)
            else:  # Task 1 alone: the DiffKDE tables are validation metrics (curves), not part of the loss
                ann.update(pred, batch["ratings"])
                dist = losses.predicted_distribution(pred.double(), histogram="soft", dtype=torch.float64,
                                                     generator=gen, **self.kde)
            ce = losses.distribution_cross_entropy(dist, batch["target"].double())
            sums["ce"] = sums.get("ce", 0.0) + float(ce.sum())
            dm.update(dist, batch["target"], batch["consensus"])
        sums = all_reduce_sums(sums, info)
        out: Dict[str, float] = {}
        val_loss = 0.0
        if "task1" in self.tasks:
            a = ann.compute(info)
            out.update({f"val_{k}": v for k, v in a.items()})
            out["val_task1"] = 2.0 - a["annotator_ccc_activation"] - a["annotator_ccc_valence"]
            val_loss += out["val_task1"]
        if "ce" in sums:
            trained = self.tasks == ["baseline"] or "task2" in self.tasks
            name = "val_baseline" if self.tasks == ["baseline"] else "val_task2" if trained else "val_diffkde_ce"
            out[name] = sums["ce"] / sums["n"]
            if trained:
                val_loss += out[name]
            out.update({f"val_{k}": v for k, v in dm.compute(info).items()})
        out["val_loss"] = val_loss
        return out


# -- models, distributions, evaluation --------------------------------------------------------------------------


def model_meta(rc: RunConfig, audio_dim: int, text_dim: int, index, scale=None) -> Dict[str, Any]:
    """What a checkpoint needs to rebuild its model, featurise new audio and put its bins on the rating scale (the
    training corpus' :class:`~sermodels.data.labels.LabelScale`), stored as ``meta`` in ``best.pt``."""
    return {"recipe": "annotators", "model": {"type": rc.model.type, "audio_dim": audio_dim, "text_dim": text_dim,
                                              "num_annotators": len(index), "k": rc.data.labels.k,
                                              "hidden": rc.model.hidden, "dropout": rc.model.dropout},
            "annotators": list(index.ids), "features": to_dict(rc.features),
            "rating_range": list(rc.data.rating_range) if rc.data.rating_range is not None else None,
            "label_scale": scale.to_dict() if scale is not None else None}


def model_from_meta(meta: Dict[str, Any]) -> torch.nn.Module:
    m = meta["model"]
    return build_model(m["type"], m["audio_dim"], m["text_dim"], num_annotators=m["num_annotators"], k=m["k"],
                       hidden=m["hidden"], dropout=m["dropout"])


def variants(rc: RunConfig, model, zero_shot: bool = False) -> List[str]:
    """The table variants of ``model``: ``model`` (baseline softmax) or ``<soft|hard>_<own|all>``."""
    if not getattr(model, "predicts_annotators", False):
        return ["model"]
    who = ["all"] if zero_shot else rc.eval.annotators
    return [f"{h}_{a}" for h in rc.eval.histograms for a in who]


@torch.no_grad()
def distributions(model, batch: Dict[str, torch.Tensor], rc: RunConfig, variant: str,
                  annotator_preds: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """``(B, k, k)`` float64 tables of ``variant`` for a batch (``audio``, ``text``; ``annotator_ids`` for ``own``).

    Annotator models: per-utterance pseudo-observations seeded with ``eval.seed`` (a table does not depend on the
    rest of the batch). ``annotator_preds`` caches the per-annotator predictions (``own`` / ``all``) across
    variants."""
    k = rc.data.labels.k
    B = batch["audio"].shape[0]
    if variant == "model":
        return torch.softmax(model(batch["audio"], batch["text"]).double(), -1).reshape(B, k, k)
    hist, who = variant.split("_")
    cache = annotator_preds if annotator_preds is not None else {}
    if who not in cache:
        cache[who] = model(batch["audio"], batch["text"], batch["annotator_ids"] if who == "own" else None).double()
    e, d = rc.eval, rc.train.diffkde
    return losses.predicted_distribution(cache[who], k=k, histogram=hist,
                                         grid=e.soft_grid if hist == "soft" else e.hard_grid, sharpness=d.sharpness,
                                         n_pseudo=d.n_pseudo, dtype=torch.float64, seed=e.seed)


@torch.no_grad()
def evaluate_model(model, dataset: Dataset, rc: RunConfig, info: DistInfo, *, zero_shot: bool = False,
                   batch_size: int = 256, return_tables: bool = False):
    """Paper metrics of ``model`` on ``dataset`` (see :mod:`sermodels.evaluation`); keys ``<variant>_k<k>_<metric>``
    plus ``annotator_ccc_*`` (own annotators, not zero-shot). ``return_tables`` (one process only): also
    ``{variant: (N, k, k)}`` tables in dataset order."""
    if return_tables and info.world_size > 1:
        raise ValueError("return_tables needs a single process")
    e, k = rc.eval, rc.data.labels.k
    ks = [kk for kk in e.ks if k % kk == 0]
    unbiased = rc.train.diffkde.ccc_unbiased
    loader = DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), info), collate_fn=collate)
    model.eval()
    names = variants(rc, model, zero_shot)
    metrics = {v: ev.DistributionMetrics(ks=ks, convention=e.bin_positions, unbiased=unbiased) for v in names}
    tables: Dict[str, List[torch.Tensor]] = {v: [] for v in names}
    ann = ev.AnnotatorMetrics(unbiased=unbiased)
    annotator_model = names != ["model"]
    for batch in loader:
        batch = {kk: v.to(info.device) for kk, v in batch.items()}
        preds: Dict[str, torch.Tensor] = {}
        if annotator_model and not zero_shot:
            preds["own"] = model(batch["audio"], batch["text"], batch["annotator_ids"]).double()
            ann.update(preds["own"], batch["ratings"])
        for v in names:
            dist = distributions(model, batch, rc, v, preds)
            metrics[v].update(dist, batch["target"], batch["consensus"])
            if return_tables:
                tables[v].append(dist.cpu())
    out: Dict[str, float] = {}
    for v, m in metrics.items():
        out.update({f"{v}_{key}": val for key, val in m.compute(info).items()})
    if annotator_model and not zero_shot:
        out.update(ann.compute(info))
    return (out, {v: torch.cat(t) for v, t in tables.items()}) if return_tables else out


# -- training a config ------------------------------------------------------------------------------------------


def _examples(model, data: AnnotatorData, indices: Sequence[int], rc: RunConfig, device, n: int = 4) -> Dict:
    """Targets and reported-variant tables of the first ``n`` test utterances (for :mod:`sermodels.plots`)."""
    keep = list(indices)[:n]
    batch = {k: v.to(device) for k, v in collate([AnnotatorDataset(data, keep)[i] for i in range(len(keep))]).items()}
    variant = "model" if rc.model.type == "baseline" else rc.eval.report
    dist = distributions(model, batch, rc, variant)
    return {"utterance_ids": [data.utterance_ids[i] for i in keep], "variant": variant,
            "target": data.targets[keep].tolist(), "predicted": dist.cpu().tolist()}


def train_and_evaluate(cfg: Config, data: AnnotatorData, index, info: DistInfo, out_dir, *,
                       runs: Optional[Sequence[str]] = None, test_sets: Optional[Dict[str, AnnotatorData]] = None,
                       scale=None) -> Dict[str, Any]:
    """Train every run x seed of ``cfg`` (or ``runs``) on ``data``; evaluate on its ``test`` partition and zero-shot
    on ``test_sets``. Returns ``{"runs": {run: [per-seed results]}}``; each has ``test`` (and
    ``zero_shot[corpus]``) metrics and the fit summary; ``test.json`` and ``examples.json`` go to the trainer's
    folder ``<out_dir>/<run>/seed<s>``."""
    out_root = Path(out_dir)
    parts = {s: data.indices(s) for s in ("train", "val", "test")}
    for s, idx in parts.items():
        if not idx:
            raise ValueError(f"corpus {data.corpus!r} has no utterances in partition {s!r} "
                             f"(partitions present: {sorted(set(map(str, data.splits)))})")
    train_set, val_set, test_set = (AnnotatorDataset(data, parts[s]) for s in ("train", "val", "test"))
    results: Dict[str, List[Dict[str, Any]]] = {}
    for run in runs or list(cfg.runs):
        rc = run_config(cfg, run)
        for seed in rc.seeds:
            seed_everything(seed)  # identical initial weights on every rank
            meta = model_meta(rc, data.audio.shape[1], data.text.shape[1], index, scale)
            model = model_from_meta(meta)
            run_dir = out_root / run / f"seed{seed}"
            t0 = time.perf_counter()
            fit = Trainer(rc.train, run_dir, seed=seed, info=info, meta=meta).fit(
                model, AnnotatorTask(rc, info.device), train_set, val_set, collate_fn=collate)
            res: Dict[str, Any] = {"run": run, "seed": seed, "best_epoch": fit.best_epoch,
                                   "epochs": len(fit.history), "stopped_early": fit.stopped_early,
                                   "skipped_steps": fit.skipped_steps, "train_seconds": fit.seconds}
            bs = rc.train.eval_batch_size
            res["test"] = evaluate_model(model, test_set, rc, info, batch_size=bs)
            res["zero_shot"] = {name: evaluate_model(model, AnnotatorDataset(ts, range(len(ts.utterance_ids))), rc,
                                                     info, zero_shot=True, batch_size=bs)
                                for name, ts in (test_sets or {}).items()}
            if info.is_main:
                write_json(run_dir / "test.json", res)
                write_json(run_dir / "examples.json", _examples(model, data, parts["test"], rc, info.device))
                say(f"[{run} seed {seed}] {res['epochs']} epochs (best {res['best_epoch']}), "
                    f"{time.perf_counter() - t0:.1f} s; " + _headline(res["test"], rc))
            results.setdefault(run, []).append(res)
    return {"runs": results}


def _variant(cfg: Config, run: str) -> str:
    return "model" if run_config(cfg, run).model.type == "baseline" else cfg.eval.report


def _headline(metrics: Dict[str, float], rc: RunConfig) -> str:
    k = rc.data.labels.k
    v = "model" if rc.model.type == "baseline" else rc.eval.report
    keys = [f"{v}_k{k}_tvd", f"{v}_k{k}_jsd", f"{v}_k{k}_ccc_activation", f"{v}_k{k}_ccc_valence",
            "annotator_ccc_activation", "annotator_ccc_valence"]
    return ", ".join(f"{key.replace(v + '_', '')} {metrics[key]:.3f}" for key in keys if key in metrics)


ABLATION_ROWS = ("Task 1 + KDE", "Task 1 + DiffKDE", "Task 1+2 + DiffKDE")


def ablation_table(cfg: Config, results: Dict[str, Any]) -> Optional[str]:
    """The paper's section 4.2 as a table: the Task 1 run's test tables from the hard-histogram KDE (the labels'
    pipeline) and from DiffKDE, and the Task 1+2 reference with DiffKDE; marks: paired t-test against the Task 1 +
    KDE row. None when the config has no ablation or its run has no results."""
    a = cfg.ablation
    runs = results["runs"]
    if a is None or a.run not in runs:
        return None
    k = cfg.data.labels.k
    who = cfg.eval.report.split("_")[1]
    rows = {ABLATION_ROWS[0]: (a.run, f"hard_{who}"), ABLATION_ROWS[1]: (a.run, f"soft_{who}")}
    if a.reference is not None and a.reference in runs:
        rows[ABLATION_ROWS[2]] = (a.reference, f"soft_{who}")
    variant = {row: v for row, (_, v) in rows.items()}
    summary = ev.summarize_seeds({row: [s["test"] for s in runs[run]] for row, (run, _) in rows.items()},
                                 baseline=ABLATION_ROWS[0], variant=variant, alpha=cfg.eval.alpha)
    n = len(runs[a.run])
    return ev.format_table1(summary, variant, k=k, alpha=cfg.eval.alpha, against=ABLATION_ROWS[0],
                            title=f"Ablation (section 4.2): Task 1 ({a.run}) with KDE vs DiffKDE distributions"
                                  + (f", Task 1+2 ({a.reference})" if ABLATION_ROWS[2] in rows else "")
                                  + f"; {cfg.data.corpus} test partition, {who} annotators, {n} seed(s)")


def tables(cfg: Config, results: Dict[str, Any]) -> str:
    """Paper-style tables (Table 1 on the test partition, the section 4.2 ablation, Table 2 for zero-shot corpora)
    from ``results``. Table 1 leaves out the ablation's Task 1 run (printed in the ablation table)."""
    ablated = cfg.ablation.run if cfg.ablation is not None else None
    runs = {r: v for r, v in results["runs"].items() if r in cfg.runs}
    runs = {r: v for r, v in runs.items() if r != ablated} or runs
    k = cfg.data.labels.k
    base = cfg.baseline_run if cfg.baseline_run in runs else None
    variant = {r: _variant(cfg, r) for r in runs}
    summary = ev.summarize_seeds({r: [s["test"] for s in v] for r, v in runs.items()}, baseline=base,
                                 variant=variant, alpha=cfg.eval.alpha)
    n = min(len(v) for v in runs.values())
    parts = [ev.format_table1(summary, variant, k=k, title=f"Table 1: {cfg.data.corpus} test partition, {k}x{k}, "
                              f"{n} seed(s), bin positions {cfg.eval.bin_positions}, labels scaled by "
                              f"{cfg.data.scaling} min-max", alpha=cfg.eval.alpha)]
    ablation = ablation_table(cfg, results)
    if ablation is not None:
        parts.append(ablation)
    corpora = sorted({c for v in runs.values() for s in v for c in s.get("zero_shot", {})})
    if corpora:
        zs_variant = {r: "model" if variant[r] == "model" else variant[r].split("_")[0] + "_all" for r in runs}
        per = {c: ev.summarize_seeds({r: [s["zero_shot"][c] for s in v] for r, v in runs.items()
                                      if all(c in s.get("zero_shot", {}) for s in v)}, baseline=base,
                                     variant=zs_variant, alpha=cfg.eval.alpha) for c in corpora}
        parts.append(ev.format_table2(per, zs_variant, k=k, title="Table 2: zero-shot cross-corpus (all annotators' "
                                                                  "heads)"))
    return "\n\n".join(parts)


def _fingerprint_part(utts, splits) -> Dict[str, list]:
    groups: Dict[str, list] = {}
    for u, s in zip(utts, splits):
        groups.setdefault(str(s), []).append(u)
    return groups


def run(config=None, *, corpus: Optional[str] = None, data_root: Optional[str] = None,
        out_dir="runs/annotators", runs: Optional[Sequence[str]] = None, overwrite: bool = False) -> Dict[str, Any]:
    """Everything for one config: data, features, every run x seed (or ``runs``), test and zero-shot evaluation,
    tables; results merge with the folder's earlier ``--run`` invocations."""
    from ..data.labels import AnnotatorIndex

    cfg, info, folder = start_run("annotators", Config, config, corpus, data_root, out_dir, overwrite)
    bad = [r for r in runs or () if r not in cfg.runs]
    if bad:
        raise ConfigError(f"runs {bad} are not in the config's runs ({', '.join(cfg.runs)})")
    missing = [tc.corpus or "?" for tc in cfg.eval.test_corpora if not tc.corpus or not tc.root]
    if missing:
        raise ConfigError(f"eval.test_corpora: {missing} need corpus and root")
    heads = [r for r in runs or cfg.runs if run_config(cfg, r).model.type != "baseline"]
    if cfg.data.corpus in ANONYMOUS_RATERS and heads:
        raise ConfigError(f"{cfg.data.corpus}'s annotator ids name positions within an utterance, not people "
                          f"(anonymous release): runs {heads} would fit per-annotator heads to them. Use it in "
                          f"eval.test_corpora or `sermodels evaluate --corpus {cfg.data.corpus}`, or train the "
                          f"baseline only (--run {cfg.baseline_run or 'baseline'})")
    log = say if info.is_main else None
    main_corpus, utts, splits = load_utterances(cfg.data, cfg, log=log)
    tests = {}
    for i, tc in enumerate(cfg.eval.test_corpora):
        key = f"eval.test_corpora.{i}"
        source = DataConfig(corpus=corpus_names(tc.corpus, f"{key}.corpus"), root=tc.root, split=tc.split,
                            rating_range=tc.rating_range)
        tests[source.corpus] = load_utterances(source, cfg, [tc.partition], log=log,
                                               range_hint=f"{key}.rating_range=[{{lo}},{{hi}}]",
                                               hint=f"pick one with {key}.partition={{old}}") + (tc.partition,)
    tested = {f"{c}:{p}": [u for u, s in zip(us, ss) if s == p] for c, (_, us, ss, p) in tests.items()}
    scales = {c.name: c.rating_range for c in [main_corpus] + [t[0] for t in tests.values()]}
    fp = data_fingerprint({**_fingerprint_part(utts, splits), **tested}, labels=to_dict(cfg.data.labels),
                          rating_ranges=scales)
    with folder.claim(fp):
        out = Path(out_dir)
        index = AnnotatorIndex.from_utterances([u for u, s in zip(utts, splits) if s == "train"])
        cache_dir = cfg.features.cache_dir or str(out / "features")
        scale = scale_of(main_corpus, cfg)
        if log is not None:
            log(f"labels: {scale.describe()}")
        data = build_data(main_corpus, utts, splits, cfg, index, cache_dir, info.device, str(out), scale)
        if info.is_main:
            index.save(out / "annotator_index.json")
            write_json(out / "label_scale.json", scale.to_dict())
        test_sets = {}
        for name, (test_corpus, us, ss, part) in tests.items():
            ts = build_data(test_corpus, us, ss, cfg, index, cache_dir, info.device, str(out))
            test_sets[name] = ts.subset(ts.indices(part))
        res = train_and_evaluate(cfg, data, index, info, out, runs=runs, test_sets=test_sets, scale=scale)
        merged = folder.merge_results(res, "runs")
        folder.save(merged, tables(cfg, merged))
    barrier(info)
    return merged


def evaluate(run_dir, *, corpus: Optional[str] = None, data_root: Optional[str] = None, split: Optional[str] = None,
             partition: Optional[str] = None, rating_range: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Print the tables of a finished run folder; or, given any of the other arguments, evaluate its best checkpoints
    with every trained annotator's head (as zero-shot) on partition ``partition`` (default ``test``) of ``split``
    (a scheme or a split file) of ``corpus`` at ``data_root`` and write ``zero_shot_<corpus>_<partition>.json``.

    ``corpus`` defaults to the run's own, which also defaults ``data_root``, ``rating_range``, ``split`` and (when
    ``split`` is not given) the renaming ``data.partitions`` to the run's; another corpus defaults to split ``all``
    (every utterance in ``test``). An empty or missing partition is an error naming the partitions there are."""
    from ..config import build
    from ..data.labels import AnnotatorIndex
    from ..train import init_distributed

    run_dir = Path(run_dir)
    cfg = build(Config, base=read_config(run_dir))
    if all(v is None for v in (corpus, data_root, split, partition, rating_range)):
        res_path = run_dir / "results.json"
        if not res_path.is_file():
            raise FileNotFoundError(f"{res_path} not found (training did not finish?)")
        results = json.loads(res_path.read_text())
        say(tables(cfg, results))
        return results
    name = cfg.data.corpus if corpus is None else corpus_names(corpus, "--corpus")
    own = name == cfg.data.corpus
    source = DataConfig(corpus=name, root=data_root or (cfg.data.root if own else None),
                        split=split if split is not None else cfg.data.split if own else "all",
                        partitions=cfg.data.partitions if own and split is None else {},
                        rating_range=rating_range if rating_range is not None else
                        cfg.data.rating_range if own else None)
    if not source.root:
        raise ConfigError(f"--corpus {name} needs --data-root")
    partition = partition or "test"
    index = AnnotatorIndex.load(run_dir / "annotator_index.json")
    info = init_distributed("cpu" if not torch.cuda.is_available() else "auto")
    test_corpus, utts, splits = load_utterances(source, cfg, [partition], range_hint="--range {lo} {hi}",
                                                hint="pick one with --partition {old}")
    data = build_data(test_corpus, utts, splits, cfg, index, cfg.features.cache_dir or str(run_dir / "features"),
                      info.device, str(run_dir))
    dataset = AnnotatorDataset(data, data.indices(partition))
    results: Dict[str, List[Dict[str, Any]]] = {}
    for run in cfg.runs:
        rc = run_config(cfg, run)
        for seed in rc.seeds:
            ckpt = run_dir / run / f"seed{seed}" / "best.pt"
            if not ckpt.is_file():
                continue
            state = load_checkpoint(ckpt)
            model = model_from_meta(state["meta"])
            model.load_state_dict(state["model"])
            m = evaluate_model(model.to(info.device), dataset, rc, info, zero_shot=True,
                               batch_size=rc.train.eval_batch_size)
            results.setdefault(run, []).append({"seed": seed, "test": {}, "zero_shot": {name: m}})
    if not results:
        raise FileNotFoundError(f"no best.pt checkpoints under {run_dir}")
    path = run_dir / f"zero_shot_{name}_{partition}.json"
    write_json(path, {"runs": results, "corpus": name, "root": str(source.root), "partition": partition,
                      "n_utterances": len(dataset)})
    base = cfg.baseline_run if cfg.baseline_run in results else None
    variant = {r: "model" if _variant(cfg, r) == "model" else cfg.eval.report.split("_")[0] + "_all"
               for r in results}
    per = {name: ev.summarize_seeds({r: [s["zero_shot"][name] for s in v] for r, v in results.items()},
                                    baseline=base, variant=variant, alpha=cfg.eval.alpha)}
    say(ev.format_table2(per, variant, k=cfg.data.labels.k,
                         title=f"{name}, partition {partition} ({len(dataset)} utterances), all annotators' heads"))
    say(f"wrote {path}")
    return {"runs": results}


# -- prediction -------------------------------------------------------------------------------------------------


def _bins(lo: float, hi: float, k: int) -> List[List[float]]:
    edges = np.linspace(lo, hi, k + 1)
    return [[float(edges[i]), float(edges[i + 1])] for i in range(k)]


def bin_ranges(cfg: Config, k: int, run_dir=None, scale: Optional[Dict[str, Any]] = None
               ) -> Dict[str, List[List[float]]]:
    """``{"activation": [[lo, hi], ...], "valence": ...}``: each of the ``k`` bins per axis on the rating scale.
    The ranges mapped onto [-1, 1] come from ``scale`` (a :meth:`LabelScale.to_dict`), else the run folder's
    ``label_scale.json``, else ``data.rating_range`` or the corpus' fixed scale (``[-1, 1]`` when unknown)."""
    from ..data.labels import SCALE_RANGES

    if scale is None and run_dir is not None and (Path(run_dir) / "label_scale.json").is_file():
        scale = json.loads((Path(run_dir) / "label_scale.json").read_text())
    if scale is not None:
        return {d: _bins(*scale["ranges"][d], k) for d in ("activation", "valence")}
    lo, hi = cfg.data.rating_range or SCALE_RANGES.get(cfg.data.corpus or "", (-1.0, 1.0))
    return {d: _bins(lo, hi, k) for d in ("activation", "valence")}


class Predictor:
    """The best checkpoints of a run folder (every run x seed, or ``runs`` / ``seeds``), applied to audio files.

    :meth:`predict` featurises each file with the checkpoint's feature settings (no cache) and returns per file the
    k x k distribution table of every model (``model`` = the baseline's softmax; annotator models: the reported
    histogram over all trained annotators' heads, pseudo-observations seeded with ``eval.seed`` as in evaluation)
    and, for annotator models, each annotator's (activation, valence) prediction in ``[-1, 1]``."""

    def __init__(self, run_dir, runs: Optional[Sequence[str]] = None, seeds: Optional[Sequence[int]] = None,
                 device: Optional[str] = None):
        from ..config import build

        self.run_dir = Path(run_dir)
        self.config = build(Config, base=read_config(self.run_dir))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        bad = [r for r in runs or () if r not in self.config.runs]
        if bad:
            raise ConfigError(f"runs {bad} are not in {self.run_dir}'s runs ({', '.join(self.config.runs)})")
        self.models = []
        for run in runs or list(self.config.runs):
            rc = run_config(self.config, run)
            for seed in seeds if seeds is not None else rc.seeds:
                ckpt = self.run_dir / run / f"seed{seed}" / "best.pt"
                if ckpt.is_file():
                    state = load_checkpoint(ckpt)
                    model = model_from_meta(state["meta"])
                    model.load_state_dict(state["model"])
                    self.models.append((run, seed, rc, model.to(self.device).eval(), state["meta"]))
        if not self.models:
            raise FileNotFoundError(f"no best.pt checkpoints under {self.run_dir} for runs {runs or 'all'}, "
                                    f"seeds {seeds if seeds is not None else 'all'}")

    @torch.no_grad()
    def predict(self, audio: Sequence, transcripts: Optional[Sequence[Optional[str]]] = None) -> List[Dict[str, Any]]:
        from ..data.records import Utterance

        paths = [Path(p) for p in audio]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"audio file(s) not found: {', '.join(missing)}")
        texts = list(transcripts) if transcripts is not None else [None] * len(paths)
        if len(texts) != len(paths):
            raise ValueError(f"{len(texts)} transcripts for {len(paths)} audio files")
        utts = [Utterance(utterance_id=p.stem, corpus="predict", audio_path=str(p), transcript=t)
                for p, t in zip(paths, texts)]
        out = [{"file": str(p), "transcript": t, "predictions": []} for p, t in zip(paths, texts)]
        feats: Dict[str, Dict[str, torch.Tensor]] = {}
        for run, seed, rc, model, meta in self.models:
            fs = Features(**meta["features"])
            if fs.text_model and any(t is None for t in texts):
                raise ValueError(f"run {run!r} uses text features ({fs.text_model}): pass a transcript per file")
            key = json.dumps(meta["features"], sort_keys=True)
            if key not in feats:
                feats[key] = features(utts, fs, None, self.device, progress=False, models_dir=str(self.run_dir))
            batch = {k: v.to(self.device) for k, v in feats[key].items()}
            variant = "model" if rc.model.type == "baseline" else rc.eval.report.split("_")[0] + "_all"
            dist = distributions(model, batch, rc, variant).cpu()
            heads = None
            if variant != "model":
                heads = model(batch["audio"], batch["text"], None).double().cpu()
            k = rc.data.labels.k
            for i, item in enumerate(out):
                entry = {"run": run, "seed": seed, "variant": variant, "k": k,
                         "bins": bin_ranges(self.config, k, self.run_dir, meta.get("label_scale")),
                         "distribution": dist[i].tolist()}
                if heads is not None:
                    entry["annotators"] = {a: heads[i, j].tolist() for j, a in enumerate(meta["annotators"])}
                item["predictions"].append(entry)
        return out
