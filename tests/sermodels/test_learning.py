"""Learning tests: each recipe, run from the command line alone on a corpus that ``sermodels synth`` writes in its
real layout, learns the synthetic emotions: it beats chance (or a constant predictor) by a stated margin.

Every test runs the chain a researcher runs on a new corpus: ``synth`` -> ``labels`` -> ``features`` (an offline
spectral front end) -> ``train`` -> ``evaluate``. Tiny models, tens to a couple of hundred one-second clips, a few
dozen epochs, one thread, fixed seeds (so every run gives the same numbers); each test takes 5-25 s on one CPU core.

What each test asserts (chance level; asserted margin; value measured on the fixed seeds):

- annotators, MT model (Task 1 + 2), msp-improv layout, 96 utterances, test speakers F04 M05, Adam with a one-cycle
  schedule over 40 epochs (the plateau schedule cuts the rate before this small model fits the unnormalised log-mel
  features: the margins below then hang on the random seed): annotator-level activation CCC (chance 0; >= 0.35;
  0.55, 0.49-0.55 over random seeds 0-3), activation CCC of the predicted 4x4 tables (0; >= 0.35; 0.51, 0.40-0.51),
  and TVD of the 4x4 tables against the TVD of the best constant table, the mean training target (0.715; at least
  0.03 lower; 0.64, 0.64-0.67).
- label_embedding, M1 (S1 targets, MSE), iemocap layout, 100 utterances, test session Ses01: UA of the class decoded
  by cosine nearest neighbour (chance 0.25; >= 0.5; 0.90).
- distilled, fine-tuned audio model, msp-podcast layout, 120 utterances: arousal CCC on test1 (seen) and test2
  (unseen) (chance 0; >= 0.35; 0.74 and 0.57).
- emotion_share, architectures 1 and 2, compare-share layout, 180 utterances: mean Spearman rho over the 9 emotions
  on devel (chance 0; >= 0.3; 0.51 and 0.50).
- continual, ExpeR with length-based memories, msp-podcast + msp-improv + iemocap layouts, 120 clips of 2-5 s each,
  paper 003's 3-30 s filter: every corpus keeps some but not all utterances, every memory holds its 9 items, and
  after the last stage the activation CCC on each corpus' test partition is >= 0.35 (chance 0; 0.80, 0.83, 0.86).

The synthetic audio carries the latent emotion in its prosody (:mod:`sermodels.data.synthetic`): loudness, pitch,
spectral tilt and rate follow activation, the formants and the pitch slope valence.
"""
import json

import pytest
import torch
from corpora import synth

from sermodels.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def labels_and_features(tmp_path, corpus, root, capsys, split=None, features=("--audio-model", "logmel")):
    """``sermodels labels`` (with the partition of ``split`` per utterance) and ``sermodels features`` into
    ``tmp_path/features``; returns the saved labels and the cache folder."""
    args = ["labels", "--corpus", corpus, "--data-root", root, "--out", str(tmp_path / "labels.pt"), "--grid", "64"]
    assert main(args + (["--split", split] if split else [])) == 0
    cache = tmp_path / "features"
    assert main(["features", "--corpus", corpus, "--data-root", root, "--cache-dir", str(cache), *features,
                 "--text-model", "none"]) == 0
    out = capsys.readouterr().out
    assert "audio: " in out and "text: " not in out
    return torch.load(tmp_path / "labels.pt", weights_only=True), cache


def train(recipe, corpus, root, out, *overrides):
    assert main(["train", recipe, "--corpus", corpus, "--data-root", root, "--output-dir", str(out),
                 *overrides]) == 0
    return json.loads((out / "results.json").read_text())


def evaluate_reprints(run, capsys, title):
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    assert title in capsys.readouterr().out


def test_annotators_learn_activation_and_distributions(tmp_path, capsys):
    root = synth(tmp_path / "improv", "msp-improv", 96)
    saved, cache = labels_and_features(tmp_path, "msp-improv", root, capsys, split="speaker_independent_is2024")
    run = tmp_path / "run"
    results = train("annotators", "msp-improv", root, run, "--run", "mt", "seeds=[0]", "model.hidden=32",
                    "features.audio_model=logmel", "features.text_model=null", f"features.cache_dir={cache}",
                    "train.optimizer=adam", "train.lr=0.003", "train.scheduler.name=onecycle", "train.epochs=40",
                    "train.early_stopping.min_epochs=40",
                    "data.labels.grid=64", "eval.histograms=[soft]", "eval.ks=[4]", "train.diffkde.n_pseudo=50",
                    "train.progress=false")
    printed = capsys.readouterr().out
    assert "train: 64 utterances, 8 speakers" in printed and "test: 16 utterances, 2 speakers" in printed
    test = results["runs"]["mt"][0]["test"]
    # chance: a constant table, at best the mean target of the training partition (from `sermodels labels`)
    targets, splits = saved["targets"].double(), saved["splits"]
    prior = targets[[i for i, s in enumerate(splits) if s == "train"]].mean(0)
    held_out = targets[[i for i, s in enumerate(splits) if s == "test"]]
    prior_tvd = float((0.5 * (held_out - prior).abs().sum((1, 2))).mean())
    assert test["soft_own_k4_tvd"] <= prior_tvd - 0.03, (test["soft_own_k4_tvd"], prior_tvd)
    assert test["annotator_ccc_activation"] >= 0.35
    assert test["soft_own_k4_ccc_activation"] >= 0.35
    evaluate_reprints(run, capsys, "msp-improv test partition")


