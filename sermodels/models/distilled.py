"""Paper 002's audio(+text) SSL regressor: encoders, average+max pooling, concatenation fusion, FFN with tanh.

``audio_encoder``: any transformers speech encoder with ``output_hidden_states`` (DistilHuBERT, HuBERT, wav2vec2:
``AutoModel.from_pretrained(path)``); ``text_encoder``: any text ``AutoModel`` (TinyBERT, BERT) or None for audio
only. Each modality is reduced to one sequence (the last hidden state, or with ``layer_weighting`` the s3prl-style
weighted sum ``sum_l softmax(w)_l * h_l`` over every hidden state, weights initialised to zero), pooled over its
valid frames/tokens by mean and max (concatenated, 2 d), and the modalities are concatenated (2 d_A + 2 d_T).
The head is Linear -> tanh -> Dropout -> Linear to 3 outputs (arousal, valence, dominance; targets on [0, 1]).

Modes (:meth:`DistilledSER.set_mode`): ``frozen`` (encoders fixed: only layer weights and head train),
``finetune`` (encoders train, the convolutional feature encoder of the speech model stays frozen, as in the paper).
FT=>FRZ is a recipe schedule: fine-tune audio only, then freeze both encoders and train a new fused head.

Padding: the audio frame mask comes from the encoder's ``_get_feat_extract_output_lengths``. Speech models whose
conv encoder uses group norm (``feat_extract_norm="group"``: wav2vec2-base, HuBERT-base, DistilHuBERT) normalise over
the whole padded waveform, so their outputs change with padding (a property of those checkpoints); models with
``feat_extract_norm="layer"`` receive the attention mask and are padding-invariant. ``audio_attention_mask=False``
(what a checkpoint's feature extractor says with ``return_attention_mask: false``, e.g. wav2vec2-base) passes no
attention mask to the speech encoder: zero-padded input as the checkpoint was trained with; pooling still uses the
frame mask.

:func:`prune_encoder` keeps the first N transformer layers of a speech encoder (paper 002's w2v2-L-robust(p): the
first 12 of 24).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from ._sequence import lengths_to_mask, masked_max, masked_mean

MODES = ("frozen", "finetune")


class LayerWeightedSum(nn.Module):
    """s3prl ``Featurizer``: softmax-weighted sum of ``n_layers`` hidden states ``(L, B, T, D)`` -> ``(B, T, D)``.

    ``normalize=True`` applies a parameter-free layer norm to each hidden state first (s3prl's
    ``--upstream_feature_normalize``). :meth:`importance` returns the normalised weights (the paper's Figure 2).
    """

    def __init__(self, n_layers: int, normalize: bool = False):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(n_layers))
        self.normalize = normalize

    def forward(self, hidden_states) -> torch.Tensor:
        if len(hidden_states) != self.weights.numel():
            raise ValueError(f"expected {self.weights.numel()} hidden states, got {len(hidden_states)}")
        h = torch.stack(tuple(hidden_states), dim=0)
        if self.normalize:
            h = nn.functional.layer_norm(h, h.shape[-1:])
        w = torch.softmax(self.weights, dim=0).to(h.dtype)
        return torch.einsum("l,lbtd->btd", w, h)

    def importance(self) -> torch.Tensor:
        return torch.softmax(self.weights.detach(), dim=0)


def _n_hidden_states(encoder: nn.Module) -> int:
    return int(encoder.config.num_hidden_layers) + 1


def prune_encoder(encoder: nn.Module, n_layers: int) -> nn.Module:
    """Keep the first ``n_layers`` transformer layers of a transformers speech (or text) encoder, in place; its
    config's ``num_hidden_layers`` follows. ValueError unless ``1 <= n_layers <= `` the layers it has."""
    layers = getattr(getattr(encoder, "encoder", None), "layers", None)
    if layers is None:
        layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layers is None:
        raise ValueError(f"{type(encoder).__name__} has no encoder.layers to prune")
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or not 1 <= n_layers <= len(layers):
        raise ValueError(f"prune_layers must be an int in [1, {len(layers)}] for {type(encoder).__name__}, "
                         f"got {n_layers!r}")
    del layers[n_layers:]
    encoder.config.num_hidden_layers = n_layers
    return encoder


class DistilledSER(nn.Module):
    """Audio(+text) regressor; ``forward(input_values, audio_mask, input_ids, text_mask) -> (B, n_outputs)``."""

    def __init__(self, audio_encoder: nn.Module, text_encoder: Optional[nn.Module] = None,
                 layer_weighting: bool = False, normalize_layers: bool = False, hidden: int = 256,
                 dropout: float = 0.1, n_outputs: int = 3, audio_attention_mask: bool = True):
        super().__init__()
        self.audio_encoder = audio_encoder
        self.text_encoder = text_encoder
        self.audio_attention_mask = audio_attention_mask
        if layer_weighting:  # LayerDrop would skip hidden states the weighted sum needs (s3prl disables it too)
            for enc in (audio_encoder, text_encoder):
                if enc is not None and hasattr(enc.config, "layerdrop"):
                    enc.config.layerdrop = 0.0
        self.audio_weights = LayerWeightedSum(_n_hidden_states(audio_encoder), normalize_layers) \
            if layer_weighting else None
        self.text_weights = LayerWeightedSum(_n_hidden_states(text_encoder), normalize_layers) \
            if layer_weighting and text_encoder is not None else None
        d = 2 * int(audio_encoder.config.hidden_size)
        if text_encoder is not None:
            d += 2 * int(text_encoder.config.hidden_size)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(d, hidden), nn.Tanh(), nn.Dropout(dropout),
                                  nn.Linear(hidden, n_outputs))
        self.mode = "finetune"
        self.set_mode("finetune")

    def set_mode(self, mode: str) -> None:
        """``frozen``: no encoder parameter trains; ``finetune``: all but the speech conv feature encoder train."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        for enc in (self.audio_encoder, self.text_encoder):
            if enc is not None:
                enc.requires_grad_(mode == "finetune")
        if mode == "finetune" and hasattr(self.audio_encoder, "freeze_feature_encoder"):
            self.audio_encoder.freeze_feature_encoder()

    def _sequence(self, encoder, weights, **inputs) -> torch.Tensor:
        out = encoder(**inputs, output_hidden_states=weights is not None)
        return weights(out.hidden_states) if weights is not None else out.last_hidden_state

    def audio_frame_mask(self, audio_mask: torch.Tensor, n_frames: int) -> torch.Tensor:
        lengths = self.audio_encoder._get_feat_extract_output_lengths(audio_mask.sum(1))
        return lengths_to_mask(lengths.clamp(min=1, max=n_frames).long(), n_frames)

    def forward(self, input_values: torch.Tensor, audio_mask: Optional[torch.Tensor] = None,
                input_ids: Optional[torch.Tensor] = None, text_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """input_values (B, S) float waveforms, audio_mask (B, S) 1 = sample; input_ids/text_mask (B, N) tokens."""
        if input_values.dim() != 2:
            raise ValueError(f"input_values must be (B, samples), got shape {tuple(input_values.shape)}")
        if audio_mask is None:
            audio_mask = torch.ones_like(input_values, dtype=torch.long)
        h = self._sequence(self.audio_encoder, self.audio_weights, input_values=input_values,
                           attention_mask=audio_mask.long() if self.audio_attention_mask else None)
        m = self.audio_frame_mask(audio_mask, h.shape[1])
        pooled = [masked_mean(h, m), masked_max(h, m)]
        if self.text_encoder is not None:
            if input_ids is None:
                raise ValueError("this model has a text encoder: pass input_ids (and text_mask)")
            if text_mask is None:
                text_mask = torch.ones_like(input_ids)
            ht = self._sequence(self.text_encoder, self.text_weights, input_ids=input_ids,
                                attention_mask=text_mask.long())
            tm = text_mask.bool()
            pooled += [masked_mean(ht, tm), masked_max(ht, tm)]
        return self.head(torch.cat(pooled, dim=-1))

    def layer_importance(self) -> Dict[str, list]:
        """Normalised layer weights per modality (empty without ``layer_weighting``)."""
        out = {}
        if self.audio_weights is not None:
            out["audio"] = self.audio_weights.importance().tolist()
        if self.text_weights is not None:
            out["text"] = self.text_weights.importance().tolist()
        return out
