"""Speech and text features with an on-disk cache.

``extract_features(utterances, model, kind=..., layer=..., pooling=...)`` returns ``{utterance_id: np.ndarray}``:

- ``model``: a ``transformers`` AutoModel hub id or local folder (wav2vec2, HuBERT, DistilHuBERT, WavLM, BERT,
  TinyBERT, ...), an already-built model as ``(model, processor_or_tokenizer)`` or with ``processor=``, or a
  built-in spectral front end that needs no download: ``"logmel"`` (80 log-mel filterbank energies), ``"fbank40"``
  (40 log-mel filterbank energies, 0-8000 Hz: paper 004's acoustic baseline) or ``"mfcc"`` (13 MFCCs from 40 mel
  bands); 25 ms Hann frames, 10 ms hop, torch/numpy only.
- ``layer``: an index into ``hidden_states`` (0 = CNN/embedding output, -1 = last), a list of indices, or ``"all"``.
- ``pooling``: ``mean``/``max`` over valid frames or tokens, ``cls`` (first token, text only) or ``none``.
  Shapes per item: pooled ``(H,)`` for one layer, ``(L, H)`` for several; ``none`` gives ``(T, H)`` / ``(L, T, H)``
  with the item's true length T (no padding); :func:`pad_sequences` batches them with lengths.

Caching (``cache_dir``): one file per item keyed by (model id, revision, layer, pooling, kind, content hash of the
audio file bytes or of the text), see :mod:`sermodels.data.cache`. A run reads what is cached, loads the model only
if something is missing, and writes each batch as soon as it is computed, so an interrupted run resumes without
recomputing finished items.

Under ``torchrun`` (an initialised ``torch.distributed`` process group with more than one rank) and with a
``cache_dir``, rank 0 lists the items missing from the cache, every rank computes its share of them (every
``world_size``-th item) into the same cache, and after a barrier every rank reads all features back: the cache equals
the one a single process writes, and a rerun fills only the gaps. The default device is then ``cuda:LOCAL_RANK``.

Audio models whose feature encoder uses group norm (``feat_extract_norm="group"``,
e.g. wav2vec2-base, HuBERT-base, DistilHuBERT) see each clip alone (zero padding would change their outputs);
others are batched with attention masks. Items without audio or transcript are left out with a warning.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .cache import FeatureCache, content_hash, file_hash
from .records import Utterance

SPECTRAL = {"logmel": dict(n_mels=80, n_mfcc=None), "fbank": dict(n_mels=80, n_mfcc=None),
            "mfcc": dict(n_mels=40, n_mfcc=13),
            "fbank40": dict(n_mels=40, n_mfcc=None, fmin=0.0, fmax=8000.0)}  # paper 004's acoustic baseline
POOLINGS = ("mean", "max", "cls", "none")


class ModelUnavailableError(OSError):
    """The requested model cannot be loaded (e.g. a hub id that is not cached while offline)."""


# --------------------------------------------------------------------------------------- spectral features


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, fmin: float = 0.0, fmax: Optional[float] = None
                   ) -> np.ndarray:
    """HTK-mel triangular filters ``(n_mels, n_fft // 2 + 1)``, unit peak, on linear-frequency FFT bins."""
    fmax = sample_rate / 2 if fmax is None else fmax
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / (centre - lower)
    down = (upper - freqs[None]) / (upper - centre)
    return np.clip(np.minimum(up, down), 0, None)


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II rows ``(n_out, n_in)`` (equals ``scipy.fft.dct(x, norm='ortho')[:n_out]``)."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None]
    m = np.sqrt(2.0 / n_in) * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))
    m[0] /= np.sqrt(2.0)
    return m


