"""Each recipe runs end to end through the one recipe interface, ``get_recipe(name).run(config, *, corpus,
data_root, out_dir)``, on small synthetic corpora and prints its paper-style table.

Offline: random-init tiny transformers configs are written with ``save_pretrained`` and loaded by path
(``tiny:<arch>`` model specs); HF_HUB_OFFLINE=1 (tests/conftest.py). One thread per test keeps the shared CPU usable.
"""
import json
import math
import os

import pytest
import torch

from sermodels.data.synthetic import write_synthetic_corpus
from sermodels.recipes import get_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    specs = {"iemocap": 40, "compare-share": 48, "msp-podcast": 40, "msp-improv": 36}
    for i, (fmt, n) in enumerate(specs.items()):
        write_synthetic_corpus(root / fmt, fmt=fmt, n_utterances=n, n_annotators=6, seed=i, engine="numpy")
    return root


def _finite(x):
    return isinstance(x, float) and math.isfinite(x)


def _outputs_written(out):
    assert os.path.isfile(out / "results.json") and os.path.isfile(out / "table.txt")
    json.loads((out / "results.json").read_text())


def test_label_embedding_recipe(corpora, tmp_path, capsys):
    cfg = {"train": {"sets": ["S2"], "losses": ["logcosh"], "epochs": 2}}
    res = get_recipe("label_embedding").run(cfg, corpus="iemocap", data_root=corpora / "iemocap", out_dir=tmp_path)
    printed = capsys.readouterr().out
    for title in ("Table 1", "Table 3", "Table 5", "Table 6", "Baseline (cross-entropy)"):
        assert title in printed
    s = res["summary"]
    assert set(s) == {"M2_logcosh", "baseline_ce"}
    m2 = s["M2_logcosh"]
    assert 0 <= m2["UA"] <= 1 and 0 <= m2["WA"] <= 1 and 0 <= s["baseline_ce"]["UA"] <= 1
    assert all(-1 <= m2[f"cos_{k}"] <= 1 for k in ("S1", "S2", "S3"))
    assert all(0 <= m2[f"top10_{k}_l1"] <= 1 for k in ("S2", "S3"))
    fold = res["per_fold"]["M2_logcosh"][0]
    assert fold["neighbours"] and all(len(v) == 5 for v in fold["neighbours"].values())
    _outputs_written(tmp_path)


def test_emotion_share_recipe(corpora, tmp_path, capsys):
    # Table 1's feature-set rows from one command: two feature sets x the two architectures
    cfg = {"features": {"audio_model": ["tiny:hubert", "fbank40"]}, "train": {"epochs": 2}}
    res = get_recipe("emotion_share").run(cfg, corpus="compare-share", data_root=corpora / "compare-share",
                                          out_dir=tmp_path)
    printed = capsys.readouterr().out
    rows = {f"{f}, Architecture {a}" for f in ("tiny:hubert", "Acoustic features (40-d fbank)") for a in (1, 2)}
    assert set(res["rho"]) == rows
    for r in res["rho"].values():
        assert len(r) == 10 and all(_finite(v) and -1 <= v <= 1 for v in r.values())
    table1, table2 = printed[printed.index("Table 1"):].split("\n\n")[:2]
    lines = table1.splitlines()
    assert lines[1].split()[:3] == ["Features", "Regressor", "Anger"] and lines[1].split()[-1] == "mean"
    body = lines[3:]
    assert len(body) == 5 and body[-1].startswith("Baseline [16] (paper)") and "0.500" in body[-1]
    assert table2.startswith("Table 2") and "100(a-b)/b" in table2
    for name in ("tiny:hubert", "Acoustic features (40-d fbank)"):
        row = next(line for line in table2.splitlines() if line.startswith(name))
        best = max(res["rho"][f"{name}, Architecture {a}"]["mean"] for a in (1, 2))
        assert f"{100 * (best - 0.5) / 0.5:.1f}" in row
    # Figure 2: predicted vs true share per emotion for the best row; Figure 3: architecture 1 vs 2
    scatter = (tmp_path / "scatter.csv").read_text().splitlines()
    assert len(scatter) == 1 + 9 * res["n_eval"] and res["scatter"]["row"] in rows
    assert (tmp_path / "scatter.png").stat().st_size > 0 and (tmp_path / "architectures.png").stat().st_size > 0
    _outputs_written(tmp_path)


