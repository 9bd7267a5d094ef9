"""W3 metrics (CCC, JSD, TVD): every contender of the registry on the same inputs.

Sub-sampled contenders time ``items`` of ``total`` utterances; ``extra_info["scale"]`` converts to the whole
workload (``python -m bench`` does that in its table).
"""
WORKLOAD = "W3"


def test_w3_metrics(case, run_registry_case):
    run_registry_case(case)
