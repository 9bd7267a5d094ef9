"""The benchmark method (bench/runner.py, bench/registry.py): same items, interleaved rounds, peak memory per row.

These check the method, not speed: the schedule of the rounds, the statistics and targets, that every contender of a
group works on items of one set (and the W1 contenders compute the same tables there), and that the peak-memory probe
sees an allocation made inside the call.
"""
import itertools

import numpy as np
import pytest
import torch

from bench import registry, runner, workloads

SMOKE = registry.MODES["smoke"]


# ---- schedule ----


def test_round_order_rotates_the_start():
    assert runner.round_order(3, 0) == [0, 1, 2]
    assert runner.round_order(3, 1) == [1, 2, 0]
    assert runner.round_order(3, 5) == [2, 0, 1]


def _fake_clock(step=1.0):
    counter = itertools.count()
    return lambda: next(counter) * step


def test_interleave_rotates_and_runs_every_contender_in_each_round():
    log = []
    calls = [lambda i=i: log.append(i) or 0.1 for i in range(3)]
    clock = _fake_clock(0.0)  # the budget never runs out: max_rounds stops
    samples, errors = runner.interleave(calls, [3, 3, 3], budget_s=1.0, max_rounds=4, clock=clock)
    assert errors == [None, None, None]
    assert log == [0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2]
    assert all(sorted(s) == [0, 1, 2, 3] for s in samples)


def test_interleave_gives_minimum_rounds_when_the_budget_is_spent_and_slow_contenders_fewer():
    log = []
    calls = [lambda i=i: log.append(i) or 1.0 for i in range(3)]
    # budget 0: only the minimum rounds; contender 2 is slow (1 round)
    samples, _ = runner.interleave(calls, [3, 3, 1], budget_s=0.0, max_rounds=100, clock=_fake_clock())
    assert [len(s) for s in samples] == [3, 3, 1]
    assert log == [0, 1, 2, 1, 0, 0, 1]  # round 1 starts at contender 1, round 2 at contender 2 (not running: 0, 1)


def test_interleave_drops_a_failing_contender_and_reports_it():
    def boom():
        raise RuntimeError("out of memory")

    samples, errors = runner.interleave([lambda: 0.5, boom], [3, 3], budget_s=0.0, max_rounds=10,
                                        clock=_fake_clock())
    assert len(samples[0]) == 3 and samples[1] == {}
    assert errors[0] is None and "out of memory" in errors[1]


def test_row_statistics():
    row = runner.Row(registry.Case("W9", "v", "c", lambda: None), samples={0: 4.0, 1: 1.0, 2: 2.0, 3: 3.0})
    assert row.median == 2.5 and row.min == 1.0
    assert row.iqr == pytest.approx(1.5)  # inclusive quartiles of 1..4: 1.75 and 3.25
    assert runner.Row(registry.Case("W9", "v", "c", lambda: None), samples={0: 1.0}).iqr is None


def test_run_group_scales_subset_rows_and_reports_per_call_times():
    def case(contender, items, calls=1, ref=False):
        return registry.Case("W1", "v", contender, lambda: (lambda: None), items=items, total=8, calls=calls,
                             ref=ref, warmup=False)

    rows = runner.run_group([case("subset", 2), case("whole", 8, ref=True), case("per call", 8, calls=4)],
                            registry.MODES["smoke"], "cpu")
    assert [r.case.scale for r in rows] == [4.0, 1.0, 1.0]
    assert all(len(r.samples) == 1 and r.error is None for r in rows)


# ---- targets and report ----


def _row(workload, variant, contender, samples, ref=False, total=1300, memory=None, compare="ratio"):
    case = registry.Case(workload, variant, contender, lambda: None, items=total, total=total, ref=ref,
                         compare=compare)
    return runner.Row(case, samples=dict(enumerate(samples)), memory=memory)


def test_targets_speedup_overhead_and_memory():
    variant = "1300 utterances x 200 points, grid 512, float64"
    rows = [
        _row("W1", variant, "kde_diffusion.kde2d loop", [60.0, 61.0, 59.0]),
        _row("W1", variant, "kdekit[default=cpp] diffusion_kde2d(pool=4)", [1.0, 1.1, 0.9], ref=True,
             memory={"rss_peak": 100e6, "method": "VmHWM"}),
        _row("W6", "imports", "python -c 'import torch'", [1.0, 1.2, 1.1], ref=True, compare="difference"),
        _row("W6", "imports", "python -c 'import torch, kdekit'", [1.1, 1.3, 1.6], compare="difference"),
    ]
    speed, memory, *_ = registry.TARGETS
    assert speed.kind == "speedup" and memory.kind == "memory"
    status, detail = runner.evaluate_target(speed, rows, {})
    assert status == "met" and detail.startswith("60.0x")
    sweep = {130: {"rss_peak": 90e6}, 1300: {"rss_peak": 100e6}}
    assert runner.evaluate_target(memory, rows, sweep)[0] == "met"
    assert runner.evaluate_target(memory, rows, {130: {"rss_peak": 10e6}, 1300: {"rss_peak": 400e6}})[0] == "not met"
    assert runner.evaluate_target(memory, rows, {1300: {"rss_peak": 600e6}})[0] == "not met"
    overhead = next(t for t in registry.TARGETS if t.kind == "overhead")
    status, detail = runner.evaluate_target(overhead, rows, {})
    assert status == "met" and detail.startswith("+0.100 s")  # per-round differences 0.1, 0.1, 0.5
    w2 = next(t for t in registry.TARGETS if t.workload == "W2")
    assert runner.evaluate_target(w2, rows, {})[0] == "not measured"
    # a reduced item set is flagged
    small = [_row("W1", variant, r.case.contender, r.values, ref=r.case.ref, total=130) for r in rows[:2]]
    assert "indicative only: 130 of 1300" in runner.evaluate_target(speed, small, {})[1]
    assert runner.evaluate_target(memory, small, {})[0] == "not measured"


