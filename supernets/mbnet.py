"""MobileNetV3 / Once-for-All style network: the elastic supernet and its static twin.

Layout: stem -> first block (expand 1) -> stages of MBConv blocks -> head
(1x1 expand, global pool, 1x1 feature mix, classifier). Each stage has an
elastic depth (its first ``d`` blocks run); each block an elastic kernel and
expand ratio. Stage widths are fixed, so a block position always has the same
input and output channels whatever the architecture; this is what lets the cost
model treat every block position as one slot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

import torch
from torch import nn

from supernets.base import Supernet
from supernets.blocks import ConvBNAct, ElasticInvertedResidual, InvertedResidual, activation, static_mbconv
from supernets.extract import copy_sliced_state
from supernets.ops import ElasticBatchNorm2d


@dataclass(frozen=True)
class StageConfig:
    out_channels: int
    stride: int
    act: str
    use_se: bool


@dataclass(frozen=True)
class MBNetConfig:
    """Shape of the largest network; every subnetwork is a slice of it."""

    in_channels: int
    num_classes: int
    stem_channels: int
    stem_stride: int
    first_channels: int
    stages: tuple[StageConfig, ...]
    head_channels: int  # 1x1 expansion before pooling
    feature_channels: int  # 1x1 feature mix after pooling
    kernels: tuple[int, ...]
    expands: tuple[float, ...]
    depths: tuple[int, ...]
    dropout: float = 0.0

    def stage_in_channels(self) -> list[int]:
        chans = [self.first_channels]
        for st in self.stages[:-1]:
            chans.append(st.out_channels)
        return chans


# One stage = tuple of (kernel, expand) per active block; its length is the depth.
MBSpec = tuple[tuple[tuple[int, float], ...], ...]


class MBNet(nn.Module):
    """Static network of plain torch layers; the format extraction produces."""

    def __init__(self, cfg: MBNetConfig, spec: MBSpec):
        super().__init__()
        _build_common(self, cfg)
        stages = []
        for st, c_in, blocks in zip(cfg.stages, cfg.stage_in_channels(), spec):
            layers = []
            for j, (k, e) in enumerate(blocks):
                layers.append(
                    static_mbconv(
                        c_in if j == 0 else st.out_channels,
                        st.out_channels,
                        k,
                        e,
                        st.stride if j == 0 else 1,
                        st.use_se,
                        st.act,
                    )
                )
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(self.stem(x))
        x = self.stages(x)
        return _head_forward(self, x)


class MBSupernet(Supernet, nn.Module):
    """Weight-entangled supernet over depths, kernels and expand ratios."""

    def __init__(self, cfg: MBNetConfig):
        super().__init__()
        self.cfg = cfg
        _build_common(self, cfg, bn=ElasticBatchNorm2d)
        d_max = max(cfg.depths)
        stages = []
        for st, c_in in zip(cfg.stages, cfg.stage_in_channels()):
            blocks = [
                ElasticInvertedResidual(
                    c_in if j == 0 else st.out_channels,
                    st.out_channels,
                    cfg.kernels,
                    cfg.expands,
                    st.stride if j == 0 else 1,
                    st.use_se,
                    st.act,
                )
                for j in range(d_max)
            ]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.active_depths = [d_max] * len(cfg.stages)
        self.set_active(self.largest_spec())

    # --- choosing the active subnetwork -------------------------------------------------
    def largest_spec(self) -> MBSpec:
        d, k, e = max(self.cfg.depths), max(self.cfg.kernels), max(self.cfg.expands)
        return tuple(tuple((k, e) for _ in range(d)) for _ in self.cfg.stages)

    def set_active(self, spec: MBSpec) -> None:
        if len(spec) != len(self.cfg.stages):
            raise ValueError(f"spec has {len(spec)} stages, supernet has {len(self.cfg.stages)}")
        for i, blocks in enumerate(spec):
            if len(blocks) not in self.cfg.depths:
                raise ValueError(f"stage {i}: depth {len(blocks)} not in allowed depths {self.cfg.depths}")
            for blk, (k, e) in zip(self.stages[i], blocks):
                blk.set_active(k, e)
            self.active_depths[i] = len(blocks)
        self.active_spec = tuple(tuple(b) for b in spec)

    # --- forward / extraction --------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(self.stem(x))
        for stage, depth in zip(self.stages, self.active_depths):
            for blk in islice(stage, depth):  # no Sequential slicing: it builds a module per call
                x = blk(x)
        return _head_forward(self, x)

    def extract(self, spec: MBSpec | None = None) -> MBNet:
        """Standalone network for ``spec`` (default: active) holding the supernet's sliced weights and BN
        stats."""
        spec = self.active_spec if spec is None else spec
        static = MBNet(self.cfg, spec)
        copy_sliced_state(self, static)
        return static.train(self.training)


def _build_common(net: nn.Module, cfg: MBNetConfig, bn: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
    """Stem, first block and head: same shapes and names in supernet and static net.

    Only the BN class differs: the supernet passes ``ElasticBatchNorm2d`` (a
    ``nn.BatchNorm2d`` subclass with the same state dict, full width here) so that
    every BN of the supernet can be synchronised across ranks; the static network
    keeps plain ``nn.BatchNorm2d``.
    """
    net.stem = ConvBNAct(
        nn.Conv2d(cfg.in_channels, cfg.stem_channels, 3, cfg.stem_stride, 1, bias=False),
        bn(cfg.stem_channels),
        "hswish",
    )
    net.first = static_mbconv(cfg.stem_channels, cfg.first_channels, 3, 1, 1, False, "relu", bn=bn)
    c_last = cfg.stages[-1].out_channels
    net.head_expand = ConvBNAct(
        nn.Conv2d(c_last, cfg.head_channels, 1, bias=False), bn(cfg.head_channels), "hswish"
    )
    net.feature_mix = nn.Conv2d(cfg.head_channels, cfg.feature_channels, 1, bias=True)
    net.feature_act = activation("hswish")
    net.dropout = nn.Dropout(cfg.dropout)
    net.classifier = nn.Linear(cfg.feature_channels, cfg.num_classes)


def _head_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.head_expand(x)
    x = x.mean((2, 3), keepdim=True)
    x = net.feature_act(net.feature_mix(x)).flatten(1)
    return net.classifier(net.dropout(x))


__all__ = ["MBNet", "MBNetConfig", "MBSpec", "MBSupernet", "StageConfig", "InvertedResidual"]
