"""W6 import overhead: ``python -c "import torch"`` and ``python -c "import torch, kdekit"`` in fresh interpreters
(``python -m bench --only W6`` reports the median of the per-round differences)."""
WORKLOAD = "W6"


def test_w6_import(case, run_registry_case):
    run_registry_case(case)
