"""W1 labels (hard histogram, float64, pooled 4x4): every contender of the registry on the same inputs.

Contenders on a subset time ``items`` of the group's ``total`` items; ``extra_info["scale"]`` converts to the whole
workload (``python -m bench`` does that in its table).
"""
WORKLOAD = "W1"


def test_w1_labels(case, run_registry_case):
    run_registry_case(case)
