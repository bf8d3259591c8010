"""MobileNetV3 / Once-for-All style space: per-stage depth, per-block kernel and expand ratio."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces.arch import Arch
from search_spaces.base import CostTable, SearchSpace
from search_spaces.registry import register_space
from supernets.blocks import make_divisible, static_mbconv
from supernets.mbnet import MBNetConfig, MBSpec, MBSupernet, StageConfig
from supernets.mixed import mixed_forward
from supernets.profiling import FEATURES, forward_features

# Once-for-All MobileNetV3 stages: (channels, stride, activation, squeeze-excite)
OFA_STAGES = (
    (24, 2, "relu", False),
    (40, 2, "relu", True),
    (80, 2, "hswish", False),
    (112, 1, "hswish", True),
    (160, 2, "hswish", True),
)


class MBV3Space(SearchSpace):
    """Stages of elastic MBConv blocks; choices ``s{i}.depth``, ``s{i}.b{j}.kernel``, ``s{i}.b{j}.expand``."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        resolution: int = 32,
        width_mult: float = 1.0,
        stages: tuple[tuple[int, int, str, bool], ...] = OFA_STAGES,
        depths: tuple[int, ...] = (2, 3, 4),
        kernels: tuple[int, ...] = (3, 5, 7),
        expands: tuple[int, ...] = (3, 4, 6),
        stem_channels: int = 16,
        head_channels: int = 960,
        feature_channels: int = 1280,
        stem_stride: int = 2,
        dropout: float = 0.0,
        name: str = "mbv3",
    ):
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f"kernel sizes must be odd (they are centre-cropped), got {kernels}")
        self.name = name
        self.resolution = resolution
        w = lambda c: make_divisible(c * width_mult)  # noqa: E731
        self.cfg = MBNetConfig(
            in_channels=in_channels,
            num_classes=num_classes,
            stem_channels=w(stem_channels),
            stem_stride=stem_stride,
            first_channels=w(stem_channels),
            stages=tuple(StageConfig(w(c), s, a, se) for c, s, a, se in stages),
            head_channels=w(head_channels),
            feature_channels=w(feature_channels) if width_mult > 1 else feature_channels,
            kernels=tuple(sorted(kernels)),
            expands=tuple(sorted(expands)),
            depths=tuple(sorted(depths)),
            dropout=dropout,
        )
        self.n_stages, self.max_depth = len(stages), max(depths)
        choices: dict[str, tuple[Any, ...]] = {}
        for i in range(self.n_stages):
            choices[f"s{i}.depth"] = self.cfg.depths
            for j in range(self.max_depth):
                choices[f"s{i}.b{j}.kernel"] = self.cfg.kernels
                choices[f"s{i}.b{j}.expand"] = self.cfg.expands
        super().__init__(choices)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.cfg.in_channels, self.resolution, self.resolution)

    def canonicalize(self, values: dict[str, Any]) -> dict[str, Any]:
        # Blocks past a stage's depth never run: pin them so equal networks get equal ids.
        for i in range(self.n_stages):
            for j in range(values[f"s{i}.depth"], self.max_depth):
                values[f"s{i}.b{j}.kernel"] = self.cfg.kernels[0]
                values[f"s{i}.b{j}.expand"] = self.cfg.expands[0]
        return values

    def used_keys(self, arch: Mapping[str, Any]) -> tuple[str, ...]:
        """Every stage's depth, and kernel and expand of the blocks within it (the others never run)."""
        used = []
        for i in range(self.n_stages):
            used.append(f"s{i}.depth")
            for j in range(arch[f"s{i}.depth"]):
                used += [f"s{i}.b{j}.kernel", f"s{i}.b{j}.expand"]
        return tuple(used)

    def num_architectures(self) -> int:
        per_block = len(self.cfg.kernels) * len(self.cfg.expands)
        return sum(per_block**d for d in self.cfg.depths) ** self.n_stages

    def build_supernet(self) -> MBSupernet:
        return MBSupernet(self.cfg)

    def to_spec(self, arch: Mapping[str, Any]) -> MBSpec:
        return tuple(
            tuple((arch[f"s{i}.b{j}.kernel"], arch[f"s{i}.b{j}.expand"]) for j in range(arch[f"s{i}.depth"]))
            for i in range(self.n_stages)
        )

    def arch_from_spec(self, spec: MBSpec) -> Arch:
        """Inverse of :meth:`to_spec` (blocks past a stage's depth get the canonical filler)."""
        values: dict[str, Any] = {}
        for i, blocks in enumerate(spec):
            values[f"s{i}.depth"] = len(blocks)
            for j in range(self.max_depth):
                k, e = blocks[j] if j < len(blocks) else (self.cfg.kernels[0], self.cfg.expands[0])
                values[f"s{i}.b{j}.kernel"], values[f"s{i}.b{j}.expand"] = k, e
        return self.arch(values)

    def single_path_probabilities(
        self, indicators: Mapping[tuple[int, int], Mapping[str, list[torch.Tensor]]]
    ) -> dict[str, torch.Tensor]:
        """Per-choice probability vectors from a single-path supernet's nested indicators (differentiable).

        Nested gates ``g_1, g_2, ...`` over ordered values give ``P(v_0) = 1 - g_1``,
        ``P(v_1) = g_1 (1 - g_2)``, ...; the depth of a stage comes from its blocks'
        ``keep`` gates (block ``j`` runs if every block before it is kept). With hard gates this is the
        one-hot read-off arch,
        so the expected latency is that network's predicted latency.
        """
        out: dict[str, torch.Tensor] = {}
        for i in range(self.n_stages):
            keeps = [
                indicators[(i, j)]["keep"][0] for j in range(self.max_depth) if indicators[(i, j)]["keep"]
            ]
            out[f"s{i}.depth"] = _nested_probabilities(keeps)
            for j in range(self.max_depth):
                out[f"s{i}.b{j}.kernel"] = _nested_probabilities(indicators[(i, j)]["kernel"])
                out[f"s{i}.b{j}.expand"] = _nested_probabilities(indicators[(i, j)]["expand"])
        return out

    # --- cost lowering ----------------------------------------------------------------------
    # Slot 0 is the fixed part (stem, first block, head); slot 1 + i * max_depth + j is block j of
    # stage i, whose op id is 0 when the block is skipped, else 1 + kernel_idx * |expands| + expand_idx.
    @cached_property
    def _cost_table(self) -> CostTable:
        cfg = self.cfg
        n_ops = 1 + len(cfg.kernels) * len(cfg.expands)
        slots = 1 + self.n_stages * self.max_depth
        feats = np.zeros((slots, n_ops, len(FEATURES)))
        for slot, op, module, shape in self.op_modules():
            feats[slot, op], _ = forward_features(module, shape)
        ref = self.build_supernet().eval()  # the fixed parts are measured on their real modules
        f_stem, _ = forward_features(nn.Sequential(ref.stem, ref.first), self.input_shape)
        c_last, h = cfg.stages[-1].out_channels, self._output_side()
        f_head, _ = forward_features(_Head(ref), (c_last, h, h))
        feats[0, 0] = f_stem + f_head
        names = ["fixed"] + [f"s{i}.b{j}" for i in range(self.n_stages) for j in range(self.max_depth)]
        return CostTable(feats, FEATURES, tuple(names))

    def fixed_modules(self) -> list[tuple[int, int, list[tuple[nn.Module, tuple[int, ...]]]]]:
        """Slot 0: the stem with the first block, and the head (the modules the cost table measures)."""
        ref = self.build_supernet().eval()
        h = self._output_side()
        head_in = (self.cfg.stages[-1].out_channels, h, h)
        return [(0, 0, [(nn.Sequential(ref.stem, ref.first), self.input_shape), (_Head(ref), head_in)])]

    def _output_side(self) -> int:
        h = -(-self.resolution // self.cfg.stem_stride)
        for st in self.cfg.stages:
            h = -(-h // st.stride)
        return h

    def op_modules(self) -> list[tuple[int, int, nn.Module, tuple[int, ...]]]:
        """Every block position x (kernel, expand) as a plain-torch block with its input shape."""
        cfg, out = self.cfg, []
        shape = self._stage_input_shapes()
        for i, (st, c_in) in enumerate(zip(cfg.stages, cfg.stage_in_channels())):
            for j in range(self.max_depth):
                slot = 1 + i * self.max_depth + j
                cin, stride = (c_in, st.stride) if j == 0 else (st.out_channels, 1)
                for ki, k in enumerate(cfg.kernels):
                    for ei, e in enumerate(cfg.expands):
                        out.append(
                            (
                                slot,
                                1 + ki * len(cfg.expands) + ei,
                                static_mbconv(cin, st.out_channels, k, e, stride, st.use_se, st.act),
                                shape[(i, j)],
                            )
                        )
        return out

    def op_descriptions(self) -> list[list[str]]:
        cfg = self.cfg
        blocks = ["skipped (stage shallower than this block)"] + [
            f"kernel={k} expand={e}" for k in cfg.kernels for e in cfg.expands
        ]
        fixed = ["stem + first block + head (always runs)"] + [""] * (len(blocks) - 1)
        return [fixed] + [list(blocks) for _ in range(self.n_stages * self.max_depth)]

    def _stage_input_shapes(self) -> dict[tuple[int, int], tuple[int, int, int]]:
        """Input shape of block j of stage i (fixed: widths do not depend on the architecture)."""
        cfg = self.cfg
        h = -(-self.resolution // cfg.stem_stride)
        shapes = {}
        for i, (st, c_in) in enumerate(zip(cfg.stages, cfg.stage_in_channels())):
            for j in range(self.max_depth):
                shapes[(i, j)] = (c_in, h, h) if j == 0 else (st.out_channels, h, h)
                if j == 0:
                    h = -(-h // st.stride)
        return shapes

    def cost_table(self) -> CostTable:
        return self._cost_table

    def lower(self, codes: np.ndarray) -> np.ndarray:
        codes = self._checked_codes(codes)
        col = {k: i for i, k in enumerate(self.keys)}
        depths = np.asarray(self.cfg.depths)
        n_e = len(self.cfg.expands)
        out = np.zeros((codes.shape[0], 1 + self.n_stages * self.max_depth), dtype=np.int32)
        for i in range(self.n_stages):
            depth = depths[codes[:, col[f"s{i}.depth"]]]
            for j in range(self.max_depth):
                op = 1 + codes[:, col[f"s{i}.b{j}.kernel"]] * n_e + codes[:, col[f"s{i}.b{j}.expand"]]
                out[:, 1 + i * self.max_depth + j] = np.where(j < depth, op, 0)
        return out

    def op_probabilities(self, probs: Mapping[str, torch.Tensor], validate: bool = True) -> torch.Tensor:
        """``[S, O]`` (or ``[*batch, S, O]``) op probabilities per slot, consistent with :meth:`lower`.

        Slot 0 (fixed part) is op 0 with probability 1. Block ``j`` of stage ``i``
        runs when the stage's depth exceeds ``j``: ``P(active) = sum_{d > j} p_depth[d]``;
        op 0 (skipped) gets ``sum_{d <= j} p_depth[d]`` (= ``1 - P(active)``, but
        computed directly so it is exactly 0, never slightly negative, for blocks
        every depth runs) and op ``1 + k * |expands| + e`` gets
        ``P(active) * p_kernel[k] * p_expand[e]``. Differentiable in every input.
        """
        p, batch = self.probability_tensors(probs, validate)
        cfg = self.cfg
        n_s, n_d = self.n_stages, self.max_depth
        first = p[self.keys[0]]
        dtype, device = first.dtype, first.device
        depth = torch.stack([p[f"s{i}.depth"] for i in range(n_s)], dim=-2)  # [*b, stages, |depths|]
        blocks = [(i, j) for i in range(n_s) for j in range(n_d)]  # slot 1 + i * max_depth + j
        kern = torch.stack([p[f"s{i}.b{j}.kernel"] for i, j in blocks], dim=-2)  # [*b, blocks, |kernels|]
        expa = torch.stack([p[f"s{i}.b{j}.expand"] for i, j in blocks], dim=-2)  # [*b, blocks, |expands|]
        runs = torch.tensor(
            [[float(d > j) for j in range(n_d)] for d in cfg.depths], dtype=dtype, device=device
        )  # [|depths|, max_depth]
        active = (depth @ runs).flatten(-2)  # [*b, blocks]
        skipped = (depth @ (1.0 - runs)).flatten(-2)
        joint = (kern.unsqueeze(-1) * expa.unsqueeze(-2)).flatten(
            -2
        )  # [*b, blocks, |k|*|e|], kernel-major like lower
        block_rows = torch.cat([skipped.unsqueeze(-1), active.unsqueeze(-1) * joint], dim=-1)
        fixed = torch.zeros(block_rows.shape[-1], dtype=dtype, device=device)
        fixed[0] = 1.0
        fixed = fixed.expand(*batch, 1, block_rows.shape[-1])
        return torch.cat([fixed, block_rows], dim=-2)

    def mixed_forward(
        self, supernet: nn.Module, x: torch.Tensor, probs: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """TangleNAS mixture: masked kernels/expand groups per block, probability-weighted stage depths."""
        if not isinstance(supernet, MBSupernet):
            raise ValueError(
                f"gradient search on space {self.name!r} needs its weight-entangled supernet (--supernet"
                f" entangled or single_path), this run's is {type(supernet).__name__}: use another controller"
            )
        blocks = [
            [probs[f"s{i}.b{j}.{kind}"] for j in range(self.max_depth)]
            for i in range(self.n_stages)
            for kind in ("kernel", "expand")
        ]
        kern = torch.stack([torch.stack(blocks[2 * i]) for i in range(self.n_stages)])
        expa = torch.stack([torch.stack(blocks[2 * i + 1]) for i in range(self.n_stages)])
        depth = torch.stack([probs[f"s{i}.depth"] for i in range(self.n_stages)])
        return mixed_forward(supernet, x, kern.to(x.dtype), expa.to(x.dtype), depth.to(x.dtype))


def _nested_probabilities(gates: list[torch.Tensor]) -> torch.Tensor:
    """Distribution over ``len(gates) + 1`` ordered values from cumulative keep-going gates."""
    probs, alive = (
        [],
        torch.ones(
            (), dtype=gates[0].dtype if gates else torch.float32, device=gates[0].device if gates else None
        ),
    )
    for g in gates:  # gate n: "given value n-1 or more, take value n or more"
        probs.append(alive * (1 - g))
        alive = alive * g
    probs.append(alive)
    return torch.stack(probs)


class _Head(nn.Module):
    """The network's head as a module, so its features are counted like any block."""

    def __init__(self, net: MBSupernet):
        super().__init__()
        self.head_expand, self.feature_mix, self.feature_act, self.classifier = (
            net.head_expand,
            net.feature_mix,
            net.feature_act,
            net.classifier,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_expand(x).mean((2, 3), keepdim=True)
        return self.classifier(self.feature_act(self.feature_mix(x)).flatten(1))


@register_space("mbv3")
def mbv3(**kwargs: Any) -> MBV3Space:
    """Once-for-All MobileNetV3: 5 stages, depth {2,3,4}, kernel {3,5,7}, expand {3,4,6}."""
    return MBV3Space(**kwargs)


@register_space("tiny")
def tiny(**kwargs: Any) -> MBV3Space:
    """Two small stages for tests and smoke runs (16x16 input by default)."""
    defaults: dict[str, Any] = dict(
        stages=((16, 2, "relu", False), (24, 2, "hswish", True)),
        depths=(1, 2),
        kernels=(3, 5),
        expands=(2, 3),
        stem_channels=8,
        head_channels=48,
        feature_channels=64,
        resolution=16,
        name="tiny",
    )
    defaults.update(kwargs)
    return MBV3Space(**defaults)
