"""``resnet``: elastic depth and width per stage of a basic-block ResNet (for larger images)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np
from torch import nn

from search_spaces.base import CostTable, SearchSpace
from search_spaces.registry import register_space
from supernets.profiling import FEATURES, forward_features
from supernets.resnet import ResNet, ResNetConfig, ResNetSpec, ResNetSupernet, _Block


class _Head(nn.Module):
    def __init__(self, c: int, classes: int):
        super().__init__()
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        return self.classifier(x.mean((2, 3)))


class ResNetSpace(SearchSpace):
    """Choices ``s{i}.depth`` and ``s{i}.width`` (channels) per stage."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        resolution: int = 64,
        width_mult: float = 1.0,
        stage_channels: tuple[int, ...] = (64, 128, 256, 512),
        stage_strides: tuple[int, ...] = (1, 2, 2, 2),
        depths: tuple[int, ...] = (1, 2, 3),
        width_ratios: tuple[float, ...] = (0.5, 0.75, 1.0),
        stem_channels: int = 32,
        stem_stride: int | None = None,
        name: str = "resnet",
    ):
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if len(stage_channels) != len(stage_strides):
            raise ValueError(f"{len(stage_channels)} stage widths but {len(stage_strides)} strides")
        scale = lambda c: max(8, int(round(c * width_mult / 8)) * 8)  # noqa: E731
        stem_stride = stem_stride if stem_stride is not None else (2 if resolution > 32 else 1)
        self.name, self.resolution = name, resolution
        self.cfg = ResNetConfig(
            in_channels,
            num_classes,
            scale(stem_channels),
            tuple(scale(c) for c in stage_channels),
            tuple(stage_strides),
            tuple(sorted(depths)),
            tuple(sorted(width_ratios)),
            stem_stride,
        )
        self.n_stages = len(stage_channels)
        choices: dict[str, tuple[Any, ...]] = {}
        for i in range(self.n_stages):
            choices[f"s{i}.depth"] = self.cfg.depths
            choices[f"s{i}.width"] = self.cfg.widths(i)
        super().__init__(choices)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.cfg.in_channels, self.resolution, self.resolution)

    def num_architectures(self) -> int:
        return int(np.prod([len(self.cfg.depths) * len(self.cfg.widths(i)) for i in range(self.n_stages)]))

    @property
    def _n_widths(self) -> int:
        return max(len(self.cfg.widths(i)) for i in range(self.n_stages))

    def build_supernet(self) -> ResNetSupernet:
        return ResNetSupernet(self.cfg)

    def to_spec(self, arch: Mapping[str, Any]) -> ResNetSpec:
        return tuple((arch[f"s{i}.depth"], arch[f"s{i}.width"]) for i in range(self.n_stages))

    def arch_from_spec(self, spec: ResNetSpec):
        return self.arch(
            {
                **{f"s{i}.depth": d for i, (d, _) in enumerate(spec)},
                **{f"s{i}.width": w for i, (_, w) in enumerate(spec)},
            }
        )

    # --- cost lowering --------------------------------------------------------------------------
    # Slot 0: stem + head (op = last stage's width index). Slot 1 + i * max_depth + j: block j of
    # stage i; op 0 = skipped, else 1 + in_width_idx * |widths| + width_idx (block 0's input is the
    # previous stage's width, or the stem for stage 0, which uses in_width_idx 0).
    @property
    def max_depth(self) -> int:
        return max(self.cfg.depths)

    def _shapes(self) -> list[int]:
        h = -(-self.resolution // self.cfg.stem_stride)
        sides = []
        for s in self.cfg.stage_strides:
            sides.append(h)
            h = -(-h // s)
        return sides  # input side of each stage

    def op_modules(self) -> list[tuple[int, int, nn.Module, tuple[int, ...]]]:
        cfg, out, n_w = self.cfg, [], self._n_widths
        sides = self._shapes()
        for i in range(self.n_stages):
            ins = (cfg.stem_channels,) if i == 0 else cfg.widths(i - 1)
            for j in range(self.max_depth):
                slot = 1 + i * self.max_depth + j
                for wi, w in enumerate(cfg.widths(i)):
                    if j == 0:
                        for ii, c_in in enumerate(ins):
                            out.append(
                                (
                                    slot,
                                    1 + ii * n_w + wi,
                                    _Block(c_in, w, cfg.stage_strides[i], True),
                                    (c_in, sides[i], sides[i]),
                                )
                            )
                    else:
                        side = -(-sides[i] // cfg.stage_strides[i])
                        out.append((slot, 1 + wi * n_w + wi, _Block(w, w, 1, False), (w, side, side)))
        return out

    def fixed_modules(self) -> list[tuple[int, int, list[tuple[nn.Module, tuple[int, ...]]]]]:
        """Slot 0, one op per last-stage width: the stem and the head (the modules the cost table
        measures)."""
        cfg = self.cfg
        stem = ResNet(cfg, self.to_spec(self.smallest())).stem
        side = -(-self._shapes()[-1] // cfg.stage_strides[-1])
        return [
            (0, wi, [(stem, self.input_shape), (_Head(w, cfg.num_classes), (w, side, side))])
            for wi, w in enumerate(cfg.widths(self.n_stages - 1))
        ]

    @cached_property
    def _cost_table(self) -> CostTable:
        cfg, n_w = self.cfg, self._n_widths
        slots = 1 + self.n_stages * self.max_depth
        feats = np.zeros((slots, max(1 + n_w * n_w, n_w), len(FEATURES)))
        for slot, op, module, shape in self.op_modules():
            feats[slot, op], _ = forward_features(module, shape)
        stem = ResNet(cfg, self.to_spec(self.smallest())).stem
        f_stem, (c, h, _) = forward_features(stem, self.input_shape)
        side = -(-self._shapes()[-1] // cfg.stage_strides[-1])
        for wi, w in enumerate(cfg.widths(self.n_stages - 1)):
            f_head, _ = forward_features(_Head(w, cfg.num_classes), (w, side, side))
            feats[0, wi] = f_stem + f_head
        names = ["stem + head"] + [f"s{i}.b{j}" for i in range(self.n_stages) for j in range(self.max_depth)]
        return CostTable(feats, FEATURES, tuple(names))

    def cost_table(self) -> CostTable:
        return self._cost_table

    def lower(self, codes: np.ndarray) -> np.ndarray:
        codes = self._checked_codes(codes)
        col = {k: i for i, k in enumerate(self.keys)}
        n_w = self._n_widths
        depths = np.asarray(self.cfg.depths)
        out = np.zeros((codes.shape[0], 1 + self.n_stages * self.max_depth), dtype=np.int32)
        out[:, 0] = codes[:, col[f"s{self.n_stages - 1}.width"]]
        prev = np.zeros(codes.shape[0], dtype=np.int64)  # stem: in-width index 0
        for i in range(self.n_stages):
            w = codes[:, col[f"s{i}.width"]]
            d = depths[codes[:, col[f"s{i}.depth"]]]
            for j in range(self.max_depth):
                op = 1 + (prev if j == 0 else w) * n_w + w
                out[:, 1 + i * self.max_depth + j] = np.where(j < d, op, 0)
            prev = w
        return out


@register_space("resnet")
def resnet(**kwargs: Any) -> ResNetSpace:
    """Basic-block ResNet for larger images: 4 stages, depth {1,2,3} and width {0.5,0.75,1} x channels per
    stage."""
    return ResNetSpace(**kwargs)