def test_label_embedding_learns_the_four_classes(tmp_path, capsys):
    root = synth(tmp_path / "iemocap", "iemocap", 100)
    saved, cache = labels_and_features(tmp_path, "iemocap", root, capsys, features=(
        "--audio-model", "mfcc", "--audio-pooling", "none"))
    assert saved["targets"].shape == (100, 4, 4)
    run = tmp_path / "run"
    results = train("label_embedding", "iemocap", root, run, "features.audio_model=mfcc", "features.layer=-1",
                    f"features.cache_dir={cache}", "model.dropout=0", "train.epochs=80", "train.lr=0.002",
                    "train.sets=[S1]", "train.losses=[mse]", "train.baseline=false", "train.scheduler.name=none",
                    "train.early_stopping.patience=null")
    assert "fold Ses01 of 100 utterances" in capsys.readouterr().out
    assert results["summary"]["M1_mse"]["UA"] >= 0.5  # 4 classes: chance 0.25
    evaluate_reprints(run, capsys, "Table 1: accuracies on the 4-label set")


def test_distilled_learns_arousal_on_seen_and_unseen_test_sets(tmp_path, capsys):
    root = synth(tmp_path / "podcast", "msp-podcast", 120)
    labels_and_features(tmp_path, "msp-podcast", root, capsys, split="official")
    run = tmp_path / "run"
    results = train("distilled", "MSP_Podcast", root, run, "model.modalities=[audio]", "model.layer_analysis=false",
                    "train.epochs=10", "train.lr=0.001")
    row = results["rows"]["audio"]
    assert row["seen"]["Arousal"] >= 0.35 and row["unseen"]["Arousal"] >= 0.35, row
    evaluate_reprints(run, capsys, "Table 1: CCC (finetune")


def test_emotion_share_learns_the_shares(tmp_path, capsys):
    root = synth(tmp_path / "compare", "compare-share", 180)
    assert main(["labels", "--corpus", "compare", "--data-root", root, "--out", str(tmp_path / "l.pt")]) == 2
    assert "holds each utterance's shares of 9 emotions, not individual annotators' ratings" in capsys.readouterr().err
    cache = tmp_path / "features"
    assert main(["features", "--corpus", "compare", "--data-root", root, "--cache-dir", str(cache), "--audio-model",
                 "logmel", "--audio-pooling", "none", "--text-model", "none"]) == 0
    run = tmp_path / "run"
    results = train("emotion_share", "compare", root, run, "features.audio_model=logmel",
                    f"features.cache_dir={cache}", "model.architectures=[1,2]", "train.epochs=50",
                    "train.scheduler.name=none", "train.early_stopping.patience=null", "data.holdout=0.25")
    for arch, rho in results["rho"].items():
        assert rho["mean"] >= 0.3, (arch, rho)
    evaluate_reprints(run, capsys, "Table 1: Spearman rho per emotion on val")


def test_continual_learns_every_corpus_with_the_duration_filter_and_length_memory(tmp_path, capsys):
    """Paper 003's 3-30 s filter and length-based memory on MSP-Podcast, MSP-Improv and IEMOCAP layouts: clips of
    2-5 s, so the filter removes some utterances and keeps the rest; every corpus' memory is full."""
    for i, corpus in enumerate(("msp-podcast", "msp-improv", "iemocap")):
        synth(tmp_path / "corpora" / corpus, corpus, 120, "--seconds", "2", "5", "--seed", str(i))
    run = tmp_path / "run"
    results = train("continual", "podcast,improv,IEMOCAP", str(tmp_path / "corpora"), run,
                    "features.audio_model=logmel", "data.min_duration=3", "data.max_duration=30", "train.epochs=15",
                    "train.optimizer=adam", "train.lr=0.003", "train.memory.size=9", "train.memory.strategy=length",
                    "train.methods=[exper]")
    printed = capsys.readouterr().out
    for corpus in ("msp-podcast", "msp-improv", "iemocap"):
        line = next(x for x in printed.splitlines() if x.startswith(f"{corpus}: the duration filter 3.0-30.0 s keeps"))
        kept = int(line.split(" keeps ")[1].split(" of ")[0])
        assert 20 <= kept < 120, line
    assert results["memory_sizes"]["exper:length"] == [{"msp-podcast": 9, "msp-improv": 9, "iemocap": 9}]
    last = results["summary"]["exper:length"]["P+M+I"]
    for corpus, metrics in last.items():
        assert metrics["act_ccc"][0] >= 0.35, (corpus, metrics)
    evaluate_reprints(run, capsys, "memory sizes (exper:length, per seed): msp-podcast 9, msp-improv 9, iemocap 9")
