"""Synthetic corpora for the command-line tests, written as a user writes them: ``sermodels synth``."""
from sermodels.cli import main


def synth(out, corpus: str, n: int, *extra: str) -> str:
    """``sermodels synth`` of ``n`` utterances by 6 annotators in ``corpus``'s layout into ``out`` (short clips, numpy
    engine; ``extra``: more CLI flags); returns the root as a string."""
    assert main(["synth", "--corpus", corpus, "--out", str(out), "--utterances", str(n), "--annotators", "6",
                 "--engine", "numpy", "--seconds", "0.8", "1.2", *extra]) == 0
    return str(out)
