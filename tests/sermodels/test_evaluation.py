"""Evaluation: metrics equal kdekit's (and scipy's) on the same tensors, independent of batching; seeds and t-tests."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import jensenshannon

import kdekit
from sermodels import evaluation as ev


def _tables(gen, B, k=4):
    p = torch.rand(B, k, k, generator=gen, dtype=torch.float64) ** 3
    return p / p.sum(dim=(-2, -1), keepdim=True)


def _ccc_numpy(x, y, ddof):
    x, y = np.asarray(x, float), np.asarray(y, float)
    cov = ((x - x.mean()) * (y - y.mean())).sum() / (len(x) - ddof)
    return 2 * cov / (x.var(ddof=ddof) + y.var(ddof=ddof) + (x.mean() - y.mean()) ** 2)


def test_bin_positions_conventions():
    # the default is the paper's (section 3.4): [-1, -0.5, 0.5, 1]
    torch.testing.assert_close(ev.bin_positions(4), torch.tensor([-1, -0.5, 0.5, 1], dtype=torch.float64))
    torch.testing.assert_close(ev.bin_positions(2), torch.tensor([-1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ev.bin_positions(4, "centres"),
                               torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64))
    torch.testing.assert_close(ev.bin_positions(2, "centres"), torch.tensor([-0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(ev.bin_positions(4, "linspace"),
                               torch.tensor([-1, -1 / 3, 1 / 3, 1], dtype=torch.float64))
    torch.testing.assert_close(ev.bin_positions(4, "paper"), torch.tensor([-1, -0.5, 0.5, 1], dtype=torch.float64))
    with pytest.raises(ValueError, match="bin_positions"):
        ev.bin_positions(4, "edges")


def test_expected_values_and_coarsen():
    g = torch.Generator().manual_seed(0)
    p = _tables(g, 6)
    e = ev.expected_values(p, "centres")
    pos = np.array([-0.75, -0.25, 0.25, 0.75])
    pn = p.numpy()
    np.testing.assert_allclose(e[:, 0].numpy(), pn.sum(2) @ pos, rtol=1e-12)
    np.testing.assert_allclose(e[:, 1].numpy(), pn.sum(1) @ pos, rtol=1e-12)
    c = ev.coarsen(p, 2)
    np.testing.assert_allclose(c[:, 0, 1].numpy(), pn[:, :2, 2:].sum((1, 2)), rtol=1e-12)
    torch.testing.assert_close(c.sum((-2, -1)), torch.ones(6, dtype=torch.float64))
    # block sums of a pooled 4x4 = pooling the same density straight to 2x2
    density = torch.rand(3, 64, 64, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ev.coarsen(kdekit.pool_density(density, 4), 2), kdekit.pool_density(density, 2))


def test_distribution_metrics_equal_kdekit_and_scipy_on_the_concatenation():
    g = torch.Generator().manual_seed(1)
    pred, target = _tables(g, 37), _tables(g, 37)
    consensus = torch.rand(37, 2, generator=g, dtype=torch.float64) * 2 - 1
    m = ev.DistributionMetrics(ks=(4, 2), convention="centres", unbiased=True)
    for sl in (slice(0, 10), slice(10, 11), slice(11, 37)):  # uneven batches
        m.update(pred[sl], target[sl], consensus[sl])
    out = m.compute()
    for k in (4, 2):
        p, q = ev.coarsen(pred, k), ev.coarsen(target, k)
        assert out[f"k{k}_tvd"] == pytest.approx(float(kdekit.tvd(p, q, dim=(-2, -1)).mean()), rel=1e-12)
        assert out[f"k{k}_jsd"] == pytest.approx(float(kdekit.jsd(p, q, dim=(-2, -1)).mean()), rel=1e-12)
        # independent oracles: scipy's JSD (natural log) and TVD in numpy
        js = np.mean([jensenshannon(a.ravel(), b.ravel()) ** 2 for a, b in zip(p.numpy(), q.numpy())])
        assert out[f"k{k}_jsd"] == pytest.approx(js, rel=1e-9)
        assert out[f"k{k}_tvd"] == pytest.approx(0.5 * np.abs(p.numpy() - q.numpy()).sum((1, 2)).mean(), rel=1e-12)
        e = ev.expected_values(p, "centres")
        for j, dim in enumerate(("activation", "valence")):
            ref = kdekit.ccc(e[:, j], consensus[:, j], dim=0, unbiased=True)
            assert out[f"k{k}_ccc_{dim}"] == pytest.approx(float(ref), rel=1e-10)
            assert out[f"k{k}_ccc_{dim}"] == pytest.approx(_ccc_numpy(e[:, j], consensus[:, j], 1), rel=1e-10)


def test_annotator_metrics_over_valid_pairs():
    g = torch.Generator().manual_seed(2)
    pred = torch.rand(20, 5, 2, generator=g, dtype=torch.float64) * 2 - 1
    ratings = (pred + 0.3 * torch.randn(20, 5, 2, generator=g, dtype=torch.float64)).clamp(-1, 1)
    pad = torch.rand(20, 5, generator=g) < 0.4
    ratings[pad] = float("nan")
    pred[pad] = float("nan")
    m = ev.AnnotatorMetrics(unbiased=False)
    m.update(pred[:7], ratings[:7])
    m.update(pred[7:], ratings[7:])
    out = m.compute()
    valid = ~pad
    for j, dim in enumerate(("activation", "valence")):
        x, y = pred[..., j][valid].numpy(), ratings[..., j][valid].numpy()
        assert out[f"annotator_ccc_{dim}"] == pytest.approx(_ccc_numpy(x, y, 0), rel=1e-10)


def test_summarize_seeds_matches_scipy_ttest_rel_and_marks_direction():
    base = [{"soft_k4_tvd": v, "soft_k4_ccc_activation": c} for v, c in
            [(0.52, 0.60), (0.51, 0.62), (0.53, 0.61), (0.515, 0.60), (0.52, 0.63)]]
    better = [{"soft_k4_tvd": r["soft_k4_tvd"] - d, "soft_k4_ccc_activation": r["soft_k4_ccc_activation"] - 0.05 + e}
              for r, d, e in zip(base, [0.010, 0.012, 0.009, 0.011, 0.010], [0.001, -0.002, 0.0, 0.002, -0.001])]
    same = [dict(r) for r in base]
    s = ev.summarize_seeds({"baseline": base, "mt": better, "copy": same}, baseline="baseline")
    tv = np.array([r["soft_k4_tvd"] for r in better])
    bv = np.array([r["soft_k4_tvd"] for r in base])
    assert s["mt"]["soft_k4_tvd"].p_value == pytest.approx(stats.ttest_rel(tv, bv).pvalue, rel=1e-12)
    assert s["mt"]["soft_k4_tvd"].mean == pytest.approx(tv.mean())
    assert s["mt"]["soft_k4_tvd"].std == pytest.approx(tv.std(ddof=1))
    assert s["mt"]["soft_k4_tvd"].mark == "*"  # lower TVD: improvement
    assert s["mt"]["soft_k4_ccc_activation"].mark == "†"  # lower CCC: decline
    assert s["copy"]["soft_k4_tvd"].mark == "" and math.isnan(s["copy"]["soft_k4_tvd"].p_value)
    assert math.isnan(s["baseline"]["soft_k4_tvd"].p_value)
    table = ev.format_table1(s, {"baseline": "soft", "mt": "soft", "copy": "soft"}, k=4)
    assert "TVD↓" in table and "Val. CCC↑" in table
    mt_row = next(line for line in table.splitlines() if line.startswith("mt"))
    assert f"{tv.mean():.3f}+-{tv.std(ddof=1):.3f}*" in mt_row and "n/a" in mt_row  # valence / annotator CCC absent
    t2 = ev.format_table2({"P": s, "I": s}, {"baseline": "soft", "mt": "soft", "copy": "soft"}, k=4)
    lines = t2.splitlines()
    assert lines[0].split()[:2] == ["Metric", "Dataset"] and sum("I" in line.split()[:2] for line in lines) == 4


def test_summarize_seeds_pairs_each_models_reported_variant_with_the_baselines():
    """The baseline reports ``model_*`` keys, annotator models ``hard_own_*``: the t-test pairs those, seed by seed."""
    base = [{"model_k4_tvd": v} for v in (0.556, 0.551, 0.561)]
    mt = [{"hard_own_k4_tvd": v, "soft_own_k4_tvd": v + 0.01} for v in (0.519, 0.531, 0.518)]
    s = ev.summarize_seeds({"baseline": base, "mt": mt}, baseline="baseline",
                           variant={"baseline": "model", "mt": "hard_own"})
    expected = stats.ttest_rel([r["hard_own_k4_tvd"] for r in mt], [r["model_k4_tvd"] for r in base]).pvalue
    assert s["mt"]["hard_own_k4_tvd"].p_value == pytest.approx(expected, rel=1e-12)
    assert s["mt"]["hard_own_k4_tvd"].mark == "*"
    assert math.isnan(s["mt"]["soft_own_k4_tvd"].p_value)  # not the reported variant: nothing to pair with
    unpaired = ev.summarize_seeds({"baseline": base, "mt": mt}, baseline="baseline")
    assert math.isnan(unpaired["mt"]["hard_own_k4_tvd"].p_value)
