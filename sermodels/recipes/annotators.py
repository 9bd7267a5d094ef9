"""Recipe: modelling individual annotators (Tavernor, El-Tawil, Mower Provost, Interspeech 2024).

Inputs are cached, frozen features: the wav2vec2 last hidden state mean-pooled over time and the BERT CLS vector of
the transcript (``features`` section of the config), each with ``Dropout(0.2)`` in the model. Targets: individual
ratings min-max scaled to ``[-1, 1]``, and k x k distribution targets (seed's pseudo-observations + hard-histogram
diffusion KDE on a 512 grid, :func:`sermodels.data.labels.distribution_targets`). Models: ``baseline``, ``mt``,
``onehot`` (:mod:`sermodels.models.annotators`).

Tasks (a run's ``tasks`` list):

- ``baseline``: soft-target cross-entropy of the baseline's ``k * k`` logits.
- ``task1``: ``2 - CCC_act - CCC_val`` over every (utterance, annotator) rating in the batch.
- ``task2``: DiffKDE: the batch's per-annotator predictions -> 200 pseudo-observations -> soft histogram
  (sharpness 8, grid 64; float16 on GPU) -> diffusion KDE -> k x k -> ``+1e-8`` -> cross-entropy vs the target.
- ``task1`` + ``task2`` with ``task_scheme``:

  - ``interleaved`` (the authors' code and the default): for every batch, Task 1 gets its own forward, backward and
    ``optimizer.step()``, then Task 2 does the same with the updated weights. Two optimiser steps per batch, one
    shared SGD momentum buffer; each task's gradient is taken at a different point.
  - ``summed``: one forward, ``loss = task1 + task2``, one step per batch: half the steps, both gradients at the same
    weights; the relative scale of the two losses then matters (CCC loss in [0, 4], cross-entropy ~1-3).

Validation loss (LR schedule, early stopping, best checkpoint) is the sum of the run's task losses over the whole
validation set: Task 1 from CCC moments reduced over ranks, Task 2 / baseline as the mean cross-entropy per utterance.
After training, the best checkpoint is evaluated on the test split (and zero-shot on ``evaluation.test_corpora``) with
:mod:`sermodels.evaluation`.

Output folder: ``<output_dir>/config.yaml``, ``annotator_index.json``, ``<run>/seed<s>/`` (trainer files, ``test.json``)
and ``results.json`` + ``table.txt`` for the whole config.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from .. import evaluation as ev
from .. import losses
from ..models import build_model
from ..train import DistInfo, Trainer, TrainerConfig, seed_everything
from ..train.distributed import ShardSampler, all_reduce_sums, barrier

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "annotators_table1.yaml"
TASKS = ("baseline", "task1", "task2")
SECTIONS = ("train", "model", "labels", "features", "diffkde", "evaluation")


# -- configuration ----------------------------------------------------------------------------------------------


def deep_merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in (update or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def apply_overrides(cfg: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """``key=value`` strings (value parsed as YAML). ``a.b=v`` sets a nested key; a bare key that is not top-level
    is looked up in the sections (``epochs=2`` -> ``train.epochs``) and must exist in exactly one of them."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        path = key.split(".")
        if len(path) == 1 and key not in cfg:
            owners = [s for s in SECTIONS if isinstance(cfg.get(s), dict) and key in cfg[s]]
            if len(owners) != 1:
                where = f"found in {owners}" if owners else f"not a top-level key or a key of {list(SECTIONS)}"
                raise ValueError(f"override {key!r}: {where}; use a dotted key such as train.{key}")
            path = [owners[0], key]
        node = cfg
        for p in path[:-1]:
            node = _child(node, p, key)
            if not isinstance(node, (dict, list)):
                raise ValueError(f"override {key!r}: {p!r} is not a section or list of the config")
        if isinstance(node, list):
            _child(node, path[-1], key)
            node[int(path[-1])] = value
        else:
            if path[-1] not in node and path[0] != "runs":
                raise ValueError(f"override {key!r}: unknown key {path[-1]!r} (known: {sorted(node)})")
            node[path[-1]] = value
    return cfg


