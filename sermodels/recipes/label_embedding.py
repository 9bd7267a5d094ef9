"""Recipe: emotion label encoding with word embeddings (Stanley et al., Interspeech 2023; paper 001).

Targets are GloVe vectors of the labels (:func:`sermodels.data.labels.word_label_sets`): S1 the majority label's
noun (4 classes, exc merged into happiness), S2 the average of every annotator label, S3 the S2 labels plus one-word
comments. Model M_k is a :class:`~sermodels.models.label_embedding.LabelEmbeddingNet` on frames of one wav2vec2
layer (``features.layer``; the paper's "layer 14" of wav2vec2-large is ``hidden_states[14]``, index 0 being the
CNN output) trained on S_k with MSE, MAE or log-cosh; the baseline is the same network with 4 logits and
cross-entropy. Folds: leave one session out; the other sessions are split at random 80 % train / 20 % validation.

Evaluation on each test session (then averaged over folds):

- Table 1: UA / WA of the label decoded by cosine nearest neighbour among the 4 label vectors (paper eq. 5 reads
  argmin of the similarity; argmax is meant);
- Table 3: average cosine similarity between prediction and target for S1, S2, S3;
- Table 5: the 5 nearest GloVe words (400k vocabulary) to each class' mean prediction;
- Table 6: top-10 accuracy of l1 / l2 (the most and second most frequent label of the combined label of S2 / S3)
  among the 10 nearest vocabulary words of each prediction (utterances without a second label are left out of l2).
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Dict, List

import numpy as np
import torch

from ..data import load_corpus
from ..data.features import extract_features
from ..data.labels import (FOUR_CLASSES, LABEL_NOUNS, GloVe, comment_words, label_nouns, majority_category,
                           word_label_sets)
from ..models.label_embedding import LabelEmbeddingNet, cosine_nearest
from ..recipe_losses import get_loss
from ..train import Trainer
from ._common import (DictDataset, SupervisedTask, dist_info, encoder_path, format_table, pad_collate, predict,
                      recipe_config, save_results, trainer_config, unweighted_average_recall, weighted_accuracy)

SETS = ("S1", "S2", "S3")


def _forward(model, batch):
    return model(batch["x"], batch["x_mask"])


def _ce(pred, target):
    return torch.nn.functional.cross_entropy(pred, target.long())


def _folds(utts, n_max, seed) -> List[Dict[str, list]]:
    sessions = sorted({u.session for u in utts if u.session is not None})
    if len(sessions) < 2:
        raise ValueError(f"leave-one-session-out needs >= 2 sessions, found {sessions}")
    rng = np.random.default_rng(seed)
    folds = []
    for s in sessions[: n_max or None]:
        rest = [u for u in utts if u.session != s]
        order = rng.permutation(len(rest))
        n_val = max(1, int(round(0.2 * len(rest))))
        folds.append({"session": s, "test": [u for u in utts if u.session == s],
                      "val": [rest[i] for i in order[:n_val]], "train": [rest[i] for i in order[n_val:]]})
    return folds


def _top2(words: List[str]):
    counts = Counter(words).most_common()
    return (counts[0][0] if counts else None), (counts[1][0] if len(counts) > 1 else None)


def run(config: Dict[str, Any], corpus: str, data_root: str, out_dir: str) -> Dict[str, Any]:
    cfg = recipe_config("label_embedding", config)
    info = dist_info(cfg)
    os.makedirs(out_dir, exist_ok=True)
    utts = load_corpus(corpus, data_root).utterances
    glove = GloVe(cfg.get("glove_root"))
    codes = majority_category(utts, cfg["protocol"])
    utts = [u for u, c in zip(utts, codes) if c is not None]
    code_of = {u.utterance_id: c for u, c in zip(utts, [c for c in codes if c is not None])}
    targets = word_label_sets(utts, glove, cfg["protocol"])
    fc = cfg["features"]
    feats = extract_features(utts, encoder_path(fc["audio_model"], out_dir), kind="audio", layer=fc["layer"],
                             pooling="none", cache_dir=fc.get("cache_dir") or os.path.join(out_dir, "features"),
                             progress=False)
    utts = [u for u in utts if u.utterance_id in feats]
    label_vecs = torch.as_tensor(np.stack([glove.vector(LABEL_NOUNS[c]) for c in FOUR_CLASSES]))
    class_of = {c: i for i, c in enumerate(FOUR_CLASSES)}
    vocab = torch.from_numpy(np.array(glove._load()[0], dtype=np.float32))  # (400000, 50), a writable copy
    words = glove._words

    def dataset(us, target):
        items = [{"x": torch.as_tensor(feats[u.utterance_id]), "y": target(u)} for u in us]
        return DictDataset(items, [u.utterance_id for u in us])

    mc = cfg["model"]
    runs = [(f"M{k + 1}", s, loss) for k, s in enumerate(SETS) if s in cfg["train_sets"] for loss in cfg["losses"]]
    if cfg["baseline"]:
        runs.append(("baseline", "S1", "ce"))
    per_fold: Dict[str, List[Dict[str, Any]]] = {}
    for fold in _folds(utts, cfg.get("max_folds"), cfg["seed"]):
        for name, train_set, loss_name in runs:
            tag = f"{name}_{loss_name}"
            ce = loss_name == "ce"
            target = (lambda u: torch.tensor(class_of[code_of[u.utterance_id]])) if ce else \
                (lambda u, s=train_set: torch.as_tensor(targets[s][u.utterance_id]))
            torch.manual_seed(cfg["seed"])
            in_dim = int(np.asarray(next(iter(feats.values()))).shape[-1])
            model = LabelEmbeddingNet(in_dim, 4 if ce else glove.dim, **mc)
            trainer = Trainer(trainer_config(cfg, os.path.join(out_dir, f"fold_{fold['session']}", tag),
                                             seed=cfg["seed"]), info=info)
            trainer.fit(model, SupervisedTask(_forward, _ce if ce else get_loss(loss_name)),
                        dataset(fold["train"], target), dataset(fold["val"], target), collate_fn=pad_collate)
            test = fold["test"]
            pred = torch.as_tensor(predict(model, dataset(test, target), _forward))
            true = [class_of[code_of[u.utterance_id]] for u in test]
            if ce:
                decoded = pred.argmax(1).tolist()
                res = {"UA": unweighted_average_recall(true, decoded), "WA": weighted_accuracy(true, decoded)}
            else:
                decoded = cosine_nearest(pred, label_vecs, k=1)[1][:, 0].tolist()
                res = {"UA": unweighted_average_recall(true, decoded), "WA": weighted_accuracy(true, decoded)}
                for s in SETS:
                    tv = torch.as_tensor(np.stack([targets[s][u.utterance_id] for u in test]))
                    res[f"cos_{s}"] = float(torch.nn.functional.cosine_similarity(pred, tv, dim=1).mean())
                top10 = cosine_nearest(pred, vocab, k=10)[1].tolist()
                for s in ("S2", "S3"):
                    hit = {"l1": [], "l2": []}
                    for u, idx in zip(test, top10):
                        combined = label_nouns(u) + (comment_words(u, glove) if s == "S3" else [])
                        near = {words[i] for i in idx}
                        for key, lab in zip(("l1", "l2"), _top2(combined)):
                            if lab is not None:
                                hit[key].append(lab in near)
                    for key in ("l1", "l2"):
                        res[f"top10_{s}_{key}"] = float(np.mean(hit[key])) if hit[key] else float("nan")
                res["neighbours"] = {}
                for c in FOUR_CLASSES:
                    rows = [i for i, t in enumerate(true) if t == class_of[c]]
                    if rows:
                        idx = cosine_nearest(pred[rows].mean(0, keepdim=True), vocab, k=5)[1][0].tolist()
                        res["neighbours"][LABEL_NOUNS[c]] = [words[i] for i in idx]
            per_fold.setdefault(tag, []).append(res)

    summary = {tag: {k: float(np.nanmean([r[k] for r in rs])) for k in rs[0] if k != "neighbours"}
               for tag, rs in per_fold.items()}
    neighbours = {tag: rs[-1].get("neighbours", {}) for tag, rs in per_fold.items()}
    table = tables(summary, neighbours, cfg)
    results = {"summary": summary, "per_fold": per_fold, "neighbours_last_fold": neighbours}
    save_results(out_dir, results, table, info)
    return results


def tables(summary: Dict[str, Dict[str, float]], neighbours: Dict[str, Dict[str, List[str]]], cfg) -> str:
    """Tables 1, 3, 5 and 6 of paper 001 from the fold-averaged summary."""
    models = [m for m in ("M1", "M2", "M3") if any(t.startswith(m + "_") for t in summary)]
    losses = list(cfg["losses"])
    out = []
    base = summary.get("baseline_ce")
    head = ["Model"] + [f"{l} {m}" for l in losses for m in ("UA", "WA")]
    rows = [[m] + [summary.get(f"{m}_{l}", {}).get(k, float("nan")) for l in losses for k in ("UA", "WA")]
            for m in models]
    note = f"Baseline (cross-entropy): {base['UA']:.3f} UA, {base['WA']:.3f} WA" if base else ""
    out.append(format_table("Table 1: accuracies on the 4-label set (mean over folds)", head, rows, note))
    first = losses[0]
    rows = [[m] + [summary.get(f"{m}_{first}", {}).get(f"cos_{s}", float("nan")) for s in SETS] for m in models]
    out.append(format_table(f"Table 3: average cosine similarity across the label sets ({first})",
                            ["Model", *SETS], rows))
    rows = []
    for m in models:
        nb = neighbours.get(f"{m}_{first}", {})
        for rank in range(5):
            rows.append([m if rank == 0 else ""] + [nb[w][rank] if w in nb and rank < len(nb[w]) else ""
                                                    for w in (LABEL_NOUNS[c] for c in ("ang", "neu", "hap", "sad"))])
    out.append(format_table(f"Table 5: top 5 nearest neighbours of the mean prediction per label ({first}, last fold)",
                            ["Model", "anger", "neutral", "happiness", "sadness"], rows))
    rows = [[m] + [summary.get(f"{m}_{first}", {}).get(f"top10_{s}_{k}", float("nan"))
                   for s in ("S2", "S3") for k in ("l1", "l2")] for m in models]
    out.append(format_table(f"Table 6: top-10 accuracy for l1 and l2 on S2 and S3 ({first})",
                            ["Model", "S2 l1", "S2 l2", "S3 l1", "S3 l2"], rows))
    return "\n\n".join(out)
