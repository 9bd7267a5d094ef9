"""Paper 001's CNN-MaxPool + BLSTM + mean-over-time + FC model on frames of one wav2vec2 layer.

Input: features ``(B, T, F)`` of the chosen wav2vec2 layer (``hidden_states[layer]``; the layer index is a recipe
setting, 14 in the paper for a 24-layer model) and a validity mask ``(B, T)``. Output ``(B, out_dim)``: a word
vector (regression onto GloVe label embeddings) or class logits (the cross-entropy baseline).

Figure 1 of the paper: CNN-MP (96 units, kernel 15), CNN-MP (256, 5), CNN (256, 3), ReLU after each; two BLSTM
layers of 64 units per direction with dropout 0.5; mean over time; two FC layers of 1024 units with ReLU and
dropout 0.5; a linear output. Max-pooling width 2 (not stated in the paper).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ._sequence import MaskedConvStack, check_sequence, masked_mean, run_lstm


class LabelEmbeddingNet(nn.Module):
    """CNN-MP -> BLSTM -> mean over valid frames -> FC; see the module docstring for the defaults."""

    def __init__(self, in_dim: int, out_dim: int, channels: Sequence[int] = (96, 256, 256),
                 kernels: Sequence[int] = (15, 5, 3), pools: Sequence[int] = (2, 2, 1), lstm_hidden: int = 64,
                 lstm_layers: int = 2, fc_hidden: int = 1024, fc_layers: int = 2, dropout: float = 0.5):
        super().__init__()
        self.cnn = MaskedConvStack(in_dim, channels, kernels, pools)
        self.blstm = nn.LSTM(self.cnn.out_dim, lstm_hidden, num_layers=lstm_layers, batch_first=True,
                             bidirectional=True, dropout=dropout if lstm_layers > 1 else 0.0)
        self.lstm_dropout = nn.Dropout(dropout)
        layers, prev = [], 2 * lstm_hidden
        for _ in range(fc_layers):
            layers += [nn.Linear(prev, fc_hidden), nn.ReLU(), nn.Dropout(dropout)]
            prev = fc_hidden
        layers.append(nn.Linear(prev, out_dim))
        self.fc = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """features (B, T, F) float, mask (B, T) bool (right padding) -> (B, out_dim)."""
        mask = check_sequence(features, mask)
        x, mask = self.cnn(features, mask)
        x, _ = run_lstm(self.blstm, x, mask)
        return self.fc(self.lstm_dropout(masked_mean(x, mask)))


def cosine_nearest(queries: torch.Tensor, table: torch.Tensor, k: int = 1, chunk: int = 65536):
    """The ``k`` rows of ``table`` (V, D) with the highest cosine similarity to each query (N, D).

    Returns ``(similarity (N, k), index (N, k))``, best first (float32 similarities). Decoding to the label
    set (paper 001, eq. 5, whose ``argmin`` must be read as ``argmax`` of the similarity) is ``k=1`` over the label
    vectors; nearest neighbours over a whole vocabulary stream ``table`` in chunks of ``chunk`` rows.
    A zero vector has similarity 0 with everything.
    """
    if queries.dim() != 2 or table.dim() != 2 or queries.shape[1] != table.shape[1]:
        raise ValueError(f"need queries (N, D) and table (V, D); got {tuple(queries.shape)} and {tuple(table.shape)}")
    if not 1 <= k <= table.shape[0]:
        raise ValueError(f"k must be in [1, {table.shape[0]}], got {k}")
    q = torch.nn.functional.normalize(queries.float(), dim=1)
    best_s = torch.full((q.shape[0], 0), float("-inf"))
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
    for start in range(0, table.shape[0], chunk):
        t = torch.nn.functional.normalize(table[start:start + chunk].float(), dim=1)
        s = q @ t.T
        kk = min(k, s.shape[1])
        cs, ci = torch.topk(s, kk, dim=1, sorted=True)
        best_s, best_i = torch.cat([best_s, cs], 1), torch.cat([best_i, ci + start], 1)
        best_s, order = torch.topk(best_s, min(k, best_s.shape[1]), dim=1, sorted=True)
        best_i = best_i.gather(1, order)
    return best_s, best_i
