"""Paper 004's emotion-share regressors on padded SSL feature sequences of any length.

Both architectures: Conv1d W -> 768 -> 384 -> 192 (kernel 3, ReLU), MaxPool1d(2) (ceil mode), a per-frame
LayerNorm(192), a 2-layer unidirectional LSTM (512) over the valid frames only, then

- Architecture 1 (``attention=False``): mean over the valid frames, FFN 512 -> 256 -> 64 -> 8 -> out;
- Architecture 2 (``attention=True``): query ``Q = W_Q h'_n`` from both layers' final hidden states concatenated
  (2*512 -> 512), keys = values = LSTM outputs, softmax(``Q K^T / W_l``) over the valid frames only (the paper's
  eq. 2b, ``attention_scale="width"``; ``"sqrt_width"`` divides by ``sqrt(W_l)`` as the authors' code and standard
  scaled dot-product attention), FFN 512 -> 256 -> 128 -> 64 -> out.

FFN layers: Linear, ReLU, LayerNorm between hidden layers. ``out`` is 9 (multi-output) or 1 (one model per emotion,
as the authors trained). Deviations from the authors' code, both so that any length works and padding never
matters: their ``LayerNorm((199, 192))`` over time x channels (tied to a padded length of 199) is per frame here,
and their ``LayerNorm`` over the attention weights (padding included) is left out. ``output_activation``: 'none',
'relu' (the authors' code: predictions >= 0) or 'sigmoid'.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from ._sequence import MaskedConvStack, check_sequence, masked_mean, run_lstm

OUTPUT_ACTIVATIONS = ("none", "relu", "sigmoid")
ATTENTION_SCALES = ("width", "sqrt_width")


def _ffn(sizes: Sequence[int], output_activation: str) -> nn.Sequential:
    layers = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers += [nn.ReLU(), nn.LayerNorm(sizes[k + 1])]
    if output_activation == "relu":
        layers.append(nn.ReLU())
    elif output_activation == "sigmoid":
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


class EmotionShareNet(nn.Module):
    """CNN + LSTM (+ attention) regressor; ``forward(features (B, T, W), mask (B, T)) -> (B, n_outputs)``."""

    def __init__(self, in_dim: int, n_outputs: int = 9, attention: bool = False,
                 channels: Sequence[int] = (768, 384, 192), kernel: int = 3, lstm_hidden: int = 512,
                 lstm_layers: int = 2, head: Optional[Sequence[int]] = None, output_activation: str = "none",
                 attention_scale: str = "width"):
        super().__init__()
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}")
        if attention_scale not in ATTENTION_SCALES:
            raise ValueError(f"attention_scale must be one of {ATTENTION_SCALES}, got {attention_scale!r}")
        self.attention_scale = attention_scale
        pools = [1] * (len(channels) - 1) + [2]
        self.cnn = MaskedConvStack(in_dim, channels, [kernel] * len(channels), pools)
        self.norm = nn.LayerNorm(self.cnn.out_dim)
        self.lstm = nn.LSTM(self.cnn.out_dim, lstm_hidden, num_layers=lstm_layers, batch_first=True)
        self.attention = attention
        if attention:
            self.query = nn.Linear(lstm_layers * lstm_hidden, lstm_hidden)
        if head is None:
            head = (256, 128, 64) if attention else (256, 64, 8)
        self.head = _ffn([lstm_hidden, *head, n_outputs], output_activation)

    def forward(self, features: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        mask = check_sequence(features, mask)
        x, mask = self.cnn(features, mask)
        out, (h_n, _) = run_lstm(self.lstm, self.norm(x), mask)
        if not self.attention:
            return self.head(masked_mean(out, mask))
        q = self.query(h_n.transpose(0, 1).reshape(out.shape[0], -1))  # (B, H) from (layers, B, H)
        width = out.shape[-1]
        scores = torch.einsum("bh,bth->bt", q, out) / (width if self.attention_scale == "width" else math.sqrt(width))
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        return self.head(torch.einsum("bt,bth->bh", weights, out))
