"""Command line: ``sermodels <command> ...`` (also ``python -m sermodels``).

::

    sermodels train annotators --corpus msp-improv --data-root DIR [--config FILE] [--output-dir DIR]
                               [--run NAME ...] [key=value ...]
    sermodels evaluate RUN_DIR [--corpus NAME --data-root DIR [--split NAME]] [key=value ...]
    sermodels labels --corpus NAME --data-root DIR --out FILE.pt [--k 4] [--grid 512] [--seed 0] [--split SCHEME]
    sermodels features --corpus NAME --data-root DIR --cache-dir DIR [--audio-model ID_OR_PATH] [--text-model ...]
    sermodels demo [--out DIR] [--seeds N]

``train annotators`` runs every run x seed of the config (default: the recipe's Table 1 config) and prints the
paper-style table; the other recipes of :data:`sermodels.recipes.RECIPES` get ``run(config, corpus, data_root,
out_dir)`` with ``config`` = ``--config`` deep-merged with the dotted ``key=value`` overrides. ``train`` it runs unchanged under ``torchrun --nproc_per_node=K -m sermodels train ...`` (DDP). ``key=value``
overrides any config key (YAML value; ``a.b=v`` for nested keys, or a bare key that exists in one section, e.g.
``epochs=2``). ``evaluate`` re-prints the tables of a finished run directory, or evaluates its best checkpoints on
another corpus (zero-shot, all annotators' heads).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from .recipes import RECIPES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sermodels", description="Speech emotion recognition recipes built on kdekit.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a recipe (every run x seed of its config) and print its table")
    t.add_argument("recipe", choices=sorted(RECIPES))
    t.add_argument("--corpus", help="corpus name (sermodels.data.load_corpus); overrides the config's")
    t.add_argument("--data-root", help="path of the corpus on disk")
    t.add_argument("--config", help="YAML config (default: the recipe's Table 1 config)")
    t.add_argument("--output-dir", help="where runs are written (overrides the config's output_dir)")
    t.add_argument("--run", action="append", help="train only this run of the config (repeatable)")
    t.add_argument("overrides", nargs="*", metavar="key=value")

    e = sub.add_parser("evaluate", help="print a finished run's tables, or evaluate it zero-shot on a corpus")
    e.add_argument("run_dir")
    e.add_argument("--corpus", help="evaluate the best checkpoints on this corpus (zero-shot, all heads)")
    e.add_argument("--data-root")
    e.add_argument("--split", default="all", help="split of --corpus to evaluate (default: all utterances)")
    e.add_argument("overrides", nargs="*", metavar="key=value")

    lab = sub.add_parser("labels", help="scaled per-annotator ratings and k x k distribution targets of a corpus")
    lab.add_argument("--corpus", required=True)
    lab.add_argument("--data-root", required=True)
    lab.add_argument("--out", required=True, help="output .pt file (tensors + utterance ids + annotator index)")
    lab.add_argument("--k", type=int, default=4)
    lab.add_argument("--grid", type=int, default=512)
    lab.add_argument("--seed", type=int, default=0)
    lab.add_argument("--split", help="split scheme to assign (sermodels.data.splits)")
    lab.add_argument("--min-annotators", type=int, default=2)

    f = sub.add_parser("features", help="extract and cache frozen speech/text features of a corpus")
    f.add_argument("--corpus", required=True)
    f.add_argument("--data-root", required=True)
    f.add_argument("--cache-dir", required=True)
    f.add_argument("--audio-model", default="facebook/wav2vec2-base")
    f.add_argument("--audio-layer", type=int, default=-1)
    f.add_argument("--audio-pooling", default="mean")
    f.add_argument("--text-model", default="google/bert_uncased_L-4_H-512_A-8")
    f.add_argument("--text-layer", type=int, default=-1)
    f.add_argument("--text-pooling", default="cls")
    f.add_argument("--device", default=None)

    d = sub.add_parser("demo", help="the README's main job: synthetic corpus -> features -> baseline vs MT -> table")
    d.add_argument("--out", default="sermodels_demo", help="output folder (default: ./sermodels_demo)")
    d.add_argument("--seeds", type=int, default=3)
    return p


def _nested_overrides(overrides: List[str]) -> dict:
    """``a.b=v`` strings -> ``{"a": {"b": v}}`` (values parsed as YAML)."""
    import yaml

    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(raw)
    return out


def _train_registered(args) -> int:
    """Recipes of the registry other than ``annotators``: ``run(config, corpus, data_root, out_dir)``."""
    import yaml

    from .recipes import get_recipe
    from .recipes.annotators import deep_merge

    config = {}
    if args.config:
        with open(args.config) as fh:
            config = yaml.safe_load(fh) or {}
    config = deep_merge(config, _nested_overrides(args.overrides))
    if not args.corpus or not args.data_root:
        raise ValueError(f"recipe {args.recipe!r} needs --corpus and --data-root")
    get_recipe(args.recipe)(config, args.corpus, args.data_root, args.output_dir or f"runs/{args.recipe}")
    return 0


def _train(args) -> int:
    if args.recipe != "annotators":
        return _train_registered(args)
    from .recipes import annotators as recipe
    from .train import cleanup_distributed, init_distributed

    cfg = recipe.load_config(args.config, args.overrides)
    if args.corpus:
        cfg["corpus"] = args.corpus
    if args.data_root:
        cfg["data_root"] = args.data_root
    if args.output_dir:
        cfg["output_dir"] = args.output_dir
    info = init_distributed(cfg.get("device", "auto"))
    try:
        recipe.run(cfg, info, runs=args.run, log=print if info.is_main else (lambda *a, **k: None))
    finally:
        cleanup_distributed()
    return 0


def _evaluate(args) -> int:
    import torch
    import yaml

    from .data.labels import AnnotatorIndex
    from .models import build_model
    from .recipes import annotators as recipe
    from .train import DistInfo

    run_dir = Path(args.run_dir)
    cfg_path, res_path = run_dir / "config.yaml", run_dir / "results.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: is {run_dir} a `sermodels train` output folder?")
    with open(cfg_path) as fh:
        cfg = recipe.apply_overrides(yaml.safe_load(fh), args.overrides)
    if not args.corpus:
        if not res_path.is_file():
            raise FileNotFoundError(f"{res_path} not found (training did not finish?)")
        print(recipe.tables(cfg, json.loads(res_path.read_text())))
        return 0
    if not args.data_root:
        raise ValueError("--corpus needs --data-root")
    index = AnnotatorIndex.load(run_dir / "annotator_index.json")
    info = DistInfo(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    data, _ = recipe.prepare_data(args.corpus, args.data_root, cfg, split_scheme=None, index=index,
                                  device=info.device)
    keep = range(len(data.utterance_ids)) if args.split == "all" else data.indices(args.split)
    dataset = recipe.AnnotatorDataset(data, keep)
    results = {}
    for run in cfg["runs"]:
        rc = recipe.run_config(cfg, run)
        for seed in rc["seeds"]:
            ckpt = run_dir / run / f"seed{seed}" / "best.pt"
            if not ckpt.is_file():
                continue
            model = build_model(rc["model"]["type"], data.audio.shape[1], data.text.shape[1],
                                num_annotators=len(index), k=int(rc["labels"]["k"]),
                                hidden=int(rc["model"]["hidden"]), dropout=float(rc["model"]["dropout"]))
            model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["model"])
            m = recipe.evaluate_model(model.to(info.device), dataset, rc, info, zero_shot=True)
            results.setdefault(run, []).append({"seed": seed, "test": {}, "zero_shot": {args.corpus: m}})
    if not results:
        raise FileNotFoundError(f"no best.pt checkpoints under {run_dir}")
    out = run_dir / f"zero_shot_{args.corpus}.json"
    out.write_text(json.dumps({"runs": results}, indent=1))
    from . import evaluation as ev

    base = cfg.get("baseline_run") if cfg.get("baseline_run") in results else None
    variant = {r: "model" if cfg["runs"][r]["model"]["type"] == "baseline"
               else cfg["evaluation"].get("report", "soft_own").split("_")[0] + "_all" for r in results}
    per = {args.corpus: ev.summarize_seeds({r: [s["zero_shot"][args.corpus] for s in v] for r, v in results.items()},
                                           baseline=base, variant=variant)}
    print(ev.format_table2(per, variant, k=int(cfg["labels"]["k"]), title=f"zero-shot on {args.corpus}"))
    print(f"wrote {out}")
    return 0


def _labels(args) -> int:
    import torch

    from .data import load_corpus
    from .data import labels as L
    from .data.splits import assign_split

    corpus = load_corpus(args.corpus, args.data_root, min_annotators=args.min_annotators)
    print(corpus.summary())
    utts = corpus.utterances
    splits = [None] * len(utts)
    if args.split:
        where = {u.utterance_id: name for name, members in assign_split(utts, args.corpus, args.split).items()
                 for u in members}
        splits = [where.get(u.utterance_id) for u in utts]
    index = L.AnnotatorIndex.from_utterances(utts)
    ratings, ids = L.ratings_tensor(utts, args.corpus, index=index)
    targets, status = L.distribution_targets(utts, args.corpus, k=args.k, seed=args.seed, grid=args.grid,
                                             return_status=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"utterance_ids": [u.utterance_id for u in utts], "splits": splits,
                "ratings": torch.as_tensor(ratings), "annotator_ids": torch.as_tensor(ids),
                "targets": torch.as_tensor(targets), "status": status, "annotators": list(index.ids),
                "k": args.k, "grid": args.grid, "seed": args.seed}, out)
    print(f"wrote {out}: {len(utts)} utterances, {len(index)} annotators, {args.k}x{args.k} targets")
    return 0


def _features(args) -> int:
    from .data import load_corpus
    from .data.features import extract_features

    corpus = load_corpus(args.corpus, args.data_root)
    for kind in ("audio", "text"):
        model = getattr(args, f"{kind}_model")
        if not model:
            continue
        feats = extract_features(corpus.utterances, model, kind=kind, layer=getattr(args, f"{kind}_layer"),
                                 pooling=getattr(args, f"{kind}_pooling"), cache_dir=args.cache_dir,
                                 device=args.device)
        dim = next(iter(feats.values())).shape if feats else None
        print(f"{kind}: {len(feats)} utterances, feature shape {dim}, cached in {args.cache_dir}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``sermodels`` console script and ``python -m sermodels``."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come before or after options; argparse leaves those after an option unparsed
    bad = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    if args.command == "train":
        return _train(args)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "labels":
        return _labels(args)
    if args.command == "features":
        return _features(args)
    from .demo import main as demo_main

    return demo_main(out=args.out, seeds=args.seeds)


if __name__ == "__main__":
    sys.exit(main())
