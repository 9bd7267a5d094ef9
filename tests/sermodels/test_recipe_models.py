"""Shapes and padding masks of the recipe models: padding a batch never changes the outputs of its items."""
import pytest
import torch
from transformers import BertConfig, BertModel, Wav2Vec2Config, Wav2Vec2Model

from sermodels.models.continual import ContinualSERNet
from sermodels.models.distilled import DistilledSER, LayerWeightedSum
from sermodels.models.emotion_share import EmotionShareNet
from sermodels.models.label_embedding import LabelEmbeddingNet


def _padded(seqs):
    T = max(s.shape[0] for s in seqs)
    x = torch.zeros(len(seqs), T, seqs[0].shape[1])
    mask = torch.zeros(len(seqs), T, dtype=torch.bool)
    for i, s in enumerate(seqs):
        x[i, :s.shape[0]] = s
        mask[i, :s.shape[0]] = True
    return x, mask


def _check_padding_invariance(model, dim, lengths=(23, 7, 1, 16)):
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randn(L, dim, generator=g) for L in lengths]
    model.eval()
    with torch.no_grad():
        x, mask = _padded(seqs)
        x = x.masked_fill(~mask.unsqueeze(-1), 123.0)  # garbage in the padding must not leak
        batched = model(x, mask)
        alone = torch.cat([model(s[None], None) for s in seqs])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)
    return batched


def test_label_embedding_net_shapes_and_masks():
    torch.manual_seed(0)
    net = LabelEmbeddingNet(in_dim=12, out_dim=50, channels=(8, 16, 16), lstm_hidden=8, fc_hidden=32)
    out = _check_padding_invariance(net, 12)
    assert out.shape == (4, 50)


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("n_outputs", [9, 1])
def test_emotion_share_net_any_length_and_masks(attention, n_outputs):
    torch.manual_seed(1)
    net = EmotionShareNet(in_dim=10, n_outputs=n_outputs, attention=attention, channels=(16, 12, 8), lstm_hidden=12,
                          head=(8, 4))
    out = _check_padding_invariance(net, 10, lengths=(213, 3, 198, 2))  # not tied to 199 frames
    assert out.shape == (4, n_outputs)


def test_emotion_share_relu_output_is_non_negative():
    torch.manual_seed(2)
    net = EmotionShareNet(in_dim=6, channels=(8, 8, 8), lstm_hidden=8, head=(8,), output_activation="relu")
    assert (net(torch.randn(3, 20, 6)) >= 0).all()


def test_sequence_models_reject_bad_masks():
    net = EmotionShareNet(in_dim=4, channels=(4, 4, 4), lstm_hidden=4, head=(4,))
    x = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="mask must have shape"):
        net(x, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="prefix"):
        net(x, torch.tensor([[1, 1, 0, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, T, F\)"):
        net(torch.randn(5, 4))


def test_continual_net_text_only_reaches_valence():
    torch.manual_seed(3)
    net = ContinualSERNet(audio_dim=20, text_dim=16, hidden=32, text_hidden=8).eval()
    a, t = torch.randn(5, 20), torch.randn(5, 16)
    out = net(a, t)
    assert out.shape == (5, 2) and out.abs().max() < 1
    out2 = net(a, torch.randn(5, 16))
    torch.testing.assert_close(out[:, 0], out2[:, 0])  # activation ignores the text
    assert not torch.allclose(out[:, 1], out2[:, 1])
    with pytest.raises(ValueError, match="text must be"):
        net(a, None)


def _tiny_audio_encoder():
    cfg = Wav2Vec2Config(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                         conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=8,
                         num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
                         hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                         layerdrop=0.0, mask_time_prob=0.0)
    return Wav2Vec2Model(cfg)


def _tiny_text_encoder():
    return BertModel(BertConfig(vocab_size=60, hidden_size=12, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=24, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


@pytest.mark.parametrize("layer_weighting", [False, True])
def test_distilled_model_shapes_masks_and_modes(layer_weighting):
    torch.manual_seed(4)
    model = DistilledSER(_tiny_audio_encoder(), _tiny_text_encoder(), layer_weighting=layer_weighting, hidden=8).eval()
    g = torch.Generator().manual_seed(1)
    waves = [torch.randn(n, generator=g) for n in (1600, 900, 1234)]
    tokens = [torch.randint(1, 60, (n,), generator=g) for n in (5, 9, 2)]
    S, N = max(w.numel() for w in waves), max(t.numel() for t in tokens)
    wav, am = torch.zeros(3, S), torch.zeros(3, S, dtype=torch.long)
    ids, tm = torch.zeros(3, N, dtype=torch.long), torch.zeros(3, N, dtype=torch.long)
    for i, (w, t) in enumerate(zip(waves, tokens)):
        wav[i, :w.numel()], am[i, :w.numel()] = w, 1
        ids[i, :t.numel()], tm[i, :t.numel()] = t, 1
    with torch.no_grad():
        batched = model(wav, am, ids, tm)
        alone = torch.cat([model(w[None], None, t[None], None) for w, t in zip(waves, tokens)])
    assert batched.shape == (3, 3)
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)
    # modes: frozen trains only head (+ layer weights); finetune also the transformer but never the conv encoder
    model.set_mode("frozen")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith(("head", "audio_weights", "text_weights")) for n in trainable)
    model.set_mode("finetune")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("audio_encoder.encoder") for n in trainable)
    assert any(n.startswith("text_encoder") for n in trainable)
    assert not any(n.startswith("audio_encoder.feature_extractor") for n in trainable)
    imp = model.layer_importance()
    if layer_weighting:
        assert len(imp["audio"]) == 4 and len(imp["text"]) == 3
        assert sum(imp["audio"]) == pytest.approx(1.0)
    else:
        assert imp == {}


def test_layer_weighted_sum_is_softmax_weighted():
    lws = LayerWeightedSum(3)
    with torch.no_grad():
        lws.weights.copy_(torch.tensor([0.0, 1.0, -1.0]))
    h = [torch.randn(2, 4, 5) for _ in range(3)]
    w = torch.softmax(torch.tensor([0.0, 1.0, -1.0]), 0)
    torch.testing.assert_close(lws(h), w[0] * h[0] + w[1] * h[1] + w[2] * h[2])
    with pytest.raises(ValueError, match="hidden states"):
        lws(h[:2])


def test_emotion_share_attention_is_scaled_by_the_lstm_width_or_its_square_root():
    """Paper 004's eq. 2b divides Q K^T by W_l; the authors' code (``attention_scale="sqrt_width"``) by sqrt(W_l). A
    query scaled by 1/sqrt(W_l) turns the second into the first."""
    torch.manual_seed(0)
    width = 16
    paper = EmotionShareNet(in_dim=6, attention=True, channels=(8, 8, 8), lstm_hidden=width, head=(8,))
    code = EmotionShareNet(in_dim=6, attention=True, channels=(8, 8, 8), lstm_hidden=width, head=(8,),
                           attention_scale="sqrt_width")
    code.load_state_dict(paper.state_dict())
    paper.eval(), code.eval()
    x, mask = _padded([torch.randn(L, 6) * 3 for L in (12, 9, 5)])
    with torch.no_grad():
        assert not torch.allclose(paper(x, mask), code(x, mask), atol=1e-5)
        code.query.weight /= width ** 0.5
        code.query.bias /= width ** 0.5
        torch.testing.assert_close(paper(x, mask), code(x, mask))
    with pytest.raises(ValueError, match="attention_scale"):
        EmotionShareNet(in_dim=6, attention=True, attention_scale="sqrt")
