"""kdekit: batched, differentiable diffusion KDE, histograms and distribution metrics for PyTorch."""
__version__ = "0.1.0"
