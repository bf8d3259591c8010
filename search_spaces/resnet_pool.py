"""``resnet20_pool``: where a CIFAR ResNet20 downsamples (Balanced Mixture of SuperNets' space).

One choice, ``downsample_at``: the block indices (as ``"i,j"`` text, so the
architecture stays plain JSON) of the two blocks that halve the resolution and
double the width. C(9, 2) = 36 architectures, all with about the same MACs
(half the resolution at twice the width costs the same) but up to 5x apart in
weights and in activation memory; a fully shared supernet is known to rank these
configurations poorly, which is what the mixtures of supernets address.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np
from torch import nn

from search_spaces.arch import Arch
from search_spaces.base import CostTable, SearchSpace
from search_spaces.registry import register_space
from supernets.blocks import make_divisible
from supernets.profiling import FEATURES, forward_features
from supernets.resnet_pool import BasicBlock, PoolResNetConfig, PoolResNetSupernet, PoolSpec

KEY = "downsample_at"


def spec_label(spec: PoolSpec) -> str:
    return ",".join(str(i) for i in spec)


class ResNetPoolSpace(SearchSpace):
    """Placement of the downsampling blocks of a CIFAR-style ResNet (one choice, ``downsample_at``)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        resolution: int = 32,
        width_mult: float = 1.0,
        num_blocks: int = 9,
        num_downsamples: int = 2,
        name: str = "resnet20_pool",
    ):
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if not 1 <= num_downsamples < num_blocks:
            raise ValueError(f"num_downsamples must be in 1..{num_blocks - 1}, got {num_downsamples}")
        self.name, self.resolution = name, resolution
        self.cfg = PoolResNetConfig(
            in_channels, num_classes, make_divisible(16 * width_mult), num_blocks, num_downsamples
        )
        self.configurations = self.cfg.configurations()
        super().__init__({KEY: tuple(spec_label(s) for s in self.configurations)})

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.cfg.in_channels, self.resolution, self.resolution)

    def num_architectures(self) -> int:
        return len(self.configurations)

    # Every configuration costs about the same MACs (halving the resolution and doubling the
    # width cancel out), so "largest" means most weights: downsampling first puts every block
    # at full width, and its weights contain every other configuration's slices.
    def smallest(self) -> Arch:
        return self.arch({KEY: spec_label(self.configurations[-1])})

    def largest(self) -> Arch:
        return self.arch({KEY: spec_label(self.configurations[0])})

    def build_supernet(self) -> PoolResNetSupernet:
        return PoolResNetSupernet(self.cfg)

    def to_spec(self, arch: Mapping[str, Any]) -> PoolSpec:
        self.validate(arch)
        return tuple(int(i) for i in str(arch[KEY]).split(","))

    # --- cost lowering ----------------------------------------------------------------------
    # Slot 0: stem + head (fixed). Slot 1 + i: block i, whose op depends on its output width
    # level l (number of downsamplings up to and including it) and whether it downsamples:
    # op 2 * l - downsample, i.e. 0: level 0; 1: downsample into level 1; 2: level 1; 3: into level 2; ...
    @cached_property
    def _ops_per_config(self) -> np.ndarray:
        table = np.zeros((len(self.configurations), 1 + self.cfg.num_blocks), dtype=np.int32)
        for c, spec in enumerate(self.configurations):
            level = 0
            for i in range(self.cfg.num_blocks):
                down = i in spec
                level += down
                table[c, 1 + i] = 2 * level - down
        return table

    def _op_block(self, op: int) -> tuple[BasicBlock, tuple[int, int, int]]:
        level, down = (op + 1) // 2, op % 2
        c_out = self.cfg.base_channels * 2**level
        c_in, side = (
            (c_out // 2, self.resolution // 2 ** (level - 1))
            if down
            else (c_out, self.resolution // 2**level)
        )
        return BasicBlock(c_in, c_out, 2 if down else 1), (c_in, side, side)

    def op_modules(self) -> list[tuple[int, int, nn.Module, tuple[int, ...]]]:
        n_ops = 2 * self.cfg.num_downsamples + 1
        out = []
        for slot in range(1, 1 + self.cfg.num_blocks):
            valid = set(self._ops_per_config[:, slot].tolist())
            for op in range(n_ops):
                if op in valid:
                    block, shape = self._op_block(op)
                    out.append((slot, op, block, shape))
        return out

    def fixed_modules(self) -> list[tuple[int, int, list[tuple[nn.Module, tuple[int, ...]]]]]:
        """Slot 0: the stem and the classifier (the modules the cost table measures)."""
        ref = self.build_supernet().extract(self.configurations[0])
        return [(0, 0, [(ref.stem, self.input_shape), (ref.classifier, (self.cfg.max_channels,))])]

    @cached_property
    def _cost_table(self) -> CostTable:
        n_ops = 2 * self.cfg.num_downsamples + 1
        feats = np.zeros((1 + self.cfg.num_blocks, n_ops, len(FEATURES)))
        for slot, op, module, shape in self.op_modules():
            feats[slot, op], _ = forward_features(module, shape)
        ref = self.build_supernet().extract(self.configurations[0])
        f_stem, _ = forward_features(ref.stem, self.input_shape)
        f_head, _ = forward_features(ref.classifier, (self.cfg.max_channels,))
        feats[0, 0] = f_stem + f_head
        names = ["fixed"] + [f"block{i}" for i in range(self.cfg.num_blocks)]
        return CostTable(feats, FEATURES, tuple(names))

    def cost_table(self) -> CostTable:
        return self._cost_table

    def lower(self, codes: np.ndarray) -> np.ndarray:
        codes = self._checked_codes(codes)
        return self._ops_per_config[codes[:, 0]]

    def op_descriptions(self) -> list[list[str]]:
        n_ops = 2 * self.cfg.num_downsamples + 1
        names = []
        for op in range(n_ops):
            level, down = (op + 1) // 2, op % 2
            names.append(
                f"{'downsample into' if down else 'at'} width {self.cfg.base_channels * 2**level},"
                f" 1/{2**level} resolution"
            )
        return [["stem + head (always runs)"] + [""] * (n_ops - 1)] + [
            list(names) for _ in range(self.cfg.num_blocks)
        ]


@register_space("resnet20_pool")
def resnet20_pool(**kwargs: Any) -> ResNetPoolSpace:
    """CIFAR ResNet20 with searchable downsampling placement (2 of 9 blocks: 36 architectures)."""
    return ResNetPoolSpace(**kwargs)
