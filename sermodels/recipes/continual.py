"""Recipe: continual learning across corpora with episodic memory (Tavernor, Perez, Mower Provost, IS 2023; paper 003).

``data.corpus`` is the stage order, comma-separated (the paper: ``msp-podcast,msp-improv,iemocap`` = P -> P+M ->
P+M+I); corpus ``c`` is read from ``data.roots[c]`` if given, else ``<data.root>/<c>``. Each corpus is optionally
filtered to ``data.min_duration``..``data.max_duration`` s (the paper: 3-30 s; durations from the label files or the
audio headers, utterances of unknown duration are left out), then split by ``data.splits[c]`` (a scheme or a split
file; default ``data.split``, null = the corpus' default scheme) into train / val / ``data.test_partition[c]``
(default ``test``); labels are the consensus activation and valence min-max scaled to [-1, 1] per corpus
(``data.scaling``: ``dataset`` = each corpus' own lowest and highest consensus label after the duration filter, the
paper's "min-max scaling on each dataset" and the default; ``scale`` = the corpus' fixed rating scale;
``data.rating_range`` does not apply: every corpus keeps its own scale).

Features (cached): wav2vec2 last layer mean-pooled (audio) and BERT CLS (text). Model:
:class:`~sermodels.models.continual.ContinualSERNet`; loss: mean over activation and valence of ``1 - CCC``;
the shared trainer (SGD, early stopping) for every stage.

Methods (``train.methods``), each continuing from the same initial model trained on the first corpus:

- ``finetune``: train on the new corpus only;
- ``exper``: the new corpus plus every stored memory (:func:`sermodels.continual.replay_training_set`);
- ``gem``: :class:`GEMTrainer` wraps the optimiser (through the trainer's public ``build_optimizer`` hook) in
  :class:`sermodels.continual.GEMOptimizer`: each step, one gradient per past corpus on its whole memory (one
  batch), projection by the exact dual QP when any conflicts (``train.gem``).

Memories: ``train.memory.size`` (261) per corpus, filled when training on that corpus ends (their sizes are in
``results.json`` under ``memory_sizes`` and under the table). ``random`` = the ring buffer of
the most recently seen training items (fed by :class:`RingBufferTask`; under DDP rank 0's buffer is used by every
rank); ``length`` / ``gender`` / ``speaker`` = bucketed sampling (:func:`sermodels.continual.select_memory`).
``eval.sampling_study`` reruns ExpeR with other strategies for Table 3.

Output: Table 1 (utterances per partition of every corpus after the duration filter), Table 2 (activation CCC and
UAR low/medium/high on every corpus' test partition, seen and unseen, after each stage, mean +- std over seeds, std
with ``eval.std_ddof``; ExpeR and GEM marked ``*`` / ``†`` where a paired two-sided t-test over the seeds finds them
significantly better / worse than finetuning at ``eval.alpha``) and Table 3 (sampling strategies relative to ExpeR
with random memory, ``↑`` / ``↓`` and the same marks from the paired t-test against ExpeR with random memory); marks
need >= 3 seeds. Valence metrics are in ``results.json``. ``configs/continual_paper.yaml`` holds the paper's
protocol key by key (wav2vec2-base + BERT L-4, 3-30 s, memory 261, SGD lr 1e-3, five seeds, the sampling study).
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from kdekit import ccc
from ..config import ConfigError, DataConfig, RecipeConfig, TrainConfig, to_dict
from ..evaluation import paired_test, seed_std, seeds_note
from ..continual import GEMOptimizer, RingBuffer, replay_training_set, select_memory
from ..data import corpus_name
from ..data.features import extract_features
from ..data.labels import LabelScale, bin_low_medium_high, label_scale
from ..models.continual import ContinualSERNet
from ..recipe_losses import ccc_loss
from ..runs import data_fingerprint, say, write_json
from ..train import Trainer
from ..train.distributed import gather_objects
from ._common import (DictDataset, SupervisedTask, encoder_path, format_table, pad_collate, predict, print_tables,
                      read_corpus, split_utterances, start_run, unweighted_average_recall)

METHODS = ("finetune", "exper", "gem")
STRATEGIES = ("random", "length", "gender", "speaker")
CURVE_METRICS = ("val_loss",)


@dataclass
class Data(DataConfig):
    """``corpus``: the stage order, comma-separated; ``roots``: corpus -> folder (default ``<root>/<corpus>``);
    ``splits``: corpus -> split scheme or split file (default ``split``); ``test_partition``: corpus -> the partition
    tested (default ``test``); ``min_duration`` / ``max_duration``: seconds. Corpus keys may be aliases. The
    default stage order is the paper's (P -> P+M -> P+M+I)."""

    corpus: Optional[str] = "msp-podcast,msp-improv,iemocap"
    roots: Dict[str, str] = field(default_factory=dict)
    splits: Dict[str, str] = field(default_factory=lambda: {"msp-podcast": "official", "msp-improv": "session_is2023",
                                                            "iemocap": "session"})
    test_partition: Dict[str, str] = field(default_factory=lambda: {"msp-podcast": "test1"})
    min_duration: Optional[float] = None
    max_duration: Optional[float] = None
    scaling: Literal["dataset", "scale"] = "dataset"

    def check(self) -> None:
        super().check()
        if self.rating_range is not None:
            raise ConfigError("data.rating_range: the continual recipe reads each corpus on its own fixed scale; "
                              "leave it null")


