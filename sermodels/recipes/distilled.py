"""Recipe: distilled audio+text SSL emotion regression (de Oliveira, Prabhu, Gerkmann, Interspeech 2023; paper 002).

Model: :class:`~sermodels.models.distilled.DistilledSER` (speech encoder + optional text encoder, mean+max pooling,
concatenation, FFN with tanh, 3 outputs). Targets: consensus (arousal, valence, dominance) min-max scaled to [0, 1]
(``data.scaling``: the rating scale's ends, ``scale``, or the corpus' own lowest and highest label, ``dataset``).
Loss: mean over the three of ``1 - CCC`` (:func:`sermodels.recipe_losses.ccc_loss`). Waveforms go through each
checkpoint's own feature extractor (``do_normalize``: per-utterance z-normalisation or none; ``return_attention_mask``:
whether the encoder gets an attention mask). Training batches are length-bucketed (:class:`LengthBucketSampler`:
items sorted by length into batches, batch order shuffled every epoch) through :class:`BucketTrainer`, a subclass of
the shared trainer that only replaces its training loader.

``features.audio_model``: one speech encoder or a list (Table 1's rows: w2v2-L-robust(p), HuBERT base,
DistilHuBERT); ``features.prune_layers`` maps a model to the number of its first transformer layers kept (the paper's
w2v2-L-robust(p): ``{facebook/wav2vec2-large-robust: 12}``). ``model.mode``: ``finetune`` (the paper: encoders train,
conv feature encoder frozen) | ``frozen``. ``model.modalities`` lists Table 1's modality rows (``audio``,
``audio+text``). ``model.ft_frz: true`` also trains, for every audio model, the FT=>FRZ fusion of Figure 3 (the
audio-only fine-tuned encoder of Table 1, frozen, beside a frozen text encoder, with a new fused head) and draws
``valence_gain.png``: the relative valence CCC gain of audio+text over audio only, FT vs FT=>FRZ, seen and unseen.
``model.layer_analysis: true`` trains one frozen, layer-weighted (s3prl softmax weights) audio-only model per
dimension on ``model.layer_analysis_model`` (null = the first audio model; the paper: HuBERT base) and plots the
normalised layer weights (the paper's Figure 2) to ``layer_importance.png``. Transcripts come from the corpus;
``features.asr_model`` (a transformers ASR model) fills missing ones. ``eval.asr_models`` (Table 2): each ASR model
transcribes every utterance, the audio+text model of ``eval.asr_audio_model`` (null = the first) is trained again on
those transcripts, and the table reports its CCC with the word error rate against the corpus' transcripts
(:func:`sermodels.evaluation.word_error_rate`, on the seen test partition).

Evaluation: CCC (population moments) per dimension on the seen (``eval.seen``, ``test1``) and unseen
(``eval.unseen``, ``test2``) partitions of the split scheme, in the layout of Table 1; mean over ``seeds``.
``configs/distilled_paper.yaml`` holds the paper's protocol key by key.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from kdekit import ccc
from ..config import ConfigError, DataConfig, EarlyStoppingConfig, RecipeConfig, TrainConfig
from ..data.features import load_audio, load_audio_processor
from ..evaluation import word_error_rate
from ..models.distilled import DistilledSER, prune_encoder
from ..recipe_losses import ccc_loss
from ..runs import data_fingerprint, say
from ..train import Trainer
from ._common import (DictDataset, SupervisedTask, display_name, encoder_path, format_table, model_list, pad_collate,
                      predict, print_tables, read_corpus, split_utterances, start_run)

DIMS = ("Arousal", "Valence", "Dominance")
DIM_KEYS = ("activation", "valence", "dominance")
CURVE_METRICS = ("val_loss",)


@dataclass
class Data(DataConfig):
    """Targets: consensus (arousal, valence, dominance) scaled from ``rating_range`` (null = the corpus' fixed
    range, msp-podcast 1..7) to [0, 1]. ``split`` null = the corpus' default scheme (MSP-Podcast: ``official``);
    training needs partitions ``train``, ``val`` and ``eval.seen``. ``scaling``: what maps onto [0, 1] per
    dimension, the rating scale's ends (``scale``) or the corpus' own lowest and highest consensus label
    (``dataset``)."""

    corpus: Optional[str] = "msp-podcast"
    scaling: Literal["dataset", "scale"] = "scale"


@dataclass
class Features:
    """Encoders: a local folder / hub id, or a random-init ``tiny:`` model (smoke runs); ``audio_model`` one or a list
    (Table 1's rows); ``prune_layers``: ``{audio model: first N transformer layers kept}``; ``text_model`` may be
    ``minilm`` (the offline MiniLM-L6) or null (audio only); ``asr_model``: a transformers ASR model that transcribes
    utterances without a transcript."""

    audio_model: Union[str, List[str]] = "tiny:hubert"
    prune_layers: Dict[str, int] = field(default_factory=dict)
    text_model: Optional[str] = "tiny:bert"
    asr_model: Optional[str] = None
    max_tokens: int = 128


@dataclass
class Model:
    """``mode``: how Table 1's encoders train; ``ft_frz``: also the FT=>FRZ audio+text models (Figure 3);
    ``layer_analysis`` on ``layer_analysis_model`` (null = the first audio model): Figure 2."""

    mode: Literal["frozen", "finetune"] = "finetune"
    modalities: List[Literal["audio", "audio+text"]] = field(default_factory=lambda: ["audio", "audio+text"])
    ft_frz: bool = False
    layer_analysis: bool = True
    layer_analysis_model: Optional[str] = None
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
    """The partitions reported as seen (required) and unseen (reported when the split has it); ``asr_models``:
    Table 2's ASR models (each replaces the transcripts of the ``asr_audio_model`` audio+text model; null = the
    first audio model)."""

    seen: str = "test1"
    unseen: str = "test2"
    asr_models: List[str] = field(default_factory=list)
    asr_audio_model: Optional[str] = None


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

    def check(self) -> None:
        super().check()
        specs = model_list(self.features.audio_model)
        for key, name in (("features.prune_layers", k) for k in self.features.prune_layers):
            if name not in specs:
                raise ConfigError(f"{key}: {name!r} is not one of features.audio_model ({', '.join(specs)})")
        for key, name in (("model.layer_analysis_model", self.model.layer_analysis_model),
                          ("eval.asr_audio_model", self.eval.asr_audio_model)):
            if name is not None and name not in specs:
                raise ConfigError(f"{key}: {name!r} is not one of features.audio_model ({', '.join(specs)})")
        text = "audio+text" in self.model.modalities
        if (self.model.ft_frz or self.eval.asr_models) and not self.features.text_model:
            raise ConfigError("model.ft_frz and eval.asr_models train audio+text models: set features.text_model")
        if self.model.ft_frz and (self.model.mode != "finetune" or "audio" not in self.model.modalities or not text):
            raise ConfigError("model.ft_frz (Figure 3) compares with the fine-tuned audio and audio+text rows: needs "
                              "model.mode=finetune and model.modalities=[audio, audio+text]")


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


# Table 1's names of the paper's checkpoints
MODEL_NAMES = {"ntu-spml/distilhubert": "DistilHuBERT", "facebook/hubert-base-ls960": "HuBERT base",
               "facebook/wav2vec2-large-robust": "w2v2-L-robust", "huawei-noah/TinyBERT_General_4L_312D": "TinyBERT",
               "openai/whisper-base": "Whisper base", "openai/whisper-tiny": "Whisper tiny"}


def model_name(spec: str, prune: Optional[int] = None) -> str:
    """Table 1's name of audio model ``spec`` (``(p)`` marks a pruned one, as the paper's w2v2-L-robust(p))."""
    return display_name(spec, MODEL_NAMES) + ("(p)" if prune else "")


def transcribe(utts, asr_model: str) -> Dict[str, str]:
    """``{utterance id: transcript}`` of every utterance with audio by a transformers ASR model (hub id or folder)
    through ``transformers.pipeline("automatic-speech-recognition")``."""
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=asr_model)
    sr = int(getattr(asr.feature_extractor, "sampling_rate", 16000) or 16000)
    return {u.utterance_id: asr(load_audio(u.audio_path, sr))["text"].strip() for u in utts if u.audio_path}


def _transcribe(utts, asr_model: str) -> None:
    """Fill the utterances that have no transcript with ``asr_model``'s."""
    missing = [u for u in utts if u.transcript is None and u.audio_path]
    if missing:
        texts = transcribe(missing, asr_model)
        for u in missing:
            u.transcript = texts[u.utterance_id]


