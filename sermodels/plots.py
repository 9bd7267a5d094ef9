"""Figures of a run folder (``sermodels plot RUN_DIR``; the demo uses the same code).

- ``learning_curves.png``: per epoch, one validation metric that every trainer of the folder reports (the recipe's
  ``CURVE_METRICS``, first shared one: e.g. the 4x4 TVD for the annotators recipe, whose runs optimise different
  losses); colour = run, line style = seed, a star on each curve's best epoch (lowest validation loss, the
  checkpoint that was evaluated). When no metric is shared, one panel per run shows its own validation loss.
- ``distributions.png`` (recipes that write ``examples.json``: annotators): target and predicted k x k tables of a
  few test utterances, one colour scale with a colour bar, the bins' rating ranges on the axes, each predicted
  panel titled with its TVD to the target.
- the paper's figures of recipes that have a ``figures(config, results, run_dir)`` function (distilled: Figures 2
  and 3; emotion_share: Figures 2 and 3), redrawn from the run's ``results.json`` and data files.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .runs import read_config, trainer_dirs

STYLES = ("-", "--", ":", "-.")


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (figures are written as files, never shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(run_dir: Path, trainer_dir: Path) -> Tuple[str, Optional[int]]:
    """``(run label, seed)`` of a trainer folder: its path without the ``seed<N>`` part."""
    parts = trainer_dir.relative_to(run_dir).parts
    seed = next((int(m.group(1)) for p in parts for m in [re.fullmatch(r"seed(\d+)", p)] if m), None)
    return "/".join(p for p in parts if not re.fullmatch(r"seed\d+", p)) or ".", seed


def _curves(run_dir: Path) -> Dict[Tuple[str, Optional[int]], List[dict]]:
    return {_label(run_dir, d): json.loads((d / "metrics.json").read_text()) for d in trainer_dirs(run_dir)}


def shared_metric(curves: Dict[Tuple[str, Optional[int]], List[dict]], candidates) -> Optional[str]:
    """The first of ``candidates`` that every curve has in every epoch (None if none)."""
    for key in candidates:
        if curves and all(rows and all(key in r for r in rows) for rows in curves.values()):
            return key
    return None


def plot_learning_curves(run_dir, path, candidates=("val_loss",)) -> Path:
    """``learning_curves.png`` of ``run_dir`` (see the module docstring)."""
    plt = pyplot()
    run_dir = Path(run_dir)
    curves = _curves(run_dir)
    if not curves:
        raise FileNotFoundError(f"no metrics.json under {run_dir}: nothing to plot")
    labels = list(dict.fromkeys(label for label, _ in curves))
    seeds = sorted({s for _, s in curves if s is not None})
    metric = shared_metric(curves, candidates)
    panels = [(metric, labels)] if metric else [("val_loss", [label]) for label in labels]
    cols = min(3, len(panels))
    rows_n = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 3.6 * rows_n), squeeze=False)
    for ax, (key, shown) in zip(axes.flat, panels):
        for (label, seed), rows in curves.items():
            if label not in shown:
                continue
            colour = f"C{labels.index(label) % 10}"
            style = STYLES[seeds.index(seed) % len(STYLES)] if seed is not None else "-"
            epochs = [r["epoch"] for r in rows]
            ax.plot(epochs, [r.get(key, np.nan) for r in rows], color=colour, linestyle=style,
                    label=label + (f" seed {seed}" if seed is not None else ""))
            best = min(range(len(rows)), key=lambda i: rows[i]["val_loss"])
            ax.plot(epochs[best], rows[best].get(key, np.nan), marker="*", markersize=11, color=colour,
                    markeredgecolor="k", linestyle="none")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key.replace("val_", "validation "))
        ax.set_title(f"{key} ({'every run' if metric else shown[0]}); * = best epoch", fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_distributions(examples: Dict[str, dict], path, bins: Dict[str, List[List[float]]]) -> Path:
    """Target and predicted tables of the same utterances: ``examples[name]`` holds ``utterance_ids``, ``target``
    and ``predicted`` (``(N, k, k)`` nested lists, rows = activation); ``bins[dim]`` = each bin's ``[lo, hi]`` on
    the rating scale of ``dim`` (activation, valence)."""
    import kdekit
    import torch

    plt = pyplot()
    first = next(iter(examples.values()))
    ids, target = first["utterance_ids"], np.asarray(first["target"])
    panels = [("target", target, None)] + [
        (name, np.asarray(ex["predicted"]),
         kdekit.tvd(torch.as_tensor(ex["predicted"], dtype=torch.float64),
                    torch.as_tensor(target, dtype=torch.float64), dim=(-2, -1)).numpy())
        for name, ex in examples.items()]
    vmax = max(float(p.max()) for _, p, _ in panels)
    k = target.shape[-1]
    ticks = {d: [f"{lo:.3g}-{hi:.3g}" for lo, hi in b] for d, b in bins.items()}
    fig, axes = plt.subplots(len(ids), len(panels), figsize=(2.9 * len(panels) + 1.0, 2.7 * len(ids)), squeeze=False)
    image = None
    for r, uid in enumerate(ids):
        for c, (name, tables, tvd) in enumerate(panels):
            ax = axes[r, c]
            image = ax.imshow(tables[r], origin="lower", cmap="viridis", vmin=0.0, vmax=vmax)
            for (i, j), v in np.ndenumerate(tables[r]):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="w" if v < 0.6 * vmax else "k")
            ax.set_xticks(range(k), ticks["valence"], fontsize=6, rotation=45)
            ax.set_yticks(range(k), ticks["activation"], fontsize=6)
            ax.set_title(name if tvd is None else f"{name}\nTVD {tvd[r]:.3f}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{uid[-16:]}\nactivation", fontsize=7)
            if r == len(ids) - 1:
                ax.set_xlabel("valence", fontsize=7)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    bar = fig.add_axes((0.94, 0.15, 0.015, 0.7))
    fig.colorbar(image, cax=bar, label="probability")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_run(run_dir, out=None) -> List[Path]:
    """Every figure of the run folder ``run_dir`` into ``out`` (default: ``run_dir``); returns the paths."""
    from .config import build
    from .recipes import get_recipe

    run_dir = Path(run_dir)
    recipe = get_recipe(read_config(run_dir).get("recipe", ""))
    cfg = build(recipe.Config, base=read_config(run_dir))
    out = Path(out) if out is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    k = getattr(getattr(cfg.data, "labels", None), "k", None)
    candidates = [m.format(k=k) for m in recipe.CURVE_METRICS]
    written = [plot_learning_curves(run_dir, out / "learning_curves.png", candidates)]
    examples = {}
    for f in sorted(run_dir.rglob("examples.json")):
        label, seed = _label(run_dir, f.parent)
        if label not in {lb for lb, _ in examples} and label in getattr(cfg, "runs", {label: None}):
            ex = json.loads(f.read_text())
            examples[(label, seed)] = ex
    if examples:
        named = {f"{label} (seed {seed}, {ex['variant']})": ex for (label, seed), ex in examples.items()}
        written.append(plot_distributions(named, out / "distributions.png", recipe.bin_ranges(cfg, k, run_dir)))
    results = run_dir / "results.json"
    if hasattr(recipe, "figures") and results.is_file():
        written += recipe.figures(cfg, json.loads(results.read_text()), run_dir, out)
    return written
