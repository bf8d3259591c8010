"""Masked MBConv forward: every nested choice of a block weighted by a scale, one op call each.

In a weight-entangled MBConv block the choices are *nested*: a smaller kernel is
the centre of the largest, a smaller expand ratio the first channels. A mixture
over choices with probabilities ``p`` therefore collapses into one op with a
masked weight (TangleNAS):

    sum_k p_k * pad(W[centre k]) = W * (M_3 + P(k >= 5) * R_5 + P(k >= 7) * R_7)

where ``R`` are the kernel's rings; likewise expand-channel groups are scaled by
``P(e >= group)``. The *survival* scales ``P(choice >= value)`` are what this
module takes, so the same code serves Single-Path NAS (scales = products of
hard threshold indicators) and DARTS/GDAS (scales from softmax or Gumbel
one-hot probabilities). Compute and memory are those of the largest subnetwork,
whatever the mixture; with one-hot scales the output equals the sliced
subnetwork's exactly.

Depth is mixed the TangleNAS way: a stage runs all its blocks and returns
``sum_d p_d * x_d``, the probability-weighted outputs after ``d`` blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from supernets.blocks import SqueezeExcite, mid_channels, se_channels
from supernets.mbnet import MBSupernet, _head_forward


def nested_mask(
    bounds: Sequence[int], scales: Sequence[torch.Tensor], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Mask over ``bounds[-1]`` channels: 1 on ``[0, bounds[0])``, ``scales[n]`` on ``[bounds[n],
    bounds[n+1])``."""
    idx = torch.arange(bounds[-1], device=device)
    mask = (idx < bounds[0]).to(dtype)
    for lo, hi, s in zip(bounds[:-1], bounds[1:], scales):
        mask = mask + s * ((idx >= lo) & (idx < hi)).to(dtype)
    return mask


def nested_kernel_mask(
    kernels: Sequence[int],
    k_max: int,
    scales: Sequence[torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Spatial ``k_max x k_max`` mask: 1 on the smallest kernel's window, ``scales[n]`` on ring ``n``."""
    r = torch.arange(k_max, device=device)
    dist = torch.maximum((r - k_max // 2).abs()[:, None], (r - k_max // 2).abs()[None, :])  # Chebyshev radius
    mask = (dist <= kernels[0] // 2).to(dtype)
    for small, big, s in zip(kernels[:-1], kernels[1:], scales):
        mask = mask + s * ((dist > small // 2) & (dist <= big // 2)).to(dtype)
    return mask


def survival(probs: torch.Tensor) -> list[torch.Tensor]:
    """``[P(v >= v_1), P(v >= v_2), ...]`` of a distribution over ordered values (reverse cumulative sums)."""
    tail = probs.flip(-1).cumsum(-1).flip(-1)
    return [tail[..., n] for n in range(1, probs.shape[-1])]


def masked_block_output(
    blk: nn.Module,
    x: torch.Tensor,
    kernels: Sequence[int],
    expands: Sequence[float],
    kernel_scales: Sequence[torch.Tensor],
    expand_scales: Sequence[torch.Tensor],
) -> torch.Tensor:
    """The block's branch output (before any residual add) with masked kernel rings and expand groups.

    The block must be set to its largest choice (full-width ops); masks do the choosing.
    """
    mids = [mid_channels(blk.in_ch, e) for e in expands]
    dev, dtype = x.device, x.dtype
    cm = nested_mask(mids, expand_scales, dev, dtype).view(1, -1, 1, 1)
    h = blk.expand(x) * cm
    w = blk.dw.conv.weight
    k_max = w.shape[-1]
    km = nested_kernel_mask(kernels, k_max, kernel_scales, dev, w.dtype)
    h = F.conv2d(h, w * km, None, blk.dw.conv.stride, k_max // 2, 1, w.shape[0])
    h = blk.dw.act(blk.dw.bn(h)) * cm
    if isinstance(blk.se, SqueezeExcite):
        sm = nested_mask([se_channels(m) for m in mids], expand_scales, dev, dtype).view(1, -1, 1, 1)
        s = h.mean((2, 3), keepdim=True)
        s = F.relu(blk.se.reduce(s)) * sm
        h = h * F.hardsigmoid(blk.se.expand(s))
    return blk.project(h)


def mixed_forward(
    net: MBSupernet,
    x: torch.Tensor,
    kernel_probs: torch.Tensor,
    expand_probs: torch.Tensor,
    depth_probs: torch.Tensor,
) -> torch.Tensor:
    """Logits of the probability-weighted mixture of every subnetwork, at the cost of the largest one.

    ``kernel_probs[i, j]`` / ``expand_probs[i, j]``: distribution over ``cfg.kernels`` /
    ``cfg.expands`` of block ``j`` of stage ``i`` (``[stages, max_depth, n]``);
    ``depth_probs[i]``: over ``cfg.depths`` (``[stages, n_depths]``). Differentiable
    in every probability; one-hot probabilities give exactly that subnetwork's logits.
    """
    cfg = net.cfg
    if net.active_spec != net.largest_spec():
        raise RuntimeError(
            "mixed_forward needs the supernet at its largest choice (net.set_active(net.largest_spec())):"
            " masks do the choosing"
        )
    x = net.first(net.stem(x))
    for i, stage in enumerate(net.stages):
        out = None
        for j, blk in enumerate(stage):
            y = masked_block_output(
                blk, x, cfg.kernels, cfg.expands, survival(kernel_probs[i, j]), survival(expand_probs[i, j])
            )
            x = x + y if blk.residual else y
            if j + 1 in cfg.depths:
                term = depth_probs[i, cfg.depths.index(j + 1)] * x
                out = term if out is None else out + term
        x = out
    return _head_forward(net, x)


__all__ = ["masked_block_output", "mixed_forward", "nested_kernel_mask", "nested_mask", "survival"]