def _items(utts, scale, processor, tokenizer, max_tokens, waves: Dict[str, np.ndarray],
           texts: Optional[Dict[str, str]] = None):
    """Items ``{wave, y[, ids]}``: each waveform through the checkpoint's feature extractor ``processor`` (its
    normalisation, or none), targets mapped onto [0, 1] by ``scale``, transcripts from ``texts`` (default: the
    corpus')."""
    items, lengths = [], []
    sr = int(getattr(processor, "sampling_rate", 16000) or 16000)
    for u in utts:
        w = processor(waves[u.utterance_id], sampling_rate=sr, return_tensors="np")["input_values"][0]
        y = (scale.scale(np.asarray(u.consensus[:3], dtype=np.float64), DIM_KEYS) + 1) / 2
        item = {"wave": torch.as_tensor(np.asarray(w), dtype=torch.float32),
                "y": torch.as_tensor(y, dtype=torch.float32)}
        if tokenizer is not None:
            text = texts.get(u.utterance_id, "") if texts is not None else (u.transcript or "")
            item["ids"] = torch.as_tensor(tokenizer(text, truncation=True, max_length=max_tokens)["input_ids"])
        items.append(item)
        lengths.append(len(w))
    ds = DictDataset(items, [u.utterance_id for u in utts])
    ds.lengths = lengths
    return ds


