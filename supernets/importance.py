"""Importance ordering: reorder every elastic layer's channels (and heads) so the first ``k`` are the best.

A weight-entangled subnetwork keeps a *prefix* of each elastic dimension. After
a pretrained model is loaded into a supernet, that prefix is whatever order
training happened to leave, so a narrow subnetwork keeps arbitrary channels.
Sorting each dimension by an importance score first (Once-for-All's channel
sorting, ModelOpt's FastNAS) makes the prefix the channels that matter most.

The score of a channel is the L1 norm of the weights that *read* it (the next
layer's input slice), summed over every reader. A channel group is permuted
consistently in every tensor that writes it (convolution rows, biases, batch-
and layer-norm parameters and statistics) and every tensor that reads it, so
the network computes the same function afterwards (up to float summation
order). Only the first ``keep`` channels of a group, the ones the original model
trained, are ordered; channels beyond them (a space wider than its model) stay
where they are, so the original architecture is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from supernets.blocks import ElasticInvertedResidual, mid_channels, se_channels
from supernets.mbnet import MBSupernet
from supernets.vit import ViTSupernet, _hidden
from supernets.zoo_mbconv import ZooMBSupernet
from supernets.zoo_resnet import ZooResNetSupernet

Slot = tuple[torch.Tensor, int]  # a tensor and the dimension that indexes the group's channels


@dataclass
class ChannelGroup:
    """Channels that must move together: ``writes`` produce them, ``reads`` consume them (and score them)."""

    size: int
    keep: int
    block: int = 1  # a "channel" spans ``block`` consecutive entries (an attention head: head_dim)
    writes: list[Slot] = field(default_factory=list)
    reads: list[Slot] = field(default_factory=list)

    def importance(self) -> torch.Tensor:
        score = torch.zeros(self.size, dtype=torch.float64)
        for t, dim in self.reads:
            others = [d for d in range(t.dim()) if d != dim]
            per = t.detach().abs().sum(dim=others) if others else t.detach().abs()
            score += per.reshape(self.size, self.block).sum(1).double()
        return score

    def permutation(self) -> torch.Tensor:
        """Most important first among the first ``keep`` channels; the rest in place (stable on ties)."""
        keep = min(self.keep, self.size)
        head = torch.sort(-self.importance()[:keep], stable=True).indices
        return torch.cat([head, torch.arange(keep, self.size)])

    @torch.no_grad()
    def apply(self, perm: torch.Tensor) -> None:
        idx = (perm[:, None] * self.block + torch.arange(self.block)).flatten()
        for t, dim in [*self.writes, *self.reads]:
            t.copy_(t.index_select(dim, idx.to(t.device)))


def _out(m: nn.Module) -> list[Slot]:
    """Tensors a conv / linear / norm layer writes per output channel."""
    slots: list[Slot] = [(m.weight, 0)]
    if m.bias is not None:
        slots.append((m.bias, 0))
    if isinstance(m, nn.BatchNorm2d):
        slots += [(m.running_mean, 0), (m.running_var, 0)]
    return slots


def _in(m: nn.Module) -> list[Slot]:
    return [(m.weight, 1)]


def _affine(m: nn.Module) -> list[Slot]:
    return [(m.weight, 0), (m.bias, 0)]


# --------------------------------------------------------------------------- families


def _resnet_groups(net: ZooResNetSupernet, spec: Any) -> list[ChannelGroup]:
    cfg, groups = net.cfg, []
    stem_conv, stem_bn = net.stem[-4], net.stem[-3]
    for i, stage in enumerate(net.stages):
        w = spec[i][1]
        g = ChannelGroup(size=cfg.widths[i][-1], keep=w)
        if i == 0 and cfg.tie_stem:
            g.writes += _out(stem_conv) + _out(stem_bn)
        for j, blk in enumerate(stage):
            last_conv, last_bn = (blk.conv2, blk.bn2) if blk.kind == "basic" else (blk.conv3, blk.bn3)
            g.writes += _out(last_conv) + _out(last_bn)
            if blk.downsample is not None:
                g.writes += _out(blk.downsample[-2]) + _out(blk.downsample[-1])
            if j > 0 or (i == 0 and cfg.tie_stem):
                g.reads += _in(blk.conv1)
        if i + 1 < len(net.stages):
            nxt = net.stages[i + 1][0]
            g.reads += _in(nxt.conv1) + (_in(nxt.downsample[-2]) if nxt.downsample is not None else [])
        else:
            g.reads += _in(net.fc)
        groups.append(g)
        for blk in stage:  # each block's inner widths
            if blk.kind == "basic":
                inner = [(blk.conv1, blk.bn1, blk.conv2, w)]
            else:
                m = spec[i][2]
                inner = [(blk.conv1, blk.bn1, blk.conv2, m), (blk.conv2, blk.bn2, blk.conv3, m)]
            for conv, bn, reader, keep in inner:
                groups.append(ChannelGroup(conv.weight.shape[0], keep, 1, _out(conv) + _out(bn), _in(reader)))
    return groups


def _mbconv_block_groups(blk: nn.Module, keep_mid: int, keep_se: int) -> list[ChannelGroup]:
    """The expanded channels and the squeeze-excite's hidden channels of one MBConv block."""
    mid = blk.dw.conv.weight.shape[0]
    g = ChannelGroup(mid, keep_mid)
    if not isinstance(blk.expand, nn.Identity):
        g.writes += _out(blk.expand.conv) + _out(blk.expand.bn)
    g.writes += [(blk.dw.conv.weight, 0)] + _out(blk.dw.bn)
    groups = [g]
    se = blk.se
    if not isinstance(se, nn.Identity):
        g.writes += _in(se.reduce) + _out(se.expand)
        groups.append(ChannelGroup(se.reduce.weight.shape[0], keep_se, 1, _out(se.reduce), _in(se.expand)))
    g.reads += _in(blk.project.conv)
    return groups


