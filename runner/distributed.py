"""Data-parallel training across processes (``torchrun`` / ``accelerate launch``; gloo on CPU, NCCL on GPU).

Every replica builds the same global batch from the seeded sampler and trains on its own slice of it,
so ``train.batch_size`` stays the global batch whatever the number of processes. DDP averages the
gradients; each replica's loss is weighted by its share of the batch, so the average is the global
batch mean even when the batch does not split evenly.

Growth creates parameters mid-run. Growing methods decide from replicated state (TriAdaptLoRA: the
weights; AdaLoRA: DDP-averaged gradients; IncreLoRA: a gradient that ``Method.replica_mean`` averages)
and draw new units from generators seeded by (seed, step, module), so every replica grows the same
units without communication. :meth:`Replicas.check_identical` proves it at each event with a checksum
gather *before* the DDP wrapper is rebuilt (whose construction would otherwise silently copy rank 0's
values over any divergence).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class ReplicaDivergence(RuntimeError):
    pass


@dataclass(frozen=True)
class Replicas:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> torch.device:
        """``auto``: this replica's GPU when CUDA is available, else the CPU."""
        if requested != "auto":
            return torch.device(requested)
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training forward goes through; rebuilt after every growth event."""
        return DistributedDataParallel(model) if self.distributed else model

    def no_sync(self, wrapped: nn.Module, last_micro_batch: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of an optimizer step."""
        return wrapped.no_sync() if self.distributed and not last_micro_batch else contextlib.nullcontext()

    def shard(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float]:
        """This replica's contiguous slice of a global batch and the weight of its mean loss.

        weight = n_local * world / n_global, so that the DDP average of the weighted losses is the
        global batch mean. A replica left without examples runs one example at weight 0, so that it
        still takes part in the gradient all-reduce.
        """
        if not self.distributed:
            return batch, 1.0
        n = len(next(iter(batch.values())))
        bounds = [n * r // self.world_size for r in range(self.world_size + 1)]
        start, stop = bounds[self.rank], bounds[self.rank + 1]
        if start == stop:
            return {k: v[:1] for k, v in batch.items()}, 0.0
        return {k: v[start:stop] for k, v in batch.items()}, (stop - start) * self.world_size / n

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The average of ``tensor`` over replicas (in place; identical on every replica afterwards)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor /= self.world_size
        return tensor

    def gather_objects(self, value) -> list:
        """Every replica's ``value``, in rank order, on every replica."""
        if not self.distributed:
            return [value]
        out = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def broadcast_object(self, value):
        """Rank 0's ``value`` on every replica."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def map_batches(self, loader, fn) -> list:
        """``fn(batch)`` for every batch of ``loader``, in order: batch i runs on replica i % world."""
        mine = [(i, fn(batch)) for i, batch in enumerate(loader) if i % self.world_size == self.rank]
        merged = [pair for part in self.gather_objects(mine) for pair in part]
        return [out for _, out in sorted(merged, key=lambda pair: pair[0])]

    def check_identical(self, model: nn.Module, step: int, method_summary: dict) -> dict:
        """Raise :class:`ReplicaDivergence` unless every replica holds the same trainable parameters
        (names, shapes and values) and the same method state (rank pattern, growth history); returns
        the step and a checksum for the record. Cost: one float64 sum per parameter and one gather."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        sums = torch.stack([p.detach().double().sum() for _, p in named]).cpu()
        mine = {"names": [n for n, _ in named], "shapes": [list(p.shape) for _, p in named],
                "sums": sums.tolist(), "method": method_summary}
        everyone = self.gather_objects(mine)
        for rank, theirs in enumerate(everyone[1:], start=1):
            if theirs != everyone[0]:
                differing = [key for key in ("names", "shapes", "method") if theirs[key] != everyone[0][key]]
                differing += [name for name, a, b in zip(everyone[0]["names"], everyone[0]["sums"], theirs["sums"])
                              if a != b]
                raise ReplicaDivergence(f"replica {rank} differs from replica 0 after step {step}: "
                                        f"{', '.join(differing[:5])}")
        return {"step": step, "parameters": len(named), "checksum": float(sums.sum())}

def init_from_environment() -> Replicas:
    """The process group torchrun or accelerate describe in the environment (WORLD_SIZE > 1), else one
    process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Replicas()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return Replicas(dist.get_rank(), dist.get_world_size(), local_rank)
