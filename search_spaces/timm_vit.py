"""``timm:vit_tiny_*``, ``timm:vit_small_*``: an AutoFormer-style ViT space around a timm VisionTransformer.

Choices come from the model: embedding dimension (``width_ratios`` of its own),
depth (``depth_drop`` layers fewer up to its own), and per layer the number of
heads (``head_ratios`` of its own, ``head_dim`` fixed) and the MLP ratio
(``mlp_ratios`` of its own). The model is the largest architecture. timm's fused
``qkv`` projection is split into the supernet's separate Q, K and V (and joined
again on export); a checkpoint trained at another resolution gets its position
embeddings resampled (timm's ``resample_abs_pos_embed``), so the original is then
reproduced exactly only at its own resolution.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from search_spaces.arch import Arch
from search_spaces.converted import (
    DEFAULT_RATIOS,
    ConversionError,
    ConvertedSpace,
    adapt_tensor,
    check_ratios,
)
from search_spaces.vit import ViTSpace
from supernets.vit import ViTSupernet


def _identity(m: Any) -> bool:
    return m is None or isinstance(m, nn.Identity)


def describe_timm_vit(model: nn.Module, name: str) -> dict[str, Any]:
    """Patch size, embedding width, depth, heads, head width and MLP width of a plain timm ViT."""
    where = f"timm model {name!r}: module"
    pe = model.patch_embed
    proj = getattr(pe, "proj", None)
    if type(pe).__name__ != "PatchEmbed" or not isinstance(proj, nn.Conv2d) or proj.bias is None:
        raise ConversionError(f"{where} 'patch_embed' ({type(pe).__name__}) is not a plain patch embedding")
    if not _identity(getattr(pe, "norm", None)):
        raise ConversionError(f"{where} 'patch_embed.norm' ({type(pe.norm).__name__}) is not supported")
    p = proj.kernel_size[0]
    if proj.kernel_size != (p, p) or proj.stride != (p, p) or proj.padding != (0, 0):
        raise ConversionError(f"{where} 'patch_embed.proj' is not a non-overlapping {p}x{p} patch projection")
    ok = getattr(model, "cls_token", None) is not None and getattr(model, "reg_token", None) is None
    ok = ok and getattr(model, "num_prefix_tokens", 1) == 1 and not getattr(model, "no_embed_class", False)
    ok = ok and getattr(model, "global_pool", "") == "token" and getattr(model, "attn_pool", None) is None
    if not ok:
        raise ConversionError(
            f"{where} 'cls_token'/'global_pool': only one class token, read by the head, is supported"
        )
    for attr in ("norm_pre", "fc_norm", "patch_drop"):
        if not _identity(getattr(model, attr, None)):
            raise ConversionError(
                f"{where} {attr!r} ({type(getattr(model, attr)).__name__}) is not supported"
            )
    layers = set()
    for i, b in enumerate(model.blocks):
        w = f"{where} 'blocks.{i}"
        if (
            type(b).__name__ != "Block"
            or type(b.attn).__name__ != "Attention"
            or type(b.mlp).__name__ != "Mlp"
        ):
            raise ConversionError(f"{w}' ({type(b).__name__}) is not a plain pre-norm transformer block")
        for attr in ("ls1", "ls2", "drop_path1", "drop_path2"):
            if not _identity(getattr(b, attr, None)):
                raise ConversionError(
                    f"{w}.{attr}' ({type(getattr(b, attr)).__name__}, layer scale) is not supported"
                )
        a = b.attn
        for attr in ("q_norm", "k_norm", "norm"):
            if not _identity(getattr(a, attr, None)):
                raise ConversionError(
                    f"{w}.attn.{attr}' ({type(getattr(a, attr)).__name__}) is not supported"
                )
        if getattr(a, "gate", None) is not None or a.qkv.bias is None:
            raise ConversionError(f"{w}.attn.qkv': gated attention or a Q/K/V without bias is not supported")
        m = b.mlp
        gelu = isinstance(m.act, nn.GELU) and m.act.approximate == "none"
        if not gelu or not _identity(getattr(m, "norm", None)) or getattr(m, "fc1", None) is None:
            raise ConversionError(f"{w}.mlp' is not a GELU MLP (fc1, GELU, fc2)")
        for ln in (b.norm1, b.norm2):
            if not isinstance(ln, nn.LayerNorm) or ln.eps != 1e-6:
                raise ConversionError(f"{w}.norm1/norm2' is not a LayerNorm with eps 1e-6")
        layers.add((a.num_heads, a.head_dim, m.fc1.out_features))
    if len(layers) != 1:
        raise ConversionError(f"{where} 'blocks': layers of different widths {sorted(layers)}")
    if not isinstance(model.norm, nn.LayerNorm) or not isinstance(model.head, nn.Linear):
        raise ConversionError(f"{where} 'norm'/'head': a final LayerNorm and a linear head are needed")
    heads, head_dim, hidden = layers.pop()
    embed = proj.out_channels
    return {
        "patch_size": p,
        "embed_dim": embed,
        "depth": len(model.blocks),
        "heads": heads,
        "head_dim": head_dim,
        "mlp_ratio": hidden / embed,
    }


class TimmViTSpace(ConvertedSpace, ViTSpace):
    """The ``vit`` space's choices, taken around a timm ViT; Q/K/V joined and split on the way in and out."""

    def build_supernet(self) -> ViTSupernet:
        net = ViTSupernet(self.cfg)
        self.init_from_checkpoint(net)
        return net

    def original_layout(self, arch: Arch) -> dict[str, Any]:
        """The first ``depth`` blocks, each attention layer with its own number of heads."""
        depth, model = arch["depth"], self.original_arch
        heads = {f"blocks.{i}.attn": arch[f"l{i}.heads"] for i in range(depth)}
        return {
            "keep": {"blocks": list(range(depth))} if depth < model["depth"] else {},
            "heads": {k: h for k, h in heads.items() if h != model["l0.heads"]},
        }

    @staticmethod
    def _names(depth: int) -> dict[str, str]:
        """Our tensor name -> timm's, for every tensor but Q/K/V."""
        out = {
            "patch_embed.weight": "patch_embed.proj.weight",
            "patch_embed.bias": "patch_embed.proj.bias",
            "cls_token": "cls_token",
            "pos_embed": "pos_embed",
            "norm.weight": "norm.weight",
            "norm.bias": "norm.bias",
            "head.weight": "head.weight",
            "head.bias": "head.bias",
        }
        for i in range(depth):
            for ours, theirs in (("ln1", "norm1"), ("ln2", "norm2"), ("attn.proj", "attn.proj")):
                for leaf in ("weight", "bias"):
                    out[f"blocks.{i}.{ours}.{leaf}"] = f"blocks.{i}.{theirs}.{leaf}"
            for ours, theirs in (("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")):
                for leaf in ("weight", "bias"):
                    out[f"blocks.{i}.{ours}.{leaf}"] = f"blocks.{i}.{theirs}.{leaf}"
        return out

    def to_original_state(self, static: nn.Module, model: nn.Module) -> dict[str, torch.Tensor]:
        state = static.state_dict()
        depth = len(static.blocks)
        out = {theirs: state[ours].detach().clone() for ours, theirs in self._names(depth).items()}
        for i in range(depth):
            for leaf in ("weight", "bias"):
                qkv = [state[f"blocks.{i}.attn.{p}.{leaf}"] for p in "qkv"]
                out[f"blocks.{i}.attn.qkv.{leaf}"] = torch.cat(qkv).detach().clone()
        return out

    def from_original_state(
        self, state: Mapping[str, torch.Tensor], static: nn.Module, model: nn.Module
    ) -> None:
        ours = static.state_dict()
        depth = len(static.blocks)
        wanted = set(self._names(depth).values()) | {
            f"blocks.{i}.attn.qkv.{leaf}" for i in range(depth) for leaf in ("weight", "bias")
        }
        missing = sorted(wanted - set(state))
        extra = sorted(set(state) - wanted)
        if missing or extra:
            name, how = (missing[0], "lacks") if missing else (extra[0], "has an unexpected")
            raise ConversionError(
                f"checkpoint of timm model {self.model_name!r} {how} tensor {name!r}: is it a checkpoint of"
                " this model?"
            )
        with torch.no_grad():
            for mine, theirs in self._names(depth).items():
                t = state[theirs]
                if mine == "pos_embed" and t.shape != ours[mine].shape:
                    t = _resample(t, ours[mine].shape)
                t = adapt_tensor(
                    theirs, t, ours[mine].shape, mine == "patch_embed.weight", mine.startswith("head.")
                )
                if t is not None:
                    ours[mine].copy_(t)
            for i in range(depth):
                for leaf in ("weight", "bias"):
                    name = f"blocks.{i}.attn.qkv.{leaf}"
                    parts = state[name].chunk(3)
                    for p, t in zip("qkv", parts):
                        mine = f"blocks.{i}.attn.{p}.{leaf}"
                        ours[mine].copy_(adapt_tensor(name, t, ours[mine].shape, False, False))


