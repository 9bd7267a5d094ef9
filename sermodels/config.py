"""Typed recipe configs: one section layout, one merge, one override grammar, YAML 1.2 values.

Every recipe's config is a dataclass (``<recipe module>.Config``) with the same top-level layout::

    recipe: <name>          # checked against the recipe being run
    seeds: [0]              # training seeds: every model is trained once per seed
    device: auto            # auto | cpu | cuda | cuda:N
    data:     {corpus, root, split, partitions, rating_range, ...}   # which utterances, labels
    features: {...}         # frozen encoders / feature extraction
    model:    {...}         # architecture
    train:    {epochs, batch_size, optimizer, lr, scheduler: {name, ...}, early_stopping: {...}, ...}
    eval:     {...}         # metrics, test sets

The ``data`` section of every recipe has ``corpus`` (a name or alias, :func:`sermodels.data.corpus_name`), ``root``,
``split`` (a split scheme of :mod:`sermodels.data.splits` or the path of a ``.json`` / ``.csv`` split file; null =
the corpus' default scheme), ``partitions`` (renaming map ``{new: old}``, e.g. ``{test: test1}``: MSP-Podcast's
Test1 used as the test set) and ``rating_range`` (``[lo, hi]`` of the corpus' rating scale; null = the corpus'
fixed range; a generic corpus needs it). ``train`` is :class:`TrainConfig` (read by
:class:`sermodels.train.Trainer`), extended by recipes that need more.

Sources, later ones win: the schema's defaults, a YAML file (``--config``), then ``key=value`` overrides.

- **Files** are read with YAML 1.2 core-schema rules (:func:`load_yaml`): ``1e-3`` is a float (PyYAML's YAML 1.1
  reads it as a string), ``yes``/``no``/``on``/``off`` stay strings.
- **Overrides** are ``dotted.key=value`` with the value parsed as YAML 1.2 (``train.lr=1e-3``,
  ``eval.ks=[4,2]``, ``data.rating_range=[1,7]``, ``data.partitions.test=test1``, ``data.split=/path/split.json``);
  integer parts index lists (``eval.test_corpora.0.root=/data/IEMOCAP``).
- **Unknown keys**, in a file or an override, are errors naming the nearest known key; values are checked against
  the field's type (an int where a float is expected is converted; a string where a number is expected is an error).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Type, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the recipe's schema."""


# -- YAML 1.2 ---------------------------------------------------------------------------------------------------


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with the YAML 1.2 core schema's implicit types (null, bool, int, float) instead of YAML 1.1's."""


_Yaml12Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] not in (
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:null")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _tag, _regexp, _first in (
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    ("tag:yaml.org,2002:float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", list("-+.0123456789")),
):
    _Yaml12Loader.add_implicit_resolver(_tag, re.compile(_regexp), _first)


def _construct_int(loader, node):
    text = loader.construct_scalar(node)
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 16) if text.startswith("0x") else int(text)


def _construct_float(loader, node):
    text = loader.construct_scalar(node).lower()
    if text.endswith("nan"):
        return math.nan
    if text.endswith("inf"):
        return -math.inf if text.startswith("-") else math.inf
    return float(text)


_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def load_yaml(text: str) -> Any:
    """Parse YAML text with the YAML 1.2 core schema (``1e-3`` -> float, ``on`` -> ``"on"``)."""
    return yaml.load(text, Loader=_Yaml12Loader)


def dump_yaml(data: Any) -> str:
    """YAML text of plain data that :func:`load_yaml` reads back to the same values (floats keep a dot or an
    exponent, strings that look like numbers or booleans under either YAML version are quoted)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)


# -- schema -----------------------------------------------------------------------------------------------------


def _hints(cls) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp) if a is not Ellipsis)}]"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def nearest_key(key: str, known: Sequence[str]) -> Optional[str]:
    """The known dotted key closest to ``key``: one with the same last part, else the best difflib match of the
    whole key or of its last part (None when nothing is close)."""
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in known if k.rsplit(".", 1)[-1] == leaf]
    if same_leaf:
        return same_leaf[0]
    best, score = None, 0.6
    for k in known:
        s = max(difflib.SequenceMatcher(None, key, k).ratio(),
                difflib.SequenceMatcher(None, leaf, k.rsplit(".", 1)[-1]).ratio() - 0.01)
        if s > score:
            best, score = k, s
    return best