def _child(node, part: str, key: str):
    """``node[part]`` of a config dict or list (list items by integer position)."""
    if isinstance(node, list):
        if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
            raise ValueError(f"override {key!r}: {part!r} is not a position in a list of {len(node)} items")
        return node[int(part)]
    if part not in node:
        raise ValueError(f"override {key!r}: no key {part!r} (known: {sorted(node)})")
    return node[part]


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """The YAML config at ``path`` (default: Table 1's) with ``overrides`` applied."""
    p = Path(path) if path else DEFAULT_CONFIG
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    with open(p) as f:
        cfg = yaml.safe_load(f)
    return apply_overrides(cfg, overrides)


def run_config(cfg: Dict[str, Any], run: str) -> Dict[str, Any]:
    """The settings of one run (``runs[run]`` merged over the shared settings), checked."""
    if run not in cfg.get("runs", {}):
        raise ValueError(f"run {run!r} is not in the config's runs {sorted(cfg.get('runs', {}))}")
    rc = deep_merge({k: v for k, v in cfg.items() if k != "runs"}, cfg["runs"][run])
    tasks = rc.get("tasks") or []
    if not tasks or any(t not in TASKS for t in tasks):
        raise ValueError(f"run {run!r}: tasks must be a non-empty subset of {TASKS}, got {tasks}")
    model = rc["model"].get("type")
    if (model == "baseline") != (tasks == ["baseline"]):
        raise ValueError(f"run {run!r}: model 'baseline' goes with tasks [baseline] only (got model {model!r}, "
                         f"tasks {tasks})")
    if rc.get("task_scheme", "interleaved") not in ("interleaved", "summed"):
        raise ValueError(f"run {run!r}: task_scheme must be 'interleaved' or 'summed', got {rc['task_scheme']!r}")
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


def _features(utterances, cfg: Dict[str, Any], cache_dir: str, device) -> Dict[str, torch.Tensor]:
    from ..data.features import extract_features

    f = cfg["features"]
    out = {}
    for kind in ("audio", "text"):
        model = f.get(f"{kind}_model")
        if not model:
            out[kind] = torch.zeros(len(utterances), 0)
            continue
        feats = extract_features(utterances, model, kind=kind, layer=f.get(f"{kind}_layer", -1),
                                 pooling=f.get(f"{kind}_pooling", "mean" if kind == "audio" else "cls"),
                                 cache_dir=cache_dir, device=device, progress=bool(cfg["train"].get("progress", True)))
        missing = [u.utterance_id for u in utterances if u.utterance_id not in feats]
        if missing:
            raise ValueError(f"{kind} features missing for {len(missing)} utterances, e.g. {missing[:3]}")
        out[kind] = torch.from_numpy(np.stack([np.asarray(feats[u.utterance_id], dtype=np.float32).reshape(-1)
                                               for u in utterances]))
    return out


def prepare_data(corpus_name: str, data_root: str, cfg: Dict[str, Any], split_scheme: Optional[str] = None,
                 index=None, device=None):
    """Load ``corpus_name``, assign splits, build rating/target tensors and features.

    Returns ``(AnnotatorData, AnnotatorIndex)``. The index is built from the training split's annotators when
    ``index`` is None, else the given one (the trained model's) is used; ratings of annotators outside it are
    dropped from ``ratings``/``annotator_ids`` but still count in ``targets`` and ``consensus``, which use every
    annotator of the utterance. ``split_scheme`` is a :func:`sermodels.data.splits.assign_split` scheme; utterances
    it leaves out get split None; without a scheme every utterance is in ``test``.
    """
    from ..data import load_corpus
    from ..data import labels as L
    from ..data.splits import assign_split

    lab = cfg["labels"]
    corpus = load_corpus(corpus_name, data_root, min_annotators=int(lab.get("min_annotators", 2)))
    utts = corpus.utterances
    if not utts:
        raise ValueError(f"corpus {corpus_name!r} at {data_root} has no usable utterances:\n{corpus.summary()}")
    groups = assign_split(utts, corpus_name, split_scheme or "all")
    where = {u.utterance_id: split for split, members in groups.items() for u in members}
    splits = [where.get(u.utterance_id) for u in utts]
    if index is None:
        index = L.AnnotatorIndex.from_utterances([u for u, s in zip(utts, splits) if s == "train"])
    ratings, ids = L.ratings_tensor(utts, corpus_name, index=index)
    everyone, _ = L.ratings_tensor(utts, corpus_name)
    targets = torch.as_tensor(L.distribution_targets(utts, corpus_name, k=int(lab["k"]), seed=int(lab.get("seed", 0)),
                                                     grid=int(lab.get("grid", 512))), dtype=torch.float64)
    # the unclipped KDE leaves cells of about -1e-5 (DCT ringing): clip to 0 as the authors' code did, renormalise
    targets = targets.clamp(min=0.0)
    targets = targets / targets.sum(dim=(-2, -1), keepdim=True)
    cache_dir = cfg["features"].get("cache_dir") or str(Path(cfg["output_dir"]) / "features")
    feats = _features(utts, cfg, cache_dir, device)
    data = AnnotatorData(corpus=corpus_name, utterance_ids=[u.utterance_id for u in utts], audio=feats["audio"],
                         text=feats["text"], ratings=ratings.float(), annotator_ids=ids.long(),
                         targets=targets.float(), consensus=torch.nanmean(everyone.float(), dim=1),
                         splits=splits)
    return data, index