@dataclass
class Features:
    audio_model: str = "tiny:wav2vec2"
    audio_layer: int = -1
    text_model: str = "tiny:bert"
    text_layer: int = -1
    cache_dir: Optional[str] = None


@dataclass
class Model:
    hidden: int = 32
    text_hidden: int = 16


@dataclass
class Memory:
    """``size`` per corpus (the paper: 9 activation x valence buckets x 29); ``strategy``: random (ring buffer) |
    length | gender | speaker."""

    size: int = 261
    strategy: Literal["random", "length", "gender", "speaker"] = "random"


@dataclass
class Gem:
    """``margin``: the reference memory_strength (lower bound of the dual variables); ``solver``: nnls (exact active
    set) | quadprog."""

    margin: float = 0.5
    ridge: float = 1e-3
    solver: Literal["nnls", "quadprog"] = "nnls"


@dataclass
class Train(TrainConfig):
    epochs: int = 3
    batch_size: int = 8
    eval_batch_size: int = 64
    lr: float = 1e-2
    amp: bool = False
    progress: bool = False
    methods: List[Literal["finetune", "exper", "gem"]] = field(default_factory=lambda: list(METHODS))
    memory: Memory = field(default_factory=Memory)
    gem: Gem = field(default_factory=Gem)


@dataclass
class Eval:
    """``sampling_study``: memory strategies to rerun ExpeR with (Table 3); ``alpha``: level of the paired t-tests
    (Tables 2 and 3, >= 3 seeds); ``std_ddof``: the std over seeds (1 = the sample std, the t-test's estimator)."""

    sampling_study: List[Literal["random", "length", "gender", "speaker"]] = field(default_factory=list)
    alpha: float = 0.05
    std_ddof: int = 1


@dataclass
class Config(RecipeConfig):
    """Small defaults: three synthetic corpora (``sermodels synth`` into ``<root>/msp-podcast``, ``<root>/msp-improv``,
    ``<root>/iemocap``; ``--seconds 2 5`` with ``data.min_duration=3``) in well under a minute."""

    recipe: str = "continual"
    data: Data = field(default_factory=Data)
    features: Features = field(default_factory=Features)
    model: Model = field(default_factory=Model)
    train: Train = field(default_factory=Train)
    eval: Eval = field(default_factory=Eval)


def run_names(cfg: Config) -> List[str]:
    return []


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

    def __init__(self, config, output_dir, model, memories: List[Dict[str, torch.Tensor]], margin: float,
                 ridge: float, solver: str, **kw):
        super().__init__(config, output_dir, **kw)
        self.model, self.memories = model, memories
        self.margin, self.ridge, self.solver = margin, ridge, solver
        self.gem: Optional[GEMOptimizer] = None

    def _memory_loss(self, batch):
        batch = {k: v.to(self.info.device) for k, v in batch.items()}
        return ccc_loss(_forward(self.model, batch).float(), batch["y"])

    def build_optimizer(self, params):
        self.gem = GEMOptimizer(super().build_optimizer(params), self._memory_loss, self.margin, self.ridge,
                                self.solver)
        for mem in self.memories:
            self.gem.add_memory([mem])
        return self.gem


