"""Models of "The Whole Is Bigger Than the Sum of Its Parts" (Tavernor, El-Tawil, Mower Provost, IS 2024).

All three share a trunk: ``Dropout(p)`` on each input modality (cached wav2vec2 mean-pooled features and BERT CLS
features), concatenation, ``Linear(audio_dim + text_dim -> hidden) + ReLU``. Then, per prediction (the distribution,
or activation and valence), two ``Linear(hidden -> hidden) + ReLU`` layers and an output layer:

- :class:`BaselineModel` -- ``Linear(hidden -> k*k)`` logits of the k x k (activation x valence) distribution.
- :class:`MultiTaskAnnotatorModel` ("MT") -- one linear head per annotator and dimension, stored as one
  :class:`AnnotatorHeads` weight tensor ``(num_annotators, 1, hidden)`` per dimension.
- :class:`OneHotAnnotatorModel` -- the annotator's one-hot vector concatenated to the input, one shared head per
  dimension; every (utterance, annotator) pair is one row through the network.

Annotator models take ``annotator_ids`` ``(B, M)`` (long, ``-1`` = padding; ``None`` = every known annotator for every
utterance, the zero-shot setting) and return predictions ``(B, M, 2)`` in ``[activation, valence]`` order, NaN where
the id is padding.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

DIMENSIONS = ("activation", "valence")


def _check_ids(annotator_ids: torch.Tensor, batch: int, num_annotators: int) -> torch.Tensor:
    if not isinstance(annotator_ids, torch.Tensor):
        raise TypeError(f"annotator_ids must be a torch.Tensor, got {type(annotator_ids).__name__}")
    if annotator_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"annotator_ids must be an integer (long) tensor, got {annotator_ids.dtype}")
    if annotator_ids.dim() != 2 or annotator_ids.shape[0] != batch:
        raise ValueError(f"annotator_ids must have shape ({batch}, M), got {tuple(annotator_ids.shape)}")
    if annotator_ids.numel() and (annotator_ids.max() >= num_annotators or annotator_ids.min() < -1):
        raise ValueError(
            f"annotator_ids must lie in [-1, {num_annotators - 1}] (-1 = padding), got "
            f"min {int(annotator_ids.min())} max {int(annotator_ids.max())}"
        )
    return annotator_ids.long()


class AnnotatorHeads(nn.Module):
    """One ``Linear(in_features -> out_features)`` per annotator, stored as one tensor.

    ``weight`` is ``(num_annotators, out_features, in_features)``, ``bias`` ``(num_annotators, out_features)``, both
    initialised like ``nn.Linear`` (kaiming-uniform) per annotator. With ids, only the (sample, annotator) pairs that
    exist are computed: the heads are gathered per pair and applied with one ``bmm``; padded pairs cost nothing and
    come back as NaN.
    """

    def __init__(self, num_annotators: int, in_features: int, out_features: int = 1):
        super().__init__()
        if num_annotators < 1:
            raise ValueError(f"num_annotators must be >= 1, got {num_annotators}")
        self.num_annotators = num_annotators
        self.weight = nn.Parameter(torch.empty(num_annotators, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(num_annotators, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for w, b in zip(self.weight, self.bias):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(b, -bound, bound)

    def forward(self, h: torch.Tensor, annotator_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``h`` ``(B, in)`` -> ``(B, M, out)`` for ``annotator_ids`` ``(B, M)``, or ``(B, A, out)`` for all heads."""
        if annotator_ids is None:
            return torch.einsum("bi,aoi->bao", h, self.weight) + self.bias
        ids = _check_ids(annotator_ids, h.shape[0], self.num_annotators)
        out = h.new_full((*ids.shape, self.weight.shape[1]), float("nan"))
        rows, cols = torch.nonzero(ids >= 0, as_tuple=True)
        pair_ids = ids[rows, cols]
        pair_out = torch.bmm(self.weight.index_select(0, pair_ids), h[rows].unsqueeze(-1)).squeeze(-1)
        out = out.index_put((rows, cols), pair_out + self.bias.index_select(0, pair_ids))
        return out


class _Trunk(nn.Module):
    """Per-modality dropout, concatenation, ``Linear(audio_dim + text_dim + extra -> hidden) + ReLU``."""

    def __init__(self, audio_dim: int, text_dim: int, hidden: int, dropout: float):
        super().__init__()
        if audio_dim < 0 or text_dim < 0 or audio_dim + text_dim == 0:
            raise ValueError(f"need audio_dim + text_dim > 0, got audio_dim={audio_dim} text_dim={text_dim}")
        self.audio_dim, self.text_dim = audio_dim, text_dim
        self.audio_dropout = nn.Dropout(dropout)
        self.text_dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(audio_dim + text_dim, hidden)

    def features(self, audio: Optional[torch.Tensor], text: Optional[torch.Tensor]) -> torch.Tensor:
        parts = []
        for name, x, dim, drop in (("audio", audio, self.audio_dim, self.audio_dropout),
                                   ("text", text, self.text_dim, self.text_dropout)):
            if dim == 0:
                continue
            if x is None or x.dim() != 2 or x.shape[1] != dim:
                got = None if x is None else tuple(x.shape)
                raise ValueError(f"{name} features must have shape (B, {dim}), got {got}")
            parts.append(drop(x))
        if len(parts) == 2 and parts[0].shape[0] != parts[1].shape[0]:
            raise ValueError(f"audio and text batch sizes differ: {parts[0].shape[0]} vs {parts[1].shape[0]}")
        return torch.cat(parts, dim=1)

    def forward(self, audio: Optional[torch.Tensor], text: Optional[torch.Tensor]) -> torch.Tensor:
        return torch.relu(self.linear(self.features(audio, text)))


