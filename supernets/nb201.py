"""NAS-Bench-201 (NATS-Bench topology) networks: the static network of a cell and the weight-sharing supernet.

The network is NATS-Bench's: a 3x3 conv stem, three stages of ``N`` identical cells at ``C``, ``2C`` and
``4C`` channels separated by residual reduction blocks (stride 2), then BN-ReLU, global pooling and a linear
classifier. A cell is a DAG of 4 nodes; node ``j`` is the sum, over ``i < j``, of edge ``j<-i``'s op applied
to node ``i`` (node 0 is the cell input, node 3 its output). An edge's op is one of :data:`OPS`; ``none``
contributes nothing (a node whose every input is ``none`` is zero). A spec is the cell: one op name per edge,
in :data:`EDGES` order, which is the order of the NATS architecture string.

In the supernet every edge of every cell holds all five ops. Entangled (TangleNAS), ``nor_conv_1x1``'s
weight is the centre of ``nor_conv_3x3``'s (one ``conv`` weight per edge); otherwise each conv has its own.
Batch norm is per op either way (the two convolutions' outputs have different statistics). The static
network names its tensors as the supernet does, so extraction is the generic sliced copy
(:func:`supernets.extract.copy_sliced_state`: the 1x1 kernel is the centre crop of the 3x3 one).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from supernets.base import Supernet
from supernets.extract import copy_sliced_state
from supernets.ops import ElasticBatchNorm2d, ElasticConv2d

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""The edge ops, in NATS-Bench's order (an op's index is its id in the cost table)."""

EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
"""``(to, from)`` node pairs of the cell's edges, in the order of the NATS architecture string."""

CellSpec = tuple[str, ...]  # one op name per edge, in EDGES order
KERNELS = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


@dataclass(frozen=True)
class NB201Config:
    in_channels: int = 3
    num_classes: int = 10
    channels: int = 16  # C: the first stage's width; the others have 2C and 4C
    cells_per_stage: int = 1  # N
    entangled: bool = True  # nor_conv_1x1 is the centre of nor_conv_3x3's weight

    def stage_channels(self, stage: int) -> int:
        return self.channels * 2**stage

    def check(self, spec: Sequence[str]) -> CellSpec:
        spec = tuple(spec)
        if len(spec) != len(EDGES) or any(op not in OPS for op in spec):
            raise ValueError(f"a NAS-Bench-201 cell is {len(EDGES)} ops from {list(OPS)}, got {spec!r}")
        return spec


def pool_op() -> nn.Module:
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


def static_op(op: str, channels: int, entangled: bool) -> nn.Module:
    """The plain module of one edge's op (not ``none``), named as the supernet edge names it."""
    if op == "skip_connect":
        return nn.Identity()
    if op == "avg_pool_3x3":
        return pool_op()
    k = KERNELS[op]
    conv = nn.Conv2d(channels, channels, k, 1, k // 2, bias=False)
    return nn.Sequential(
        OrderedDict(
            [
                ("relu", nn.ReLU()),
                ("conv" if entangled else f"conv{k}x{k}", conv),
                (f"bn{k}x{k}", nn.BatchNorm2d(channels)),
            ]
        )
    )


class ResBlock(nn.Module):
    """NATS-Bench's reduction block: ReLU-conv3x3(stride 2)-BN, ReLU-conv3x3-BN, plus avg-pool + 1x1
    shortcut."""

    def __init__(self, c_in: int, c_out: int, bn: Callable[[int], nn.Module]):
        super().__init__()
        self.conv_a = nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), bn(c_out))
        self.conv_b = nn.Sequential(nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), bn(c_out))
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class Head(nn.Module):
    """BN-ReLU, global average pooling, classifier: the end of every network (also measured on its own)."""

    def __init__(self, channels: int, num_classes: int, bn: Callable[[int], nn.Module]):
        super().__init__()
        self.lastact = nn.Sequential(bn(channels), nn.ReLU())
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1))


def _stem(cfg: NB201Config, bn: Callable[[int], nn.Module]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cfg.in_channels, cfg.channels, 3, 1, 1, bias=False), bn(cfg.channels))


class StaticCell(nn.Module):
    """One cell of a fixed spec: only its edges' own ops (``none`` edges hold an unused placeholder)."""

    def __init__(self, spec: CellSpec, channels: int, entangled: bool):
        super().__init__()
        self.edges = nn.ModuleList(
            nn.Identity() if op == "none" else static_op(op, channels, entangled) for op in spec
        )
        self.runs = [op != "none" for op in spec]
        self.targets = [to for to, _ in EDGES]
        self.sources = [frm for _, frm in EDGES]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x, torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x)]
        for k, edge in enumerate(self.edges):
            if self.runs[k]:
                nodes[self.targets[k]] = nodes[self.targets[k]] + edge(nodes[self.sources[k]])
        return nodes[3]


def _body(
    cfg: NB201Config, cell: Callable[[int], nn.Module], bn: Callable[[int], nn.Module]
) -> nn.ModuleList:
    """NATS-Bench's ``cells`` list: N cells, reduction, N cells, reduction, N cells."""
    layers: list[nn.Module] = []
    for stage in range(3):
        if stage:
            layers.append(ResBlock(cfg.stage_channels(stage - 1), cfg.stage_channels(stage), bn))
        layers += [cell(cfg.stage_channels(stage)) for _ in range(cfg.cells_per_stage)]
    return nn.ModuleList(layers)


