"""Recipe: continual learning across corpora with episodic memory (Tavernor, Perez, Mower Provost, IS 2023; paper 003).

``corpus`` is the stage order, comma-separated (the paper: ``msp-podcast,msp-improv,iemocap`` = P -> P+M -> P+M+I);
corpus ``c`` is read from ``roots[c]`` if given, else ``<data_root>/<c>``. Each corpus is split by
``splits[c]`` (train / val / ``test_partition[c]``), optionally filtered to ``min_duration``..``max_duration`` s
(the paper: 3-30 s), labels are the consensus activation and valence min-max scaled to [-1, 1].

Features (cached): wav2vec2 last layer mean-pooled (audio) and BERT CLS (text). Model:
:class:`~sermodels.models.continual.ContinualSERNet`; loss: mean over activation and valence of ``1 - CCC``;
the shared trainer (SGD, early stopping) for every stage.

Methods, each continuing from the same initial model trained on the first corpus:

- ``finetune``: train on the new corpus only;
- ``exper``: the new corpus plus every stored memory (:func:`sermodels.continual.replay_training_set`);
- ``gem``: :class:`GEMTrainer` wraps the optimiser in :class:`sermodels.continual.GEMOptimizer`: each step, one
  gradient per past corpus on its whole memory (one batch), projection by the exact dual QP when any conflicts.

Memories: ``memory.size`` (261) per corpus, filled when training on that corpus ends. ``random`` = the ring buffer of
the most recently seen training items (fed by :class:`RingBufferTask`; under DDP rank 0's buffer is used by every
rank); ``length`` / ``gender`` / ``speaker`` = bucketed sampling (:func:`sermodels.continual.select_memory`).
``sampling_study`` reruns ExpeR with other strategies for Table 3.

Output: Table 2 (activation CCC and UAR low/medium/high on every corpus' test partition, seen and unseen, after each
stage, mean +- std over seeds) and Table 3 (sampling strategies relative to ExpeR with random memory); valence
metrics are in ``results.json``.
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from kdekit.ops.ccc import ccc
from ..continual import GEMOptimizer, RingBuffer, replay_training_set, select_memory
from ..data import load_corpus
from ..data.features import extract_features
from ..data.labels import bin_low_medium_high, scale_ratings
from ..data.splits import assign_split
from ..models.continual import ContinualSERNet
from ..recipe_losses import ccc_loss
from ..train import Trainer
from ..train.distributed import gather_objects
from ._common import (DictDataset, SupervisedTask, dist_info, encoder_path, format_table, pad_collate, predict,
                      recipe_config, save_results, trainer_config, unweighted_average_recall)

METHODS = ("finetune", "exper", "gem")


def _forward(model, batch):
    return model(batch["audio"], batch["text"])


class RingBufferTask(SupervisedTask):
    """SupervisedTask that also records every training item it sees (``batch["idx"]``) in a ring buffer."""

    def __init__(self, buffer: Optional[RingBuffer]):
        super().__init__(_forward, ccc_loss)
        self.buffer = buffer

    def losses(self, model, batch, names):
        if self.buffer is not None and model.training:
            self.buffer.add([i for i in batch["idx"].tolist() if i >= 0])  # replayed memory items carry idx -1
        return super().losses(model, batch, names)


class ReplayedMemory(Dataset):
    """A stored memory (``Subset`` of an earlier corpus' training set) whose items carry ``idx = -1``, so the ring
    buffer of the current corpus never records them."""

    def __init__(self, memory: Subset):
        self.memory = memory

    def __len__(self) -> int:
        return len(self.memory)

    def __getitem__(self, i: int):
        return dict(self.memory[i], idx=torch.tensor(-1))


class GEMTrainer(Trainer):
    """The shared trainer whose optimiser projects every step's gradient against the memories (GEM)."""

    def __init__(self, config, model, memories: List[Dict[str, torch.Tensor]], margin: float, ridge: float,
                 solver: str, **kw):
        super().__init__(config, **kw)
        self.model, self.memories = model, memories
        self.margin, self.ridge, self.solver = margin, ridge, solver
        self.gem: Optional[GEMOptimizer] = None

    def _memory_loss(self, batch):
        batch = {k: v.to(self.info.device) for k, v in batch.items()}
        return ccc_loss(_forward(self.model, batch).float(), batch["y"])

    def _optimizer(self, params):
        self.gem = GEMOptimizer(super()._optimizer(params), self._memory_loss, self.margin, self.ridge, self.solver)
        for mem in self.memories:
            self.gem.add_memory([mem])
        return self.gem


class CorpusData:
    """One corpus: its utterances per partition and a dataset per partition (items: audio, text, y, idx)."""

    def __init__(self, name: str, parts: Dict[str, list], audio: Dict[str, np.ndarray], text: Dict[str, np.ndarray]):
        self.name, self.parts = name, parts
        self.datasets = {}
        for part, us in parts.items():
            items = []
            for i, u in enumerate(us):
                a, v = scale_ratings([u.consensus[0], u.consensus[1]], name)
                items.append({"audio": torch.as_tensor(audio[u.utterance_id], dtype=torch.float32),
                              "text": torch.as_tensor(text[u.utterance_id], dtype=torch.float32),
                              "y": torch.tensor([a, v], dtype=torch.float32), "idx": torch.tensor(i)})
            self.datasets[part] = DictDataset(items, [u.utterance_id for u in us])

    def labels(self, part: str) -> np.ndarray:
        return torch.stack([it["y"] for it in self.datasets[part].items]).numpy()


def _load(name: str, root: str, cfg, out_dir: str) -> CorpusData:
    utts = load_corpus(name, root).utterances
    lo, hi = cfg.get("min_duration"), cfg.get("max_duration")
    utts = [u for u in utts if u.consensus is not None and np.isfinite(u.consensus[:2]).all()
            and (lo is None or (u.duration or 0) >= lo) and (hi is None or (u.duration or 0) <= hi)]
    fc = cfg["features"]
    cache = fc.get("cache_dir") or os.path.join(out_dir, "features")
    audio = extract_features(utts, encoder_path(fc["audio_model"], out_dir), kind="audio", layer=fc["audio_layer"],
                             pooling="mean", cache_dir=cache, progress=False)
    text = extract_features(utts, encoder_path(fc["text_model"], out_dir), kind="text", layer=fc["text_layer"],
                            pooling="cls", cache_dir=cache, progress=False)
    utts = [u for u in utts if u.utterance_id in audio and u.utterance_id in text]
    split = assign_split(utts, name, cfg["splits"].get(name, cfg["default_split"]))
    test = cfg["test_partition"].get(name, "test")
    parts = {"train": split.get("train", []), "val": split.get("val", []), "test": split.get(test, [])}
    empty = [p for p, us in parts.items() if not us]
    if empty:
        raise ValueError(f"corpus {name!r} has no utterances in partition(s) {empty} of its split")
    return CorpusData(name, parts, audio, text)


def _evaluate(model, corpora: List[CorpusData]) -> Dict[str, Dict[str, float]]:
    out = {}
    for c in corpora:
        pred = predict(model, c.datasets["test"], _forward)
        y = c.labels("test")
        r = ccc(torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64), dim=0).tolist()
        uar = [unweighted_average_recall(bin_low_medium_high(y[:, d]), bin_low_medium_high(pred[:, d])) for d in (0, 1)]
        out[c.name] = {"act_ccc": r[0], "val_ccc": r[1], "act_uar": uar[0], "val_uar": uar[1]}
    return out


