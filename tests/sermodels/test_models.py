"""Annotator models: per-annotator heads vs a per-annotator nn.Linear loop, one-hot vs explicit concatenation."""
import pytest
import torch
from torch import nn

from sermodels.models import AnnotatorHeads, BaselineModel, MultiTaskAnnotatorModel, OneHotAnnotatorModel, build_model


def _ids(gen, B=5, M=4, A=7):
    ids = torch.randint(0, A, (B, M), generator=gen)
    ids[1, 2:] = -1
    ids[3, 1:] = -1
    return ids


def test_heads_equal_a_loop_of_linears_and_pad_with_nan():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    heads = AnnotatorHeads(7, 6, 3).double()
    h = torch.randn(5, 6, generator=g, dtype=torch.float64)
    ids = _ids(g)
    out = heads(h, ids)
    assert out.shape == (5, 4, 3)
    for b in range(5):
        for m in range(4):
            a = int(ids[b, m])
            if a < 0:
                assert torch.isnan(out[b, m]).all()
            else:
                ref = h[b] @ heads.weight[a].T + heads.bias[a]
                torch.testing.assert_close(out[b, m], ref, rtol=1e-12, atol=1e-12)
    every = heads(h)  # no ids: all heads
    assert every.shape == (5, 7, 3)
    for a in range(7):
        torch.testing.assert_close(every[:, a], h @ heads.weight[a].T + heads.bias[a], rtol=1e-12, atol=1e-12)


def test_heads_compute_only_annotators_in_the_batch():
    torch.manual_seed(1)
    heads = AnnotatorHeads(10, 4, 1)
    ids = torch.tensor([[0, 3, -1], [3, 5, -1]])
    with torch.no_grad():
        for a in (1, 2, 4, 6, 7, 8, 9):  # heads absent from the batch: poison them
            heads.weight[a].fill_(float("nan"))
            heads.bias[a].fill_(float("nan"))
    out = heads(torch.randn(2, 4), ids)
    assert torch.isfinite(out[ids >= 0]).all()
    out[ids >= 0].sum().backward()
    present = torch.tensor([0, 3, 5])
    assert heads.weight.grad[present].abs().sum() > 0
    mask = torch.ones(10, dtype=torch.bool)
    mask[present] = False
    assert (heads.weight.grad[mask] == 0).all()


def test_heads_gradcheck_float64():
    torch.manual_seed(2)
    heads = AnnotatorHeads(4, 3, 2).double()
    ids = torch.tensor([[0, 2], [3, -1]])
    h = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    w = heads.weight.detach().clone().requires_grad_(True)
    b = heads.bias.detach().clone().requires_grad_(True)

    def f(h, w, b):
        out = torch.func.functional_call(heads, {"weight": w, "bias": b}, (h, ids))
        return out[ids >= 0]

    assert torch.autograd.gradcheck(f, (h, w, b))


def test_mt_model_shapes_and_column_independence():
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(3)
    m = MultiTaskAnnotatorModel(8, 5, num_annotators=7, hidden=16).eval()
    audio, text = torch.randn(5, 8, generator=g), torch.randn(5, 5, generator=g)
    ids = _ids(g)
    out = m(audio, text, ids)
    assert out.shape == (5, 4, 2)
    assert torch.isnan(out[ids < 0]).all() and torch.isfinite(out[ids >= 0]).all()
    every = m(audio, text)
    assert every.shape == (5, 7, 2)
    for b, mm in zip(*torch.nonzero(ids >= 0, as_tuple=True)):
        torch.testing.assert_close(out[b, mm], every[b, ids[b, mm]])


def test_onehot_equals_explicit_concatenation():
    torch.manual_seed(4)
    g = torch.Generator().manual_seed(4)
    A, Da, Dt, H = 6, 8, 5, 16
    m = OneHotAnnotatorModel(Da, Dt, num_annotators=A, hidden=H, dropout=0.0).double().eval()
    first = nn.Linear(Da + Dt + A, H).double()
    with torch.no_grad():
        first.weight.copy_(torch.cat([m.trunk.linear.weight, m.annotator_columns.weight.T], dim=1))
        first.bias.copy_(m.trunk.linear.bias)
    audio = torch.randn(3, Da, generator=g, dtype=torch.float64)
    text = torch.randn(3, Dt, generator=g, dtype=torch.float64)
    ids = torch.tensor([[0, 5, -1], [2, -1, -1], [1, 3, 4]])
    out = m(audio, text, ids)
    for b in range(3):
        for j in range(3):
            a = int(ids[b, j])
            if a < 0:
                assert torch.isnan(out[b, j]).all()
                continue
            x = torch.cat([audio[b], text[b], nn.functional.one_hot(torch.tensor(a), A).double()])
            h = torch.relu(first(x))
            ref = torch.stack([head(tower(h)).squeeze() for tower, head in zip(m.towers, m.heads)])
            torch.testing.assert_close(out[b, j], ref, rtol=1e-12, atol=1e-12)
    assert m(audio, text).shape == (3, A, 2)


def test_baseline_and_builder():
    m = build_model("baseline", 8, 5, k=4, hidden=16)
    assert isinstance(m, BaselineModel) and not m.predicts_annotators
    assert m(torch.randn(3, 8), torch.randn(3, 5)).shape == (3, 16)
    assert build_model("mt", 8, 0, num_annotators=3, hidden=16)(torch.randn(2, 8), None).shape == (2, 3, 2)
    with pytest.raises(ValueError, match="model must be one of"):
        build_model("gru", 8, 5)
    with pytest.raises(ValueError, match="num_annotators"):
        build_model("mt", 8, 5)


def test_dropout_applies_per_modality_in_training_only():
    torch.manual_seed(5)
    m = MultiTaskAnnotatorModel(8, 5, num_annotators=3, hidden=16, dropout=0.5)
    audio, text = torch.randn(4, 8), torch.randn(4, 5)
    m.train()
    assert not torch.equal(m(audio, text), m(audio, text))
    m.eval()
    assert torch.equal(m(audio, text), m(audio, text))


def test_bad_inputs_name_the_argument():
    m = MultiTaskAnnotatorModel(8, 5, num_annotators=3, hidden=16)
    with pytest.raises(ValueError, match="annotator_ids must lie in"):
        m(torch.randn(2, 8), torch.randn(2, 5), torch.tensor([[0, 3], [1, -1]]))
    with pytest.raises(TypeError, match="annotator_ids must be an integer"):
        m(torch.randn(2, 8), torch.randn(2, 5), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"annotator_ids must have shape \(2, M\)"):
        m(torch.randn(2, 8), torch.randn(2, 5), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"audio features must have shape \(B, 8\)"):
        m(torch.randn(2, 7), torch.randn(2, 5))
    with pytest.raises(ValueError, match="batch sizes differ"):
        m(torch.randn(2, 8), torch.randn(3, 5))
