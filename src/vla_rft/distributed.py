"""Data-parallel training under ``torchrun``: one process group, one shard of every batch per rank.

One process (``WORLD_SIZE`` unset or 1) never touches ``torch.distributed``: every helper here is
then the identity, so single-process runs keep their exact code path and numbers.

Under ``torchrun --nproc-per-node N`` (or a Kubeflow Trainer ``TrainJob``, which sets the same
variables) :func:`init` joins the group from the environment: gloo on the CPU, nccl on CUDA.
Each rank draws the *global* batch from ``(seed, step)`` exactly as one process would and keeps
the slice ``rank*b:(rank+1)*b`` (:meth:`Context.shard`); gradients are averaged with one flat
``all_reduce`` per step before clipping (:meth:`Context.average_gradients`), so N ranks x batch b
train the model one process trains with batch N*b, up to the summation order of the reduction.

    ctx = distributed.init(common.device)
    part = ctx.shard(cfg.batch_size, "world_model.batch_size")   # slice of the global batch
    ...; loss.backward(); ctx.average_gradients(model.parameters()); optimizer.step()
    if ctx.is_main: save_checkpoint(...)
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch

from vla_rft.errors import ConfigError


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer; torchrun sets it") from None


@dataclass(frozen=True)
class Context:
    """Where this process sits in the data-parallel group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, curves and artifacts."""
        return self.rank == 0

    def shard(self, global_count: int, what: str) -> slice:
        """This rank's slice of ``global_count`` items; refuses counts the world size does not divide."""
        if global_count % self.world_size:
            raise ConfigError(f"{what}={global_count} does not divide over {self.world_size} processes; "
                              f"use a multiple of {self.world_size} (it is the global batch, split over ranks)")
        per = global_count // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Average ``.grad`` over ranks in place, in one flat all-reduce (every rank runs the same graph,
        so the same parameters have gradients everywhere)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of ``x`` over ranks (a new tensor; ``x`` itself when not distributed)."""
        if not self.distributed:
            return x
        import torch.distributed as dist

        out = x.detach().clone()
        dist.all_reduce(out)
        return out

    def mean(self, values: Sequence[float]) -> list[float]:
        """Mean over ranks of each float (each rank holds the mean of an equal share)."""
        if not self.distributed:
            return list(values)
        total = self.sum(torch.tensor(list(values), dtype=torch.float64, device=self._device()))
        return [float(v) / self.world_size for v in total.cpu()]

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Rank-ordered concatenation along dim 0 of every rank's ``x`` (equal shapes)."""
        if not self.distributed:
            return x
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.detach().contiguous())
        return torch.cat(parts)

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (pickled; for small settings such as a checkpoint path)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def _device(self) -> torch.device:
        import torch.distributed as dist

        return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


def context() -> Context:
    """The context from torchrun's environment variables, without initialising anything."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} / WORLD_SIZE={world} is not a valid process group position")
    return Context(rank=rank, world_size=world, local_rank=local)


def init(device: str = "cpu") -> Context:
    """Join the process group torchrun describes (idempotent); a no-op for one process.

    The backend follows the device: nccl for ``cuda`` (each rank on ``cuda:LOCAL_RANK``), gloo
    otherwise.
    """
    ctx = context()
    if not ctx.distributed:
        return ctx
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = str(device).startswith("cuda")
        if cuda:
            if not torch.cuda.is_available():
                raise ConfigError("common.device=cuda but no CUDA device is visible to this rank")
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo",
                                timeout=timedelta(seconds=_env_int("VLA_RFT_DIST_TIMEOUT_S", 1800)))
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return ctx
