"""Feature extraction under ``torchrun --nproc-per-node 2``: ranks share the work into one cache that equals the
single-process cache, and a second run computes only the gaps."""
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sermodels.data import load_corpus
from sermodels.data.features import extract_features
from sermodels.data.synthetic import write_synthetic_corpus

HERE = Path(__file__).parent


def torchrun(corpus, cache, out):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / "features_ddp_worker.py"), str(corpus), str(cache), str(out)]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in range(2)]


def cache_files(cache):
    return {os.path.relpath(p, cache): np.load(p) for p in glob.glob(os.path.join(cache, "*", "*", "*.npy"))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    write_synthetic_corpus(root, "msp-improv", n_utterances=10, n_annotators=4, seed=5, engine="numpy")
    return root


def test_sharded_extraction_equals_single_process_and_resumes(corpus, tmp_path):
    utts = load_corpus("msp-improv", corpus).utterances
    single = extract_features(utts, "logmel", cache_dir=tmp_path / "single", progress=False)

    ranks = torchrun(corpus, tmp_path / "ddp", tmp_path / "first")
    assert [r["world_size"] for r in ranks] == [2, 2]
    done = [set(r["computed"]) for r in ranks]
    assert [len(d) for d in done] == [5, 5] and not done[0] & done[1]  # each rank computed its half
    assert all(len(r["computed"]) == r["n_computed"] for r in ranks)
    for r in ranks:  # every rank got every feature back
        assert r["checksums"] == pytest.approx({k: float(v.astype("float64").sum()) for k, v in single.items()})
    ref, got = cache_files(tmp_path / "single"), cache_files(tmp_path / "ddp")
    assert sorted(got) == sorted(ref) and len(ref) == 10  # same key folder, same item files
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])

    gone = sorted(got)[:3]
    for k in gone:
        os.remove(tmp_path / "ddp" / k)
    kept = {k: os.stat(tmp_path / "ddp" / k).st_mtime_ns for k in got if k not in gone}
    ranks = torchrun(corpus, tmp_path / "ddp", tmp_path / "second")
    assert sorted(len(r["computed"]) for r in ranks) == [1, 2]  # only the three gaps, shared
    assert {k: os.stat(tmp_path / "ddp" / k).st_mtime_ns for k in kept} == kept  # the rest is not rewritten
    again = cache_files(tmp_path / "ddp")
    assert sorted(again) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(again[k], ref[k])
