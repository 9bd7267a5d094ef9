"""Training loop, checkpoints and multi-process helpers shared by the sermodels recipes."""
from .distributed import DistInfo, ShardSampler, cleanup_distributed, init_distributed
from .trainer import FitResult, Trainer, TrainerConfig, seed_everything, set_deterministic

__all__ = ["DistInfo", "FitResult", "ShardSampler", "Trainer", "TrainerConfig", "cleanup_distributed",
           "init_distributed", "seed_everything", "set_deterministic"]
