"""On-disk feature cache: one ``.npy`` file per item, written atomically.

Layout: ``<cache_dir>/<key hash>/meta.json`` (the key in clear) and ``<cache_dir>/<key hash>/<ab>/<item hash>.npy``.
The key hash covers the extractor settings (model id, revision, layer, pooling, ...); the item hash is the
content hash of the input (audio file bytes or transcript text). Files are written to a unique temporary name in
the same folder and moved into place with ``os.replace``, so an interrupted run leaves only complete files (it
resumes from them) and concurrent readers never see a partial file.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Optional

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