class CorpusData:
    """One corpus: its utterances per partition and a dataset per partition (items: audio, text, y, idx), the
    consensus activation and valence mapped onto [-1, 1] by ``scale``."""

    def __init__(self, name: str, parts: Dict[str, list], audio: Dict[str, np.ndarray], text: Dict[str, np.ndarray],
                 scale: LabelScale):
        self.name, self.parts, self.scale = name, parts, scale
        self.datasets = {}
        for part, us in parts.items():
            items = []
            for i, u in enumerate(us):
                a, v = scale.scale([u.consensus[0], u.consensus[1]])
                items.append({"audio": torch.as_tensor(audio[u.utterance_id], dtype=torch.float32),
                              "text": torch.as_tensor(text[u.utterance_id], dtype=torch.float32),
                              "y": torch.tensor([a, v], dtype=torch.float32), "idx": torch.tensor(i)})
            self.datasets[part] = DictDataset(items, [u.utterance_id for u in us])

    def labels(self, part: str) -> np.ndarray:
        return torch.stack([it["y"] for it in self.datasets[part].items]).numpy()


def _by_corpus(mapping: Dict[str, Any]) -> Dict[str, Any]:
    """A ``data`` mapping keyed by corpus name with canonical keys (aliases allowed in the config)."""
    return {corpus_name(k): v for k, v in mapping.items()}


def _partitions(name: str, root: str, cfg: Config, log):
    """``({"train", "val", "test"} utterances, label scale)`` of corpus ``name`` (duration filter, split, test
    partition; the scale of ``data.scaling`` over the utterances the filter keeps)."""
    d = cfg.data
    corpus = read_corpus(name, root)
    utts = [u for u in corpus.utterances if u.consensus is not None and np.isfinite(u.consensus[:2]).all()]
    lo, hi = d.min_duration, d.max_duration
    if lo is not None or hi is not None:
        kept = [u for u in utts if u.duration is not None and (lo is None or u.duration >= lo)
                and (hi is None or u.duration <= hi)]
        known = [u.duration for u in utts if u.duration is not None]
        span = f"{min(known):.2f}-{max(known):.2f} s" if known else "none known"
        if log is not None:
            log(f"{name}: the duration filter {lo}-{hi} s keeps {len(kept)} of {len(utts)} utterances "
                f"(durations {span})")
        if not kept:
            raise ValueError(f"data.min_duration={lo} / data.max_duration={hi} s leave no utterance of {name} at "
                             f"{root} (durations {span}, {len(utts) - len(known)} unknown)")
        utts = kept
    scale = label_scale(utts, corpus, d.scaling, source="consensus")
    if log is not None:
        log(f"{name}: consensus labels {scale.describe()}")
    test = _by_corpus(d.test_partition).get(name, "test")
    split = split_utterances(utts, name, _by_corpus(d.splits).get(name, d.split), d.partitions,
                             ("train", "val", test), log=log)
    return {"train": split["train"], "val": split["val"], "test": split[test]}, scale


def _load(name: str, parts: Dict[str, list], scale: LabelScale, cfg: Config, out_dir: str) -> CorpusData:
    fc = cfg.features
    utts = [u for us in parts.values() for u in us]
    cache = fc.cache_dir or os.path.join(out_dir, "features")
    audio = extract_features(utts, encoder_path(fc.audio_model, out_dir), kind="audio", layer=fc.audio_layer,
                             pooling="mean", cache_dir=cache, progress=False)
    text = extract_features(utts, encoder_path(fc.text_model, out_dir), kind="text", layer=fc.text_layer,
                            pooling="cls", cache_dir=cache, progress=False)
    parts = {p: [u for u in us if u.utterance_id in audio and u.utterance_id in text] for p, us in parts.items()}
    return CorpusData(name, parts, audio, text, scale)


def _evaluate(model, corpora: List[CorpusData]) -> Dict[str, Dict[str, float]]:
    out = {}
    for c in corpora:
        pred = predict(model, c.datasets["test"], _forward)
        y = c.labels("test")
        r = ccc(torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64), dim=0).tolist()
        uar = [unweighted_average_recall(bin_low_medium_high(y[:, d]), bin_low_medium_high(pred[:, d])) for d in (0, 1)]
        out[c.name] = {"act_ccc": r[0], "val_ccc": r[1], "act_uar": uar[0], "val_uar": uar[1]}
    return out


