"""Inference from a run folder: ``sermodels.load_run(RUN_DIR).predict(["a.wav"], transcripts=["..."])``.

:func:`load_run` reads the folder's ``config.yaml`` and returns the recipe's predictor over the best checkpoints
(each ``best.pt`` carries the architecture and feature settings it needs). Recipes with a predictor: ``annotators``
(per file: the k x k distribution table of each run x seed, and each trained annotator's prediction).
:func:`write_predictions` writes one JSON and one CSV file per input file.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .config import ConfigError
from .runs import atomic_write_text, read_config, write_json

PREDICTORS = {"annotators": "sermodels.recipes.annotators:Predictor"}


def load_run(run_dir, runs: Optional[Sequence[str]] = None, seeds: Optional[Sequence[int]] = None,
             device: Optional[str] = None):
    """The predictor of the run folder ``run_dir`` (every named run x seed with a ``best.pt``, or ``runs`` /
    ``seeds``)."""
    from importlib import import_module

    recipe = read_config(run_dir).get("recipe")
    if recipe not in PREDICTORS:
        raise ConfigError(f"{run_dir} is a {recipe!r} run; prediction is available for: {', '.join(PREDICTORS)}")
    module, cls = PREDICTORS[recipe].split(":")
    return getattr(import_module(module), cls)(run_dir, runs=runs, seeds=seeds, device=device)


def _csv(item: Dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run", "seed", "variant", "activation_bin", "activation_range", "valence_bin", "valence_range",
                "probability"])
    for p in item["predictions"]:
        act, val = p["bins"]["activation"], p["bins"]["valence"]
        for i, row in enumerate(p["distribution"]):
            for j, prob in enumerate(row):
                w.writerow([p["run"], p["seed"], p["variant"], i, f"{act[i][0]:g}..{act[i][1]:g}", j,
                            f"{val[j][0]:g}..{val[j][1]:g}", f"{prob:.6g}"])
    return buf.getvalue()


def write_predictions(items: List[Dict[str, Any]], out_dir) -> List[Path]:
    """``<stem>.json`` (everything) and ``<stem>.csv`` (one row per table cell) per predicted file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for item in items:
        stem = Path(item["file"]).stem
        write_json(out / f"{stem}.json", item)
        atomic_write_text(out / f"{stem}.csv", _csv(item))
        written += [out / f"{stem}.json", out / f"{stem}.csv"]
    return written
