"""Elastic-depth, elastic-width ResNet (basic blocks) for larger images.

Choices per stage: depth (number of blocks) and width (fraction of the stage's
maximum channels). Weights are prefix slices of the widest, deepest network;
the first block of every stage has a projection shortcut (its input width can
differ from its output width under every choice), later blocks add the
identity. Reuses the pooling-ResNet's elastic basic block.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

import torch
from torch import nn

from supernets.base import Supernet
from supernets.extract import copy_sliced_state
from supernets.ops import ElasticBatchNorm2d, ElasticConv2d
from supernets.resnet_pool import BasicBlock

ResNetSpec = tuple[tuple[int, int], ...]  # (depth, width in channels) per stage


@dataclass(frozen=True)
class ResNetConfig:
    in_channels: int = 3
    num_classes: int = 10
    stem_channels: int = 32
    stage_channels: tuple[int, ...] = (64, 128, 256, 512)
    stage_strides: tuple[int, ...] = (1, 2, 2, 2)
    depths: tuple[int, ...] = (1, 2, 3)
    width_ratios: tuple[float, ...] = (0.5, 0.75, 1.0)
    stem_stride: int = 2  # stride-2 stem for larger images (1 for 32x32 and smaller)

    def widths(self, stage: int) -> tuple[int, ...]:
        c = self.stage_channels[stage]
        return tuple(
            sorted({max(8, int(round(c * r / 8)) * 8) for r in self.width_ratios})
        )  # multiples of 8, distinct

    def check(self, spec: ResNetSpec) -> None:
        if len(spec) != len(self.stage_channels):
            raise ValueError(f"spec has {len(spec)} stages, the network {len(self.stage_channels)}")
        for i, (d, w) in enumerate(spec):
            if d not in self.depths or w not in self.widths(i):
                raise ValueError(
                    f"stage {i}: (depth={d}, width={w}) outside depths {self.depths} / widths"
                    f" {self.widths(i)}"
                )


class _Block(BasicBlock):
    """Static block whose first-of-stage version always projects (matches the supernet's structure)."""

    def __init__(self, c_in: int, c_out: int, stride: int, project: bool):
        super().__init__(c_in, c_out, stride)
        if project and self.shortcut is None:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        elif not project:
            self.shortcut = None


def _stem(cfg: ResNetConfig, bn: type[nn.BatchNorm2d]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cfg.in_channels, cfg.stem_channels, 3, cfg.stem_stride, 1, bias=False),
        bn(cfg.stem_channels),
        nn.ReLU(),
    )


class ResNet(nn.Module):
    """Static network of one spec."""

    def __init__(self, cfg: ResNetConfig, spec: ResNetSpec):
        super().__init__()
        cfg.check(spec)
        self.cfg, self.spec = cfg, tuple(spec)
        self.stem = _stem(cfg, nn.BatchNorm2d)
        stages, c_in = [], cfg.stem_channels
        for (d, w), stride in zip(spec, cfg.stage_strides):
            stages.append(
                nn.Sequential(
                    *(
                        _Block(c_in if j == 0 else w, w, stride if j == 0 else 1, project=j == 0)
                        for j in range(d)
                    )
                )
            )
            c_in = w
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(c_in, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stages(self.stem(x)).mean((2, 3)))


class _ElasticBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, project: bool):
        super().__init__()
        self.conv1 = ElasticConv2d(c_in, c_out, 3, stride)
        self.bn1 = ElasticBatchNorm2d(c_out)
        self.conv2 = ElasticConv2d(c_out, c_out, 3)
        self.bn2 = ElasticBatchNorm2d(c_out)
        self.shortcut = (
            nn.Sequential(ElasticConv2d(c_in, c_out, 1, stride), ElasticBatchNorm2d(c_out))
            if project
            else None
        )

    def set_width(self, w: int) -> None:
        self.conv1.active_out = self.conv2.active_out = w
        if self.shortcut is not None:
            self.shortcut[0].active_out = w

    forward = BasicBlock.forward


class ResNetSupernet(Supernet, nn.Module):
    """Every depth/width combination in one set of max-size weights."""

    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        self.cfg = cfg
        self.stem = _stem(cfg, ElasticBatchNorm2d)
        stages, c_in = [], cfg.stem_channels
        for c, stride in zip(cfg.stage_channels, cfg.stage_strides):
            stages.append(
                nn.Sequential(
                    *(
                        _ElasticBlock(c_in if j == 0 else c, c, stride if j == 0 else 1, project=j == 0)
                        for j in range(max(cfg.depths))
                    )
                )
            )
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(c_in, cfg.num_classes)
        self.set_active(self.largest_spec())

    def largest_spec(self) -> ResNetSpec:
        return tuple(
            (max(self.cfg.depths), max(self.cfg.widths(i))) for i in range(len(self.cfg.stage_channels))
        )

    def set_active(self, spec: ResNetSpec) -> None:
        self.cfg.check(spec)
        for stage, (_, w) in zip(self.stages, spec):
            for blk in stage:
                blk.set_width(w)
        self.active_spec = tuple(tuple(s) for s in spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage, (d, _) in zip(self.stages, self.active_spec):
            for blk in islice(stage, d):
                x = blk(x)
        x = x.mean((2, 3))
        return nn.functional.linear(x, self.classifier.weight[:, : x.shape[1]], self.classifier.bias)

    def extract(self, spec: ResNetSpec | None = None) -> ResNet:
        static = ResNet(self.cfg, self.active_spec if spec is None else spec)
        copy_sliced_state(self, static)
        return static.train(self.training)


__all__ = ["ResNet", "ResNetConfig", "ResNetSpec", "ResNetSupernet"]