def log_mel(wave: np.ndarray, sample_rate: int, n_mels: int = 80, win_ms: float = 25.0, hop_ms: float = 10.0,
            fmin: float = 0.0, fmax: Optional[float] = None) -> np.ndarray:
    """Log mel filterbank energies ``(frames, n_mels)`` float32 of a mono waveform (frames >= 1); filters between
    ``fmin`` and ``fmax`` Hz (default: the Nyquist frequency)."""
    win = int(round(sample_rate * win_ms / 1000))
    hop = int(round(sample_rate * hop_ms / 1000))
    n_fft = 1 << (win - 1).bit_length()
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    if x.numel() < win:
        x = torch.nn.functional.pad(x, (0, win - x.numel()))
    frames = x.unfold(0, win, hop) * torch.hann_window(win, periodic=True)
    power = torch.fft.rfft(frames, n=n_fft).abs() ** 2
    fb = torch.as_tensor(mel_filterbank(n_mels, n_fft, sample_rate, fmin, fmax), dtype=torch.float32)
    return torch.log(power @ fb.T + 1e-10).numpy()


def mfcc(wave: np.ndarray, sample_rate: int, n_mfcc: int = 13, n_mels: int = 40) -> np.ndarray:
    """MFCCs ``(frames, n_mfcc)``: orthonormal DCT-II of the log mel energies."""
    return (log_mel(wave, sample_rate, n_mels) @ dct_matrix(n_mfcc, n_mels).T).astype(np.float32)


# ---------------------------------------------------------------------------------------------- helpers