# -- the task ---------------------------------------------------------------------------------------------------


class AnnotatorTask:
    """Losses and validation of one run (a :class:`sermodels.train.trainer.TrainTask`)."""

    def __init__(self, rc: Dict[str, Any], device: torch.device):
        self.tasks = list(rc["tasks"])
        summed = rc.get("task_scheme", "interleaved") == "summed"
        self.step_groups = [self.tasks] if summed else [[t] for t in self.tasks]
        self.k = int(rc["labels"]["k"])
        d = rc["diffkde"]
        self.unbiased = bool(d.get("ccc_unbiased", True))
        self.kde = dict(k=self.k, grid=int(d["grid"]), sharpness=float(d["sharpness"]), n_pseudo=int(d["n_pseudo"]))
        self.train_dtype = getattr(torch, d.get("gpu_dtype", "float16")) if device.type == "cuda" else torch.float32
        self.eval_seed = int(rc["evaluation"].get("seed", 0))

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
            else:
                ann.update(pred, batch["ratings"])
                if "task2" not in self.tasks:
                    continue
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
            name = "val_baseline" if self.tasks == ["baseline"] else "val_task2"
            out[name] = sums["ce"] / sums["n"]
            val_loss += out[name]
            out.update({f"val_{k}": v for k, v in dm.compute(info).items()})
        out["val_loss"] = val_loss
        return out


# -- evaluation -------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_model(model, dataset: Dataset, rc: Dict[str, Any], info: DistInfo, *, zero_shot: bool = False,
                   batch_size: int = 256) -> Dict[str, float]:
    """Paper metrics of ``model`` on ``dataset`` (see :mod:`sermodels.evaluation`); keys ``<variant>_k<k>_<metric>``
    with variant ``model`` for the baseline and ``<soft|hard>_<own|all>`` for annotator models, plus
    ``annotator_ccc_*`` (own annotators, not zero-shot)."""
    e, d, k = rc["evaluation"], rc["diffkde"], int(rc["labels"]["k"])
    ks = [kk for kk in e.get("ks", [k]) if k % kk == 0]
    unbiased = bool(d.get("ccc_unbiased", True))
    conv = e.get("bin_positions", "centres")
    loader = DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), info), collate_fn=collate)
    model.eval()
    annotator_model = getattr(model, "predicts_annotators", False)
    variants = ["model"]
    if annotator_model:
        who = ["all"] if zero_shot else list(e.get("annotators", ["own", "all"]))
        variants = [f"{h}_{a}" for h in e.get("histograms", ["soft", "hard"]) for a in who]
    metrics = {v: ev.DistributionMetrics(ks=ks, convention=conv, unbiased=unbiased) for v in variants}
    ann = ev.AnnotatorMetrics(unbiased=unbiased)
    gen = torch.Generator(device=info.device).manual_seed(int(e.get("seed", 0)) + info.rank)
    for batch in loader:
        batch = {kk: v.to(info.device) for kk, v in batch.items()}
        B = batch["audio"].shape[0]
        if not annotator_model:
            logits = model(batch["audio"], batch["text"]).double()
            metrics["model"].update(torch.softmax(logits, -1).reshape(B, k, k), batch["target"], batch["consensus"])
            continue
        own = all_ = None
        if not zero_shot:
            own = model(batch["audio"], batch["text"], batch["annotator_ids"]).double()
            ann.update(own, batch["ratings"])
        for v in variants:
            hist, who = v.split("_")
            if who == "own":
                pred = own
            else:
                all_ = model(batch["audio"], batch["text"], None).double() if all_ is None else all_
                pred = all_
            grid = int(e.get("soft_grid", d["grid"])) if hist == "soft" else int(e.get("hard_grid", 512))
            dist = losses.predicted_distribution(pred, k=k, histogram=hist, grid=grid, sharpness=float(d["sharpness"]),
                                                 n_pseudo=int(d["n_pseudo"]), dtype=torch.float64, generator=gen)
            metrics[v].update(dist, batch["target"], batch["consensus"])
    out: Dict[str, float] = {}
    for v, m in metrics.items():
        out.update({f"{v}_{key}": val for key, val in m.compute(info).items()})
    if annotator_model and not zero_shot:
        out.update(ann.compute(info))
    return out


