"""Data-parallel training on ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc_per_node=K -m recurrl train CONFIG.yaml`` starts K processes (ranks); torchrun
sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``, and :func:`setup_world` joins the process group
(NCCL for CUDA tensors, Gloo for CPU tensors and for the small control messages). Each rank
steps its own ``env.num_envs`` envs, seeded apart (:meth:`World.seed`), and computes the loss on
its own rollout; before every optimizer step the gradients are averaged over the ranks
(:meth:`World.average_gradients`), so the parameters stay identical everywhere, as with
``DistributedDataParallel``. Decisions that change how many steps a rank takes are collective:
the ``target_kl`` early stop (the mean KL over ranks), a non-finite loss or gradient, a stop
signal, a failed env. Running observation / reward statistics are folded over the union of the
ranks' batches (:meth:`World.synced_statistics`).

Rank 0 logs and writes checkpoints; a checkpoint holds every rank's random streams and
collector / env state (gathered by rank 0), so each rank resumes its own (see
``recurrl.run.train``). Without torchrun's variables everything here is a no-op: :data:`SINGLE`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from recurrl.config import ConfigError
from recurrl.policy.normalize import RunningNormalizer

T = TypeVar("T")


class World:
    """The ranks of a data-parallel run, and the collectives the trainer needs.

    Args:
        rank: this process's rank (0 logs and checkpoints).
        size: number of ranks.
        local_rank: rank on this machine (its GPU index).
        active: whether a process group is in use (False: single process, all no-ops).
    """

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0, active: bool = False):
        self.rank, self.size, self.local_rank, self.active = rank, size, local_rank, active
        self.owned = False  # whether setup_world started the process group (close_world ends it)

    def __repr__(self) -> str:
        return f"World(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, evaluates and writes checkpoints."""
        return self.rank == 0

    def seed(self, base: int) -> int:
        """This rank's seed from ``base``: ``base`` itself on rank 0 (single-process runs are
        unchanged), an independent 32-bit seed derived from ``(base, rank)`` elsewhere."""
        if self.rank == 0:
            return base
        return int(np.random.SeedSequence([base, self.rank]).generate_state(1)[0])

    # --- control messages (CPU, Gloo) -------------------------------------------------------

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: T) -> list[T] | None:
        """Every rank's ``value`` in rank order on rank 0; None on the other ranks."""
        if not self.active:
            return [value]
        out = [None] * self.size if self.is_main else None
        dist.gather_object(value, out, dst=0)
        return out

    def all_gather(self, value: T) -> list[T]:
        """Every rank's ``value`` in rank order, on every rank."""
        if not self.active:
            return [value]
        out = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def ranks_where(self, flag: bool) -> list[int]:
        """The ranks whose ``flag`` is set (the same list on every rank)."""
        if not self.active:
            return [0] if flag else []
        flags = torch.zeros(self.size, dtype=torch.int32)
        flags[self.rank] = int(flag)
        dist.all_reduce(flags)
        return torch.nonzero(flags).flatten().tolist()

    def max(self, value: int) -> int:
        """The largest ``value`` over the ranks (e.g. a stop signal's number, 0 for none)."""
        if not self.active:
            return value
        box = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(box, op=dist.ReduceOp.MAX)
        return int(box.item())

    def run_on_main(self, function: Callable[[], T], refused: tuple[type, ...]) -> T:
        """``function()`` on rank 0, its result on every rank.

        An exception of a ``refused`` type on rank 0 is raised there and ends the other ranks
        quietly (``SystemExit(2)``), so a bad config or checkpoint is reported once.
        """
        if not self.active:
            return function()
        result, error = None, None
        if self.is_main:
            try:
                result = function()
            except refused as caught:
                error = caught
        result, failed = self.broadcast((result, error is not None))
        if error is not None:
            raise error
        if failed:
            raise SystemExit(2)
        return result

    # --- tensors (on the model's device: NCCL on GPU, Gloo on CPU) --------------------------

    def mean(self, value: Tensor) -> Tensor:
        """The mean of ``value`` over the ranks."""
        if not self.active:
            return value
        total = value.detach().clone()
        dist.all_reduce(total)
        return total / self.size

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into ``module`` on every rank."""
        if not self.active:
            return
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)

    def average_gradients(self, parameters: list[Tensor], loss: Tensor) -> Tensor:
        """Average the gradients of ``parameters`` over the ranks, in place; one all-reduce.

        A parameter gets a gradient when any rank has one (zeros stand in for the others), so
        a parameter no rank used keeps ``grad = None`` as in a single process. Returns the sum
        of ``loss`` over the ranks: non-finite when any rank's loss is, so every rank reaches
        the same verdict on a diverged update.
        """
        if not self.active:
            return loss.detach()
        dtype, device = loss.dtype, loss.device
        present = [p.grad is not None for p in parameters]
        flat = torch.cat(
            [
                *(
                    (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype)
                    for p in parameters
                ),
                torch.tensor(present, dtype=dtype, device=device),
                loss.detach().reshape(1),
            ]
        )
        dist.all_reduce(flat)
        offset, count = 0, flat[-1 - len(parameters) : -1]
        for parameter, used in zip(parameters, count.tolist(), strict=True):
            size = parameter.numel()
            grad = flat[offset : offset + size].view_as(parameter) / self.size
            parameter.grad = grad.to(parameter.dtype) if used > 0 else None
            offset += size
        return flat[-1]

    @contextmanager
    def synced_statistics(self, module: nn.Module) -> Iterator[None]:
        """Within the block each rank folds its own batch into ``module``'s running statistics
        (:class:`~recurrl.policy.normalize.RunningNormalizer`); on leaving, every rank holds the
        statistics of the union of the ranks' batches (the same on every rank)."""
        normalizers = [m for m in module.modules() if isinstance(m, RunningNormalizer)]
        if not self.active or self.size == 1 or not normalizers:
            yield
            return
        before = [(n.count.clone(), n.mean.clone(), n.var.clone()) for n in normalizers]
        yield
        pairs = zip(normalizers, before, strict=True)
        sums = torch.cat([_shifted_sums(normalizer, *old) for normalizer, old in pairs])
        dist.all_reduce(sums)
        offset = 0
        for normalizer, (count, mean, var) in zip(normalizers, before, strict=True):
            size = mean.numel()
            parts = sums[offset : offset + 1 + 2 * size]
            _fold_union(normalizer, count, mean, var, parts)
            offset += 1 + 2 * size


