"""Cosine nearest-neighbour decoding equals a brute-force cosine search (label set and whole GloVe vocabulary)."""
import numpy as np
import pytest
import torch

from sermodels.data.labels import GloVe
from sermodels.models.label_embedding import cosine_nearest


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
    glove = GloVe()
    emb = np.array(glove._load()[0][:50000], dtype=np.float32)
    words = glove._words[:50000]
    queries = np.stack([glove.vector(w) for w in ("anger", "happiness", "sadness", "neutral")])
    queries[1] = 0.5 * (queries[1] + glove.vector("excitement"))  # a combined S2-style label
    s, i = cosine_nearest(torch.from_numpy(queries), torch.from_numpy(emb), k=5, chunk=4096)
    ref_s, ref_i = _brute(queries, emb, 5)
    np.testing.assert_array_equal(i.numpy(), ref_i)
    assert words[int(i[0, 0])] == "anger" and words[int(i[2, 0])] == "sadness"