def _word_key(key: str, known: Sequence[str]) -> Optional[str]:
    """The known key whose last part has the last part of ``key`` as one of its ``_``-separated words
    (``labels.range`` -> ``data.rating_range``), or None."""
    leaf = key.rsplit(".", 1)[-1]
    for k in known:
        words = k.rsplit(".", 1)[-1].split("_")
        if len(words) > 1 and leaf in words:
            return k
    return None


def _unknown(path: str, key: str, cls, root=None, rest: Sequence[str] = ()) -> ConfigError:
    """The error for ``key`` unknown in section ``path`` of ``cls``; ``rest``: the parts of the override key after
    it, whose last part may name the intended key (``labels.range`` -> ``data.rating_range``)."""
    full = f"{path}.{key}" if path else key
    hint = _word_key(".".join([full, *rest]), schema_keys(root or cls)) if rest else None
    hint = hint or nearest_key(full, schema_keys(cls, path))
    if hint is None and root is not None:  # a key of another section (``epochs`` -> ``train.epochs``)
        hint = nearest_key(full, schema_keys(root))
    where = f"in section {path!r}" if path else "at the top level"
    return ConfigError(f"unknown config key {full!r} ({where})" + (f"; did you mean {hint!r}?" if hint else
                                                                   f"; known: {sorted(f.name for f in dataclasses.fields(cls))}"))


def schema_keys(cls, prefix: str = "") -> List[str]:
    """Every dotted key path of dataclass ``cls`` (sections and their fields)."""
    out = []
    for name, tp in _hints(cls).items():
        if name.startswith("_"):
            continue
        path = f"{prefix}.{name}" if prefix else name
        out.append(path)
        inner = _dataclass_of(tp)
        if inner is not None:
            out += schema_keys(inner, path)
    return out


def _dataclass_of(tp):
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        for a in typing.get_args(tp):
            if dataclasses.is_dataclass(a):
                return a
    return None


