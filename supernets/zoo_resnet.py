"""ResNets laid out as timm and torchvision build them (basic and bottleneck blocks), made elastic.

Layout: stem (a 7x7 stride-2 conv, or the three 3x3 convs of timm's ``*d`` variants)
-> 3x3 max pool -> stages of residual blocks -> global average pool -> ``fc``. Basic
blocks are conv1 (3x3, the stage's stride) -> conv2 (3x3); bottlenecks conv1 (1x1)
-> conv2 (3x3, stride, "v1.5") -> conv3 (1x1). A block projects its shortcut
(1x1 conv + BN, after a 2x2 average pool with ``avg_down``) exactly where the
original model does; every other block adds the identity.

Choices per stage: depth (its first ``d`` blocks run), width (output channels of
every block of the stage: they share the residual stream) and, for bottlenecks,
the bottleneck width (conv1/conv2 outputs). A stage whose first block adds the
identity (the basic-block stage right after the stem) ties the stem's output
width to its own. Every weight is a prefix slice of the original model's, and
modules are registered in forward order, which is what lets a converter copy a
timm or torchvision model's layers one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn

from supernets.base import Supernet
from supernets.extract import copy_sliced_state
from supernets.ops import ElasticBatchNorm2d, ElasticConv2d

# (depth, width, bottleneck width) per stage; the bottleneck width of a basic-block stage equals its width
ZooResNetSpec = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class ZooResNetConfig:
    """The largest network (the original model) and the choices around it."""

    in_channels: int
    num_classes: int
    block: str  # "basic" | "bottleneck"
    stem: str  # "conv7" (7x7 stride 2) | "deep" (3x3 stride 2, 3x3, 3x3)
    stem_widths: tuple[int, ...]  # deep stem: the two inner widths; () for conv7
    stem_channels: int  # stem output (max)
    strides: tuple[int, ...]  # per stage
    depths: tuple[tuple[int, ...], ...]  # per stage, ascending; the last is the model's
    widths: tuple[tuple[int, ...], ...]  # per stage output channels, ascending
    mids: tuple[tuple[int, ...], ...]  # per stage bottleneck widths (basic: equal to widths)
    projects: tuple[bool, ...]  # per stage: does its first block project the shortcut
    avg_down: bool = False  # shortcut projections average-pool first (timm's *d variants)
    bn_eps: float = 1e-5

    @property
    def tie_stem(self) -> bool:
        """The first stage adds the identity in its first block: the stem's width is the stage's."""
        return not self.projects[0]

    def stem_width(self, spec: ZooResNetSpec) -> int:
        return spec[0][1] if self.tie_stem else self.stem_channels

    def check(self, spec: ZooResNetSpec) -> None:
        if len(spec) != len(self.strides):
            raise ValueError(f"spec has {len(spec)} stages, the network {len(self.strides)}")
        for i, (d, w, m) in enumerate(spec):
            if d not in self.depths[i] or w not in self.widths[i] or m not in self.mids[i]:
                raise ValueError(
                    f"stage {i}: (depth={d}, width={w}, mid={m}) outside depths {self.depths[i]} / widths"
                    f" {self.widths[i]} / bottleneck widths {self.mids[i]}"
                )
            if self.block == "basic" and m != w:
                raise ValueError(f"stage {i}: a basic block's bottleneck width is its width ({w}), got {m}")

    def largest_spec(self) -> ZooResNetSpec:
        return tuple((d[-1], w[-1], m[-1]) for d, w, m in zip(self.depths, self.widths, self.mids))


def _bn(eps: float, elastic: bool):
    cls = ElasticBatchNorm2d if elastic else nn.BatchNorm2d
    return lambda c: cls(c, eps=eps)


def _conv(c_in: int, c_out: int, k: int, stride: int, elastic: bool) -> nn.Module:
    if elastic:
        return ElasticConv2d(c_in, c_out, k, stride)
    return nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False)


def build_stem(cfg: ZooResNetConfig, out: int, elastic: bool) -> nn.Sequential:
    """The stem (convolutions, BN, ReLU, then the 3x3 max pool) with ``out`` output channels."""
    bn = _bn(cfg.bn_eps, elastic)
    if cfg.stem == "conv7":
        layers: list[nn.Module] = [_conv(cfg.in_channels, out, 7, 2, elastic), bn(out), nn.ReLU()]
    else:
        a, b = cfg.stem_widths
        layers = [
            nn.Conv2d(cfg.in_channels, a, 3, 2, 1, bias=False),
            bn(a),
            nn.ReLU(),
            nn.Conv2d(a, b, 3, 1, 1, bias=False),
            bn(b),
            nn.ReLU(),
            _conv(b, out, 3, 1, elastic),
            bn(out),
            nn.ReLU(),
        ]
    return nn.Sequential(*layers, nn.MaxPool2d(3, 2, 1))


class ResBlock(nn.Module):
    """A basic or bottleneck block; static (plain torch) or elastic (sliced ops) by its ``elastic`` flag."""

    def __init__(
        self,
        kind: str,
        c_in: int,
        width: int,
        mid: int,
        stride: int,
        project: bool,
        avg_down: bool,
        eps: float,
        elastic: bool,
    ):
        super().__init__()
        bn = _bn(eps, elastic)
        self.kind = kind
        if kind == "basic":
            self.conv1, self.bn1 = _conv(c_in, width, 3, stride, elastic), bn(width)
            self.conv2, self.bn2 = _conv(width, width, 3, 1, elastic), bn(width)
        else:
            self.conv1, self.bn1 = _conv(c_in, mid, 1, 1, elastic), bn(mid)
            self.conv2, self.bn2 = _conv(mid, mid, 3, stride, elastic), bn(mid)
            self.conv3, self.bn3 = _conv(mid, width, 1, 1, elastic), bn(width)
        self.downsample: nn.Module | None = None
        if project:
            pool = (
                nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
                if avg_down and stride > 1
                else nn.Identity()
            )
            conv = _conv(c_in, width, 1, 1 if avg_down else stride, elastic)
            self.downsample = (
                nn.Sequential(pool, conv, bn(width)) if avg_down else nn.Sequential(conv, bn(width))
            )

    def set_width(self, width: int, mid: int) -> None:
        """Active output widths (elastic blocks only)."""
        if self.kind == "basic":
            self.conv1.active_out = self.conv2.active_out = width
        else:
            self.conv1.active_out = self.conv2.active_out = mid
            self.conv3.active_out = width
        if self.downsample is not None:
            self.downsample[-2].active_out = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        if self.kind == "basic":
            y = self.bn2(self.conv2(y))
        else:
            y = F.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
        return F.relu(y + shortcut)


def _stages(cfg: ZooResNetConfig, spec: ZooResNetSpec, elastic: bool) -> nn.Sequential:
    stages, c_in = [], cfg.stem_width(spec)
    for i, (d, w, m) in enumerate(spec):
        blocks = [
            ResBlock(
                cfg.block,
                c_in if j == 0 else w,
                w,
                m,
                cfg.strides[i] if j == 0 else 1,
                cfg.projects[i] and j == 0,
                cfg.avg_down,
                cfg.bn_eps,
                elastic,
            )
            for j in range(d)
        ]
        stages.append(nn.Sequential(*blocks))
        c_in = w
    return nn.Sequential(*stages)


class ZooResNet(nn.Module):
    """The static network of one spec (plain torch layers, the supernet's names)."""

    def __init__(self, cfg: ZooResNetConfig, spec: ZooResNetSpec):
        super().__init__()
        cfg.check(spec)
        self.cfg, self.spec = cfg, tuple(spec)
        self.stem = build_stem(cfg, cfg.stem_width(spec), elastic=False)
        self.stages = _stages(cfg, spec, elastic=False)
        self.fc = nn.Linear(spec[-1][1], cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(self.stem(x)).mean((2, 3)))


class ZooResNetSupernet(Supernet, nn.Module):
    """Every (depth, width, bottleneck width) per stage in the original model's max-size weights."""

    def __init__(self, cfg: ZooResNetConfig):
        super().__init__()
        self.cfg = cfg
        largest = cfg.largest_spec()
        self.stem = build_stem(cfg, cfg.stem_channels, elastic=True)
        self.stages = _stages(cfg, largest, elastic=True)
        self.fc = nn.Linear(largest[-1][1], cfg.num_classes)
        self.set_active(largest)

    def largest_spec(self) -> ZooResNetSpec:
        return self.cfg.largest_spec()

    def set_active(self, spec: ZooResNetSpec) -> None:
        self.cfg.check(spec)
        if self.cfg.tie_stem:
            self.stem[-4].active_out = spec[0][1]  # the stem's last conv (before BN, ReLU, max pool)
        for stage, (_, w, m) in zip(self.stages, spec):
            for blk in stage:
                blk.set_width(w, m)
        self.active_spec = tuple(tuple(s) for s in spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage, (d, _, _) in zip(self.stages, self.active_spec):
            for blk in islice(stage, d):
                x = blk(x)
        x = x.mean((2, 3))
        return F.linear(x, self.fc.weight[:, : x.shape[1]], self.fc.bias)

    def extract(self, spec: ZooResNetSpec | None = None) -> ZooResNet:
        static = ZooResNet(self.cfg, self.active_spec if spec is None else spec)
        copy_sliced_state(self, static)
        return static.train(self.training)


__all__ = ["ResBlock", "build_stem", "ZooResNet", "ZooResNetConfig", "ZooResNetSpec", "ZooResNetSupernet"]
