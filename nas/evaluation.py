"""Evaluating subnetworks: BN recalibration and accuracy.

Why recalibrate: during supernet training every BN layer accumulates running
statistics of *many* subnetworks mixed together, which match none of them.
Before any subnetwork is evaluated (or exported) its statistics are recomputed
on a few training batches; without this, inherited-weight accuracy is mostly noise.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

import torch
from torch import nn

from nas.run.context import RunContext


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_batches: int,
    device: torch.device,
) -> None:
    """Reset the running statistics of the BN layers the forward reaches and recompute them as an exact
    average over ``num_batches``.

    BN layers the forward never reaches (blocks beyond the active depth, the weight sets of a mixture that
    the active configuration is not routed to, ...) keep their statistics exactly as they were: every BN
    layer is snapshotted first, and those whose ``num_batches_tracked`` did not move are restored.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in bns]
    snapshots = [(m, {n: b.clone() for n, b in m.named_buffers(recurse=False) if b is not None}) for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average instead of an exponential one
    model.train()
    try:
        for x, _ in islice(batches, num_batches):
            model(x.to(device, non_blocking=True))
    finally:
        for m, mom in saved:
            m.momentum = mom
        tracked = [(m, b) for m, b in snapshots if m.num_batches_tracked is not None]
        if tracked:  # one host sync for all layers
            where = tracked[0][0].num_batches_tracked.device
            moved = torch.stack([m.num_batches_tracked.reshape(()).to(where) for m, _ in tracked]).tolist()
            for (m, buffers), n_seen in zip(tracked, moved):
                if n_seen == 0:  # not reached by the forward: as it was
                    for n, b in buffers.items():
                        getattr(m, n).copy_(b)
        model.train(was_training)


@torch.no_grad()
def accuracy(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> float:
    """Top-1 accuracy in eval mode."""
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in batches:
            pred = model(x.to(device, non_blocking=True)).argmax(1)
            correct += (pred == y.to(device)).sum().item()
            total += y.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("cannot measure accuracy on an empty data set")
    return correct / total


def evaluate_arch(ctx: RunContext, net: nn.Module, arch: Any, split: str = "val") -> float:
    """Accuracy of ``arch`` with inherited weights, after BN recalibration on training batches."""
    net.set_active(ctx.space.to_spec(arch))
    recalibrate_bn(
        net, ctx.loader("train", shuffle=True, epoch=-1), ctx.cfg.train.bn_recal_batches, ctx.device
    )
    return accuracy(net, ctx.loader(split, shuffle=False), ctx.device)