def _convert(value: Any, tp, path: str, root) -> Any:
    """``value`` checked against type ``tp`` (converted where lossless: int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return copy.deepcopy(value)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, path, root)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{path}: must be one of {', '.join(map(repr, choices))}; got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return copy.deepcopy(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping (section), got {value!r}")
        return from_dict(tp, value, path, root)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{path}.{i}", root) for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{path}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{path}.{i}", root) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_convert(k, kt, path, root): _convert(v, vt, f"{path}.{k}", root) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def from_dict(cls: Type[T], data: Dict[str, Any], path: str = "", root=None) -> T:
    """Build dataclass ``cls`` from ``data`` over its defaults; unknown keys and wrong types raise ConfigError."""
    root = root or cls
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints or str(key).startswith("_"):
            raise _unknown(path, str(key), cls, root)
        kwargs[key] = _convert(value, hints[key], f"{path}.{key}" if path else key, root)
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check()
    return obj


def to_dict(obj) -> Dict[str, Any]:
    """Plain data (dicts, lists, scalars) of a config dataclass; tuples become lists."""
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(obj))


REPLACE = {"merge": "replace"}  # field metadata: a file's value replaces the default instead of merging into it


def merge(base: Dict[str, Any], update: Dict[str, Any], cls=None) -> Dict[str, Any]:
    """Deep merge of plain dicts: mappings merge key by key, anything else in ``update`` replaces. With the schema
    ``cls``, fields marked with :data:`REPLACE` metadata (e.g. a recipe's ``runs``) are replaced whole."""
    out = copy.deepcopy(base)
    fields = {f.name: f for f in dataclasses.fields(cls)} if cls is not None else {}
    hints = _hints(cls) if cls is not None else {}
    for k, v in (update or {}).items():
        f = fields.get(k)
        if f is not None and f.metadata.get("merge") == "replace":
            out[k] = copy.deepcopy(v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v, _dataclass_of(hints[k]) if k in hints else None)
        else:
            out[k] = copy.deepcopy(v)
    return out


# -- overrides --------------------------------------------------------------------------------------------------


def parse_override(item: str) -> Tuple[List[str], Any]:
    """``"a.b=v"`` -> ``(["a", "b"], v)`` with ``v`` parsed as YAML 1.2."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. train.lr=1e-3)")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty part in key {key!r}")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc.problem})") from None
    return parts, value


def _strip_optional(tp):
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str], cls=None) -> Dict[str, Any]:
    """Set each ``key=value`` of ``overrides`` in a copy of the plain config ``data``.

    Keys must be fields of the schema ``cls`` (ConfigError naming the nearest known key otherwise); mappings typed as
    free-form (``data.partitions``, the annotators recipe's ``runs``) take new keys; lists take integer positions."""
    data = copy.deepcopy(data)
    for item in overrides:
        parts, value = parse_override(item)
        node, tp = data, cls
        for i, part in enumerate(parts):
            here = ".".join(parts[:i])
            if isinstance(node, list):
                if not re.fullmatch(r"-?\d+", part) or not -len(node) <= int(part) < len(node):
                    raise ConfigError(f"override {item!r}: {part!r} is not a position in {here!r} "
                                      f"(a list of {len(node)})")
                key: Any = int(part)
                tp = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
            elif isinstance(node, dict):
                key = part
                if tp is not None and dataclasses.is_dataclass(tp):
                    hints = _hints(tp)
                    if part not in hints or part.startswith("_"):
                        raise _unknown(here, part, tp, cls, parts[i + 1:])
                    tp = hints[part]
                else:
                    tp = typing.get_args(tp)[1] if typing.get_origin(tp) is dict else None
            else:
                raise ConfigError(f"override {item!r}: {here!r} is a value ({node!r}), not a section")
            tp = _strip_optional(tp)
            if i == len(parts) - 1:
                node[key] = value
            else:
                if isinstance(node, dict) and not isinstance(node.get(key), (dict, list)):
                    node[key] = {}
                node = node[key]
    return data


# -- shared sections --------------------------------------------------------------------------------------------


@dataclass
class SchedulerConfig:
    """Learning-rate schedule: ``none`` (constant ``lr``; the default: a recipe sets the schedule its paper uses),
    ``plateau`` (``ReduceLROnPlateau`` on the validation loss: ``factor``, ``patience``; stepped per epoch) or
    ``onecycle`` (``OneCycleLR`` with ``max_lr = lr``: ``pct_start``, ``div_factor``, ``final_div_factor``; stepped
    per optimiser step over ``epochs``)."""

    name: Literal["none", "plateau", "onecycle"] = "none"
    factor: float = 0.1
    patience: int = 5
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4


@dataclass
class EarlyStoppingConfig:
    """Stop after ``patience`` epochs without a lower validation loss, never before ``min_epochs``;
    ``patience: null`` disables early stopping."""

    patience: Optional[int] = 10
    min_epochs: int = 1


@dataclass
class TrainConfig:
    """The ``train`` section: what :class:`sermodels.train.Trainer` needs. ``batch_size`` is the global batch
    (split evenly over DDP ranks); ``amp`` (float16 autocast + GradScaler) applies on CUDA only."""

    epochs: int = 500
    batch_size: int = 32
    eval_batch_size: int = 256
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    deterministic: bool = True
    amp: bool = True
    progress: bool = True
    tensorboard: bool = False

    def check(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr >= 0:
            raise ConfigError(f"train.lr must be >= 0, got {self.lr}")


@dataclass
class DataConfig:
    """The ``data`` section shared by every recipe (recipes add their own keys); see the module docstring."""

    corpus: Optional[str] = None
    root: Optional[str] = None
    split: Optional[str] = None
    partitions: Dict[str, str] = field(default_factory=dict)
    rating_range: Optional[Tuple[float, float]] = None

    def check(self) -> None:
        if self.rating_range is not None and not self.rating_range[0] < self.rating_range[1]:
            raise ConfigError(f"data.rating_range must be [lo, hi] with lo < hi, got {list(self.rating_range)}")


@dataclass
class RecipeConfig:
    """Top-level keys of every recipe's ``Config``."""

    recipe: str = ""
    seeds: List[int] = field(default_factory=lambda: [0])
    device: str = "auto"

    def check(self) -> None:
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct, got {self.seeds}")


# Keys that change neither the trained weights nor the results: left out of a run's fingerprint.
PRESENTATION_KEYS = ("train.progress", "train.tensorboard", "data.root", "features.cache_dir", "device")


def build(cls: Type[T], path: Optional[str] = None, overrides: Sequence[str] = (),
          base: Optional[Dict[str, Any]] = None) -> T:
    """Config ``cls``: its defaults, ``base`` (plain dict), the YAML file ``path``, then ``overrides``."""
    data = to_dict(cls())
    if base:
        data = merge(data, base, cls)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        loaded = load_yaml(p.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level, got {type(loaded).__name__}")
        try:
            from_dict(cls, merge(data, loaded, cls))
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None
        data = merge(data, loaded, cls)
    return from_dict(cls, apply_overrides(data, overrides, cls))
