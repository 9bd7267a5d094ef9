"""Continual learning across corpora (paper 003): GEM projection, experience replay, episodic memories."""
from .gem import GEMOptimizer, project_gradient, solve_gem_dual
from .memory import MEMORY_SIZE, RingBuffer, bucket_of, select_memory
from .replay import replay_training_set

__all__ = ["GEMOptimizer", "MEMORY_SIZE", "RingBuffer", "bucket_of", "project_gradient",
           "replay_training_set", "select_memory", "solve_gem_dual"]