# -- running a config -------------------------------------------------------------------------------------------


def _trainer_config(rc: Dict[str, Any], out_dir: Path, seed: int) -> TrainerConfig:
    t = rc["train"]
    keys = ("epochs", "batch_size", "eval_batch_size", "optimizer", "lr", "momentum", "weight_decay", "lr_factor",
            "lr_patience", "early_stopping_patience", "min_epochs", "deterministic", "amp", "progress")
    return TrainerConfig(output_dir=str(out_dir), seed=seed, **{k: t[k] for k in keys if k in t})


def train_and_evaluate(cfg: Dict[str, Any], data: AnnotatorData, index, info: DistInfo,
                       runs: Optional[Sequence[str]] = None, test_sets: Optional[Dict[str, AnnotatorData]] = None,
                       log=print) -> Dict[str, Any]:
    """Train every run x seed of ``cfg`` on ``data`` and evaluate on its test split and ``test_sets`` (zero-shot).

    Returns ``{"runs": {run: [per-seed result dicts]}}``; each result has ``test`` (and ``zero_shot[corpus]``)
    metrics and the fit summary. Rank 0 writes ``results.json`` and ``table.txt`` into ``output_dir``.
    """
    out_root = Path(cfg["output_dir"])
    runs = list(runs or cfg["runs"])
    splits = {s: data.indices(s) for s in ("train", "val", "test")}
    for s, idx in splits.items():
        if not idx:
            raise ValueError(f"corpus {data.corpus!r} has no utterances in split {s!r} "
                             f"(splits present: {sorted(set(map(str, data.splits)))})")
    train_set, val_set, test_set = (AnnotatorDataset(data, splits[s]) for s in ("train", "val", "test"))
    results: Dict[str, List[Dict[str, Any]]] = {}
    for run in runs:
        rc = run_config(cfg, run)
        for seed in rc["seeds"]:
            seed_everything(int(seed))  # identical initial weights on every rank
            model = build_model(rc["model"]["type"], data.audio.shape[1], data.text.shape[1],
                                num_annotators=len(index), k=int(rc["labels"]["k"]),
                                hidden=int(rc["model"]["hidden"]), dropout=float(rc["model"]["dropout"]))
            run_dir = out_root / run / f"seed{seed}"
            t0 = time.perf_counter()
            fit = Trainer(_trainer_config(rc, run_dir, int(seed)), info).fit(
                model, AnnotatorTask(rc, info.device), train_set, val_set, collate_fn=collate)
            res: Dict[str, Any] = {"run": run, "seed": int(seed), "best_epoch": fit.best_epoch,
                                   "epochs": len(fit.history), "stopped_early": fit.stopped_early,
                                   "skipped_steps": fit.skipped_steps, "train_seconds": time.perf_counter() - t0}
            bs = int(rc["train"].get("eval_batch_size", 256))
            res["test"] = evaluate_model(model, test_set, rc, info, batch_size=bs)
            res["zero_shot"] = {name: evaluate_model(model, AnnotatorDataset(ts, range(len(ts.utterance_ids))), rc,
                                                     info, zero_shot=True, batch_size=bs)
                                for name, ts in (test_sets or {}).items()}
            if info.is_main:
                with open(run_dir / "test.json", "w") as f:
                    json.dump(res, f, indent=1)
                log(f"[{run} seed {seed}] {res['epochs']} epochs (best {res['best_epoch']}), "
                    f"{res['train_seconds']:.1f} s; " + _headline(res["test"], rc))
            results.setdefault(run, []).append(res)
    out = {"runs": results}
    if info.is_main:
        with open(out_root / "results.json", "w") as f:
            json.dump(out, f, indent=1)
        text = tables(cfg, out)
        (out_root / "table.txt").write_text(text + "\n")
    barrier(info)
    return out


