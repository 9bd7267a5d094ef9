"""Training loop, checkpoints and multi-process helpers shared by the sermodels recipes."""
from ..config import TrainConfig
from .distributed import DistInfo, ShardSampler, cleanup_distributed, init_distributed
from .trainer import FitResult, Trainer, load_checkpoint, seed_everything, set_deterministic

__all__ = ["DistInfo", "FitResult", "ShardSampler", "TrainConfig", "Trainer", "cleanup_distributed",
           "init_distributed", "load_checkpoint", "seed_everything", "set_deterministic"]
