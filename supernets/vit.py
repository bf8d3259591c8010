"""AutoFormer-style weight-entangled Vision Transformer.

Choices: embedding dimension (global), depth, and per layer the number of
attention heads and the MLP ratio. Every weight is a prefix slice of the
largest: Q, K and V are separate projections (so slicing heads keeps them
apart), ``head_dim`` is fixed, the MLP hidden width is ``mlp_ratio * embed_dim``,
LayerNorms, the class token and position embeddings are sliced on the embedding
dimension. The static twin uses plain ``nn.Linear`` / ``nn.LayerNorm`` /
``nn.Conv2d`` with the same names, so extraction is the usual name-by-name copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from supernets.base import Supernet
from supernets.extract import copy_sliced_state
from supernets.ops import ElasticConv2d, ElasticLinear

ViTSpec = tuple[int, tuple[tuple[int, float], ...]]  # (embed_dim, ((heads, mlp_ratio) per layer))


@dataclass(frozen=True)
class ViTConfig:
    in_channels: int = 3
    num_classes: int = 10
    image_size: int = 32
    patch_size: int = 4
    embed_dims: tuple[int, ...] = (96, 128, 192)
    depths: tuple[int, ...] = (4, 5, 6)
    heads: tuple[int, ...] = (2, 3, 4)
    mlp_ratios: tuple[float, ...] = (2.0, 3.0, 4.0)
    head_dim: int = 32

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def check(self, spec: ViTSpec) -> None:
        embed, layers = spec
        if embed not in self.embed_dims:
            raise ValueError(f"embed_dim {embed} not in {self.embed_dims}")
        if len(layers) not in self.depths:
            raise ValueError(f"depth {len(layers)} not in {self.depths}")
        for i, (h, r) in enumerate(layers):
            if h not in self.heads or r not in self.mlp_ratios:
                raise ValueError(
                    f"layer {i}: (heads={h}, mlp_ratio={r}) outside heads {self.heads} / mlp ratios"
                    f" {self.mlp_ratios}"
                )


def _hidden(embed: int, ratio: float) -> int:
    return int(round(embed * ratio))


class Attention(nn.Module):
    """Multi-head self-attention; works for the static and (with elastic linears) the supernet version."""

    def __init__(self, q: nn.Module, k: nn.Module, v: nn.Module, proj: nn.Module, heads: int, head_dim: int):
        super().__init__()
        self.q, self.k, self.v, self.proj = q, k, v, proj
        self.heads, self.head_dim = heads, head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        return self.proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)); x + mlp(ln2(x))."""

    def __init__(self, ln1: nn.Module, attn: Attention, ln2: nn.Module, fc1: nn.Module, fc2: nn.Module):
        super().__init__()
        self.ln1, self.attn, self.ln2, self.fc1, self.fc2 = ln1, attn, ln2, fc1, fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class ElasticLayerNorm(nn.Module):
    """LayerNorm over the first ``x.shape[-1]`` features of max-size affine parameters."""

    def __init__(self, max_dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(max_dim))
        self.bias = nn.Parameter(torch.zeros(max_dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        return F.layer_norm(x, (d,), self.weight[:d], self.bias[:d], self.eps)


def _tokens(net: nn.Module, x: torch.Tensor, embed: int) -> torch.Tensor:
    x = net.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, E]
    cls = net.cls_token[:, :, :embed].expand(x.shape[0], -1, -1)
    return torch.cat([cls, x], dim=1) + net.pos_embed[:, :, :embed]


def _classify(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.head(net.norm(x)[:, 0])


class ViT(nn.Module):
    """Static ViT of one spec (plain torch layers)."""

    def __init__(self, cfg: ViTConfig, spec: ViTSpec):
        super().__init__()
        cfg.check(spec)
        self.cfg, self.spec = cfg, spec
        e, layers = spec
        self.patch_embed = nn.Conv2d(cfg.in_channels, e, cfg.patch_size, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, e))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, e))
        hd = cfg.head_dim
        self.blocks = nn.Sequential(
            *(
                Block(
                    nn.LayerNorm(e, eps=1e-6),
                    Attention(
                        nn.Linear(e, h * hd),
                        nn.Linear(e, h * hd),
                        nn.Linear(e, h * hd),
                        nn.Linear(h * hd, e),
                        h,
                        hd,
                    ),
                    nn.LayerNorm(e, eps=1e-6),
                    nn.Linear(e, _hidden(e, r)),
                    nn.Linear(_hidden(e, r), e),
                )
                for h, r in layers
            )
        )
        self.norm = nn.LayerNorm(e, eps=1e-6)
        self.head = nn.Linear(e, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _classify(self, self.blocks(_tokens(self, x, self.spec[0])))


class ViTSupernet(Supernet, nn.Module):
    """Every ViT of the space in one set of max-size weights."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        e, h, hd = max(cfg.embed_dims), max(cfg.heads), cfg.head_dim
        hidden = _hidden(e, max(cfg.mlp_ratios))
        self.patch_embed = ElasticConv2d(cfg.in_channels, e, cfg.patch_size, stride=cfg.patch_size, bias=True)
        self.patch_embed.padding = 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, e))
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.num_patches + 1, e) * 0.02)
        self.blocks = nn.Sequential(
            *(
                Block(
                    ElasticLayerNorm(e),
                    Attention(
                        ElasticLinear(e, h * hd),
                        ElasticLinear(e, h * hd),
                        ElasticLinear(e, h * hd),
                        ElasticLinear(h * hd, e),
                        h,
                        hd,
                    ),
                    ElasticLayerNorm(e),
                    ElasticLinear(e, hidden),
                    ElasticLinear(hidden, e),
                )
                for _ in range(max(cfg.depths))
            )
        )
        self.norm = ElasticLayerNorm(e)
        self.head = ElasticLinear(e, cfg.num_classes)
        self.set_active(self.largest_spec())

    def largest_spec(self) -> ViTSpec:
        c = self.cfg
        return (max(c.embed_dims), tuple((max(c.heads), max(c.mlp_ratios)) for _ in range(max(c.depths))))

    def set_active(self, spec: ViTSpec) -> None:
        self.cfg.check(spec)
        e, layers = spec
        self.patch_embed.active_out = e
        hd = self.cfg.head_dim
        for blk, (h, r) in zip(self.blocks, layers):
            for lin in (blk.attn.q, blk.attn.k, blk.attn.v):
                lin.active_out = h * hd
            blk.attn.heads = h
            blk.attn.proj.active_out = e
            blk.fc1.active_out = _hidden(e, r)
            blk.fc2.active_out = e
        self.active_spec = (e, tuple(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e, layers = self.active_spec
        x = _tokens(self, x, e)
        for blk, _ in zip(self.blocks, layers):
            x = blk(x)
        return _classify(self, x)

    def extract(self, spec: ViTSpec | None = None) -> ViT:
        static = ViT(self.cfg, self.active_spec if spec is None else spec)
        copy_sliced_state(self, static)
        return static.train(self.training)


__all__ = ["ViT", "ViTConfig", "ViTSpec", "ViTSupernet"]