def _shifted_sums(normalizer: RunningNormalizer, count: Tensor, mean: Tensor, var: Tensor):
    """This rank's new samples as ``[n, sum(x - mean_before), sum((x - mean_before)^2)]``.

    Recovered from the statistics before and after the rank's own update (Chan et al.'s
    parallel formulas), shifted by the common old mean so nothing large cancels.
    """
    new = normalizer.count - count
    shift = normalizer.mean - mean
    first = normalizer.count * shift  # (*shape); the old samples add nothing around the old mean
    second = normalizer.count * (normalizer.var + shift**2) - count * var
    return torch.cat([new.reshape(1), first.reshape(-1), second.reshape(-1)]).cpu()


def _fold_union(normalizer: RunningNormalizer, count: Tensor, mean: Tensor, var: Tensor, sums):
    """Set ``normalizer`` to the old statistics plus the union of every rank's new samples."""
    size = mean.numel()
    new, first, second = sums[0], sums[1 : 1 + size], sums[1 + size :]
    device = normalizer.mean.device
    total = (count.cpu() + new).to(device)
    if new.item() == 0:  # no rank had data: leave the statistics bit for bit as they were
        return
    first = first.view_as(mean).to(device)
    second = second.view_as(mean).to(device)
    shift = first / total
    normalizer.mean.copy_(mean + shift)
    normalizer.var.copy_((count * var + second) / total - shift**2)
    normalizer.count.copy_(total)


AUTO_GPU_MIN_ENVS = 128
"""``device: auto`` picks the GPU from this many envs per process (or for device-resident
envs). Measured on an H200 against 2 EPYC cores (docs/bench/gpu, docs/bench/speed_layer.md):
with envs on the CPU and an LSTM 128 policy the GPU loop ran 1.6k SPS at 8 envs and 10k at 64
(the CPU: 5k and 12-22k), 85k at 512 and 524k at 4096 (the CPU: 19k at 512)."""


def auto_device(
    num_envs: int, device_envs: bool = False, world: World | None = None
) -> tuple[str, str]:
    """What ``device: auto`` resolves to for this run, and why (for the start banner)."""
    if not torch.cuda.is_available():
        return "cpu", "auto: no CUDA device"
    if world is not None and world.active:
        return "cuda", "auto: a process group with CUDA"
    if device_envs:
        return "cuda", "auto: the envs step on the device"
    if num_envs >= AUTO_GPU_MIN_ENVS:
        return "cuda", f"auto: {num_envs} envs >= {AUTO_GPU_MIN_ENVS}"
    return "cpu", f"auto: {num_envs} envs < {AUTO_GPU_MIN_ENVS}, where the CPU measured faster"


def resolve_device(
    name: str, world: World | None = None, num_envs: int = 0, device_envs: bool = False
) -> torch.device:
    """The ``device`` setting as a device; with a process group ``auto`` and ``cuda`` mean
    this rank's GPU (``cuda:LOCAL_RANK``), made current for NCCL. ``auto`` picks by
    :func:`auto_device` (``num_envs`` per process, whether the envs step on the device).

    Raises:
        ConfigError: CUDA was asked for and is not available.
    """
    active = world is not None and world.active
    if name == "auto":
        name = auto_device(num_envs, device_envs, world)[0]
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} requested but CUDA is not available")
    if name == "cuda" and active:
        name = f"cuda:{world.local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and active:
        torch.cuda.set_device(device)
    return device


SINGLE = World()
"""The world of a single process: every collective is a no-op."""


def launched_by_torchrun() -> bool:
    """Whether torchrun's ``RANK`` and ``WORLD_SIZE`` are in the environment."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup_world(timeout: timedelta | None = None) -> World:
    """Join torchrun's process group (once) and return this process's :class:`World`.

    Without torchrun's variables (and no process group already set up by the caller) this is
    :data:`SINGLE`. The backend is Gloo, plus NCCL for CUDA tensors when CUDA is available.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), local_rank, active=True)
    if not launched_by_torchrun():
        return SINGLE
    if not dist.is_available():
        raise RuntimeError("torchrun launched recurrl, but this torch has no torch.distributed")
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=timeout)
    world = World(dist.get_rank(), dist.get_world_size(), local_rank, active=True)
    world.owned = True
    return world


def close_world(world: World, clean: bool = True) -> None:
    """Leave the process group if :func:`setup_world` started it (end of ``recurrl train``).

    After a clean finish every rank waits for the others first, so no rank closes its
    connections while a peer still uses them (Gloo aborts the peer). After an error a rank
    leaves at once: the others may never reach the barrier, and torchrun ends them.
    """
    if not (world.owned and dist.is_initialized()):
        return
    if clean:
        dist.barrier()
        dist.destroy_process_group()