def test_emotion_share_per_emotion_models(corpora, tmp_path, capsys):
    res = get_recipe("emotion_share").run({"model": {"per_emotion": True, "architectures": [1]},
                                           "train": {"epochs": 1}}, corpus="compare-share",
                                          data_root=corpora / "compare-share", out_dir=tmp_path)
    assert len([d for d in os.listdir(tmp_path) if d.startswith("arch1_")]) == 9  # one model per emotion
    assert _finite(res["rho"]["tiny:hubert, Architecture 1"]["mean"])
    assert "one model per emotion" in (tmp_path / "table.txt").read_text()


def test_distilled_recipe_with_layer_analysis(corpora, tmp_path, capsys):
    cfg = {"train": {"epochs": 2, "lr": 1e-2}}
    res = get_recipe("distilled").run(cfg, corpus="msp-podcast", data_root=corpora / "msp-podcast", out_dir=tmp_path)
    printed = capsys.readouterr().out
    assert "Table 1" in printed and "Figure 2" in printed
    for run in ("audio", "audio+text"):
        for part in ("seen", "unseen"):
            assert all(_finite(v) for v in res["rows"][run][part].values())
    assert res["rows"]["audio+text"]["params_M"] > res["rows"]["audio"]["params_M"]
    for w in res["layer_importance"].values():
        assert len(w) == 3 and sum(w) == pytest.approx(1.0, abs=1e-6)
        assert max(w) - min(w) > 1e-4  # the softmax layer weights were trained
    assert "Figure 2: normalised layer importance" in printed
    assert (tmp_path / "layer_importance.png").stat().st_size > 0
    _outputs_written(tmp_path)


def test_distilled_ft_then_frozen(corpora, tmp_path, capsys):
    cfg = {"model": {"ft_frz": True, "layer_analysis": False}, "train": {"epochs": 1}}
    res = get_recipe("distilled").run(cfg, corpus="msp-podcast", data_root=corpora / "msp-podcast", out_dir=tmp_path)
    printed = capsys.readouterr().out
    assert {"audio", "audio+text", "audio+text_ft_frz"} <= set(os.listdir(tmp_path))
    assert all(_finite(v) for v in res["rows"]["audio+text FT=>FRZ"]["seen"].values())
    # Figure 3: the valence gain of audio+text over audio only, FT vs FT=>FRZ, seen and unseen
    gain = res["valence_gain"]["tiny:hubert"]
    for fusion, key in (("FT", "audio+text"), ("FT=>FRZ", "audio+text FT=>FRZ")):
        va, vat = res["rows"]["audio"]["seen"]["Valence"], res["rows"][key]["seen"]["Valence"]
        assert gain[fusion]["seen"] == pytest.approx(100 * (vat - va) / abs(va)) and _finite(gain[fusion]["unseen"])
    assert "Figure 3: relative valence CCC improvement" in printed
    assert (tmp_path / "valence_gain.png").stat().st_size > 0
    table1 = printed[printed.index("Table 1"):].split("\n\n")[0]
    assert "FT=>FRZ" not in table1  # Table 1 holds the paper's Audio and Audio + Text rows only


def test_continual_recipe_finetune_exper_gem(corpora, tmp_path, capsys):
    cfg = {"train": {"memory": {"size": 9}, "epochs": 2}, "eval": {"sampling_study": ["gender"]}}
    res = get_recipe("continual").run(cfg, corpus="msp-podcast,msp-improv,iemocap", data_root=corpora,
                                      out_dir=tmp_path)
    printed = capsys.readouterr().out
    for text in ("Table 2", "Initial Model", "Finetuning", "ExpeR", "GEM", "Table 3", "Gender"):
        assert text in printed
    assert res["stages"] == ["P", "P+M", "P+M+I"]
    for key in ("finetune:random", "exper:random", "gem:random", "exper:gender"):
        for stage in ("P+M", "P+M+I"):
            per_corpus = res["summary"][key][stage]
            assert set(per_corpus) == {"msp-podcast", "msp-improv", "iemocap"}  # seen and unseen corpora
            for m in per_corpus.values():
                assert 0 <= m["act_uar"][0] <= 1 and 0 <= m["val_uar"][0] <= 1
    steps = res["gem_steps"]["gem:random"]
    assert steps["P+M"]["steps"] > 0 and 0 <= steps["P+M"]["projected"] <= steps["P+M"]["steps"]
    _outputs_written(tmp_path)