def _memory(c: CorpusData, cfg, seed: int, buffer: Optional[RingBuffer], info, stage_dir: str) -> List[int]:
    """The memory of corpus ``c`` (indices into its training set). The ring buffer's contents are saved in
    ``<stage_dir>/memory.json``: a rerun that resumes a finished stage (no training, empty buffer) reuses them."""
    mc = cfg["memory"]
    strategy = mc["strategy"]
    if strategy == "random" and buffer is not None:
        path = os.path.join(stage_dir, "memory.json")
        items = sorted(gather_objects(buffer.items(), info)[0])  # rank 0's buffer on every rank
        if not items and os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
        if info.is_main:
            os.makedirs(stage_dir, exist_ok=True)
            with open(path, "w") as f:
                json.dump(items, f)
        return items
    us = c.parts["train"]
    y = c.labels("train")
    return select_memory(y[:, 0], y[:, 1], strategy, mc["size"], durations=[u.duration for u in us],
                         genders=[u.gender for u in us], speakers=[u.speaker for u in us], seed=seed)


def _train_stage(model, cfg, seed, stage_dir, c: CorpusData, method: str, memories: List[Subset],
                 buffer: Optional[RingBuffer], info):
    tc = trainer_config(cfg, stage_dir, seed=seed)
    task = RingBufferTask(buffer)
    train = c.datasets["train"]
    if method == "exper":
        train = replay_training_set(train, [ReplayedMemory(m) for m in memories])
    if method == "gem" and memories:
        g = cfg["gem"]
        batches = [pad_collate([m.dataset[i] for i in m.indices]) for m in memories]
        trainer = GEMTrainer(tc, model, batches, g["margin"], g["ridge"], g["solver"], info=info)
    else:
        trainer = Trainer(tc, info=info)
    trainer.fit(model, task, train, c.datasets["val"], collate_fn=pad_collate)
    return trainer


