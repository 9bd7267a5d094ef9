"""Worker for test_features_ddp.py: ``extract_features`` into one cache, under torchrun (gloo on CPU).

``python -m torch.distributed.run --nproc_per_node=2 tests/sermodels/features_ddp_worker.py CORPUS CACHE OUT``: every
rank writes ``OUT.rank<r>.json`` with the utterances it computed itself and a checksum of every feature it got back.
"""
from __future__ import annotations

import json
import os
import sys

import sermodels.data.features as F
from sermodels.data import load_corpus
from sermodels.train import cleanup_distributed, init_distributed


def run(corpus_root: str, cache_dir: str, out: str) -> None:
    info = init_distributed("cpu")
    computed = []
    load_audio = F.load_audio

    def counting_load_audio(path, sample_rate):
        computed.append(path)
        return load_audio(path, sample_rate)

    F.load_audio = counting_load_audio  # _compute reads each item it computes once
    utts = load_corpus("msp-improv", corpus_root).utterances
    feats = F.extract_features(utts, "logmel", cache_dir=cache_dir, progress=False)
    mine = [u.utterance_id for u in utts if u.audio_path in computed]
    with open(f"{out}.rank{info.rank}.json", "w") as f:
        json.dump({"world_size": info.world_size, "computed": mine, "n_computed": len(computed),
                   "checksums": {uid: float(v.astype("float64").sum()) for uid, v in feats.items()}}, f)
    cleanup_distributed()


if __name__ == "__main__":
    run(*sys.argv[1:4])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # see ddp_worker.py: no interpreter finalisation after the process group is gone
