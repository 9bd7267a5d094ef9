"""Training through the KDE loss as a user does: a small network's raw per-annotator predictions (tanh outputs, no
upsampling), DiffusionKDE2d with its defaults, KDECrossEntropyLoss, 100 Adam steps, in float32, float16 in / float32
out and bfloat16, on every backend that runs here: no step may give a non-finite gradient, and the loss must fall."""
import os

import pytest
import torch

import kdekit
from kdekit.nn import DiffusionKDE2d, KDECrossEntropyLoss

STEPS = 100
# annotators per utterance: 1 and 2 annotators, up to 50, and three utterances whose predictions all coincide
ANNOTATORS = [1, 2, 2, 3, 5, 8, 12, 20, 50, 6, 4, 30]
SAME_POINT = {3, 9, 10}
BACKENDS = [b for b in ("torch", "cpp", "triton") if kdekit.backends()[b][0]]
PRECISIONS = {"float32": (torch.float32, None), "float16-in/float32-out": (torch.float16, torch.float32),
              "bfloat16": (torch.bfloat16, None)}


class AnnotatorNet(torch.nn.Module):
    """Per-(utterance, annotator) predictions ``tanh(W [features, annotator embedding] + b)``, shape (U, A, 2)."""

    def __init__(self, features: int, annotators: int):
        super().__init__()
        self.embed = torch.nn.Embedding(annotators, 4)
        self.out = torch.nn.Sequential(torch.nn.Linear(features + 4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    def forward(self, features: torch.Tensor, annotator: torch.Tensor) -> torch.Tensor:
        f = features[:, None].expand(-1, annotator.shape[1], -1)
        return torch.tanh(self.out(torch.cat([f, self.embed(annotator)], -1)))


def _task(utterances: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor((ANNOTATORS * utterances)[:utterances])
    A = int(counts.max())
    mask = torch.arange(A)[None] < counts[:, None]
    annotator = torch.arange(A).expand(utterances, A).clone()
    for u in SAME_POINT:
        if u < utterances:
            annotator[u] = 0  # one annotator's prediction repeated: all points at one location
    features = torch.randn(utterances, 6, generator=g)
    target = torch.softmax(2.5 * torch.randn(utterances, 16, generator=g), -1).reshape(utterances, 4, 4)
    return features, annotator, mask, target


@pytest.mark.parametrize("precision", sorted(PRECISIONS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_training_through_the_kde_loss(backend, precision, one_thread):
    in_dtype, out_dtype = PRECISIONS[precision]
    # the Triton interpreter runs one program at a time: fewer utterances keep it to seconds
    utterances = 6 if backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1" else len(ANNOTATORS)
    features, annotator, mask, target = _task(utterances)
    torch.manual_seed(0)
    net = AnnotatorNet(features.shape[1], annotator.shape[1] + 1)
    kde, loss_fn = DiffusionKDE2d(out_dtype=out_dtype), KDECrossEntropyLoss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses, statuses = [], set()
    with kdekit.use_backend(backend):
        for step in range(STEPS):
            pred = net(features, annotator).to(in_dtype)
            probs = kde(pred[..., 0], pred[..., 1], mask)
            assert probs.dtype == (out_dtype or in_dtype) and (probs >= 0).all()
            loss = loss_fn(probs, target.to(probs.dtype))
            opt.zero_grad()
            loss.backward()
            bad = [n for n, p in net.named_parameters() if not torch.isfinite(p.grad).all()]
            assert not bad, f"step {step}: non-finite gradients in {bad}"
            opt.step()
            losses.append(loss.item())
            if step % 25 == 0:
                res = kdekit.points_to_distribution(pred[..., 0].detach(), pred[..., 1].detach(), mask=mask)
                statuses |= {kdekit.KDEStatus(int(s)).name for s in res.status}
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.05, f"loss did not fall: {first:.4f} -> {last:.4f} (statuses seen: {sorted(statuses)})"
