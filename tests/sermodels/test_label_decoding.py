"""Label-embedding recipe evaluation: cosine nearest-neighbour decoding equals a brute-force cosine search (label set
and whole GloVe vocabulary); the per-seed t-test against the baseline equals scipy's."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from sermodels.data.labels import load_glove
from sermodels.models.label_embedding import cosine_nearest
from sermodels.recipes.label_embedding import seed_summaries, tables


def _brute(q, table, k):
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    tn = table / np.linalg.norm(table, axis=1, keepdims=True)
    sims = qn.astype(np.float64) @ tn.astype(np.float64).T
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, idx, 1), idx


@pytest.mark.parametrize("seed,V,k,chunk", [(0, 4, 1, 65536), (1, 1000, 10, 97), (2, 257, 5, 256), (3, 50, 50, 7)])
def test_cosine_nearest_equals_brute_force(seed, V, k, chunk):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(V, 50)).astype(np.float32) * rng.uniform(0.1, 5, size=(V, 1)).astype(np.float32)
    q = rng.normal(size=(13, 50)).astype(np.float32)
    s, i = cosine_nearest(torch.from_numpy(q), torch.from_numpy(table), k=k, chunk=chunk)
    ref_s, ref_i = _brute(q, table, k)
    np.testing.assert_array_equal(i.numpy(), ref_i)
    np.testing.assert_allclose(s.numpy(), ref_s, atol=1e-5)


def test_decoding_is_scale_invariant_and_rejects_bad_k():
    rng = np.random.default_rng(4)
    table, q = torch.from_numpy(rng.normal(size=(6, 8))), torch.from_numpy(rng.normal(size=(5, 8)))
    torch.testing.assert_close(cosine_nearest(q, table)[1], cosine_nearest(7.5 * q, 0.1 * table)[1])
    with pytest.raises(ValueError, match="k must be"):
        cosine_nearest(q, table, k=7)
    with pytest.raises(ValueError, match="queries"):
        cosine_nearest(q[:, :3], table)


def test_glove_vocabulary_neighbours_match_brute_force():
    """Real GloVe 6B-50d: neighbours over the first 50 000 words, streamed in chunks, equal a dense search."""
    glove = load_glove()
    emb = np.array(glove.matrix[:50000], dtype=np.float32)
    words = glove.words[:50000]
    queries = np.stack([glove.vector(w) for w in ("anger", "happiness", "sadness", "neutral")])
    queries[1] = 0.5 * (queries[1] + glove.vector("excitement"))  # a combined S2-style label
    s, i = cosine_nearest(torch.from_numpy(queries), torch.from_numpy(emb), k=5, chunk=4096)
    ref_s, ref_i = _brute(queries, emb, 5)
    np.testing.assert_array_equal(i.numpy(), ref_i)
    assert words[int(i[0, 0])] == "anger" and words[int(i[2, 0])] == "sadness"


def test_seed_t_test_against_the_baseline_equals_scipy():
    """Fold means per seed, paired two-sided t-test over seeds (scipy.stats.ttest_rel), printed in Table 1."""
    rng = np.random.default_rng(5)
    seeds, sessions = [0, 1, 2, 3, 4], ["Ses01", "Ses02"]
    ua = {"baseline_ce": rng.uniform(0.3, 0.5, (5, 2)), "M1_mse": rng.uniform(0.3, 0.6, (5, 2)),
          "M2_mse": rng.uniform(0.7, 0.9, (5, 2))}
    per_fold = {tag: [{"seed": sd, "session": ses, "UA": float(v[i, j]), "WA": float(v[i, j] ** 2),
                       **({} if tag == "baseline_ce" else {"cos_S1": float(v[i, j] / 2), "neighbours": {}})}
                      for i, sd in enumerate(seeds) for j, ses in enumerate(sessions)] for tag, v in ua.items()}
    summary, by_seed = seed_summaries(per_fold, alpha=0.05)
    base = ua["baseline_ce"].mean(1)
    for tag in ("M1_mse", "M2_mse"):
        fold_means = ua[tag].mean(1)
        s = by_seed[tag]["UA"]
        assert s.p_value == pytest.approx(stats.ttest_rel(fold_means, base).pvalue, rel=1e-12)
        assert s.mean == pytest.approx(fold_means.mean()) == pytest.approx(summary[tag]["UA"])
        assert s.std == pytest.approx(fold_means.std(ddof=1)) and s.n == 5
        assert by_seed[tag]["WA"].p_value == pytest.approx(
            stats.ttest_rel((ua[tag] ** 2).mean(1), (ua["baseline_ce"] ** 2).mean(1)).pvalue, rel=1e-12)
        assert math.isnan(by_seed[tag]["cos_S1"].p_value)  # the baseline has no embedding metrics
    assert by_seed["M2_mse"]["UA"].mark == "*" and by_seed["M2_mse"]["UA"].p_value < 0.05
    assert math.isnan(by_seed["baseline_ce"]["UA"].p_value)
    two = seed_summaries({t: [r for r in rs if r["seed"] < 2] for t, rs in per_fold.items()})[1]
    assert math.isnan(two["M2_mse"]["UA"].p_value) and two["M2_mse"]["UA"].mark == ""  # < 3 seeds: no t-test
    from dataclasses import asdict

    from sermodels.config import build
    from sermodels.recipes.label_embedding import Config

    cfg = build(Config, overrides=["train.losses=[mse]"])
    table = tables(cfg, {"seeds": {t: {k: asdict(v) for k, v in m.items()} for t, m in by_seed.items()},
                         "neighbours_last_fold": {}})
    m2 = next(line for line in table.splitlines() if line.startswith("M2 "))
    s = by_seed["M2_mse"]["UA"]
    assert f"{s.mean:.3f}+-{s.std:.3f}* (p={s.p_value:.3g})" in m2
    assert "Baseline (cross-entropy): " in table and "paired two-sided t-test over 5 seeds" in table