def test_cli_runs_a_registered_recipe_and_reprints_its_tables(corpora, tmp_path, capsys):
    from sermodels.cli import main

    args = ["train", "emotion_share", "--corpus", "compare-share", "--data-root", str(corpora / "compare-share"),
            "--output-dir", str(tmp_path), "train.epochs=1", "model.architectures=[1]"]
    assert main(args) == 0
    assert "Table 1" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path)]) == 0
    assert "Table 1" in capsys.readouterr().out
    assert main(["plot", str(tmp_path)]) == 0 and (tmp_path / "learning_curves.png").is_file()
    assert main(args[:-1] + ["model.architectures=[2]"]) == 2  # another config into the same folder
    assert "model.architectures: [1] -> [2]" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["annotators", "label_embedding", "distilled", "emotion_share", "continual"])
def test_every_recipe_has_the_one_interface(name):
    import inspect

    from sermodels.config import ConfigError, build, to_dict

    recipe = get_recipe(name)
    params = inspect.signature(recipe.run).parameters
    assert list(params)[0] == "config"
    assert all(params[p].kind is inspect.Parameter.KEYWORD_ONLY
               for p in ("corpus", "data_root", "out_dir", "runs", "overwrite"))
    ev = inspect.signature(recipe.evaluate).parameters
    assert list(ev)[0] == "run_dir" and {"corpus", "data_root", "split", "partition", "rating_range"} <= set(ev)
    cfg = build(recipe.Config)
    assert cfg.recipe == name
    assert {"data", "features", "model", "train", "eval", "seeds", "device"} <= set(to_dict(cfg))
    assert {"corpus", "root", "split", "partitions", "rating_range"} <= set(to_dict(cfg)["data"])
    with pytest.raises(ConfigError, match="did you mean 'train.epochs'"):
        build(recipe.Config, overrides=["train.epoch=1"])


def test_ring_buffer_task_ignores_replayed_memory_items():
    from torch.utils.data import Subset

    from sermodels.continual import RingBuffer
    from sermodels.models.continual import ContinualSERNet
    from sermodels.recipes._common import pad_collate
    from sermodels.recipes.continual import ReplayedMemory, RingBufferTask

    items = [{"audio": torch.randn(4), "text": torch.randn(3), "y": torch.rand(2), "idx": torch.tensor(i)}
             for i in range(6)]
    memory = ReplayedMemory(Subset(items, [1, 4]))
    batch = pad_collate([items[0], items[2], memory[0], memory[1]])
    buffer = RingBuffer(10)
    RingBufferTask(buffer).losses(ContinualSERNet(4, 3, hidden=8, text_hidden=4).train(), batch, ["loss"])
    assert buffer.items() == [0, 2]


def test_distilled_transcribes_missing_transcripts_with_an_asr_folder(corpora, tmp_path):
    """``asr_model``: a (random-init, tiny) CTC model folder fills utterances without a transcript."""
    import transformers as tf

    from sermodels.data import load_corpus
    from sermodels.recipes._common import TINY
    from sermodels.recipes.distilled import _transcribe

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: i + 5 for i, c in enumerate("abcdefgh")}}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    fe = tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                     return_attention_mask=True)
    tf.Wav2Vec2Processor(feature_extractor=fe, tokenizer=tf.Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"))
                         ).save_pretrained(tmp_path)
    torch.manual_seed(0)
    tf.Wav2Vec2ForCTC(tf.Wav2Vec2Config(num_hidden_layers=1, vocab_size=len(vocab), **TINY["wav2vec2"])
                      ).save_pretrained(tmp_path)
    utts = load_corpus("msp-podcast", corpora / "msp-podcast").utterances[:2]
    kept = utts[1].transcript
    utts[0].transcript = None
    _transcribe(utts, str(tmp_path))
    assert isinstance(utts[0].transcript, str) and utts[1].transcript == kept