def run(config: Dict[str, Any], corpus: str, data_root: str, out_dir: str) -> Dict[str, Any]:
    cfg = recipe_config("continual", config)
    info = dist_info(cfg)
    names = [c.strip() for c in corpus.split(",") if c.strip()]
    if len(names) < 2:
        raise ValueError(f"corpus must list at least two corpora in stage order (comma-separated), got {corpus!r}")
    methods = list(cfg["methods"])
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods must be among {METHODS}, got {bad}")
    os.makedirs(out_dir, exist_ok=True)
    roots = cfg.get("roots") or {}
    corpora = [_load(n, roots.get(n, os.path.join(data_root, n)), cfg, out_dir) for n in names]
    variants = [(m, cfg["memory"]["strategy"]) for m in methods]
    variants += [("exper", s) for s in cfg.get("sampling_study") or [] if ("exper", s) not in variants]
    per_seed: Dict[str, List[Dict[str, Any]]] = {}
    gem_steps: Dict[str, Dict[str, Dict[str, int]]] = {}  # last seed's GEM step and projection counts per stage
    mc = cfg["model"]
    for seed in cfg["seeds"]:
        torch.manual_seed(seed)
        dims = (corpora[0].datasets["train"][0]["audio"].numel(), corpora[0].datasets["train"][0]["text"].numel())
        initial = ContinualSERNet(*dims, **mc)
        buffer = RingBuffer(cfg["memory"]["size"])
        initial_dir = os.path.join(out_dir, f"seed{seed}", "initial")
        _train_stage(initial, cfg, seed, initial_dir, corpora[0], "finetune", [], buffer, info)
        stage0 = _evaluate(initial, corpora)
        first_mem = {s: _memory(corpora[0], dict(cfg, memory=dict(cfg["memory"], strategy=s)), seed,
                                buffer if s == "random" else None, info, initial_dir) for _, s in variants}
        for method, strategy in variants:
            key = f"{method}:{strategy}"
            model = copy.deepcopy(initial)
            memories = [Subset(corpora[0].datasets["train"], first_mem[strategy])]
            stages = {_stage_name(names, 0): stage0}
            for k in range(1, len(corpora)):
                buffer = RingBuffer(cfg["memory"]["size"]) if strategy == "random" else None
                stage_dir = os.path.join(out_dir, f"seed{seed}", key.replace(":", "_"), f"stage{k}")
                trainer = _train_stage(model, cfg, seed, stage_dir, corpora[k], method, memories, buffer, info)
                stages[_stage_name(names, k)] = _evaluate(model, corpora)
                if isinstance(trainer, GEMTrainer):
                    gem_steps.setdefault(key, {})[_stage_name(names, k)] = {"steps": trainer.gem.steps,
                                                                            "projected": trainer.gem.projections}
                mem_cfg = dict(cfg, memory=dict(cfg["memory"], strategy=strategy))
                memory = _memory(corpora[k], mem_cfg, seed, buffer, info, stage_dir)
                memories.append(Subset(corpora[k].datasets["train"], memory))
            per_seed.setdefault(key, []).append(stages)
    summary = _summarise(per_seed)
    table = tables(summary, names, cfg, gem_steps)
    results = {"summary": summary, "per_seed": per_seed, "gem_steps": gem_steps,
               "stages": [_stage_name(names, k) for k in range(len(names))]}
    save_results(out_dir, results, table, info)
    return results


