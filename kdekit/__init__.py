"""kdekit: batched, differentiable diffusion KDE, histograms and distribution metrics for PyTorch.

Drop-in for KDE-diffusion (``from kdekit import kde1d, kde2d``) plus torch-native batched ops:

=====================  ============================================================================
histograms             hard_histogram1d/2d (numpy binning), soft_histogram1d/2d (sigmoid, differentiable)
DCT                    dct, idct, dct2, idct2 (scipy ``norm=None``)
diffusion KDE          diffusion_kde1d/2d (+ ``_binned``), KDEStatus (per-item status, never raises)
distribution labels    pool_density, pseudo_observations, labels_from_ratings/_observations,
                       points_to_distribution
metrics                ccc, ccc_loss, pearson, CCCMoments (streaming, DDP), jsd, kl, tvd
modules                kdekit.nn: DiffusionKDE2d, KDECrossEntropyLoss, CCCLoss
backends               backends(), use_backend(name) / KDEKIT_BACKEND=torch|cpp|cuda|triton
=====================  ============================================================================
"""
from ._backend import backends, use_backend
from .compat import kde1d, kde2d
from .labels import (
    DistributionLabels,
    labels_from_observations,
    labels_from_ratings,
    points_to_distribution,
    pseudo_observations,
)
from .ops.ccc import CCCMoments, ccc, ccc_loss, pearson
from .ops.dct import dct, dct2, idct, idct2
from .ops.diffusion_kde import (
    KDE1dResult,
    KDE2dResult,
    KDEStatus,
    diffusion_kde1d,
    diffusion_kde1d_binned,
    diffusion_kde2d,
    diffusion_kde2d_binned,
)
from .ops.divergence import jsd, kl, tvd
from .ops.hard_histogram import hard_histogram1d, hard_histogram2d
from .ops.pooling import pool_density, pool_density1d
from .ops.soft_histogram import soft_histogram1d, soft_histogram2d
from . import nn  # noqa: E402  (after the ops it wraps)

from ._version import __version__  # noqa: E402

__all__ = [
    "kde1d", "kde2d",
    "hard_histogram1d", "hard_histogram2d", "soft_histogram1d", "soft_histogram2d",
    "dct", "idct", "dct2", "idct2",
    "diffusion_kde1d", "diffusion_kde2d", "diffusion_kde1d_binned", "diffusion_kde2d_binned",
    "KDEStatus", "KDE1dResult", "KDE2dResult",
    "pool_density", "pool_density1d",
    "DistributionLabels", "pseudo_observations", "labels_from_ratings", "labels_from_observations",
    "points_to_distribution",
    "ccc", "ccc_loss", "pearson", "CCCMoments", "jsd", "kl", "tvd",
    "backends", "use_backend",
    "nn",
]
