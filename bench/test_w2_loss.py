"""W2 training loss (soft histogram, forward + backward): every contender of the registry on the same inputs and the
same generator seed (reseeded at every call)."""
WORKLOAD = "W2"


def test_w2_loss(case, run_registry_case):
    run_registry_case(case)