def run(config=None, *, corpus: Optional[str] = None, data_root: Optional[str] = None,
        out_dir="runs/distilled", runs: Optional[Sequence[str]] = None, overwrite: bool = False) -> Dict[str, Any]:
    from ..data.labels import label_scale

    cfg, info, folder = start_run("distilled", Config, config, corpus, data_root, out_dir, overwrite)
    out_dir = str(out_dir)
    corpus = read_corpus(cfg.data.corpus, cfg.data.root, cfg.data.rating_range)
    utts = [u for u in corpus.utterances if u.audio_path and os.path.isfile(u.audio_path) and u.consensus is not None
            and all(np.isfinite(v) for v in u.consensus)]
    split = split_utterances(utts, corpus.name, cfg.data.split, cfg.data.partitions,
                             ("train", "val", cfg.eval.seen), log=say if info.is_main else None)
    scale = label_scale(utts, corpus, cfg.data.scaling, DIM_KEYS, source="consensus")
    with folder.claim(data_fingerprint(split, label_scale=scale.to_dict())):
        results = _run(cfg, info, out_dir, utts, split, scale)
        folder.save(results, tables(cfg, results))
        if info.is_main:
            for path in figures(cfg, results, out_dir):
                say(f"wrote {path}")
    return results


def _key(modality: str, name: str, several: bool) -> str:
    """The row key of ``results["rows"]``: the modality, followed by the audio model's name when there are several."""
    return f"{modality}, {name}" if several else modality


