"""MBConv networks as timm's EfficientNet class and torchvision's MobileNetV3 build them, made elastic.

Covers EfficientNet (SiLU, sigmoid squeeze-excite sized on the block input, a
1x1 conv head), MobileNetV2 (ReLU6, no squeeze-excite, the same head) and
torchvision's MobileNetV3 (ReLU / hard-swish per stage, hard-sigmoid
squeeze-excite sized on the expanded width, a linear layer after pooling).
Layout: stem (3x3 stride 2) -> fixed first blocks -> stages of elastic blocks ->
head (1x1 conv, pool, [linear + activation], classifier).

A block is [1x1 expand] -> kxk depthwise -> [squeeze-excite] -> 1x1 project
(+ identity where the original model adds it). Elastic choices per block:
kernel (centre crop) and expand ratio (a prefix of the expanded channels); per
stage: depth. Stage widths are the model's. Static and elastic blocks share one
forward and one set of names, registered in forward order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

import torch
from torch import nn

from supernets.base import Supernet
from supernets.blocks import make_divisible
from supernets.extract import copy_sliced_state
from supernets.ops import ElasticBatchNorm2d, ElasticConv2d, ElasticDepthwiseConv2d

ACTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "hswish": nn.Hardswish,
    "sigmoid": nn.Sigmoid,
    "hardsigmoid": nn.Hardsigmoid,
}

# One stage = (kernel, expand) per active block; its length is the depth.
ZooMBSpec = tuple[tuple[tuple[int, float], ...], ...]


@dataclass(frozen=True)
class SEConfig:
    """How a block's squeeze-excite is sized and gated.

    ``rule="input"`` (timm's EfficientNet): ``round(mid * ratio / expand)`` channels, a share of the
    block input; ``rule="mid"`` (MobileNetV3): ``make_divisible(mid // 4)`` of the expanded width.
    """

    rule: str
    act: str
    gate: str
    ratio: float = 0.25

    def channels(self, mid: int, expand: float) -> int:
        if self.rule == "input":
            return round(mid * (self.ratio / expand))  # timm's order of operations: the same rounding
        return make_divisible(mid // 4)


@dataclass(frozen=True)
class BlockDef:
    """One block position of the largest network and its choices (ascending, the model's own last)."""

    in_ch: int
    out_ch: int
    stride: int
    kernels: tuple[int, ...]
    expands: tuple[float, ...]
    act: str
    se: SEConfig | None
    residual: bool

    def mid(self, expand: float) -> int:
        return self.in_ch if expand == 1 else make_divisible(self.in_ch * expand)

    @property
    def has_expand(self) -> bool:
        return max(self.expands) != 1


@dataclass(frozen=True)
class ZooMBConfig:
    in_channels: int
    num_classes: int
    stem_channels: int
    stem_act: str
    first: tuple[BlockDef, ...]  # fixed blocks (one kernel and expand each)
    stages: tuple[tuple[BlockDef, ...], ...]  # elastic block positions per stage
    depths: tuple[tuple[int, ...], ...]  # per stage, ascending
    head_channels: int
    head_act: str
    feature_channels: int | None  # a linear layer + activation after pooling (torchvision MobileNetV3)
    feature_act: str
    bn_eps: float = 1e-5

    def largest_spec(self) -> ZooMBSpec:
        return tuple(
            tuple((b.kernels[-1], b.expands[-1]) for b in blocks[: d[-1]])
            for blocks, d in zip(self.stages, self.depths)
        )

    def check(self, spec: ZooMBSpec) -> None:
        if len(spec) != len(self.stages):
            raise ValueError(f"spec has {len(spec)} stages, the network {len(self.stages)}")
        for i, (blocks, defs) in enumerate(zip(spec, self.stages)):
            if len(blocks) not in self.depths[i]:
                raise ValueError(f"stage {i}: depth {len(blocks)} not in {self.depths[i]}")
            for j, ((k, e), b) in enumerate(zip(blocks, defs)):
                if k not in b.kernels or e not in b.expands:
                    raise ValueError(
                        f"block {i}.{j}: (kernel={k}, expand={e}) outside kernels {b.kernels} / expands"
                        f" {b.expands}"
                    )


def act(name: str) -> nn.Module:
    return ACTS[name]()


class ConvBNAct(nn.Module):
    def __init__(self, conv: nn.Module, bn: nn.Module, activation: str | None):
        super().__init__()
        self.conv, self.bn = conv, bn
        self.act = act(activation) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    def __init__(self, reduce: nn.Module, expand: nn.Module, se: SEConfig):
        super().__init__()
        self.reduce, self.act, self.expand, self.gate = reduce, act(se.act), expand, act(se.gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(s)


class MBBlock(nn.Module):
    """[expand] -> depthwise -> [SE] -> project (+ identity); elastic when built with ``elastic=True``.

    A static block is built at one ``kernel`` and ``expand``; an elastic one at the largest of each.
    """

    def __init__(
        self,
        b: BlockDef,
        bn: Callable[[int], nn.Module],
        elastic: bool,
        kernel: int | None = None,
        expand: float = 1.0,
    ):
        super().__init__()
        self.b = b
        e = max(b.expands) if elastic else expand
        k = max(b.kernels) if elastic else kernel
        mid = max(b.mid(v) for v in b.expands) if elastic else b.mid(e)
        pw: nn.Module | None
        if elastic:
            pw = ElasticConv2d(b.in_ch, mid, 1) if b.has_expand else None
            dw: nn.Module = ElasticDepthwiseConv2d(mid, k, b.stride)
            proj: nn.Module = ElasticConv2d(mid, b.out_ch, 1)
        else:
            pw = nn.Conv2d(b.in_ch, mid, 1, bias=False) if b.has_expand else None
            dw = nn.Conv2d(mid, mid, k, b.stride, k // 2, groups=mid, bias=False)
            proj = nn.Conv2d(mid, b.out_ch, 1, bias=False)
        self.expand = ConvBNAct(pw, bn(mid), b.act) if pw is not None else nn.Identity()
        self.dw = ConvBNAct(dw, bn(mid), b.act)
        self.se: nn.Module = nn.Identity()
        if b.se is not None:
            if elastic:
                rd = max(b.se.channels(b.mid(v), v) for v in b.expands)
                reduce, grow = ElasticConv2d(mid, rd, 1, bias=True), ElasticConv2d(rd, mid, 1, bias=True)
            else:
                rd = b.se.channels(mid, e)
                reduce, grow = nn.Conv2d(mid, rd, 1), nn.Conv2d(rd, mid, 1)
            self.se = SqueezeExcite(reduce, grow, b.se)
        self.project = ConvBNAct(proj, bn(b.out_ch), None)
        if elastic:
            self.set_active(k, e)

    def set_active(self, kernel: int, expand: float) -> None:
        """The active kernel and expand ratio (elastic blocks only)."""
        mid = self.b.mid(expand)
        if isinstance(self.expand, ConvBNAct):
            self.expand.conv.active_out = mid
        self.dw.conv.active_kernel = kernel
        if isinstance(self.se, SqueezeExcite) and self.b.se is not None:
            self.se.reduce.active_out = self.b.se.channels(mid, expand)
            self.se.expand.active_out = mid
        self.active = (kernel, expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.b.residual else y


def _bn(cfg: ZooMBConfig, elastic: bool) -> Callable[[int], nn.Module]:
    """The supernet's BN is elastic everywhere (same state dict; synchronisable across ranks)."""
    cls = ElasticBatchNorm2d if elastic else nn.BatchNorm2d
    return lambda c: cls(c, eps=cfg.bn_eps)


def _build(net: nn.Module, cfg: ZooMBConfig, elastic: bool, stages: nn.Sequential) -> None:
    """Stem, fixed first blocks, ``stages`` and head, registered in forward order (converters rely on it)."""
    bn = _bn(cfg, elastic)
    net.stem = ConvBNAct(
        nn.Conv2d(cfg.in_channels, cfg.stem_channels, 3, 2, 1, bias=False),
        bn(cfg.stem_channels),
        cfg.stem_act,
    )
    net.first = nn.Sequential(*(MBBlock(b, bn, False, b.kernels[-1], b.expands[-1]) for b in cfg.first))
    net.stages = stages
    c_last = cfg.stages[-1][0].out_ch
    net.head = ConvBNAct(
        nn.Conv2d(c_last, cfg.head_channels, 1, bias=False), bn(cfg.head_channels), cfg.head_act
    )
    c = cfg.head_channels
    if cfg.feature_channels is not None:
        net.feature = nn.Linear(c, cfg.feature_channels)
        net.feature_act = act(cfg.feature_act)
        c = cfg.feature_channels
    net.classifier = nn.Linear(c, cfg.num_classes)


def _head_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.head(x).mean((2, 3))
    if net.cfg.feature_channels is not None:
        x = net.feature_act(net.feature(x))
    return net.classifier(x)


class ZooMBNet(nn.Module):
    """The static network of one spec."""

    def __init__(self, cfg: ZooMBConfig, spec: ZooMBSpec):
        super().__init__()
        cfg.check(spec)
        self.cfg, self.spec = cfg, tuple(spec)
        bn = _bn(cfg, elastic=False)
        stages = nn.Sequential(
            *(
                nn.Sequential(*(MBBlock(b, bn, False, k, e) for b, (k, e) in zip(defs, blocks)))
                for defs, blocks in zip(cfg.stages, spec)
            )
        )
        _build(self, cfg, False, stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _head_forward(self, self.stages(self.first(self.stem(x))))


class ZooMBSupernet(Supernet, nn.Module):
    """Every depth, kernel and expand ratio of the space in the original model's max-size weights."""

    def __init__(self, cfg: ZooMBConfig):
        super().__init__()
        self.cfg = cfg
        bn = _bn(cfg, elastic=True)
        stages = nn.Sequential(
            *(
                nn.Sequential(*(MBBlock(b, bn, True) for b in defs[: d[-1]]))
                for defs, d in zip(cfg.stages, cfg.depths)
            )
        )
        _build(self, cfg, True, stages)
        self.active_depths = [d[-1] for d in cfg.depths]
        self.set_active(self.largest_spec())

    def largest_spec(self) -> ZooMBSpec:
        return self.cfg.largest_spec()

    def set_active(self, spec: ZooMBSpec) -> None:
        self.cfg.check(spec)
        for i, blocks in enumerate(spec):
            for blk, (k, e) in zip(self.stages[i], blocks):
                blk.set_active(k, e)
            self.active_depths[i] = len(blocks)
        self.active_spec = tuple(tuple(b) for b in spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(self.stem(x))
        for stage, depth in zip(self.stages, self.active_depths):
            for blk in islice(stage, depth):
                x = blk(x)
        return _head_forward(self, x)

    def extract(self, spec: ZooMBSpec | None = None) -> ZooMBNet:
        static = ZooMBNet(self.cfg, self.active_spec if spec is None else spec)
        copy_sliced_state(self, static)
        return static.train(self.training)


__all__ = ["ACTS", "BlockDef", "MBBlock", "SEConfig", "ZooMBConfig", "ZooMBNet", "ZooMBSpec", "ZooMBSupernet"]