def test_table_marks_the_reference_and_the_ratio():
    rows = [_row("W3", "v", "other", [2.0, 2.0, 2.0]), _row("W3", "v", "kdekit", [1.0, 1.0, 1.0], ref=True)]
    table = runner.cases_table(rows)
    assert "| 2.00× |" in table and "| ref |" in table


# ---- same items ----


def test_item_sets_are_spread_subsets_of_one_corpus():
    assert workloads.spread(1300, 100).tolist() == list(range(0, 1300, 13))
    assert workloads.spread(8, 20).tolist() == list(range(8))
    assert workloads.every_kth(1300, 100).tolist() == list(range(0, 1300, 13))
    assert workloads.every_kth(130, 10).tolist() == list(range(0, 130, 13))
    x, y, a, _ = workloads.label_item_set(40, 10)
    x_all, _, a_all, _ = workloads.label_item_set(40, 40)
    torch.testing.assert_close(x, x_all[::4])
    torch.testing.assert_close(a, a_all[::4], equal_nan=True)
    assert y.shape == x.shape


def test_every_group_has_one_reference_and_kdekit_rows_run_the_whole_set():
    cases = registry.all_cases(SMOKE, "cpu", ["W1", "W2", "W3", "W5"])
    for group in runner.group_cases(cases):
        assert sum(c.ref for c in group) == 1, group[0].group
        for c in group:
            assert c.items <= c.total
            if c.kdekit:
                assert c.items == c.total, c.id
    assert len({c.id for c in cases}) == len(cases)


def test_w1_contenders_compute_the_same_tables_on_the_same_items():
    grid = 64
    x, y, _, _ = workloads.label_item_set(40, 8)
    ours = registry.kdekit_labels(x, y, grid)
    assert ours.converged.all()
    theirs, raised = registry.kde_diffusion_tables(x.numpy(), y.numpy(), grid)
    assert raised == 0
    np.testing.assert_allclose(np.stack(theirs), ours.density.numpy(), atol=1e-10)
    seed, failed = registry.seed_tables(x, y, grid, chunk=3)
    assert failed == 0
    torch.testing.assert_close(torch.cat(seed), ours.density, atol=1e-10, rtol=0)
    light = np.stack(registry.lightkde_tables(x.numpy(), y.numpy(), grid))
    np.testing.assert_allclose(light, ours.density.numpy(), atol=2e-2)  # lightkde: its own grid and bandwidth rule


def test_w2_steps_reseed_so_every_call_draws_the_same_observations():
    for make in (registry.w2_kdekit_step, registry.w2_seed_step):
        step = make(4, 8, torch.float32, 64, "cpu")
        first, second = step(), step()
        assert torch.isfinite(first)
        torch.testing.assert_close(first, second, atol=0, rtol=0)


# ---- peak memory ----


def test_peak_of_call_sees_an_allocation_inside_the_call():
    def allocate():
        block = np.ones(40 * 2**20 // 8)  # 40 MiB, touched
        return float(block[-1])

    peak = runner.peak_of_call(allocate)
    assert peak["rss_peak"] >= 30 * 2**20, peak
    idle = runner.peak_of_call(lambda: None)
    assert idle["rss_peak"] < 8 * 2**20, idle


def test_memory_of_a_row_in_a_fresh_subprocess():
    case = registry.w1_memory_case(SMOKE, "cpu", 4)
    mem, err = runner.memory_in_subprocess(case.id, ["--mode", "smoke", "--items", "4", "--threads", "1"], "cpu")
    assert err is None, err
    assert 0 <= mem["rss_peak"] < 200 * 2**20


# ---- end to end ----


def test_python_m_bench_writes_a_report_with_targets(tmp_path):
    out = tmp_path / "results.md"
    threads = torch.get_num_threads()
    try:
        runner.main(["--mode", "smoke", "--only", "W3,W5", "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    text = out.read_text()
    assert "**Summary**" in text and "W5 single call, grid 64" in text
    assert "| W5 |" in text and "| W3 |" in text and "| ref |" in text
    assert "W1 labels" not in text  # targets of workloads not run are left out
