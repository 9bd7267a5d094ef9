"""pytest-benchmark entry: ``pytest bench --benchmark-only`` times the registry cases, one case at a time.

pytest-benchmark times one callable after another (no interleaved rounds, no peak memory): use it to compare a case
across commits (``--benchmark-autosave`` / ``--benchmark-compare``). Side-by-side ratios come from ``python -m bench``,
which times the contenders of a group in interleaved rounds (:mod:`bench.runner`).

Sizes: ``smoke`` under ``--benchmark-disable`` (each case runs once, tiny inputs: the CI smoke test), else the
preset named by ``KDEKIT_BENCH_MODE`` (``quick`` by default, or ``full``). The device is CUDA when available.
The smoke run uses one torch thread. Cases on a subset of their group's items (``extra_info["scale"] > 1``) are
timed on that subset; multiply by ``scale`` for the whole set.
"""
import os

import pytest
import torch

from bench import registry


def pytest_configure(config):
    if config.getoption("benchmark_disable"):
        torch.set_num_threads(1)  # smoke run: results unused, and one thread is far steadier on a shared CPU


def bench_sizes(config) -> registry.Sizes:
    if config.getoption("benchmark_disable"):
        return registry.MODES["smoke"]
    return registry.MODES[os.environ.get("KDEKIT_BENCH_MODE", "quick")]


def bench_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pytest_generate_tests(metafunc):
    sizes = bench_sizes(metafunc.config)
    if "case" in metafunc.fixturenames:
        workload = metafunc.module.WORKLOAD
        cases = [c for c in registry.all_cases(sizes, bench_device(), [workload])]
        metafunc.parametrize("case", cases, ids=[f"{c.variant}|{c.contender}" for c in cases])
    if "sweep_point" in metafunc.fixturenames:
        points = [(s, v) for s in registry.w4_sweeps(sizes, bench_device()) for v in s.values]
        metafunc.parametrize("sweep_point", points, ids=[f"{s.workload}-{s.axis}={v}" for s, v in points])


def run_case(benchmark, fn, rounds: int = 3, warmup: bool = True):
    """Time ``fn`` with pytest-benchmark; with ``--benchmark-disable`` it runs once."""
    if torch.cuda.is_available():
        def timed():
            fn()
            torch.cuda.synchronize()
    else:
        timed = fn
    benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=1 if warmup else 0)


@pytest.fixture
def run_registry_case(benchmark):
    def run(case: registry.Case):
        benchmark.extra_info.update(items=case.items, total=case.total, scale=case.scale, calls=case.calls)
        fn = case.setup()
        if case.warmup_setup is not None and not getattr(benchmark, "disabled", False):
            case.warmup_setup()()  # the contender's cheaper warm-up (a few items of the set), untimed
        run_case(benchmark, fn, rounds=50 if case.workload == "W3" else 3,
                 warmup=case.warmup and case.warmup_setup is None)

    return run