def _memory(c: CorpusData, size: int, strategy: str, seed: int, buffer: Optional[RingBuffer], info,
            stage_dir: str) -> List[int]:
    """The memory of corpus ``c`` (indices into its training set). The ring buffer's contents are saved in
    ``<stage_dir>/memory.json``: a rerun that resumes a finished stage (no training, empty buffer) reuses them."""
    if strategy == "random" and buffer is not None:
        path = os.path.join(stage_dir, "memory.json")
        items = sorted(gather_objects(buffer.items(), info)[0])  # rank 0's buffer on every rank
        if not items and os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
        if info.is_main:
            os.makedirs(stage_dir, exist_ok=True)
            write_json(path, items)
        return items
    us = c.parts["train"]
    y = c.labels("train")
    return select_memory(y[:, 0], y[:, 1], strategy, size, durations=[u.duration for u in us],
                         genders=[u.gender for u in us], speakers=[u.speaker for u in us], seed=seed)


def _train_stage(model, cfg: Config, seed, stage_dir, c: CorpusData, method: str, memories: List[Subset],
                 buffer: Optional[RingBuffer], info):
    task = RingBufferTask(buffer)
    train = c.datasets["train"]
    if method == "exper":
        train = replay_training_set(train, [ReplayedMemory(m) for m in memories])
    if method == "gem" and memories:
        g = cfg.train.gem
        batches = [pad_collate([m.dataset[i] for i in m.indices]) for m in memories]
        trainer = GEMTrainer(cfg.train, stage_dir, model, batches, g.margin, g.ridge, g.solver, seed=seed, info=info)
    else:
        trainer = Trainer(cfg.train, stage_dir, seed=seed, info=info)
    trainer.fit(model, task, train, c.datasets["val"], collate_fn=pad_collate)
    return trainer


def run(config=None, *, corpus: Optional[str] = None, data_root: Optional[str] = None,
        out_dir="runs/continual", runs: Optional[Sequence[str]] = None, overwrite: bool = False) -> Dict[str, Any]:
    cfg, info, folder = start_run("continual", Config, config, corpus, data_root, out_dir, overwrite)
    out_dir = str(out_dir)
    names = _names(cfg)
    roots = _by_corpus(cfg.data.roots)
    log = say if info.is_main else None
    loaded = {n: _partitions(n, roots.get(n, os.path.join(cfg.data.root, n)), cfg, log) for n in names}
    parts = {n: ps for n, (ps, _) in loaded.items()}
    scales = {n: sc for n, (_, sc) in loaded.items()}
    fp = data_fingerprint({f"{n}:{p}": us for n, ps in parts.items() for p, us in ps.items()},
                          scales={n: sc.to_dict() for n, sc in scales.items()})
    with folder.claim(fp):
        results = _run(cfg, info, out_dir, names, parts, scales)
        folder.save(results, tables(cfg, results))
    return results


def _names(cfg: Config) -> List[str]:
    names = [c.strip() for c in (cfg.data.corpus or "").split(",") if c.strip()]
    if len(names) < 2:
        raise ConfigError(f"data.corpus must list at least two corpora in stage order (comma-separated), got "
                          f"{cfg.data.corpus!r}")
    return names


