"""W4 scaling: kdekit's W1 and W2 cost at each point of the B, N and grid-n sweeps (``python -m bench`` fits the
growth exponents)."""
from bench.conftest import run_case


def test_w4_scaling(sweep_point, benchmark):
    sweep, value = sweep_point
    benchmark.extra_info.update(workload=sweep.workload, axis=sweep.axis, value=value)
    run_case(benchmark, sweep.make(value))
