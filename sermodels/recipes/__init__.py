"""Recipe registry: ``sermodels train <name>`` runs ``get_recipe(name).run``.

Every recipe is a module with the same interface:

- ``Config``: its typed config (:mod:`sermodels.config`: sections ``data``, ``features``, ``model``, ``train``,
  ``eval`` and the top-level ``recipe``, ``seeds``, ``device``), whose defaults are the recipe's defaults;
- ``run(config, *, corpus=None, data_root=None, out_dir, runs=None, overwrite=False) -> dict``: trains and
  evaluates into the run folder ``out_dir`` (:mod:`sermodels.runs`); ``config`` is a ``Config`` or a plain dict
  merged over the defaults; ``corpus`` / ``data_root`` replace ``data.corpus`` / ``data.root``; ``runs`` selects
  named runs (:func:`run_names`);
- ``evaluate(run_dir, *, corpus=None, data_root=None, split=None, partition=None, rating_range=None) -> dict``: the
  tables of a finished run folder, or (recipes with per-annotator models) its best checkpoints evaluated on one
  partition of a split of a corpus; recipes without that refuse the options by name;
- ``tables(config, results) -> str`` and ``run_names(config) -> list`` (the names ``--run`` accepts; empty when
  the recipe has no separately runnable parts);
- ``CURVE_METRICS``: validation metrics the learning-curve plot prefers (:mod:`sermodels.plots`);
- ``figures(config, results, run_dir) -> list of paths``: the paper's figures of a finished run as files (recipes
  whose paper has figures; :func:`sermodels.plots.plot_run` calls it too).

Shipped configs: ``configs/<recipe>_paper.yaml`` (every recipe: its paper's protocol, key by key with the paper's
words) and a few more (``annotators_table2.yaml``); ``--config paper`` names one by its short name
(:func:`config_path`).

Modules are imported lazily so that one recipe's optional dependencies never break another.
"""
from __future__ import annotations

from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Dict, Optional, Sequence

from ..config import ConfigError, build

RECIPES = {
    "annotators": "sermodels.recipes.annotators",
    "label_embedding": "sermodels.recipes.label_embedding",
    "distilled": "sermodels.recipes.distilled",
    "emotion_share": "sermodels.recipes.emotion_share",
    "continual": "sermodels.recipes.continual",
}


def get_recipe(name: str) -> ModuleType:
    """The module of recipe ``name``; ``ConfigError`` listing the known recipes otherwise."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}")
    return import_module(RECIPES[name])


CONFIG_DIR = Path(__file__).parent / "configs"


def shipped_configs(name: str) -> Dict[str, Path]:
    """The YAML configs shipped for recipe ``name``: ``{short name: path}`` of ``configs/<name>_<short>.yaml``
    (``paper`` = the paper's protocol, key by key)."""
    prefix = f"{name}_"
    return {p.stem[len(prefix):]: p for p in sorted(CONFIG_DIR.glob(f"{prefix}*.yaml"))}


def config_path(name: str, path: Optional[str]) -> Optional[str]:
    """``path`` itself when it is a file (or None); a shipped config's short name (``paper``, ``table2``) becomes
    the path of ``configs/<name>_<short>.yaml``; ConfigError naming the shipped ones for anything else."""
    if path is None or Path(path).is_file():
        return path
    shipped = shipped_configs(name)
    if str(path) in shipped:
        return str(shipped[str(path)])
    raise ConfigError(f"config file not found: {path} (shipped configs of {name!r}: "
                      f"{', '.join(shipped) or 'none'}, e.g. --config paper)")


def load_config(name: str, path: Optional[str] = None, overrides: Sequence[str] = ()):
    """The effective ``Config`` of recipe ``name``: defaults, then the YAML file ``path`` (or a shipped config's
    short name, :func:`config_path`), then ``overrides``."""
    path = config_path(name, path)
    cfg = build(get_recipe(name).Config, path, overrides)
    if cfg.recipe != name:
        raise ConfigError(f"{path or 'config'}: recipe {cfg.recipe!r} does not match {name!r}")
    return cfg


def check_runs(name: str, config, runs: Optional[Sequence[str]]) -> None:
    """``ConfigError`` naming the accepted names when ``runs`` (``--run``) holds a name recipe ``name`` lacks."""
    if not runs:
        return
    known = get_recipe(name).run_names(config)
    if not known:
        raise ConfigError(f"recipe {name!r} has no named runs; --run applies to: "
                          + ", ".join(r for r in RECIPES if get_recipe(r).run_names(build(get_recipe(r).Config))))
    bad = [r for r in runs if r not in known]
    if bad:
        raise ConfigError(f"--run {', '.join(bad)}: not a run of this config; runs: {', '.join(known)}")
