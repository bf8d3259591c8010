"""Building blocks shared by supernets and the static networks extracted from them.

A block's *forward* is written once; whether it is elastic or static depends only
on the leaf ops it is built with (``supernets.ops`` vs plain ``torch.nn``). Both
versions therefore have identical module names, which is what makes extraction a
name-by-name weight copy (see ``supernets.extract``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from supernets.ops import ElasticBatchNorm2d, ElasticConv2d, ElasticDepthwiseConv2d

ACTIVATIONS = {"relu": nn.ReLU, "hswish": nn.Hardswish}


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (never dropping more than 10%)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def activation(name: str | None) -> nn.Module:
    if name is None:
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name](inplace=True)


class ConvBNAct(nn.Module):
    """conv -> batch norm -> activation."""

    def __init__(self, conv: nn.Module, bn: nn.Module, act: str | None):
        super().__init__()
        self.conv, self.bn, self.act = conv, bn, activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-excite gate (ReLU inside, hard-sigmoid gate)."""

    def __init__(self, reduce: nn.Module, expand: nn.Module):
        super().__init__()
        self.reduce, self.expand = reduce, expand

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = F.hardsigmoid(self.expand(F.relu(self.reduce(s))))
        return x * s


class InvertedResidual(nn.Module):
    """MBConv: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (+ identity when shapes allow)."""

    def __init__(self, expand: nn.Module, dw: nn.Module, se: nn.Module, project: nn.Module, residual: bool):
        super().__init__()
        self.expand, self.dw, self.se, self.project = expand, dw, se, project
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


def se_channels(mid: int) -> int:
    return make_divisible(mid // 4)


def mid_channels(in_ch: int, expand: float) -> int:
    return in_ch if expand == 1 else make_divisible(in_ch * expand)


def static_mbconv(
    in_ch: int,
    out_ch: int,
    kernel: int,
    expand: float,
    stride: int,
    use_se: bool,
    act: str,
    bn: Callable[[int], nn.Module] = nn.BatchNorm2d,
) -> InvertedResidual:
    """A plain-torch MBConv block (what extraction produces).

    ``bn`` builds its batch norms; the supernet passes ``ElasticBatchNorm2d`` (same
    state dict) for its fixed first block so that BN can be synchronised across ranks.
    """
    mid = mid_channels(in_ch, expand)
    exp = ConvBNAct(nn.Conv2d(in_ch, mid, 1, bias=False), bn(mid), act) if expand != 1 else nn.Identity()
    dw = ConvBNAct(nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False), bn(mid), act)
    se = (
        SqueezeExcite(nn.Conv2d(mid, se_channels(mid), 1), nn.Conv2d(se_channels(mid), mid, 1))
        if use_se
        else nn.Identity()
    )
    proj = ConvBNAct(nn.Conv2d(mid, out_ch, 1, bias=False), bn(out_ch), None)
    return InvertedResidual(exp, dw, se, proj, residual=stride == 1 and in_ch == out_ch)


class ElasticInvertedResidual(InvertedResidual):
    """MBConv with elastic kernel size and expand ratio (weights entangled across choices)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernels: tuple[int, ...],
        expands: tuple[float, ...],
        stride: int,
        use_se: bool,
        act: str,
    ):
        self.in_ch, self.out_ch = in_ch, out_ch
        self.kernels, self.expands = tuple(kernels), tuple(expands)
        k_max, e_max = max(kernels), max(expands)
        mid = mid_channels(in_ch, e_max)
        exp = (
            ConvBNAct(ElasticConv2d(in_ch, mid, 1), ElasticBatchNorm2d(mid), act)
            if e_max != 1
            else nn.Identity()
        )
        dw = ConvBNAct(ElasticDepthwiseConv2d(mid, k_max, stride), ElasticBatchNorm2d(mid), act)
        se = (
            SqueezeExcite(
                ElasticConv2d(mid, se_channels(mid), 1, bias=True),
                ElasticConv2d(se_channels(mid), mid, 1, bias=True),
            )
            if use_se
            else nn.Identity()
        )
        proj = ConvBNAct(ElasticConv2d(mid, out_ch, 1), ElasticBatchNorm2d(out_ch), None)
        super().__init__(exp, dw, se, proj, residual=stride == 1 and in_ch == out_ch)
        self.set_active(k_max, e_max)

    def set_active(self, kernel: int, expand: float) -> None:
        if kernel not in self.kernels or expand not in self.expands:
            raise ValueError(
                f"block choice (kernel={kernel}, expand={expand}) outside kernels {self.kernels} / expands"
                f" {self.expands}"
            )
        mid = mid_channels(self.in_ch, expand)
        if isinstance(self.expand, ConvBNAct):
            self.expand.conv.active_out = mid
        elif mid != self.in_ch:
            raise ValueError(f"expand ratio {expand} needs an expansion layer this block does not have")
        self.dw.conv.active_kernel = kernel
        if isinstance(self.se, SqueezeExcite):
            self.se.reduce.active_out = se_channels(mid)
            self.se.expand.active_out = mid
        self.active = (kernel, expand)
