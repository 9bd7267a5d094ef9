"""On-disk feature cache: one ``.npy`` file per item, written atomically.

Layout: ``<cache_dir>/<key hash>/meta.json`` (the key in clear) and ``<cache_dir>/<key hash>/<ab>/<item hash>.npy``.
The key hash covers the extractor settings (model id, revision, layer, pooling, ...); the item hash is the
content hash of the input (audio file bytes or transcript text). Files are written to a unique temporary name in
the same folder and moved into place with ``os.replace``, so an interrupted run leaves only complete files (it
resumes from them) and concurrent readers never see a partial file.

:func:`audio_durations` keeps the durations read from audio headers in a small JSON cache per corpus.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Dict, Optional, Tuple

import numpy as np


def content_hash(data) -> str:
    """sha256 hex digest of bytes or of a str encoded as UTF-8."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def file_hash(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class FeatureCache:
    """Per-item feature files under ``cache_dir`` for one extractor configuration ``key`` (a JSON-able dict)."""

    def __init__(self, cache_dir, key: dict):
        self.key = key
        self.key_hash = content_hash(json.dumps(key, sort_keys=True, default=str))[:20]
        self.dir = os.path.join(str(cache_dir), self.key_hash)
        os.makedirs(self.dir, exist_ok=True)
        meta = os.path.join(self.dir, "meta.json")
        if not os.path.exists(meta):
            _atomic_write(meta, lambda f: f.write(json.dumps(key, sort_keys=True, indent=1, default=str).encode()))

    def path(self, item_hash: str) -> str:
        return os.path.join(self.dir, item_hash[:2], item_hash + ".npy")

    def __contains__(self, item_hash: str) -> bool:
        return os.path.isfile(self.path(item_hash))

    def get(self, item_hash: str) -> Optional[np.ndarray]:
        p = self.path(item_hash)
        if not os.path.isfile(p):
            return None
        return np.load(p, allow_pickle=False)

    def put(self, item_hash: str, array: np.ndarray) -> None:
        p = self.path(item_hash)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        _atomic_write(p, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))


def cache_root() -> str:
    """``$SERMODELS_CACHE``, else ``$XDG_CACHE_HOME/sermodels`` (default ``~/.cache/sermodels``)."""
    if os.environ.get("SERMODELS_CACHE"):
        return os.environ["SERMODELS_CACHE"]
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sermodels")


def audio_durations(paths, group: str, cache_dir=None) -> Tuple[Dict[str, float], Dict[str, str]]:
    """Durations in seconds of audio files from their headers (``soundfile.info``), cached across runs.

    Returns ``(durations, errors)`` keyed by path; ``errors`` holds the reason for each file whose header cannot be
    read. The cache is one JSON file per ``group`` (e.g. a corpus root) under ``cache_dir`` (default
    :func:`cache_root`/durations); an entry is reused while the file's size and modification time are unchanged. An
    unwritable cache only costs the re-read next time.
    """
    import soundfile as sf

    path = os.path.join(str(cache_dir or os.path.join(cache_root(), "durations")),
                        content_hash(os.path.abspath(group))[:20] + ".json")
    try:
        with open(path, encoding="utf-8") as f:
            cached = json.load(f)
    except (OSError, ValueError):
        cached = {}
    durations: Dict[str, float] = {}
    errors: Dict[str, str] = {}
    changed = False
    for p in paths:
        key = os.path.abspath(p)
        try:
            st = os.stat(p)
            stamp = [st.st_size, st.st_mtime_ns]
            hit = cached.get(key)
            if hit is not None and hit[:2] == stamp:
                durations[p] = hit[2]
                continue
            info = sf.info(p)
            durations[p] = info.frames / info.samplerate
        except (OSError, RuntimeError, ValueError) as e:
            errors[p] = f"cannot read the audio header: {e}"
            continue
        cached[key] = stamp + [durations[p]]
        changed = True
    if changed:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _atomic_write(path, lambda f: f.write(json.dumps(cached).encode()))
        except OSError:
            pass
    return durations, errors