def _run(cfg: Config, info, out_dir: str, utts, split, scale) -> Dict[str, Any]:
    from transformers import AutoModel, AutoTokenizer

    fc, mc = cfg.features, cfg.model
    if fc.asr_model:
        _transcribe(utts, encoder_path(fc.asr_model, out_dir))
    specs = model_list(fc.audio_model)
    several = len(specs) > 1
    names = {spec: model_name(spec, fc.prune_layers.get(spec)) for spec in specs}
    text_path = encoder_path(fc.text_model, out_dir) if fc.text_model else None
    tokenizer = AutoTokenizer.from_pretrained(text_path) if text_path else None
    head = dict(layer_weighting=mc.layer_weighting, normalize_layers=mc.normalize_layers, hidden=mc.hidden,
                dropout=mc.dropout)
    waves = {u.utterance_id: load_audio(u.audio_path, 16000) for u in utts}

    def encoder(spec):
        path = encoder_path(spec, out_dir)
        model = AutoModel.from_pretrained(path)
        if spec in fc.prune_layers:
            prune_encoder(model, fc.prune_layers[spec])
        return model

    def data(spec, part, text, texts=None):
        return _items(split[part], scale, processors[spec], tokenizer if text else None, fc.max_tokens, waves, texts)

    def fit(model, spec, name, text, seed, texts=None):
        trainer = BucketTrainer(cfg.train, os.path.join(out_dir, name, f"seed{seed}"), seed=seed, info=info)
        trainer.fit(model, SupervisedTask(_forward, ccc_loss), data(spec, "train", text, texts),
                    data(spec, "val", text, texts), collate_fn=pad_collate)
        return model

    def evaluate(model, spec, text, texts=None):
        out = {}
        for tag, part in (("seen", cfg.eval.seen), ("unseen", cfg.eval.unseen)):
            if not split.get(part):
                continue
            ds = data(spec, part, text, texts)
            pred = torch.as_tensor(predict(model, ds, _forward))
            y = torch.stack([it["y"] for it in ds.items])
            out[tag] = dict(zip(DIMS, ccc(pred.double(), y.double(), dim=0).tolist()))
        return out

    processors = {spec: load_audio_processor(encoder_path(spec, out_dir)) for spec in specs}

    def model(spec, text_encoder=None):
        return DistilledSER(encoder(spec), text_encoder, audio_attention_mask=_attention_mask(processors[spec]),
                            **head)

    folder = {spec: (f"{i}_" if several else "") for i, spec in enumerate(specs)}
    asr_spec = cfg.eval.asr_audio_model or specs[0]
    asr_texts = {m: _asr_texts(utts, m, out_dir) for m in cfg.eval.asr_models}
    per_seed: Dict[str, List[Dict[str, Any]]] = {}
    importance: Dict[str, List[List[float]]] = {}
    meta: Dict[str, Dict[str, Any]] = {}
    for seed in cfg.seeds:
        for spec in specs:
            stage1 = None
            for modality in mc.modalities:
                text = modality == "audio+text"
                if text and text_path is None:
                    raise ValueError("model.modalities 'audio+text' needs features.text_model")
                torch.manual_seed(seed)
                m = model(spec, AutoModel.from_pretrained(text_path) if text else None)
                m.set_mode(mc.mode)
                fit(m, spec, f"{folder[spec]}{modality}", text, seed)
                key = _key(modality, names[spec], several)
                meta[key] = {"modality": modality, "model": spec, "name": names[spec], "fusion": "FT"}
                row = evaluate(m, spec, text)
                row["params_M"] = sum(p.numel() for p in m.parameters()) / 1e6
                per_seed.setdefault(key, []).append(row)
                if modality == "audio":
                    stage1 = m
            if mc.ft_frz:  # Figure 3: the fine-tuned audio encoder, frozen, beside a frozen text encoder
                torch.manual_seed(seed)
                fused = DistilledSER(stage1.audio_encoder, AutoModel.from_pretrained(text_path),
                                     audio_attention_mask=_attention_mask(processors[spec]), **head)
                fused.set_mode("frozen")
                fit(fused, spec, f"{folder[spec]}audio+text_ft_frz", True, seed)
                key = _key("audio+text FT=>FRZ", names[spec], several)
                meta[key] = {"modality": "audio+text", "model": spec, "name": names[spec], "fusion": "FT=>FRZ"}
                row = evaluate(fused, spec, True)
                row["params_M"] = sum(p.numel() for p in fused.parameters()) / 1e6
                per_seed.setdefault(key, []).append(row)
        for asr, texts in asr_texts.items():  # Table 2: the audio+text model trained and tested on ASR transcripts
            torch.manual_seed(seed)
            m = model(asr_spec, AutoModel.from_pretrained(text_path))
            m.set_mode(mc.mode)
            fit(m, asr_spec, f"asr_{Path(asr).name}", True, seed, texts)
            per_seed.setdefault(f"asr:{asr}", []).append(evaluate(m, asr_spec, True, texts))
        if mc.layer_analysis:
            spec = mc.layer_analysis_model or specs[0]
            for d, dim in enumerate(DIMS):
                torch.manual_seed(seed)
                m = DistilledSER(encoder(spec), None, audio_attention_mask=_attention_mask(processors[spec]),
                                 **dict(head, layer_weighting=True), n_outputs=1)
                m.set_mode("frozen")
                task = SupervisedTask(_forward, lambda p, y, d=d: ccc_loss(p[:, 0], y[:, d]))
                BucketTrainer(cfg.train, os.path.join(out_dir, f"layers_{dim}", f"seed{seed}"), seed=seed,
                              info=info).fit(m, task, data(spec, "train", False), data(spec, "val", False),
                                             collate_fn=pad_collate)
                importance.setdefault(dim, []).append(m.layer_importance()["audio"])

    def mean(rows):
        out = {"params_M": rows[0].get("params_M", float("nan"))}
        for tag in ("seen", "unseen"):
            if tag in rows[0]:
                out[tag] = {d: float(np.mean([r[tag][d] for r in rows])) for d in DIMS}
        return out

    rows = {k: mean(v) for k, v in per_seed.items() if not k.startswith("asr:")}
    results: Dict[str, Any] = {"mode": mc.mode, "seeds": list(cfg.seeds), "rows": rows, "row_meta": meta,
                               "per_seed": per_seed}
    if mc.ft_frz:
        results["valence_gain"] = valence_gain(rows, meta)
    if asr_texts:
        seen = [u for u in split[cfg.eval.seen] if u.transcript is not None]
        results["asr"] = {"audio_model": names[asr_spec], "human": _key("audio+text", names[asr_spec], several),
                          "rows": {m: {"wer": word_error_rate([u.transcript for u in seen],
                                                              [texts.get(u.utterance_id, "") for u in seen]),
                                       **mean(per_seed[f"asr:{m}"])} for m, texts in asr_texts.items()}}
    if importance:
        results["layer_importance"] = {dim: np.mean(ws, axis=0).tolist() for dim, ws in importance.items()}
        results["layer_model"] = names[mc.layer_analysis_model or specs[0]]
    return results