def _variant(cfg: Dict[str, Any], run: str) -> str:
    rc = cfg["runs"][run]
    return "model" if rc.get("model", {}).get("type") == "baseline" else cfg["evaluation"].get("report", "soft_own")


def _headline(metrics: Dict[str, float], rc: Dict[str, Any]) -> str:
    k = int(rc["labels"]["k"])
    v = "model" if rc["model"]["type"] == "baseline" else rc["evaluation"].get("report", "soft_own")
    keys = [f"{v}_k{k}_tvd", f"{v}_k{k}_jsd", f"{v}_k{k}_ccc_activation", f"{v}_k{k}_ccc_valence",
            "annotator_ccc_activation", "annotator_ccc_valence"]
    return ", ".join(f"{key.replace(v + '_', '')} {metrics[key]:.3f}" for key in keys if key in metrics)


def tables(cfg: Dict[str, Any], results: Dict[str, Any]) -> str:
    """Paper-style tables (Table 1 on the test split; Table 2 for zero-shot corpora) from ``results``."""
    runs = results["runs"]
    k = int(cfg["labels"]["k"])
    base = cfg.get("baseline_run") if cfg.get("baseline_run") in runs else None
    variant = {r: _variant(cfg, r) for r in runs}
    summary = ev.summarize_seeds({r: [s["test"] for s in v] for r, v in runs.items()}, baseline=base,
                                 variant=variant)
    n = min(len(v) for v in runs.values())
    parts = [ev.format_table1(summary, variant, k=k, title=f"{cfg['corpus']} test split, {k}x{k}, "
                              f"{n} seed(s), bin positions {cfg['evaluation'].get('bin_positions', 'centres')}")]
    corpora = sorted({c for v in runs.values() for s in v for c in s.get("zero_shot", {})})
    if corpora:
        zs_variant = {r: "model" if variant[r] == "model" else variant[r].split("_")[0] + "_all" for r in runs}
        per = {c: ev.summarize_seeds({r: [s["zero_shot"][c] for s in v] for r, v in runs.items()}, baseline=base,
                                     variant=zs_variant) for c in corpora}
        parts.append(ev.format_table2(per, zs_variant, k=k, title="zero-shot cross-corpus (all annotators' heads)"))
    return "\n\n".join(parts)


def run(cfg: Dict[str, Any], info: Optional[DistInfo] = None, runs: Optional[Sequence[str]] = None,
        log=print) -> Dict[str, Any]:
    """Everything for one config: data, features, every run x seed, test and zero-shot evaluation, tables."""
    info = info or DistInfo()
    if not cfg.get("data_root"):
        raise ValueError("data_root is not set: pass --data-root (or data_root=... in the config)")
    out_root = Path(cfg["output_dir"])
    if info.is_main:
        out_root.mkdir(parents=True, exist_ok=True)
        with open(out_root / "config.yaml", "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
    data, index = prepare_data(cfg["corpus"], cfg["data_root"], cfg, split_scheme=cfg.get("split"),
                               device=info.device)
    if info.is_main:
        index.save(out_root / "annotator_index.json")
    test_sets = {}
    for tc in cfg["evaluation"].get("test_corpora") or []:
        if not tc.get("data_root"):
            raise ValueError(f"evaluation.test_corpora: {tc.get('name')!r} has no data_root")
        ts, _ = prepare_data(tc["name"], tc["data_root"], cfg, split_scheme=tc.get("scheme", "all"), index=index,
                             device=info.device)
        test_sets[tc["name"]] = _subset(ts, ts.indices(tc.get("split", "test")))
    res = train_and_evaluate(cfg, data, index, info, runs=runs, test_sets=test_sets, log=log)
    if info.is_main:
        log(tables(cfg, res))
    return res


def _subset(d: AnnotatorData, keep: Sequence[int]) -> AnnotatorData:
    idx = torch.as_tensor(list(keep), dtype=torch.long)
    return AnnotatorData(corpus=d.corpus, utterance_ids=[d.utterance_ids[i] for i in keep], audio=d.audio[idx],
                         text=d.text[idx], ratings=d.ratings[idx], annotator_ids=d.annotator_ids[idx],
                         targets=d.targets[idx], consensus=d.consensus[idx], splits=[d.splits[i] for i in keep])
