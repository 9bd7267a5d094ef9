"""W2 training loss (soft histogram, forward + backward): every contender of the registry on the same inputs.

Sub-sampled contenders time ``items`` of ``total`` utterances; ``extra_info["scale"]`` converts to the whole
workload (``python -m bench`` does that in its table).
"""
WORKLOAD = "W2"


def test_w2_loss(case, run_registry_case):
    run_registry_case(case)
