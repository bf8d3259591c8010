"""CIFAR-style ResNet20 whose searchable choice is *where* the network downsamples.

The network is a stem conv and ``num_blocks`` basic residual blocks (ResNet20:
9). ``num_downsamples`` of the blocks (ResNet20: 2) halve the resolution and
double the width; which ones is the architecture (Balanced Mixture of
SuperNets' pooling-placement space: C(9, 2) = 36 configurations). A spec is the
sorted tuple of block indices that downsample.

In the weight-sharing supernet every block owns max-width weights (the width it
has when every downsampling came before it) and slices a channel prefix, so a
block that is 16 wide in one configuration and 32 wide in another shares its
first 16 channels between them. The stride is a per-configuration attribute, and
the projection shortcut (1x1 conv + BN) runs only where the shape changes, as in
the static network.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import nn

from supernets.base import Supernet
from supernets.extract import copy_sliced_state
from supernets.ops import ElasticBatchNorm2d, ElasticConv2d

PoolSpec = tuple[int, ...]  # sorted indices of the blocks that downsample


@dataclass(frozen=True)
class PoolResNetConfig:
    in_channels: int = 3
    num_classes: int = 10
    base_channels: int = 16
    num_blocks: int = 9
    num_downsamples: int = 2

    def configurations(self) -> list[PoolSpec]:
        """Every valid spec, in a fixed (lexicographic) order."""
        return list(combinations(range(self.num_blocks), self.num_downsamples))

    def widths(self, spec: PoolSpec) -> list[tuple[int, int, int]]:
        """``(in_channels, out_channels, stride)`` of every block under ``spec``."""
        self.check(spec)
        out, level = [], 0
        for i in range(self.num_blocks):
            c_in = self.base_channels * 2**level
            stride = 2 if i in spec else 1
            level += stride == 2
            out.append((c_in, self.base_channels * 2**level, stride))
        return out

    @property
    def max_channels(self) -> int:
        return self.base_channels * 2**self.num_downsamples

    def check(self, spec: PoolSpec) -> None:
        if tuple(spec) not in set(self.configurations()):
            raise ValueError(
                f"downsampling positions {tuple(spec)} are not valid: need {self.num_downsamples} distinct,"
                f" increasing block indices in 0..{self.num_blocks - 1}"
            )


class BasicBlock(nn.Module):
    """Static residual block (conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if (stride != 1 or c_in != c_out)
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ElasticBasicBlock(nn.Module):
    """Supernet block: same names as :class:`BasicBlock`, max-width weights, elastic width and stride."""

    def __init__(self, max_channels: int):
        super().__init__()
        c = max_channels
        self.conv1 = ElasticConv2d(c, c, 3)
        self.bn1 = ElasticBatchNorm2d(c)
        self.conv2 = ElasticConv2d(c, c, 3)
        self.bn2 = ElasticBatchNorm2d(c)
        self.shortcut = nn.Sequential(ElasticConv2d(c, c, 1), ElasticBatchNorm2d(c))
        self.project = True

    def set_active(self, c_in: int, c_out: int, stride: int) -> None:
        for conv in (self.conv1, self.conv2, self.shortcut[0]):
            conv.active_out = c_out
        self.conv1.stride = self.shortcut[0].stride = stride
        self.project = stride != 1 or c_in != c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (self.shortcut(x) if self.project else x))


def _build_stem_and_head(net: nn.Module, cfg: PoolResNetConfig, bn: type[nn.BatchNorm2d]) -> None:
    net.stem = nn.Sequential(
        nn.Conv2d(cfg.in_channels, cfg.base_channels, 3, 1, 1, bias=False), bn(cfg.base_channels), nn.ReLU()
    )
    net.classifier = nn.Linear(cfg.max_channels, cfg.num_classes)  # every configuration ends at the max width


class PoolResNet(nn.Module):
    """The static network of one downsampling configuration."""

    def __init__(self, cfg: PoolResNetConfig, spec: PoolSpec):
        super().__init__()
        self.cfg, self.spec = cfg, tuple(spec)
        _build_stem_and_head(self, cfg, nn.BatchNorm2d)
        self.blocks = nn.Sequential(*(BasicBlock(c_in, c_out, s) for c_in, c_out, s in cfg.widths(self.spec)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(self.stem(x)).mean((2, 3)))


class PoolResNetSupernet(Supernet, nn.Module):
    """One weight set for every downsampling configuration (full weight entanglement)."""

    def __init__(self, cfg: PoolResNetConfig):
        super().__init__()
        self.cfg = cfg
        _build_stem_and_head(self, cfg, ElasticBatchNorm2d)
        self.blocks = nn.Sequential(*(ElasticBasicBlock(cfg.max_channels) for _ in range(cfg.num_blocks)))
        self.set_active(self.largest_spec())

    def largest_spec(self) -> PoolSpec:
        """Downsampling first: every block at full width, using every weight of the supernet."""
        return self.cfg.configurations()[0]

    def set_active(self, spec: PoolSpec) -> None:
        for blk, (c_in, c_out, stride) in zip(self.blocks, self.cfg.widths(tuple(spec))):
            blk.set_active(c_in, c_out, stride)
        self.active_spec = tuple(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(self.stem(x)).mean((2, 3)))

    def extract(self, spec: PoolSpec | None = None) -> PoolResNet:
        """Standalone network for ``spec`` (default: active) with the supernet's sliced weights and BN
        stats."""
        static = PoolResNet(self.cfg, self.active_spec if spec is None else tuple(spec))
        copy_sliced_state(self, static)
        return static.train(self.training)


__all__ = [
    "BasicBlock",
    "ElasticBasicBlock",
    "PoolResNet",
    "PoolResNetConfig",
    "PoolResNetSupernet",
    "PoolSpec",
]