def _stage_name(names: List[str], k: int) -> str:
    letters = {"msp-podcast": "P", "msp-improv": "M", "iemocap": "I", "muse": "Mu"}
    return "+".join(letters.get(n, n) for n in names[: k + 1])


def _summarise(per_seed):
    out = {}
    for key, runs in per_seed.items():
        out[key] = {}
        for stage in runs[0]:
            out[key][stage] = {}
            for cname in runs[0][stage]:
                out[key][stage][cname] = {m: (float(np.mean([r[stage][cname][m] for r in runs])),
                                              float(np.std([r[stage][cname][m] for r in runs])))
                                          for m in runs[0][stage][cname]}
    return out


def tables(summary, names: List[str], cfg, gem_steps=None) -> str:
    def cell(ms):
        return f"{ms[0]:.3f}+-{ms[1]:.3f}"

    strategy = cfg["memory"]["strategy"]
    stage_names = [_stage_name(names, k) for k in range(len(names))]
    head = ["Seen", "Model"] + [f"{n} {m}" for n in names for m in ("CCC", "UAR")]
    rows = []
    first = next(iter(summary.values()))[stage_names[0]]
    rows.append([stage_names[0], "Initial Model"] + [cell(first[n][m]) for n in names for m in ("act_ccc", "act_uar")])
    label = {"finetune": "Finetuning", "exper": "ExpeR", "gem": "GEM"}
    for stage in stage_names[1:]:
        for method in cfg["methods"]:
            r = summary[f"{method}:{strategy}"][stage]
            rows.append([stage, label[method]] + [cell(r[n][m]) for n in names for m in ("act_ccc", "act_uar")])
    out = [format_table(f"Table 2: activation results (mean+-std over seeds {cfg['seeds']}; memory: {strategy}; "
                        "columns of corpora not yet trained on are unseen)", head, rows)]
    for key, per_stage in (gem_steps or {}).items():
        out.append(f"GEM ({key}): projected steps per stage: "
                   + ", ".join(f"{st} {v['projected']}/{v['steps']}" for st, v in per_stage.items()))
    study = [s for s in cfg.get("sampling_study") or [] if s != "random"]
    if study and "exper:random" in summary:
        seen = names[:-1]
        head = ["Seen", "Sampling"] + [f"{n} {m}" for n in seen for m in ("CCC", "UAR")]
        rows = []
        for stage in stage_names[1:]:
            base = summary["exper:random"][stage]
            for s in study:
                r = summary[f"exper:{s}"][stage]
                rows.append([stage, s.capitalize()] + [f"{r[n][m][0] - base[n][m][0]:+.3f}"
                                                       for n in seen for m in ("act_ccc", "act_uar")])
        out.append(format_table("Table 3: activation results relative to ExpeR with random memory", head, rows))
    return "\n\n".join(out)
