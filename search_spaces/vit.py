"""``vit``: AutoFormer-style Vision Transformer space (embedding dim, depth, heads and MLP ratio per
layer)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces.base import CostTable, SearchSpace
from search_spaces.registry import register_space
from supernets.profiling import FEATURES, forward_features
from supernets.vit import ViTConfig, ViTSpec, ViTSupernet, _hidden


class _Fixed(nn.Module):
    """Patch embedding + final norm + classifier of one embedding width (the part every depth runs)."""

    def __init__(self, cfg: ViTConfig, embed: int):
        super().__init__()
        self.patch_embed = nn.Conv2d(cfg.in_channels, embed, cfg.patch_size, cfg.patch_size)
        self.norm = nn.LayerNorm(embed)
        self.head = nn.Linear(embed, cfg.num_classes)
        # counted as parameters of the fixed part (no op of their own: the cost features ignore them)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, embed))

    def forward(self, x):
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(t)[:, 0])


class ViTSpace(SearchSpace):
    """Choices ``embed_dim``, ``depth``, ``l{i}.heads``, ``l{i}.mlp_ratio``; all weight-entangled."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        resolution: int = 32,
        width_mult: float = 1.0,
        patch_size: int = 4,
        embed_dims: tuple[int, ...] = (96, 128, 192),
        depths: tuple[int, ...] = (4, 5, 6),
        heads: tuple[int, ...] = (2, 3, 4),
        mlp_ratios: tuple[float, ...] = (2.0, 3.0, 4.0),
        head_dim: int = 32,
        name: str = "vit",
    ):
        if resolution % patch_size:
            raise ValueError(f"resolution {resolution} is not a multiple of patch_size {patch_size}")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        embed_dims = tuple(sorted({max(8, int(round(e * width_mult / 8)) * 8) for e in embed_dims}))
        self.name, self.resolution = name, resolution
        self.cfg = ViTConfig(
            in_channels,
            num_classes,
            resolution,
            patch_size,
            embed_dims,
            tuple(sorted(depths)),
            tuple(sorted(heads)),
            tuple(sorted(mlp_ratios)),
            head_dim,
        )
        self.max_depth = max(depths)
        choices: dict[str, tuple[Any, ...]] = {"embed_dim": self.cfg.embed_dims, "depth": self.cfg.depths}
        for i in range(self.max_depth):
            choices[f"l{i}.heads"] = self.cfg.heads
            choices[f"l{i}.mlp_ratio"] = self.cfg.mlp_ratios
        super().__init__(choices)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.cfg.in_channels, self.resolution, self.resolution)

    def canonicalize(self, values: dict[str, Any]) -> dict[str, Any]:
        for i in range(values["depth"], self.max_depth):  # layers past the depth never run
            values[f"l{i}.heads"], values[f"l{i}.mlp_ratio"] = self.cfg.heads[0], self.cfg.mlp_ratios[0]
        return values

    def used_keys(self, arch: Mapping[str, Any]) -> tuple[str, ...]:
        """Embedding width, depth, and heads and MLP ratio of the layers within the depth."""
        layers = [(f"l{i}.heads", f"l{i}.mlp_ratio") for i in range(arch["depth"])]
        return ("embed_dim", "depth", *(k for pair in layers for k in pair))

    def num_architectures(self) -> int:
        per_layer = len(self.cfg.heads) * len(self.cfg.mlp_ratios)
        return len(self.cfg.embed_dims) * sum(per_layer**d for d in self.cfg.depths)

    def build_supernet(self) -> ViTSupernet:
        return ViTSupernet(self.cfg)

    def to_spec(self, arch: Mapping[str, Any]) -> ViTSpec:
        return (
            arch["embed_dim"],
            tuple((arch[f"l{i}.heads"], arch[f"l{i}.mlp_ratio"]) for i in range(arch["depth"])),
        )

    def arch_from_spec(self, spec: ViTSpec):
        e, layers = spec
        values: dict[str, Any] = {"embed_dim": e, "depth": len(layers)}
        for i in range(self.max_depth):
            h, r = layers[i] if i < len(layers) else (self.cfg.heads[0], self.cfg.mlp_ratios[0])
            values[f"l{i}.heads"], values[f"l{i}.mlp_ratio"] = h, r
        return self.arch(values)

    # --- cost lowering: slot 0 = fixed part (op = embed index); slot 1 + i = layer i ----------------
    # layer op 0 = skipped, else 1 + (embed_idx * |heads| + heads_idx) * |ratios| + ratio_idx
    def _layer_op(self, e_idx: int, h_idx: int, r_idx: int) -> int:
        return 1 + (e_idx * len(self.cfg.heads) + h_idx) * len(self.cfg.mlp_ratios) + r_idx

    def op_modules(self) -> list[tuple[int, int, nn.Module, tuple[int, ...]]]:
        from supernets.vit import Attention, Block

        cfg, out, hd, n = self.cfg, [], self.cfg.head_dim, self.cfg.num_patches + 1
        for ei, e in enumerate(cfg.embed_dims):
            for hi, h in enumerate(cfg.heads):
                for ri, r in enumerate(cfg.mlp_ratios):
                    blk = Block(
                        nn.LayerNorm(e),
                        Attention(
                            nn.Linear(e, h * hd),
                            nn.Linear(e, h * hd),
                            nn.Linear(e, h * hd),
                            nn.Linear(h * hd, e),
                            h,
                            hd,
                        ),
                        nn.LayerNorm(e),
                        nn.Linear(e, _hidden(e, r)),
                        nn.Linear(_hidden(e, r), e),
                    )
                    for i in range(self.max_depth):
                        out.append((1 + i, self._layer_op(ei, hi, ri), blk, (n, e)))
        return out

    def fixed_modules(self) -> list[tuple[int, int, list[tuple[nn.Module, tuple[int, ...]]]]]:
        """Slot 0, one op per embedding width: patch embedding, tokens, final norm and classifier."""
        return [
            (0, ei, [(_Fixed(self.cfg, e), self.input_shape)]) for ei, e in enumerate(self.cfg.embed_dims)
        ]

    @cached_property
    def _cost_table(self) -> CostTable:
        cfg = self.cfg
        n_ops = 1 + len(cfg.embed_dims) * len(cfg.heads) * len(cfg.mlp_ratios)
        feats = np.zeros((1 + self.max_depth, n_ops, len(FEATURES)))
        measured: dict[int, np.ndarray] = {}
        for slot, op, module, shape in self.op_modules():
            if id(module) not in measured:  # the same block is listed once per layer position
                measured[id(module)], _ = forward_features(module, shape)
            feats[slot, op] = measured[id(module)]
        for ei, e in enumerate(cfg.embed_dims):
            feats[0, ei], _ = forward_features(_Fixed(cfg, e), self.input_shape)
        names = ["fixed (patch embedding, norm, head)"] + [f"layer{i}" for i in range(self.max_depth)]
        return CostTable(feats, FEATURES, tuple(names))

    def cost_table(self) -> CostTable:
        return self._cost_table

    def lower(self, codes: np.ndarray) -> np.ndarray:
        codes = self._checked_codes(codes)
        col = {k: i for i, k in enumerate(self.keys)}
        depth = np.asarray(self.cfg.depths)[codes[:, col["depth"]]]
        e_idx = codes[:, col["embed_dim"]]
        out = np.zeros((codes.shape[0], 1 + self.max_depth), dtype=np.int32)
        out[:, 0] = e_idx
        n_h, n_r = len(self.cfg.heads), len(self.cfg.mlp_ratios)
        for i in range(self.max_depth):
            op = 1 + (e_idx * n_h + codes[:, col[f"l{i}.heads"]]) * n_r + codes[:, col[f"l{i}.mlp_ratio"]]
            out[:, 1 + i] = np.where(i < depth, op, 0)
        return out


@register_space("vit")
def vit(**kwargs: Any) -> ViTSpace:
    """AutoFormer-style ViT: embed dim {96,128,192} x width, depth {4,5,6}, heads {2,3,4} and MLP ratio
    {2,3,4} per layer."""
    return ViTSpace(**kwargs)
