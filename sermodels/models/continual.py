"""Paper 003's activation/valence model on frozen wav2vec2 (mean-pooled) and BERT (CLS) features.

Trunk on the audio features: four linear layers; the first three followed by LeakyReLU and Dropout(0.2). Heads:
two linear layers each, the first followed by LeakyReLU and Dropout(0.1). Every linear layer has a LayerNorm on its
input. Text (BERT CLS) gets Dropout(0.2) and a linear layer and is concatenated to the trunk output for the valence
head only. Outputs pass through tanh: (B, 2) = (activation, valence) on [-1, 1].
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def _block(d_in: int, d_out: int, dropout: Optional[float]) -> nn.Sequential:
    layers = [nn.LayerNorm(d_in), nn.Linear(d_in, d_out)]
    if dropout is not None:
        layers += [nn.LeakyReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class ContinualSERNet(nn.Module):
    """``forward(audio (B, A), text (B, Tx) or None) -> (B, 2)``; ``text_dim=0`` builds an audio-only model."""

    def __init__(self, audio_dim: int, text_dim: int = 0, hidden: int = 256, text_hidden: int = 128,
                 trunk_dropout: float = 0.2, head_dropout: float = 0.1, text_dropout: float = 0.2):
        super().__init__()
        self.trunk = nn.Sequential(_block(audio_dim, hidden, trunk_dropout), _block(hidden, hidden, trunk_dropout),
                                   _block(hidden, hidden, trunk_dropout), _block(hidden, hidden, None))
        self.text_dim = text_dim
        if text_dim:
            self.text = nn.Sequential(nn.Dropout(text_dropout), nn.Linear(text_dim, text_hidden))
        val_in = hidden + (text_hidden if text_dim else 0)
        self.activation_head = nn.Sequential(_block(hidden, hidden, head_dropout), _block(hidden, 1, None))
        self.valence_head = nn.Sequential(_block(val_in, hidden, head_dropout), _block(hidden, 1, None))

    def forward(self, audio: torch.Tensor, text: Optional[torch.Tensor] = None) -> torch.Tensor:
        if audio.dim() != 2:
            raise ValueError(f"audio must be (B, audio_dim), got shape {tuple(audio.shape)}")
        h = self.trunk(audio)
        if self.text_dim:
            if text is None or text.shape != (audio.shape[0], self.text_dim):
                raise ValueError(f"text must be ({audio.shape[0]}, {self.text_dim}), got "
                                 f"{None if text is None else tuple(text.shape)}")
            hv = torch.cat([h, self.text(text)], dim=-1)
        else:
            hv = h
        return torch.tanh(torch.cat([self.activation_head(h), self.valence_head(hv)], dim=-1))
