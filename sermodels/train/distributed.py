"""Process-group set-up and cross-rank reductions; the same code runs single-process and under ``torchrun``.

Under ``torchrun --nproc_per_node=K`` (``WORLD_SIZE`` > 1 in the environment) :func:`init_distributed` joins the
process group with ``nccl`` when CUDA is available and ``gloo`` otherwise; without it everything is a no-op with
``world_size = 1``. Training shards with ``DistributedSampler`` (also used single-process, so that ``K`` ranks with a
per-rank batch of ``B / K`` see exactly the global batches of one process with batch ``B``); evaluation shards with
:class:`ShardSampler`, which never pads, so summed statistics count each utterance once.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group if there is one; pick the device (``"auto"``, ``"cpu"``, ``"cuda"``)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    """Tear the process group down once every rank is done. ``gc.collect()`` first frees DDP wrappers caught in
    reference cycles, so the last reference to the gloo process group goes here and not during interpreter
    finalisation (where joining its worker threads aborted a rank with SIGABRT); the barrier keeps a rank from
    destroying the communicators while another still uses them."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sums(values: Dict[str, float], info: DistInfo) -> Dict[str, float]:
    """Sum float statistics over ranks (in float64); identity with one process."""
    if not info.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist()))


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` is true on at least one rank (every rank gets the same answer)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj, info: DistInfo) -> List:
    """Every rank's ``obj`` as a list indexed by rank (on every rank)."""
    if not info.distributed:
        return [obj]
    out: List = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + K, rank + 2K, ...`` of ``range(n)``: a split of the data with no padding."""

    def __init__(self, n: int, info: DistInfo):
        self.n, self.rank, self.world_size = n, info.rank, info.world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))