def _attention_mask(processor) -> bool:
    return bool(getattr(processor, "return_attention_mask", True))


def _asr_texts(utts, asr_model: str, out_dir: str) -> Dict[str, str]:
    """Transcripts of every utterance by ``asr_model``, cached in ``<out_dir>/asr/<model>.json`` (a rerun reuses
    them)."""
    from ..runs import write_json

    path = Path(out_dir) / "asr" / f"{asr_model.replace('/', '__').replace(':', '_')}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if all(u.utterance_id in cached for u in utts):
            return cached
    texts = transcribe(utts, encoder_path(asr_model, out_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, texts)
    return texts


def valence_gain(rows: Dict[str, Any], meta: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Figure 3's data: per audio model, ``{"FT": {"seen": %, "unseen": %}, "FT=>FRZ": {...}}``, the relative valence
    CCC change of its audio+text row over its audio-only row, ``100 (V_AT - V_A) / |V_A|``."""
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for key, m in meta.items():
        if m["modality"] != "audio+text":
            continue
        audio = next((k for k, a in meta.items() if a["model"] == m["model"] and a["modality"] == "audio"), None)
        if audio is None:
            continue
        for tag in ("seen", "unseen"):
            if tag in rows[key] and tag in rows[audio]:
                va, vat = rows[audio][tag]["Valence"], rows[key][tag]["Valence"]
                gain = 100 * (vat - va) / abs(va) if va else float("nan")
                out.setdefault(m["name"], {}).setdefault(m["fusion"], {})[tag] = gain
    return out


def evaluate(run_dir, *, corpus: Optional[str] = None, data_root: Optional[str] = None, split: Optional[str] = None,
             partition: Optional[str] = None, rating_range: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Print the tables of a finished run folder (the recipe evaluates its own seen/unseen partitions only)."""
    return print_tables("distilled", Config, tables, run_dir, corpus, data_root=data_root, split=split,
                        partition=partition, rating_range=rating_range)


def plot_layer_importance(importance: Dict[str, List[float]], path, model: str = "") -> str:
    """Bar chart of the normalised layer weights per dimension (index 0 = conv encoder output); returns ``path``."""
    from ..plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(importance), figsize=(4 * len(importance), 3), sharey=True)
    for ax, (dim, w) in zip(np.atleast_1d(axes), importance.items()):
        ax.bar(range(len(w)), w)
        ax.set_title(dim)
        ax.set_xlabel("layer (0 = CNN)")
    np.atleast_1d(axes)[0].set_ylabel("normalised weight")
    fig.suptitle(f"Figure 2: layer importance, frozen {model}".strip(", "), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def plot_valence_gain(gain: Dict[str, Dict[str, Dict[str, float]]], path) -> str:
    """Figure 3: grouped bars of the relative valence gain (%) of audio+text over audio only per audio model, FT and
    FT=>FRZ, one panel per test set; returns ``path``."""
    from ..plots import pyplot

    plt = pyplot()
    models = list(gain)
    tags = [t for t in ("seen", "unseen") if any(t in f for g in gain.values() for f in g.values())]
    fig, axes = plt.subplots(1, len(tags), figsize=(4.5 * len(tags), 3.2), sharey=True, squeeze=False)
    for ax, tag in zip(axes[0], tags):
        for j, fusion in enumerate(("FT", "FT=>FRZ")):
            ax.bar(np.arange(len(models)) + 0.4 * j, [gain[m].get(fusion, {}).get(tag, np.nan) for m in models],
                   0.4, label=fusion)
        ax.set_xticks(np.arange(len(models)) + 0.2, models, fontsize=7)
        ax.set_title(f"{tag} scenarios", fontsize=9)
        ax.axhline(0, color="k", linewidth=0.8)
    axes[0][0].set_ylabel("valence CCC gain of audio+text (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Figure 3: relative valence CCC improvement over audio only", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def figures(cfg: Config, results: Dict[str, Any], run_dir, out=None) -> List[Path]:
    """Figure 2 (``layer_importance.png``) and Figure 3 (``valence_gain.png``) of a run into ``out`` (default
    ``run_dir``), from its results."""
    out = Path(out) if out is not None else Path(run_dir)
    written = []
    if results.get("layer_importance"):
        written.append(Path(plot_layer_importance(results["layer_importance"], out / "layer_importance.png",
                                                  results.get("layer_model", ""))))
    if results.get("valence_gain"):
        written.append(Path(plot_valence_gain(results["valence_gain"], out / "valence_gain.png")))
    return written


def tables(cfg: Config, results: Dict[str, Any]) -> str:
    """Table 1, Figure 2's and Figure 3's data and Table 2 of paper 002 from ``results``."""
    meta = results.get("row_meta", {})
    rows = []
    for key, r in results["rows"].items():
        m = meta.get(key, {"modality": key.split(",")[0], "name": cfg.features.audio_model, "fusion": "FT"})
        if m.get("fusion") == "FT=>FRZ":
            continue
        rows.append(["Audio" if m["modality"] == "audio" else "Audio + Text", m["name"], f"{r['params_M']:.1f}"]
                    + [r.get(t, {}).get(d, float("nan")) for t in ("seen", "unseen") for d in DIMS])
    rows.sort(key=lambda r: r[0] != "Audio")
    head = ["Modality", "Model", "#Params (M)"] + [f"{t} {d[:3]}" for t in ("Seen", "Unseen") for d in DIMS]
    out = [format_table(f"Table 1: CCC ({results['mode']}, mean over seeds {results['seeds']}); seen = "
                        f"{cfg.eval.seen}, unseen = {cfg.eval.unseen}", head, rows)]
    if "layer_importance" in results:
        imp = results["layer_importance"]
        n = len(next(iter(imp.values())))
        rows = [[dim] + list(w) for dim, w in imp.items()]
        out.append(format_table(f"Figure 2: normalised layer importance ({results.get('layer_model', '')}, frozen; "
                                "plot: layer_importance.png)", ["Dim"] + [f"L{i}" for i in range(n)], rows))
    if results.get("valence_gain"):
        rows = [[name] + [f"{g.get(f, {}).get(t, float('nan')):.1f}" for f in ("FT", "FT=>FRZ")
                          for t in ("seen", "unseen")] for name, g in results["valence_gain"].items()]
        out.append(format_table("Figure 3: relative valence CCC improvement (%) of audio+text over audio only (plot: "
                                "valence_gain.png)", ["Model", "FT seen", "FT unseen", "FT=>FRZ seen",
                                                      "FT=>FRZ unseen"], rows))
    if results.get("asr"):
        a = results["asr"]
        human = results["rows"].get(a["human"], {}).get("seen", {})
        rows = [["Human", "-", *(human.get(d, float("nan")) for d in DIMS)]]
        for m, r in a["rows"].items():
            rows.append([display_name(m, MODEL_NAMES), f"{100 * r['wer']:.1f}%",
                         *(r.get("seen", {}).get(d, float("nan")) for d in DIMS)])
        out.append(format_table(f"Table 2: CCC of the fine-tuned {a['audio_model']} + text system with different "
                                f"transcription methods (seen = {cfg.eval.seen}; WER against the corpus' "
                                "transcripts)", ["Transcription method", "WER", "A", "V", "D"], rows))
    return "\n\n".join(out)