def _tower(hidden: int, layers: int = 2) -> nn.Sequential:
    mods = []
    for _ in range(layers):
        mods += [nn.Linear(hidden, hidden), nn.ReLU()]
    return nn.Sequential(*mods)


class BaselineModel(nn.Module):
    """Predicts the flattened ``k x k`` distribution as logits ``(B, k*k)`` (row-major: activation rows)."""

    predicts_annotators = False

    def __init__(self, audio_dim: int, text_dim: int, k: int = 4, hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.k = k
        self.trunk = _Trunk(audio_dim, text_dim, hidden, dropout)
        self.tower = _tower(hidden)
        self.out = nn.Linear(hidden, k * k)

    def forward(self, audio, text, annotator_ids=None) -> torch.Tensor:
        return self.out(self.tower(self.trunk(audio, text)))


class MultiTaskAnnotatorModel(nn.Module):
    """Per-annotator activation and valence predictions ``(B, M, 2)`` from per-annotator heads."""

    predicts_annotators = True

    def __init__(self, audio_dim: int, text_dim: int, num_annotators: int, hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.num_annotators = num_annotators
        self.trunk = _Trunk(audio_dim, text_dim, hidden, dropout)
        self.towers = nn.ModuleList([_tower(hidden) for _ in DIMENSIONS])
        self.heads = nn.ModuleList([AnnotatorHeads(num_annotators, hidden, 1) for _ in DIMENSIONS])

    def forward(self, audio, text, annotator_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.trunk(audio, text)
        return torch.cat([head(tower(h), annotator_ids) for tower, head in zip(self.towers, self.heads)], dim=-1)


class OneHotAnnotatorModel(nn.Module):
    """Annotator one-hot concatenated to the input; every (utterance, annotator) pair is one row.

    ``Linear([x, onehot(a)])`` is computed as ``Linear(x) + E[a]`` with ``E`` = the one-hot columns of that weight
    matrix ``(num_annotators, hidden)``: the same function and parameters without materialising the one-hot vectors.
    Dropout applies to the speech and text features only, as in the seed.
    """

    predicts_annotators = True

    def __init__(self, audio_dim: int, text_dim: int, num_annotators: int, hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.num_annotators = num_annotators
        self.trunk = _Trunk(audio_dim, text_dim, hidden, dropout)
        self.annotator_columns = nn.Embedding(num_annotators, hidden)
        bound = 1.0 / math.sqrt(audio_dim + text_dim + num_annotators)
        nn.init.uniform_(self.annotator_columns.weight, -bound, bound)
        self.towers = nn.ModuleList([_tower(hidden) for _ in DIMENSIONS])
        self.heads = nn.ModuleList([nn.Linear(hidden, 1) for _ in DIMENSIONS])

    def forward(self, audio, text, annotator_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.trunk.linear(self.trunk.features(audio, text))  # (B, hidden), before ReLU
        B = x.shape[0]
        if annotator_ids is None:
            annotator_ids = torch.arange(self.num_annotators, device=x.device).expand(B, -1)
        ids = _check_ids(annotator_ids, B, self.num_annotators)
        rows, cols = torch.nonzero(ids >= 0, as_tuple=True)
        h = torch.relu(x[rows] + self.annotator_columns(ids[rows, cols]))
        pair_out = torch.cat([head(tower(h)) for tower, head in zip(self.towers, self.heads)], dim=-1)
        out = x.new_full((*ids.shape, len(DIMENSIONS)), float("nan"))
        return out.index_put((rows, cols), pair_out)


MODELS = {"baseline": BaselineModel, "mt": MultiTaskAnnotatorModel, "onehot": OneHotAnnotatorModel}


def build_model(name: str, audio_dim: int, text_dim: int, *, num_annotators: int = 0, k: int = 4,
                hidden: int = 256, dropout: float = 0.2) -> nn.Module:
    """Model by name: ``"baseline"``, ``"mt"`` or ``"onehot"``."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    if name == "baseline":
        return BaselineModel(audio_dim, text_dim, k=k, hidden=hidden, dropout=dropout)
    if num_annotators < 1:
        raise ValueError(f"model {name!r} needs num_annotators >= 1, got {num_annotators}")
    return MODELS[name](audio_dim, text_dim, num_annotators, hidden=hidden, dropout=dropout)
