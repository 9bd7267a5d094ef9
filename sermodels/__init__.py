"""sermodels: speech emotion recognition recipes built on kdekit."""
from kdekit import __version__


def load_run(run_dir, runs=None, seeds=None, device=None):
    """The predictor of a run folder (see :mod:`sermodels.predict`): ``load_run(d).predict(["a.wav"])``."""
    from .predict import load_run as _load_run

    return _load_run(run_dir, runs=runs, seeds=seeds, device=device)


__all__ = ["__version__", "load_run"]
