"""W5 single calls: the drop-in ``kdekit.kde2d`` and ``kde_diffusion.kde2d``, one item per call, on the same items.

A timed call here runs every item once (``extra_info["calls"]`` calls): divide by it for the time per call.
"""
WORKLOAD = "W5"


def test_w5_single_call(case, run_registry_case):
    run_registry_case(case)