def _run(cfg: Config, info, out_dir: str, names: List[str], parts, scales) -> Dict[str, Any]:
    corpora = [_load(n, parts[n], scales[n], cfg, out_dir) for n in names]
    mem = cfg.train.memory
    variants = [(m, mem.strategy) for m in cfg.train.methods]
    variants += [("exper", s) for s in cfg.eval.sampling_study if ("exper", s) not in variants]
    per_seed: Dict[str, List[Dict[str, Any]]] = {}
    gem_steps: Dict[str, Dict[str, Dict[str, int]]] = {}  # last seed's GEM step and projection counts per stage
    memory_sizes: Dict[str, List[Dict[str, int]]] = {}  # per variant and seed: items in each corpus' memory
    for seed in cfg.seeds:
        torch.manual_seed(seed)
        dims = (corpora[0].datasets["train"][0]["audio"].numel(), corpora[0].datasets["train"][0]["text"].numel())
        initial = ContinualSERNet(*dims, **to_dict(cfg.model))
        buffer = RingBuffer(mem.size)
        initial_dir = os.path.join(out_dir, f"seed{seed}", "initial")
        _train_stage(initial, cfg, seed, initial_dir, corpora[0], "finetune", [], buffer, info)
        stage0 = _evaluate(initial, corpora)
        first_mem = {s: _memory(corpora[0], mem.size, s, seed, buffer if s == "random" else None, info, initial_dir)
                     for _, s in variants}
        for method, strategy in variants:
            key = f"{method}:{strategy}"
            model = copy.deepcopy(initial)
            memories = [Subset(corpora[0].datasets["train"], first_mem[strategy])]
            stages = {_stage_name(names, 0): stage0}
            for k in range(1, len(corpora)):
                buffer = RingBuffer(mem.size) if strategy == "random" else None
                stage_dir = os.path.join(out_dir, f"seed{seed}", key.replace(":", "_"), f"stage{k}")
                trainer = _train_stage(model, cfg, seed, stage_dir, corpora[k], method, memories, buffer, info)
                stages[_stage_name(names, k)] = _evaluate(model, corpora)
                if isinstance(trainer, GEMTrainer):
                    gem_steps.setdefault(key, {})[_stage_name(names, k)] = {"steps": trainer.gem.steps,
                                                                            "projected": trainer.gem.projections}
                memory = _memory(corpora[k], mem.size, strategy, seed, buffer, info, stage_dir)
                memories.append(Subset(corpora[k].datasets["train"], memory))
            per_seed.setdefault(key, []).append(stages)
            memory_sizes.setdefault(key, []).append({c.name: len(m.indices) for c, m in zip(corpora, memories)})
    sizes = {c.name: {p: len(ds) for p, ds in c.datasets.items()} for c in corpora}
    return {"summary": _summarise(per_seed, cfg.eval.std_ddof), "per_seed": per_seed,
            "t_tests": t_tests(cfg, per_seed, memory=mem.strategy), "gem_steps": gem_steps,
            "memory_sizes": memory_sizes, "stages": [_stage_name(names, k) for k in range(len(names))],
            "sizes": sizes, "label_scales": {n: sc.to_dict() for n, sc in scales.items()}}


