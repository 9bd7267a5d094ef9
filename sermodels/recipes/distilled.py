"""Recipe: distilled audio+text SSL emotion regression (de Oliveira, Prabhu, Gerkmann, Interspeech 2023; paper 002).

Model: :class:`~sermodels.models.distilled.DistilledSER` (speech encoder + optional text encoder, mean+max pooling,
concatenation, FFN with tanh, 3 outputs). Targets: consensus (arousal, valence, dominance) min-max scaled to [0, 1]
with the corpus' fixed rating range. Loss: mean over the three of ``1 - CCC``
(:func:`sermodels.recipe_losses.ccc_loss`).
Training batches are length-bucketed (:class:`LengthBucketSampler`: items sorted by length into batches, batch order
shuffled every epoch) through :class:`BucketTrainer`, a subclass of the shared trainer that only replaces its
training loader.

``model.mode``: ``frozen`` | ``finetune`` (conv feature encoder frozen) | ``ft_frz`` (fine-tune the audio-only model,
then freeze its encoder and a text encoder and train a new fused head, the paper's FT=>FRZ). ``model.modalities``
lists the rows of Table 1 (``audio`` or ``audio+text``). ``model.layer_analysis: true`` trains one frozen,
layer-weighted (s3prl softmax weights) audio-only model per dimension and plots the normalised layer weights (the
paper's Figure 2) to ``layer_importance.png``. Transcripts come from the corpus; ``features.asr_model`` (a
transformers ASR folder) fills missing ones through ``transformers.pipeline("automatic-speech-recognition")``.

Evaluation: CCC (population moments) per dimension on the seen (``eval.seen``, ``test1``) and unseen
(``eval.unseen``, ``test2``) partitions of the split scheme, in the layout of Table 1; mean over ``seeds``.

Paper protocol (real MSP-Podcast v1.10): ``features.audio_model`` a local distilhubert (or hubert-base-ls960),
``features.text_model`` a local TinyBERT_General_4L_312D, ``model`` {mode: finetune, hidden: 256, dropout: 0.1},
``train`` {epochs: 100, batch_size: 16, optimizer: adam, lr: 1e-5, early_stopping: {patience: 5, min_epochs: 1}};
layer analysis on HuBERT base with ``model.mode: frozen``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from kdekit import ccc
from ..config import DataConfig, EarlyStoppingConfig, RecipeConfig, TrainConfig
from ..data.features import load_audio
from ..models.distilled import DistilledSER
from ..recipe_losses import ccc_loss
from ..runs import data_fingerprint, say
from ..train import Trainer
from ._common import (DictDataset, SupervisedTask, encoder_path, format_table, pad_collate, predict, print_tables,
                      read_corpus, split_utterances, start_run)

DIMS = ("Arousal", "Valence", "Dominance")
CURVE_METRICS = ("val_loss",)


@dataclass
class Data(DataConfig):
    """Targets: consensus (arousal, valence, dominance) scaled from ``rating_range`` (null = the corpus' fixed
    range, msp-podcast 1..7) to [0, 1]. ``split`` null = the corpus' default scheme (MSP-Podcast: ``official``);
    training needs partitions ``train``, ``val`` and ``eval.seen``."""

    corpus: Optional[str] = "msp-podcast"


@dataclass
class Features:
    """Encoders: a local folder / hub id, or a random-init ``tiny:`` model (smoke runs); ``text_model`` may be
    ``minilm`` (the offline MiniLM-L6) or null (audio only); ``asr_model``: a transformers ASR folder that
    transcribes utterances without a transcript."""

    audio_model: str = "tiny:hubert"
    text_model: Optional[str] = "tiny:bert"
    asr_model: Optional[str] = None
    max_tokens: int = 128


@dataclass
class Model:
    mode: Literal["frozen", "finetune", "ft_frz"] = "finetune"
    modalities: List[Literal["audio", "audio+text"]] = field(default_factory=lambda: ["audio", "audio+text"])
    layer_analysis: bool = True
    layer_weighting: bool = False
    normalize_layers: bool = False
    hidden: int = 32
    dropout: float = 0.1


@dataclass
class Train(TrainConfig):
    epochs: int = 2
    batch_size: int = 8
    eval_batch_size: int = 32
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 1e-4
    early_stopping: EarlyStoppingConfig = field(default_factory=lambda: EarlyStoppingConfig(patience=5))
    amp: bool = False
    progress: bool = False


@dataclass
class Eval:
    """The partitions reported as seen (required) and unseen (reported when the split has it)."""

    seen: str = "test1"
    unseen: str = "test2"


@dataclass
class Config(RecipeConfig):
    """Small defaults: runs on a synthetic msp-podcast corpus (``sermodels synth --corpus msp-podcast``) in well
    under a minute."""

    recipe: str = "distilled"
    data: Data = field(default_factory=Data)
    features: Features = field(default_factory=Features)
    model: Model = field(default_factory=Model)
    train: Train = field(default_factory=Train)
    eval: Eval = field(default_factory=Eval)


def run_names(cfg: Config) -> List[str]:
    return []


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
        sampler = LengthBucketSampler(dataset.lengths, per_rank, self.info.rank, self.info.world_size, self.seed)
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


def run(config=None, *, corpus: Optional[str] = None, data_root: Optional[str] = None,
        out_dir="runs/distilled", runs: Optional[Sequence[str]] = None, overwrite: bool = False) -> Dict[str, Any]:
    cfg, info, folder = start_run("distilled", Config, config, corpus, data_root, out_dir, overwrite)
    out_dir = str(out_dir)
    corpus = read_corpus(cfg.data.corpus, cfg.data.root, cfg.data.rating_range)
    utts = [u for u in corpus.utterances if u.audio_path and os.path.isfile(u.audio_path) and u.consensus is not None
            and all(np.isfinite(v) for v in u.consensus)]
    split = split_utterances(utts, corpus.name, cfg.data.split, cfg.data.partitions,
                             ("train", "val", cfg.eval.seen), log=say if info.is_main else None)
    lo_hi = corpus.rating_range
    with folder.claim(data_fingerprint(split, rating_range=lo_hi)):
        results = _run(cfg, info, out_dir, utts, split, lo_hi)
        folder.save(results, tables(cfg, results))
    return results


def _run(cfg: Config, info, out_dir: str, utts, split, lo_hi) -> Dict[str, Any]:
    from transformers import AutoModel, AutoTokenizer

    fc, mc = cfg.features, cfg.model
    if fc.asr_model:
        _transcribe(utts, fc.asr_model)
    audio_path = encoder_path(fc.audio_model, out_dir)
    text_path = encoder_path(fc.text_model, out_dir) if fc.text_model else None
    tokenizer = AutoTokenizer.from_pretrained(text_path) if text_path else None
    head = dict(layer_weighting=mc.layer_weighting, normalize_layers=mc.normalize_layers, hidden=mc.hidden,
                dropout=mc.dropout)

    def data(part, text):
        return _items(split[part], lo_hi, tokenizer if text else None, fc.max_tokens)

    def fit(model, name, text, seed):
        trainer = BucketTrainer(cfg.train, os.path.join(out_dir, name, f"seed{seed}"), seed=seed, info=info)
        trainer.fit(model, SupervisedTask(_forward, ccc_loss), data("train", text), data("val", text),
                    collate_fn=pad_collate)
        return model

    def evaluate(model, text):
        out = {}
        for tag, part in (("seen", cfg.eval.seen), ("unseen", cfg.eval.unseen)):
            if not split.get(part):
                continue
            ds = data(part, text)
            pred = torch.as_tensor(predict(model, ds, _forward))
            y = torch.stack([it["y"] for it in ds.items])
            out[tag] = dict(zip(DIMS, ccc(pred.double(), y.double(), dim=0).tolist()))
        return out

    per_seed: Dict[str, List[Dict[str, Any]]] = {}
    importance: Dict[str, List[List[float]]] = {}
    for seed in cfg.seeds:
        for run_name in mc.modalities:
            text = run_name == "audio+text"
            if text and text_path is None:
                raise ValueError("model.modalities 'audio+text' needs features.text_model")
            torch.manual_seed(seed)
            audio = AutoModel.from_pretrained(audio_path)
            if mc.mode == "ft_frz" and text:
                stage1 = DistilledSER(audio, None, **head)
                stage1.set_mode("finetune")
                fit(stage1, "audio+text_stage1_ft_audio", False, seed)
                model = DistilledSER(stage1.audio_encoder, AutoModel.from_pretrained(text_path), **head)
                model.set_mode("frozen")
                fit(model, "audio+text_stage2_frozen_fusion", True, seed)
            else:
                model = DistilledSER(audio, AutoModel.from_pretrained(text_path) if text else None, **head)
                model.set_mode("frozen" if mc.mode == "frozen" else "finetune")
                fit(model, run_name, text, seed)
            row = evaluate(model, text)
            row["params_M"] = sum(p.numel() for p in model.parameters()) / 1e6
            per_seed.setdefault(run_name, []).append(row)
        if mc.layer_analysis:
            for d, dim in enumerate(DIMS):
                torch.manual_seed(seed)
                model = DistilledSER(AutoModel.from_pretrained(audio_path), None, **dict(head, layer_weighting=True),
                                     n_outputs=1)
                model.set_mode("frozen")
                task = SupervisedTask(_forward, lambda p, y, d=d: ccc_loss(p[:, 0], y[:, d]))
                BucketTrainer(cfg.train, os.path.join(out_dir, f"layers_{dim}", f"seed{seed}"), seed=seed,
                              info=info).fit(model, task, data("train", False), data("val", False),
                                             collate_fn=pad_collate)
                importance.setdefault(dim, []).append(model.layer_importance()["audio"])

    def mean(rows):
        out = {"params_M": rows[0]["params_M"]}
        for tag in ("seen", "unseen"):
            if tag in rows[0]:
                out[tag] = {d: float(np.mean([r[tag][d] for r in rows])) for d in DIMS}
        return out

    results: Dict[str, Any] = {"mode": mc.mode, "seeds": list(cfg.seeds),
                               "rows": {r: mean(rows) for r, rows in per_seed.items()}, "per_seed": per_seed}
    if importance:
        results["layer_importance"] = {dim: np.mean(ws, axis=0).tolist() for dim, ws in importance.items()}
        if info.is_main:
            results["layer_plot"] = plot_layer_importance(results["layer_importance"],
                                                          os.path.join(out_dir, "layer_importance.png"))
    return results


def evaluate(run_dir, *, corpus: Optional[str] = None, data_root: Optional[str] = None, split: Optional[str] = None,
             partition: Optional[str] = None, rating_range: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Print the tables of a finished run folder (the recipe evaluates its own seen/unseen partitions only)."""
    return print_tables("distilled", Config, tables, run_dir, corpus, data_root=data_root, split=split,
                        partition=partition, rating_range=rating_range)


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


def tables(cfg: Config, results: Dict[str, Any]) -> str:
    rows = []
    for run_name, r in results["rows"].items():
        rows.append(["Audio" if run_name == "audio" else "Audio + Text", cfg.features.audio_model,
                     f"{r['params_M']:.1f}"]
                    + [r.get(t, {}).get(d, float("nan")) for t in ("seen", "unseen") for d in DIMS])
    head = ["Modality", "Model", "#Params (M)"] + [f"{t} {d[:3]}" for t in ("Seen", "Unseen") for d in DIMS]
    out = [format_table(f"Table 1: CCC ({results['mode']}, mean over seeds {results['seeds']}); seen = "
                        f"{cfg.eval.seen}, unseen = {cfg.eval.unseen}", head, rows)]
    if "layer_importance" in results:
        imp = results["layer_importance"]
        n = len(next(iter(imp.values())))
        rows = [[dim] + list(w) for dim, w in imp.items()]
        out.append(format_table(f"Figure 2: normalised layer importance (frozen; plot: {results.get('layer_plot')})",
                                ["Dim"] + [f"L{i}" for i in range(n)], rows))
    return "\n\n".join(out)