class NB201Net(nn.Module):
    """The static network of one cell spec (plain torch modules only)."""

    def __init__(self, cfg: NB201Config, spec: Sequence[str]):
        super().__init__()
        self.cfg, self.spec = cfg, cfg.check(spec)
        self.stem = _stem(cfg, nn.BatchNorm2d)
        self.cells = _body(cfg, lambda c: StaticCell(self.spec, c, cfg.entangled), nn.BatchNorm2d)
        self.head = Head(cfg.stage_channels(2), cfg.num_classes, nn.BatchNorm2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.cells:
            x = layer(x)
        return self.head(x)


class SuperEdge(nn.Module):
    """Every op of one edge; runs the active one (:meth:`forward`) or a probability-weighted mixture of all
    (:meth:`mixed`)."""

    def __init__(self, channels: int, entangled: bool):
        super().__init__()
        self.entangled = entangled
        if entangled:
            self.conv = ElasticConv2d(channels, channels, 3)
        else:
            self.conv1x1 = ElasticConv2d(channels, channels, 1)
            self.conv3x3 = ElasticConv2d(channels, channels, 3)
        self.bn1x1 = ElasticBatchNorm2d(channels)
        self.bn3x3 = ElasticBatchNorm2d(channels)
        self.pool = pool_op()
        self.op = "nor_conv_3x3"

    def _conv(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        """ReLU'd input -> conv of ``kernel`` (the entangled weight's centre for 1x1) -> that op's BN."""
        if self.entangled:
            self.conv.active_kernel = kernel
            y = self.conv(x)
        else:
            y = (self.conv1x1 if kernel == 1 else self.conv3x3)(x)
        return (self.bn1x1 if kernel == 1 else self.bn3x3)(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "skip_connect":
            return x
        if self.op == "avg_pool_3x3":
            return self.pool(x)
        return self._conv(F.relu(x), KERNELS[self.op])

    def mixed(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """``sum_o p[o] * op_o(x)`` over :data:`OPS` (``none`` adds nothing): the DARTS mixture."""
        r = F.relu(x)
        return p[1] * x + p[2] * self._conv(r, 1) + p[3] * self._conv(r, 3) + p[4] * self.pool(x)


class SuperCell(nn.Module):
    def __init__(self, channels: int, entangled: bool):
        super().__init__()
        self.edges = nn.ModuleList(SuperEdge(channels, entangled) for _ in EDGES)
        self.spec: CellSpec = ("nor_conv_3x3",) * len(EDGES)

    def set_active(self, spec: CellSpec) -> None:
        self.spec = spec
        for edge, op in zip(self.edges, spec):
            edge.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x, torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x)]
        for (to, frm), edge, op in zip(EDGES, self.edges, self.spec):
            if op != "none":
                nodes[to] = nodes[to] + edge(nodes[frm])
        return nodes[3]

    def mixed(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """The cell with every edge a mixture: ``probs[e]`` is edge ``e``'s distribution over :data:`OPS`."""
        nodes = [x, torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x)]
        for e, ((to, frm), edge) in enumerate(zip(EDGES, self.edges)):
            nodes[to] = nodes[to] + edge.mixed(nodes[frm], probs[e])
        return nodes[3]


class NB201Supernet(Supernet, nn.Module):
    """One weight set for every cell; all cells of a network share the one spec (as in NAS-Bench-201)."""

    def __init__(self, cfg: NB201Config):
        super().__init__()
        self.cfg = cfg
        self.stem = _stem(cfg, ElasticBatchNorm2d)
        self.cells = _body(cfg, lambda c: SuperCell(c, cfg.entangled), ElasticBatchNorm2d)
        self.head = Head(cfg.stage_channels(2), cfg.num_classes, ElasticBatchNorm2d)
        self.set_active(self.largest_spec())

    def largest_spec(self) -> CellSpec:
        """Every edge a 3x3 conv: uses every weight of the supernet but the 1x1 convs' own (not entangled)."""
        return ("nor_conv_3x3",) * len(EDGES)

    def set_active(self, spec: Sequence[str]) -> None:
        spec = self.cfg.check(spec)
        for layer in self.cells:
            if isinstance(layer, SuperCell):
                layer.set_active(spec)
        self.active_spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.cells:
            x = layer(x)
        return self.head(x)

    def mixed_forward(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Logits with every edge of every cell the ``probs``-weighted mixture of its ops (``probs[e, o]``:
        edge ``e``, op ``o`` of :data:`OPS`)."""
        x = self.stem(x)
        for layer in self.cells:
            x = layer.mixed(x, probs) if isinstance(layer, SuperCell) else layer(x)
        return self.head(x)

    def extract(self, spec: Sequence[str] | None = None) -> NB201Net:
        """The static network of ``spec`` (default: active) with the supernet's weights and BN statistics."""
        static = NB201Net(self.cfg, self.active_spec if spec is None else spec)
        copy_sliced_state(self, static)
        return static.train(self.training)


__all__ = ["EDGES", "OPS", "CellSpec", "NB201Config", "NB201Net", "NB201Supernet"]
