"""Masked operations on padded sequences ``(B, T, F)`` with a validity mask ``(B, T)`` (True = real frame)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(B,)`` integer lengths -> ``(B, max_len)`` bool mask of the first ``lengths[b]`` frames."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def check_sequence(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Validate ``x`` (B, T, F) and return a bool mask (B, T) (all True when ``mask`` is None)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.dtype.is_floating_point:
        raise ValueError(f"features must be a float tensor (B, T, F), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"features must have B >= 1 and T >= 1, got shape {tuple(x.shape)}")
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask must have shape {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
    mask = mask.to(device=x.device, dtype=torch.bool)
    if not bool(mask[:, 0].all()) or bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("mask must mark a non-empty prefix of each row (right padding, at least one frame)")
    return mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames: (B, T, F), (B, T) -> (B, F)."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over the valid frames: (B, T, F), (B, T) -> (B, F)."""
    return x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)


def pooled_lengths(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    """Lengths after a ``MaxPool1d(stride, ceil_mode=True)``: ceil(L / stride)."""
    return torch.div(lengths + stride - 1, stride, rounding_mode="floor")


class MaskedConvStack(nn.Module):
    """Conv1d + ReLU layers (optionally each followed by MaxPool1d(``pool``, ceil_mode=True)) on (B, T, F).

    Padded frames are zeroed before every convolution, so a valid frame sees exactly what it would see in the
    unpadded sequence (zero 'same' padding); after ReLU every value is >= 0, so ceil-mode pooling over a trailing
    zeroed frame equals pooling over the valid frame alone. Outputs at valid frames never depend on the padding.
    """

    def __init__(self, in_dim: int, channels, kernels, pools):
        super().__init__()
        if not (len(channels) == len(kernels) == len(pools)):
            raise ValueError(f"channels, kernels and pools need one entry per layer, got {channels}, {kernels}, "
                             f"{pools}")
        self.convs = nn.ModuleList()
        self.pools = list(int(p) for p in pools)
        prev = in_dim
        for c, k in zip(channels, kernels):
            self.convs.append(nn.Conv1d(prev, int(c), int(k), padding=int(k) // 2))
            prev = int(c)
        self.out_dim = prev

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        lengths = mask.sum(1)
        for conv, pool in zip(self.convs, self.pools):
            x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
            T = x.shape[1]
            x = torch.relu(conv(x.transpose(1, 2)))[..., :T]
            if pool > 1:
                x = x.masked_fill(~mask.unsqueeze(1), 0.0)
                x = nn.functional.max_pool1d(x, pool, pool, ceil_mode=True)
                lengths = pooled_lengths(lengths, pool)
            x = x.transpose(1, 2)
            mask = lengths_to_mask(lengths, x.shape[1])
        return x.masked_fill(~mask.unsqueeze(-1), 0.0), mask


def run_lstm(lstm: nn.LSTM, x: torch.Tensor, mask: torch.Tensor):
    """Packed LSTM over the valid frames; returns (outputs (B, T, H*dirs) zero at padding, (h_n, c_n))."""
    lengths = mask.sum(1).cpu()
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, state = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, state
