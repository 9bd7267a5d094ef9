"""Recipe: distilled audio+text SSL emotion regression (de Oliveira, Prabhu, Gerkmann, Interspeech 2023; paper 002).

Model: :class:`~sermodels.models.distilled.DistilledSER` (speech encoder + optional text encoder, mean+max pooling,
concatenation, FFN with tanh, 3 outputs). Targets: consensus (arousal, valence, dominance) min-max scaled to [0, 1]
with the corpus' fixed rating range. Loss: mean over the three of ``1 - CCC``
(:func:`sermodels.recipe_losses.ccc_loss`).
Training batches are length-bucketed (:class:`LengthBucketSampler`: items sorted by length into batches, batch order
shuffled every epoch) through :class:`BucketTrainer`, a subclass of the shared trainer that only replaces its
training loader.

``mode``: ``frozen`` | ``finetune`` (conv feature encoder frozen) | ``ft_frz`` (fine-tune the audio-only model, then
freeze its encoder and a text encoder and train a new fused head, the paper's FT=>FRZ). ``runs`` lists the rows of
Table 1 (``audio`` or ``audio+text``). ``layer_analysis: true`` trains one frozen, layer-weighted (s3prl softmax
weights) audio-only model per dimension and plots the normalised layer weights (the paper's Figure 2) to
``layer_importance.png``. Transcripts come from the corpus; ``asr_model`` (a transformers ASR folder) fills missing
ones through ``transformers.pipeline("automatic-speech-recognition")``.

Evaluation: CCC (population moments) per dimension on the seen (``test1``) and unseen (``test2``) partitions of the
split scheme, in the layout of Table 1.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from kdekit.ops.ccc import ccc
from ..data import load_corpus
from ..data.features import load_audio
from ..data.labels import scale_range
from ..data.splits import assign_split
from ..models.distilled import DistilledSER
from ..recipe_losses import ccc_loss
from ..train import Trainer
from ._common import (DictDataset, SupervisedTask, dist_info, encoder_path, format_table, pad_collate, predict,
                      recipe_config, save_results, trainer_config)

DIMS = ("Arousal", "Valence", "Dominance")


class LengthBucketSampler(Sampler[int]):
    """Indices grouped into length-sorted chunks of ``batch_size`` (this rank's share), chunk order shuffled per
    epoch: consecutive batches of a ``DataLoader(batch_size=...)`` hold items of similar length (little padding)."""

    def __init__(self, lengths: List[int], batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.lengths, self.batch_size = list(lengths), batch_size
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _chunks(self) -> List[List[int]]:
        g = np.random.default_rng(self.seed + self.epoch)
        jitter = g.permutation(len(self.lengths))  # random order among equal lengths
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], jitter[i]))
        chunks = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return [chunks[i] for i in g.permutation(len(chunks))][self.rank::self.world_size]

    def __iter__(self):
        return iter([i for chunk in self._chunks() for i in chunk])

    def __len__(self) -> int:
        return sum(len(c) for c in self._chunks())


class BucketTrainer(Trainer):
    """The shared trainer with length-bucketed training batches (``dataset.lengths`` gives each item's length)."""

    def train_loader(self, dataset, collate_fn=None) -> DataLoader:
        per_rank = self.config.batch_size // self.info.world_size
        sampler = LengthBucketSampler(dataset.lengths, per_rank, self.info.rank, self.info.world_size,
                                      self.config.seed)
        return DataLoader(dataset, batch_size=per_rank, sampler=sampler, collate_fn=collate_fn, num_workers=0)


def _forward(model, batch):
    return model(batch["wave"], batch.get("wave_mask"), batch.get("ids"), batch.get("ids_mask"))


def _transcribe(utts, asr_model: str) -> None:
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=asr_model)
    for u in utts:
        if u.transcript is None and u.audio_path:
            u.transcript = asr(load_audio(u.audio_path, 16000))["text"]


def _items(utts, lo_hi, tokenizer, max_tokens):
    lo, hi = lo_hi
    items, lengths = [], []
    for u in utts:
        w = load_audio(u.audio_path, 16000)
        w = (w - w.mean()) / np.sqrt(w.var() + 1e-7)  # per-utterance normalisation (Wav2Vec2FeatureExtractor)
        item = {"wave": torch.as_tensor(w, dtype=torch.float32),
                "y": torch.tensor([(v - lo) / (hi - lo) for v in u.consensus], dtype=torch.float32)}
        if tokenizer is not None:
            item["ids"] = torch.as_tensor(tokenizer(u.transcript or "", truncation=True,
                                                    max_length=max_tokens)["input_ids"])
        items.append(item)
        lengths.append(len(w))
    ds = DictDataset(items, [u.utterance_id for u in utts])
    ds.lengths = lengths
    return ds


def run(config: Dict[str, Any], corpus: str, data_root: str, out_dir: str) -> Dict[str, Any]:
    from transformers import AutoModel, AutoTokenizer

    cfg = recipe_config("distilled", config)
    info = dist_info(cfg)
    if cfg["mode"] not in ("frozen", "finetune", "ft_frz"):
        raise ValueError(f"mode must be frozen, finetune or ft_frz, got {cfg['mode']!r}")
    os.makedirs(out_dir, exist_ok=True)
    utts = [u for u in load_corpus(corpus, data_root).utterances
            if u.audio_path and os.path.isfile(u.audio_path) and u.consensus is not None
            and all(np.isfinite(v) for v in u.consensus)]
    if cfg.get("asr_model"):
        _transcribe(utts, cfg["asr_model"])
    split = assign_split(utts, corpus, cfg["split_scheme"])
    lo_hi = tuple(cfg["label_range"]) if cfg.get("label_range") else scale_range(corpus)
    audio_path = encoder_path(cfg["audio_model"], out_dir)
    text_path = encoder_path(cfg["text_model"], out_dir) if cfg.get("text_model") else None
    tokenizer = AutoTokenizer.from_pretrained(text_path) if text_path else None
    mc = cfg["model"]

    def data(part, text):
        return _items(split[part], lo_hi, tokenizer if text else None, cfg["max_tokens"])

    def fit(model, name, text, train_part="train"):
        trainer = BucketTrainer(trainer_config(cfg, os.path.join(out_dir, name), seed=cfg["seed"]), info=info)
        trainer.fit(model, SupervisedTask(_forward, ccc_loss), data(train_part, text), data("val", text),
                    collate_fn=pad_collate)
        return model

    def evaluate(model, text):
        out = {}
        for tag, part in (("seen", cfg["seen_split"]), ("unseen", cfg["unseen_split"])):
            if not split.get(part):
                continue
            ds = data(part, text)
            pred = torch.as_tensor(predict(model, ds, _forward))
            y = torch.stack([it["y"] for it in ds.items])
            out[tag] = dict(zip(DIMS, ccc(pred.double(), y.double(), dim=0).tolist()))
        return out

    results: Dict[str, Any] = {"mode": cfg["mode"], "rows": {}}
    for run_name in cfg["runs"]:
        if run_name not in ("audio", "audio+text"):
            raise ValueError(f"runs entries must be 'audio' or 'audio+text', got {run_name!r}")
        text = run_name == "audio+text"
        if text and text_path is None:
            raise ValueError("run 'audio+text' needs text_model")
        torch.manual_seed(cfg["seed"])
        audio = AutoModel.from_pretrained(audio_path)
        if cfg["mode"] == "ft_frz" and text:
            stage1 = DistilledSER(audio, None, **mc)
            stage1.set_mode("finetune")
            fit(stage1, "audio+text_stage1_ft_audio", False)
            model = DistilledSER(stage1.audio_encoder, AutoModel.from_pretrained(text_path), **mc)
            model.set_mode("frozen")
            fit(model, "audio+text_stage2_frozen_fusion", True)
        else:
            model = DistilledSER(audio, AutoModel.from_pretrained(text_path) if text else None, **mc)
            model.set_mode("frozen" if cfg["mode"] == "frozen" else "finetune")
            fit(model, run_name, text)
        results["rows"][run_name] = evaluate(model, text)
        results["rows"][run_name]["params_M"] = sum(p.numel() for p in model.parameters()) / 1e6

    if cfg["layer_analysis"]:
        results["layer_importance"] = {}
        for d, dim in enumerate(DIMS):
            torch.manual_seed(cfg["seed"])
            model = DistilledSER(AutoModel.from_pretrained(audio_path), None, **dict(mc, layer_weighting=True),
                                 n_outputs=1)
            model.set_mode("frozen")
            task = SupervisedTask(_forward, lambda p, y, d=d: ccc_loss(p[:, 0], y[:, d]))
            BucketTrainer(trainer_config(cfg, os.path.join(out_dir, f"layers_{dim}"), seed=cfg["seed"]),
                          info=info).fit(
                model, task, data("train", False), data("val", False), collate_fn=pad_collate)
            results["layer_importance"][dim] = model.layer_importance()["audio"]
        results["layer_plot"] = plot_layer_importance(results["layer_importance"],
                                                      os.path.join(out_dir, "layer_importance.png"))
    table = tables(results, cfg)
    save_results(out_dir, results, table, info)
    return results


def plot_layer_importance(importance: Dict[str, List[float]], path: str) -> str:
    """Bar chart of the normalised layer weights per dimension (index 0 = conv encoder output); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(importance), figsize=(4 * len(importance), 3), sharey=True)
    for ax, (dim, w) in zip(np.atleast_1d(axes), importance.items()):
        ax.bar(range(len(w)), w)
        ax.set_title(dim)
        ax.set_xlabel("layer (0 = CNN)")
    np.atleast_1d(axes)[0].set_ylabel("normalised weight")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def tables(results: Dict[str, Any], cfg) -> str:
    rows = []
    for run_name, r in results["rows"].items():
        rows.append(["Audio" if run_name == "audio" else "Audio + Text", cfg["audio_model"], f"{r['params_M']:.1f}"]
                    + [r.get(t, {}).get(d, float("nan")) for t in ("seen", "unseen") for d in DIMS])
    head = ["Modality", "Model", "#Params (M)"] + [f"{t} {d[:3]}" for t in ("Seen", "Unseen") for d in DIMS]
    out = [format_table(f"Table 1: CCC ({results['mode']}); seen = {cfg['seen_split']}, unseen = {cfg['unseen_split']}",
                        head, rows)]
    if "layer_importance" in results:
        imp = results["layer_importance"]
        n = len(next(iter(imp.values())))
        rows = [[dim] + list(w) for dim, w in imp.items()]
        out.append(format_table(f"Figure 2: normalised layer importance (frozen; plot: {results['layer_plot']})",
                                ["Dim"] + [f"L{i}" for i in range(n)], rows))
    return "\n\n".join(out)