def _resample(pos: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Position embeddings of another grid, bicubically resampled to ``shape`` (class token kept)."""
    from timm.layers import resample_abs_pos_embed

    side = int(round((shape[1] - 1) ** 0.5))
    if pos.shape[-1] != shape[-1] or side * side != shape[1] - 1:
        raise ConversionError(
            f"checkpoint position embeddings {tuple(pos.shape)} cannot be resampled to {tuple(shape)}"
        )
    return resample_abs_pos_embed(pos, new_size=(side, side), num_prefix_tokens=1)


def vit_space(
    model: nn.Module,
    model_name: str,
    num_classes: int,
    in_channels: int,
    resolution: int,
    width_mult: float,
    checkpoint: str | None,
    model_kwargs: dict[str, Any],
    reorder: bool = True,
    width_ratios: Any = DEFAULT_RATIOS,
    head_ratios: Any = DEFAULT_RATIOS,
    mlp_ratios: Any = DEFAULT_RATIOS,
    depth_drop: int = 2,
) -> TimmViTSpace:
    """The space around a timm ViT (``model``, created with random weights at the data's resolution)."""
    d = describe_timm_vit(model, model_name)
    w_r, h_r = check_ratios(width_ratios, "width_ratios"), check_ratios(head_ratios, "head_ratios")
    m_r = check_ratios(mlp_ratios, "mlp_ratios")
    if not isinstance(depth_drop, int) or depth_drop < 0:
        raise ConversionError(f"depth_drop={depth_drop!r} is not allowed: give a whole number of layers >= 0")
    if resolution % d["patch_size"]:
        raise ConversionError(
            f"timm model {model_name!r} has {d['patch_size']}-pixel patches, which do not tile"
            f" {resolution}-pixel images (set --data.resolution to a multiple)"
        )
    e, r = d["embed_dim"], d["mlp_ratio"]
    space = TimmViTSpace(
        num_classes=num_classes,
        in_channels=in_channels,
        resolution=resolution,
        width_mult=width_mult,
        patch_size=d["patch_size"],
        embed_dims=tuple(sorted({e, *(max(8, int(round(e * q / 8)) * 8) for q in w_r)})),
        depths=tuple(range(max(1, d["depth"] - depth_drop), d["depth"] + 1)),
        heads=tuple(sorted({d["heads"], *(max(1, round(d["heads"] * q)) for q in h_r)})),
        mlp_ratios=tuple(sorted({r, *(round(r * q, 2) for q in m_r)})),
        head_dim=d["head_dim"],
        name=f"timm:{model_name}",
    )
    space.original_arch = space.largest()
    space.library, space.model_name, space.model_kwargs = "timm", model_name, dict(model_kwargs)
    space.checkpoint, space.reorder = checkpoint, bool(reorder)
    return space


__all__ = ["TimmViTSpace", "describe_timm_vit", "vit_space"]
