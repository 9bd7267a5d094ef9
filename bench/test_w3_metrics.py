"""W3 metrics (CCC, JSD, TVD): every contender of the registry on the same inputs."""
WORKLOAD = "W3"


def test_w3_metrics(case, run_registry_case):
    run_registry_case(case)