def load_audio(path: str, sample_rate: int) -> np.ndarray:
    """Mono float32 waveform of ``path`` resampled to ``sample_rate``."""
    import soundfile as sf

    y, sr = sf.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != sample_rate:
        from scipy.signal import resample_poly

        g = math.gcd(sr, sample_rate)
        y = resample_poly(y, sample_rate // g, sr // g).astype(np.float32)
    return y


def pad_sequences(features: Dict[str, np.ndarray], ids: Optional[Sequence[str]] = None
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """Stack ``pooling='none'`` outputs: zero-padded ``(N, ..., T_max, H)`` and ``lengths`` ``(N,)`` int64."""
    ids = list(features) if ids is None else list(ids)
    if not ids:
        raise ValueError("pad_sequences needs at least one item")
    arrays = [features[i] for i in ids]
    lengths = np.array([a.shape[-2] for a in arrays], dtype=np.int64)
    out = np.zeros((len(arrays),) + arrays[0].shape[:-2] + (int(lengths.max()), arrays[0].shape[-1]),
                   dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, ..., : a.shape[-2], :] = a
    return out, lengths


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _load_pretrained(name: str, kind: str, revision: Optional[str]):
    """(model, processor) from a hub id or a local folder; ModelUnavailableError with advice when offline."""
    from transformers import AutoModel, AutoTokenizer

    local = os.path.isdir(name)
    try:
        model = AutoModel.from_pretrained(name, revision=revision)
    except (OSError, ValueError) as e:
        if local:
            raise ModelUnavailableError(f"cannot load a transformers model from the folder {name!r}: {e}") from e
        hint = (" HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set and the model is not in the local Hugging Face cache:"
                if _offline() else "")
        raise ModelUnavailableError(
            f"model {name!r} is not a local folder and could not be loaded from the Hugging Face hub.{hint} "
            f"pass a local path instead (download once with `AutoModel.from_pretrained(...).save_pretrained(dir)` "
            f"on a connected machine) or an already-built (model, processor) pair. Original error: {e}") from e
    if kind == "text":
        try:
            processor = AutoTokenizer.from_pretrained(name, revision=revision)
        except (OSError, ValueError) as e:
            raise ModelUnavailableError(f"no tokenizer found for {name!r}; save one next to the model or pass "
                                        f"(model, tokenizer): {e}") from e
    else:
        processor = load_audio_processor(name, revision)
    return model, processor


def load_audio_processor(name: str, revision: Optional[str] = None):
    """The feature extractor of speech model ``name`` (hub id or folder): its sampling rate, whether it normalises
    each waveform (``do_normalize``) and whether the model takes an attention mask. A checkpoint without one (e.g.
    facebook/wav2vec2-large) gets ``Wav2Vec2FeatureExtractor`` defaults with a warning: 16 kHz, per-utterance
    zero-mean unit-variance normalisation."""
    from transformers import AutoFeatureExtractor, Wav2Vec2FeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(name, revision=revision)
    except (OSError, ValueError):
        warnings.warn(f"no feature extractor config for {name!r}: using Wav2Vec2FeatureExtractor "
                      f"(16 kHz, per-utterance zero-mean unit-variance normalisation)")
        return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                        return_attention_mask=True)


def _object_id(model, processor) -> str:
    """Identity of an already-built model: name, config and a checksum of every parameter and buffer."""
    cfg = getattr(model, "config", None)
    h = hashlib.sha256()
    h.update((cfg.to_json_string() if cfg is not None else type(model).__name__).encode())
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu", torch.float64)
        h.update(f"{name}{tuple(t.shape)}{t.sum().item():.17g}{t.abs().sum().item():.17g}".encode())
    if processor is not None:
        to_dict = getattr(processor, "to_dict", None)
        h.update(type(processor).__name__.encode())
        if to_dict is not None:
            h.update(json.dumps(to_dict(), sort_keys=True, default=str).encode())
    return f"object:{getattr(cfg, '_name_or_path', '') or type(model).__name__}:{h.hexdigest()[:16]}"


def _select_layers(hidden: Sequence[torch.Tensor], layer) -> torch.Tensor:
    """(B, T, H) for an int layer; (B, L, T, H) for a list or 'all'."""
    if layer == "all":
        return torch.stack(list(hidden), dim=1)
    if isinstance(layer, (list, tuple)):
        return torch.stack([hidden[i] for i in layer], dim=1)
    return hidden[layer]


def _pool(h: torch.Tensor, mask: torch.Tensor, pooling: str) -> List[np.ndarray]:
    """Per item of h ``(B, [L,] T, H)`` with mask ``(B, T)`` -> list of pooled/sliced float32 arrays."""
    m = mask.to(h.dtype)
    if h.dim() == 4:
        m = m[:, None]
    m = m.unsqueeze(-1)
    if pooling == "mean":
        out = (h * m).sum(-2) / m.sum(-2).clamp_min(1)
    elif pooling == "max":
        out = h.masked_fill(m == 0, float("-inf")).amax(-2)
    elif pooling == "cls":
        out = h[..., 0, :]
    else:
        lengths = mask.sum(-1).tolist()
        return [h[i, ..., : int(n), :].float().cpu().numpy() for i, n in enumerate(lengths)]
    return list(out.float().cpu().numpy())


# ---------------------------------------------------------------------------------------------- extraction


def extract_features(utterances: Sequence[Utterance], model, *, kind: str = "audio",
                     layer: Union[int, List[int], str] = -1, pooling: str = "mean", cache_dir=None,
                     device=None, batch_size: int = 8, revision: Optional[str] = None, progress: bool = True,
                     processor=None, sample_rate: int = 16000, max_length: int = 512) -> Dict[str, np.ndarray]:
    """Features per utterance id (see the module docstring); cached under ``cache_dir`` when given."""
    if kind not in ("audio", "text"):
        raise ValueError(f"kind must be 'audio' or 'text', got {kind!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if not (layer == "all" or isinstance(layer, int) and not isinstance(layer, bool)
            or isinstance(layer, (list, tuple)) and layer and all(isinstance(i, int) for i in layer)):
        raise ValueError(f"layer must be an int, a non-empty list of ints or 'all', got {layer!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(model, tuple):
        if len(model) != 2:
            raise ValueError("model given as a tuple must be (model, processor_or_tokenizer)")
        model, processor = model
    spectral = isinstance(model, str) and model in SPECTRAL
    if spectral and kind != "audio":
        raise ValueError(f"model {model!r} is an audio front end; use kind='audio'")
    if pooling == "cls" and kind != "text":
        raise ValueError("pooling='cls' takes the first token: only for kind='text'")
    if spectral and not isinstance(layer, int):
        raise ValueError(f"model {model!r} has no layers; leave layer at its default")

    inputs = []  # (utterance id, input ref)
    missing = []
    for u in utterances:
        if kind == "audio":
            if u.audio_path and os.path.isfile(u.audio_path):
                inputs.append((u.utterance_id, u.audio_path))
            else:
                missing.append(u.utterance_id)
        elif u.transcript is not None:
            inputs.append((u.utterance_id, u.transcript))
        else:
            missing.append(u.utterance_id)
    rank, world = _rank_and_world()
    sharded = cache_dir is not None and world > 1
    hashes = _content_hashes([ref for _, ref in inputs], kind, rank, world if sharded else 1) \
        if cache_dir is not None else [None] * len(inputs)
    items = [(uid, ref, h) for (uid, ref), h in zip(inputs, hashes)]  # (utterance id, input ref, content hash)
    if missing:
        warnings.warn(f"{len(missing)} utterances have no {'audio file' if kind == 'audio' else 'transcript'} and "
                      f"are left out (e.g. {missing[:3]})")

    if spectral:
        model_id = f"builtin:{model}:{json.dumps(SPECTRAL[model], sort_keys=True)}:25ms/10ms"
    elif isinstance(model, str):
        model_id = model if not os.path.isdir(model) else f"path:{os.path.abspath(model)}"
    else:
        model_id = _object_id(model, processor)
    key = dict(model=model_id, revision=revision, layer=layer, pooling=pooling, kind=kind,
               sample_rate=sample_rate if kind == "audio" else None, max_length=max_length if kind == "text" else None,
               version=1)
    cache = FeatureCache(cache_dir, key) if cache_dir is not None else None

    results: Dict[str, np.ndarray] = {}
    # one computation per content hash: utterances with the same audio bytes or text share one cached feature, so a
    # run that computes them sees the same values as a later run that reads them back
    first = {}  # content hash -> the first utterance id with it
    for uid, _, h in items:
        first.setdefault(h, uid)
    unique = [it for it in items if first[it[2]] == it[0]] if cache is not None else items
    if sharded:
        todo = _shard([it for it in unique if it[2] not in cache], rank, world)
        if device is None and torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    else:
        todo = []
        for uid, ref, h in unique:
            hit = cache.get(h) if cache is not None else None
            if hit is not None:
                results[uid] = hit
            else:
                todo.append((uid, ref, h))
    if todo:
        from tqdm.auto import tqdm

        hashes = {uid: h for uid, _, h in todo}
        desc = f"features {os.path.basename(str(model_id))[:40]}" + (f" rank {rank}/{world}" if sharded else "")
        bar = tqdm(total=len(todo), disable=not progress or rank > 0, desc=desc)
        try:
            for uid, feat in _compute(todo, model, processor, spectral, kind, layer, pooling, device, batch_size,
                                      revision, sample_rate, max_length):
                if cache is not None:
                    cache.put(hashes[uid], feat)
                results[uid] = feat
                bar.update(1)
        finally:
            bar.close()
    if sharded:
        import torch.distributed as dist

        dist.barrier()  # every rank's share is in the cache
        for uid, _, h in items:
            if uid not in results:
                results[uid] = cache.get(h)
                if results[uid] is None:
                    raise RuntimeError(f"feature of {uid} is missing from the cache {cache.dir} after every rank "
                                       f"finished (was the cache changed meanwhile?)")
    return {uid: results[uid] if uid in results else results[first[h]] for uid, _, h in items}


def _rank_and_world() -> Tuple[int, int]:
    """(rank, world size) of the initialised ``torch.distributed`` process group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _content_hashes(refs: List[str], kind: str, rank: int, world: int) -> List[str]:
    """Cache keys of the inputs (hash of the audio file's bytes or of the text); with ``world`` > 1 each rank hashes
    every ``world``-th input and the ranks exchange them."""
    hash_of = file_hash if kind == "audio" else content_hash
    mine = [hash_of(r) for r in refs[rank::world]]
    if world == 1:
        return mine
    import torch.distributed as dist

    shares: List[Optional[List[str]]] = [None] * world
    dist.all_gather_object(shares, mine)
    return [shares[i % world][i // world] for i in range(len(refs))]


def _shard(missing: list, rank: int, world: int) -> list:
    """This rank's share (every ``world``-th item) of rank 0's list of missing items, so that every rank shards the
    same list even if the cache changes while they look."""
    import torch.distributed as dist

    box = [missing if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0][rank::world]


def _compute(todo, model, processor, spectral, kind, layer, pooling, device, batch_size, revision, sample_rate,
             max_length):
    """Yield (utterance id, feature) for every item in ``todo``, batch by batch."""
    if spectral:
        spec = SPECTRAL[model]
        for uid, path, _ in todo:
            wave = load_audio(path, sample_rate)
            x = log_mel(wave, sample_rate, spec["n_mels"], fmin=spec.get("fmin", 0.0), fmax=spec.get("fmax")) \
                if spec["n_mfcc"] is None else mfcc(wave, sample_rate, spec["n_mfcc"], spec["n_mels"])
            t = torch.as_tensor(x)[None]
            yield uid, _pool(t, torch.ones(1, t.shape[1], dtype=torch.bool), pooling)[0]
        return
    if isinstance(model, str):
        model, processor = _load_pretrained(model, kind, revision)
    if processor is None:
        raise ValueError("an already-built model needs its processor/tokenizer: pass (model, processor) or "
                         "processor=...")
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    if kind == "text":
        order = sorted(todo, key=lambda it: len(it[1]))
        batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
        for batch in batches:
            enc = processor([t for _, t, _ in batch], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.inference_mode():
                out = model(**enc, output_hidden_states=True)
            hidden = out.hidden_states if out.hidden_states is not None else (out.last_hidden_state,)
            for (uid, _, _), f in zip(batch, _pool(_select_layers(hidden, layer), enc["attention_mask"], pooling)):
                yield uid, f
        return
    sr = int(getattr(processor, "sampling_rate", sample_rate) or sample_rate)
    alone = getattr(getattr(model, "config", None), "feat_extract_norm", "layer") == "group"
    size = 1 if alone else batch_size
    for start in range(0, len(todo), size):
        batch = todo[start: start + size]
        waves = [load_audio(p, sr) for _, p, _ in batch]
        enc = processor(waves, sampling_rate=sr, padding=True, return_attention_mask=True, return_tensors="pt")
        values = enc["input_values"].to(device)
        sample_mask = enc.get("attention_mask")
        if sample_mask is None:
            sample_mask = torch.ones(values.shape[:2], dtype=torch.long)
        with torch.inference_mode():
            out = model(values, attention_mask=None if alone else sample_mask.to(device), output_hidden_states=True)
            hidden = out.hidden_states if out.hidden_states is not None else (out.last_hidden_state,)
            h = _select_layers(hidden, layer)
            n_frames = h.shape[-2]
            lengths = sample_mask.sum(-1)
            if hasattr(model, "_get_feat_extract_output_lengths"):
                frames = model._get_feat_extract_output_lengths(lengths).clamp(max=n_frames)
            else:
                frames = torch.full_like(lengths, n_frames)
            mask = torch.arange(n_frames)[None] < frames[:, None].cpu()
            feats = _pool(h, mask.to(h.device), pooling)
        for (uid, _, _), f in zip(batch, feats):
            yield uid, f