def evaluate(run_dir, *, corpus: Optional[str] = None, data_root: Optional[str] = None, split: Optional[str] = None,
             partition: Optional[str] = None, rating_range: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Print the tables of a finished run folder (the recipe evaluates every corpus' test partition only)."""
    return print_tables("continual", Config, tables, run_dir, corpus, data_root=data_root, split=split,
                        partition=partition, rating_range=rating_range)


def _stage_name(names: List[str], k: int) -> str:
    letters = {"msp-podcast": "P", "msp-improv": "M", "iemocap": "I", "muse": "Mu"}
    return "+".join(letters.get(n, n) for n in names[: k + 1])


def _summarise(per_seed, ddof: int = 1):
    """``summary[variant][stage][corpus][metric] = (mean, std)`` over seeds (std with ``ddof``)."""
    out = {}
    for key, runs in per_seed.items():
        out[key] = {}
        for stage in runs[0]:
            out[key][stage] = {}
            for cname in runs[0][stage]:
                out[key][stage][cname] = {m: (float(np.mean([r[stage][cname][m] for r in runs])),
                                              seed_std([r[stage][cname][m] for r in runs], ddof))
                                          for m in runs[0][stage][cname]}
    return out


def _compare(per_seed, key: str, base: str, alpha: float, stages) -> Dict[str, Any]:
    """Paired two-sided t-tests of variant ``key`` against ``base`` over the seeds, per stage, corpus and metric:
    ``{stage: {corpus: {metric: {"p": p, "mark": mark}}}}`` (:func:`sermodels.evaluation.paired_test`)."""
    out: Dict[str, Any] = {}
    runs, ref = per_seed[key], per_seed[base]
    for stage in stages:
        out[stage] = {}
        for cname, metrics in runs[0][stage].items():
            out[stage][cname] = {}
            for m in metrics:
                p, mark = paired_test([r[stage][cname][m] for r in runs], [r[stage][cname][m] for r in ref],
                                      lower_is_better=False, alpha=alpha)
                out[stage][cname][m] = {"p": p, "mark": mark}
    return out


def t_tests(cfg: Config, per_seed, memory: str) -> Dict[str, Any]:
    """The significance marks of Tables 2 and 3: ExpeR and GEM against finetuning (Table 2; the stages after the
    first), every sampling strategy against ExpeR with random memory (Table 3). Keys: ``"<variant> vs <base>"``."""
    out: Dict[str, Any] = {}
    stages = list(next(iter(per_seed.values()))[0])[1:]
    base = f"finetune:{memory}"
    for method in ("exper", "gem"):
        key = f"{method}:{memory}"
        if key in per_seed and base in per_seed:
            out[f"{key} vs {base}"] = _compare(per_seed, key, base, cfg.eval.alpha, stages)
    if "exper:random" in per_seed:
        for strategy in cfg.eval.sampling_study:
            key = f"exper:{strategy}"
            if strategy != "random" and key in per_seed:
                out[f"{key} vs exper:random"] = _compare(per_seed, key, "exper:random", cfg.eval.alpha, stages)
    return out


METHOD_LABELS = {"finetune": "Finetuning", "exper": "ExpeR", "gem": "GEM"}


def tables(cfg: Config, results: Dict[str, Any]) -> str:
    """Tables 1, 2 and 3 of paper 003 (see the module docstring) from ``results``."""
    summary, gem_steps, names = results["summary"], results.get("gem_steps"), _names(cfg)
    per_seed = results["per_seed"]
    tests = results.get("t_tests") or t_tests(cfg, per_seed, cfg.train.memory.strategy)
    n_seeds = min(len(v) for v in per_seed.values())
    strategy = cfg.train.memory.strategy
    stage_names = [_stage_name(names, k) for k in range(len(names))]
    out = []
    if results.get("sizes"):
        sizes = results["sizes"]
        rows = [[f"# {p.capitalize() if p != 'val' else 'Val.'}"] + [sizes[n].get(p, 0) for n in names]
                for p in ("train", "val", "test")]
        lo, hi = cfg.data.min_duration, cfg.data.max_duration
        out.append(format_table(f"Table 1: utterances in each dataset following data processing (duration filter "
                                f"{lo}-{hi} s)", [""] + names, rows))

    def cell(ms, mark=""):
        std = f"+-{ms[1]:.3f}" if ms[1] == ms[1] else ""
        return f"{ms[0]:.3f}{std}{mark}"

    def mark(key, base, stage, corpus, metric):
        return tests.get(f"{key} vs {base}", {}).get(stage, {}).get(corpus, {}).get(metric, {}).get("mark", "")

    head = ["Seen", "Model"] + [f"{n} {m}" for n in names for m in ("CCC", "UAR")]
    rows = []
    first = next(iter(summary.values()))[stage_names[0]]
    rows.append([stage_names[0], "Initial Model"] + [cell(first[n][m]) for n in names for m in ("act_ccc", "act_uar")])
    base = f"finetune:{strategy}"
    for stage in stage_names[1:]:
        for method in cfg.train.methods:
            key = f"{method}:{strategy}"
            r = summary[key][stage]
            rows.append([stage, METHOD_LABELS[method]] + [cell(r[n][m], mark(key, base, stage, n, m))
                                                          for n in names for m in ("act_ccc", "act_uar")])
    note = seeds_note(n_seeds, cfg.eval.alpha, "Finetuning")
    out.append(format_table(f"Table 2: activation results (mean+-std over seeds {cfg.seeds}, std ddof "
                            f"{cfg.eval.std_ddof}; memory: {strategy}; columns of corpora not yet trained on are "
                            "unseen)", head, rows, note))
    for key, sizes in results.get("memory_sizes", {}).items():
        out.append(f"memory sizes ({key}, per seed): " + "; ".join(
            ", ".join(f"{c} {n}" for c, n in per_corpus.items()) for per_corpus in sizes))
    for key, per_stage in (gem_steps or {}).items():
        out.append(f"GEM ({key}): projected steps per stage: "
                   + ", ".join(f"{st} {v['projected']}/{v['steps']}" for st, v in per_stage.items()))
    study = [s for s in cfg.eval.sampling_study if s != "random"]
    if study and "exper:random" in summary:
        seen = names[:-1]
        head = ["Seen", "Sampling"] + [f"{n} {m}" for n in seen for m in ("CCC", "UAR")]
        rows = []
        for stage in stage_names[1:]:
            ref = summary["exper:random"][stage]
            for strat in study:
                key = f"exper:{strat}"
                r = summary[key][stage]
                row = [stage, strat.capitalize()]
                for n in seen:
                    for m in ("act_ccc", "act_uar"):
                        d = r[n][m][0] - ref[n][m][0]
                        row.append(f"{abs(d):.3f}{'↑' if d >= 0 else '↓'}{mark(key, 'exper:random', stage, n, m)}")
                rows.append(row)
        out.append(format_table("Table 3: activation results relative to ExpeR with random memory (↑ increase, "
                                "↓ decrease)", head, rows, seeds_note(n_seeds, cfg.eval.alpha,
                                                                      "ExpeR with random memory")))
    return "\n\n".join(out)