def _zoo_mbconv_groups(net: ZooMBSupernet, spec: Any) -> list[ChannelGroup]:
    groups = []
    for stage, blocks in zip(net.stages, spec):
        for j, blk in enumerate(stage):
            if not blk.b.has_expand or j >= len(blocks):
                continue  # no expansion (its channels are the stage's, fixed), or not in the original model
            _, e = blocks[j]
            mid = blk.b.mid(e)
            keep_se = blk.b.se.channels(mid, e) if blk.b.se is not None else 0
            groups += _mbconv_block_groups(blk, mid, keep_se)
    return groups


def _mbnet_groups(net: MBSupernet, spec: Any) -> list[ChannelGroup]:
    groups = []
    for stage, blocks in zip(net.stages, spec):
        for j, blk in enumerate(stage):
            if not isinstance(blk, ElasticInvertedResidual) or isinstance(blk.expand, nn.Identity):
                continue
            if j >= len(blocks):  # a block the original model does not have: untrained, left as it is
                continue
            mid = mid_channels(blk.in_ch, blocks[j][1])
            groups += _mbconv_block_groups(blk, mid, se_channels(mid))
    return groups


def _vit_groups(net: ViTSupernet, spec: Any) -> list[ChannelGroup]:
    e, layers = spec
    hd = net.cfg.head_dim
    embed = ChannelGroup(net.cls_token.shape[-1], e)
    embed.writes += _out(net.patch_embed) + [(net.cls_token, 2), (net.pos_embed, 2)]
    groups = [embed]
    for i, blk in enumerate(net.blocks):
        embed.writes += _affine(blk.ln1) + _affine(blk.ln2) + _out(blk.attn.proj) + _out(blk.fc2)
        embed.reads += _in(blk.attn.q) + _in(blk.attn.k) + _in(blk.attn.v) + _in(blk.fc1)
        heads, ratio = layers[i] if i < len(layers) else (0, 0.0)
        n_heads = blk.attn.q.weight.shape[0] // hd
        head_group = ChannelGroup(n_heads, heads, hd, reads=_in(blk.attn.proj))
        for lin in (blk.attn.q, blk.attn.k, blk.attn.v):
            head_group.writes += _out(lin)
        hidden = _hidden(e, ratio) if i < len(layers) else 0
        groups += [head_group, ChannelGroup(blk.fc1.weight.shape[0], hidden, 1, _out(blk.fc1), _in(blk.fc2))]
    embed.writes += _affine(net.norm)
    embed.reads += _in(net.head)
    return groups


def channel_groups(net: nn.Module, spec: Any) -> list[ChannelGroup]:
    """Every elastic channel group of ``net``; ``spec`` is the original model's architecture (what ``keep``
    protects)."""
    if isinstance(net, ZooResNetSupernet):
        return _resnet_groups(net, spec)
    if isinstance(net, ZooMBSupernet):
        return _zoo_mbconv_groups(net, spec)
    if isinstance(net, MBSupernet):
        return _mbnet_groups(net, spec)
    if isinstance(net, ViTSupernet):
        return _vit_groups(net, spec)
    raise TypeError(f"no importance ordering for {type(net).__name__}")


@torch.no_grad()
def reorder_by_importance(net: nn.Module, spec: Any) -> dict[str, int]:
    """Sort every elastic channel group of ``net`` by importance, in place; returns how many groups moved.

    The network's function is unchanged for every architecture that uses all of
    the original model's channels (``spec`` and anything wider).
    """
    moved = total = 0
    for g in channel_groups(net, spec):
        perm = g.permutation()
        total += 1
        if not torch.equal(perm, torch.arange(g.size)):
            g.apply(perm)
            moved += 1
    return {"groups": total, "reordered": moved}


__all__ = ["ChannelGroup", "channel_groups", "reorder_by_importance"]
