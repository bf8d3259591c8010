"""Building blocks for multi-process (torchrun) supernet training.

Every rank trains the *same* sampled subnetworks each step, each on its own
contiguous shard of the same global batch; batch norm is synchronised across
ranks and gradients are averaged, so a step equals one single-process step on
the whole global batch (to float tolerance).

What the trainer must guarantee for that equality:

- identical sampled architectures on all ranks: seed the architecture sampler
  (and torch's generator) with the same seed on every rank. No special seeding
  helper is needed because the trainer already seeds its generators from the
  run config, which every rank reads identically;
- identical global batches on all ranks (same data order, e.g. an epoch-seeded
  shuffle), of which :func:`shard_batch` takes the rank's slice;
- each rank's loss is the *mean over its local shard* (the usual
  ``CrossEntropyLoss``), backward as in one process, then
  :func:`allreduce_gradients` (which averages) before clipping and
  ``optimizer.step()``.

Collectives must be reached by every rank in the same order: anything that runs
a synchronised BN in training mode on one rank only (e.g. rank-0 BN
recalibration) must run inside :func:`local_batch_norm`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from nas.run.context import SINGLE, DistInfo
from supernets.ops import ElasticBatchNorm2d

T = TypeVar("T")

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _active(info: DistInfo) -> bool:
    return info.world_size > 1 and dist.is_available() and dist.is_initialized()


def init_distributed(device: str = "auto", backend: str | None = None) -> DistInfo:
    """Join the torchrun job described by the environment, or run as a single process.

    Without torchrun's variables (or with WORLD_SIZE 1) nothing is initialised, so
    the same code path serves single-process runs. Calling it again returns the
    existing group's info instead of initialising twice.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistInfo(rank, world, local, rank == 0)
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return SINGLE
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set; launch with torchrun"
        )
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cuda = device.startswith("cuda")
    if on_cuda:
        if not torch.cuda.is_available():
            raise ValueError(
                "device 'cuda' requested but no CUDA GPU is visible; use --device=cpu or --device=auto"
            )
        # One GPU per process: LOCAL_RANK picks it, whatever index the device string names.
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend or ("nccl" if on_cuda else "gloo"), rank=rank, world_size=world)
    return DistInfo(rank, world, local, rank == 0)


def enable_sync_bn(model: nn.Module) -> int:
    """Make every ``ElasticBatchNorm2d`` of ``model`` use global-batch statistics; returns how many.

    A plain batch norm would silently keep per-rank statistics, breaking the
    equality with single-process training, so its presence is an error.
    """
    plain = [
        name or "<model>"
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and not isinstance(m, (ElasticBatchNorm2d, nn.SyncBatchNorm))
    ]
    if plain:
        raise TypeError(
            f"cannot synchronise batch norm: {len(plain)} layer(s) are not ElasticBatchNorm2d and would keep"
            f" per-rank statistics ({', '.join(plain[:5])}{', ...' if len(plain) > 5 else ''}); build them as"
            " ElasticBatchNorm2d"
        )
    count = 0
    for m in model.modules():
        if isinstance(m, ElasticBatchNorm2d):
            m.sync = True
            count += 1
    return count


@contextmanager
def local_batch_norm(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily turn BN synchronisation off, for work that only some ranks do.

    A synchronised BN in training mode is a collective: running it on rank 0
    alone (e.g. BN recalibration before a rank-0 evaluation) would hang.
    """
    synced = [m for m in model.modules() if isinstance(m, ElasticBatchNorm2d) and m.sync]
    for m in synced:
        m.sync = False
    try:
        yield model
    finally:
        for m in synced:
            m.sync = True


def shard_batch(x: torch.Tensor, y: torch.Tensor, info: DistInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous slice of a global batch that every rank loaded identically.

    Shards must be equal: averaging per-shard mean losses equals the global mean
    loss only then.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"inputs and targets disagree on the batch size ({x.shape[0]} vs {y.shape[0]})")
    if info.world_size == 1:
        return x, y
    n = x.shape[0]
    if n % info.world_size:
        raise ValueError(
            f"global batch of {n} cannot be split evenly over {info.world_size} ranks; "
            f"use a batch size divisible by {info.world_size} or drop_last=True"
        )
    per = n // info.world_size
    lo = info.rank * per
    return x[lo : lo + per], y[lo : lo + per]


def _collective_device() -> torch.device:
    """Device for small bookkeeping tensors: NCCL only reduces CUDA tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def allreduce_gradients(params: Iterable[torch.Tensor], info: DistInfo, debug: bool = False) -> None:
    """Average gradients over ranks with one coalesced all-reduce; parameters without a gradient stay
    ``None``.

    Why not DistributedDataParallel: the active parameters of a weight-sharing
    supernet change with every forward (and one step runs several subnetworks),
    which DDP's reducer only handles with ``find_unused_parameters=True`` and a
    graph traversal per forward, and its bucket hooks would fire once per
    subnetwork. Here every rank trains the same sampled subnetworks, so the set
    of parameters with gradients is identical on all ranks, and a single
    all-reduce of the flattened gradients after the step's backward passes is
    exact and cheaper.

    ``debug`` first checks (one extra small all-reduce) that all ranks hold
    gradients for the same parameters; a mismatch would otherwise mis-align
    the flattened buffers or hang.

    Call it on every rank, after all backward passes of the step and before
    gradient clipping and ``optimizer.step()``.
    """
    if not _active(info):
        return
    params = list(params)
    with_grad = [(i, p.grad) for i, p in enumerate(params) if p.grad is not None]
    if debug:
        _check_same_grads(with_grad, info)
    if not with_grad:
        return
    if any(g.is_sparse for _, g in with_grad):
        raise TypeError("allreduce_gradients supports dense gradients only")
    by_dtype: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for _, g in with_grad:
        by_dtype.setdefault((g.dtype, g.device), []).append(g)
    with torch.no_grad():
        for grads in by_dtype.values():  # one group (hence one all-reduce) unless dtypes are mixed
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.div_(info.world_size)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()


def _check_same_grads(with_grad: list[tuple[int, torch.Tensor]], info: DistInfo) -> None:
    """Compare (count, index sums, element count) of gradient-holding parameters across ranks."""
    idx = [i for i, _ in with_grad]
    sig = [len(idx), sum(idx), sum(i * i for i in idx), sum(g.numel() for _, g in with_grad)]
    t = torch.tensor(sig + [-s for s in sig], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)  # max of v and of -v: all ranks agree iff max == min
    hi, lo = t[: len(sig)].tolist(), [-v for v in t[len(sig) :].tolist()]
    if hi != sig or lo != sig:
        raise RuntimeError(
            f"rank {info.rank}: ranks hold gradients for different parameters "
            f"({len(idx)} here, between {lo[0]} and {hi[0]} across ranks); "
            "all ranks must train the same sampled subnetworks (seed the sampler identically)"
        )


def broadcast_object(obj: T, info: DistInfo, src: int = 0) -> T:
    """``obj`` as held by rank ``src`` (picklable), e.g. the step a resumed run continues from."""
    if not _active(info):
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier(info: DistInfo) -> None:
    """Wait for all ranks (e.g. until rank 0 has written a checkpoint)."""
    if not _active(info):
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Tear down the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "DistInfo",
    "allreduce_gradients",
    "barrier",
    "broadcast_object",
    "cleanup",
    "enable_sync_bn",
    "init_distributed",
    "local_batch_norm",
    "shard_batch",
]
