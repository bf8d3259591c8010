"""``nb201``: the NAS-Bench-201 / NATS-Bench topology space, a cell of 6 edges x 5 ops (15,625 architectures).

Choices are the cell's edges, ``"1<-0"``, ``"2<-0"``, ``"2<-1"``, ``"3<-0"``, ``"3<-1"``, ``"3<-2"`` (the op
on the edge into node ``j`` from node ``i``, in the order of the NATS architecture string
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``), each one of :data:`supernets.nb201.OPS`. The network around the
cell (stem, 3 stages of ``N`` cells at ``C``/``2C``/``4C`` channels, residual reductions, head) is
NATS-Bench's; the NATS-Bench setting is ``C=16, N=5`` (``--space.options="{C: 16, N: 5}" --width-mult=1``).

Two architectures are the same network when NATS-Bench's ``UniqueString`` says so (a ``none`` edge, an edge
out of a node that is zero, a node nothing reads): :meth:`NB201Space.canonicalize` maps every one of the
15,625 cells to one representative of its class (6,466 classes: the space's networks), the member with the
most ``none`` edges, so ids, caches and controllers see networks, not strings. ``UniqueString`` is syntactic
(a node with only ``none`` inputs is ``#+#``, not ``#``), and it is kept exactly, so the classes are those of
the published table.

The NATS index of an architecture (its row in the NATS-Bench API and in the shipped table
``data/nats_tss_test_acc_200ep.csv.gz``) is :meth:`NB201Space.nats_index`, and back
:meth:`NB201Space.arch_from_nats_index`. ``--arch`` files may hold JSON or the NATS string
(:meth:`NB201Space.parse_arch`).

Cost lowering: slot 0 is the fixed part (stem, reductions, head); slot ``1 + 6 * cell + edge`` is one edge of
one cell position (cells in network order, ``N`` per stage), and its op id is the op's index in ``OPS``
everywhere (0 = ``none``, which costs nothing). A slot's name says its stage, so a fit over op counts per
stage (the same op at the same width and resolution costs the same in every cell of a stage) reads them
straight off the lowering.
"""

from __future__ import annotations

import csv
import functools
import gzip
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces.arch import Arch, InvalidArchitectureError
from search_spaces.base import CostTable, SearchSpace
from search_spaces.registry import register_space
from supernets.nb201 import EDGES, OPS, NB201Config, NB201Net, NB201Supernet, static_op
from supernets.profiling import FEATURES, add_features, forward_features

KEYS = tuple(f"{to}<-{frm}" for to, frm in EDGES)
"""The choice keys, one per edge, in NATS string order."""

N_CELLS = len(OPS) ** len(EDGES)  # 15,625
NATS_TABLE = Path(__file__).resolve().parent / "data" / "nats_tss_test_acc_200ep.csv.gz"
"""NATS-Bench's 200-epoch test accuracies of every architecture (row = NATS index); see data/README.md."""

_POWERS = np.array([len(OPS) ** (len(EDGES) - 1 - e) for e in range(len(EDGES))], dtype=np.int64)
_NATS_NODE = re.compile(r"\|((?:[a-z0-9_]+~\d\|)+)")


# --------------------------------------------------------------------------- NATS strings
def nats_string(ops: Sequence[str]) -> str:
    """The NATS architecture string of a cell (one op per edge, in :data:`KEYS` order)."""
    by_edge = dict(zip(EDGES, ops))
    return "+".join("|" + "".join(f"{by_edge[(to, frm)]}~{frm}|" for frm in range(to)) for to in (1, 2, 3))


def parse_nats_string(text: str) -> tuple[str, ...]:
    """The cell's ops (in :data:`KEYS` order) of a NATS architecture string; an
    :class:`InvalidArchitectureError` says what is wrong with one that is not."""
    text = text.strip()
    nodes = text.split("+")
    shape = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
    if len(nodes) != 3 or not all(_NATS_NODE.fullmatch(n) for n in nodes):
        raise InvalidArchitectureError(
            f"{text[:80]!r} is not a NAS-Bench-201 architecture string (expected {shape} with ops from"
            f" {list(OPS)})"
        )
    ops: dict[tuple[int, int], str] = {}
    for to, node in enumerate(nodes, start=1):
        entries = node.strip("|").split("|")
        sources = [int(e.rsplit("~", 1)[1]) for e in entries]
        if sources != list(range(to)):
            raise InvalidArchitectureError(
                f"{text[:80]!r}: node {to} must list its inputs from nodes {list(range(to))} in order, got"
                f" {sources} (expected {shape})"
            )
        for entry, frm in zip(entries, sources):
            op = entry.rsplit("~", 1)[0]
            if op not in OPS:
                raise InvalidArchitectureError(
                    f"{text[:80]!r}: edge {to}<-{frm} has op {op!r}; allowed values: {list(OPS)}"
                )
            ops[(to, frm)] = op
    return tuple(ops[e] for e in EDGES)


def unique_string(ops: Sequence[str]) -> str:
    """NATS-Bench's ``UniqueString`` of a cell (``CellStructure.to_unique_str(consider_zero=True)``).

    Node strings: node 0 is ``0``; an edge's term is ``#`` (zero) for ``none`` or a source that is exactly
    ``#``, the source itself for ``skip_connect``, else ``(source)@op``; a node is its sorted terms joined
    by ``+``. The cell's string is node 3's. Equal strings compute the same function.
    """
    by_edge = dict(zip(EDGES, ops))
    nodes = {0: "0"}
    for to in (1, 2, 3):
        terms = []
        for frm in range(to):
            op, src = by_edge[(to, frm)], nodes[frm]
            if op == "none" or src == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(src)
            else:
                terms.append(f"({src})@{op}")
        nodes[to] = "+".join(sorted(terms))
    return nodes[3]


@dataclass(frozen=True)
class CellClasses:
    """The 15,625 cells (index ``r``: base-5 digits = op indices in :data:`KEYS` order) and their networks.

    ``digits[r]`` are cell ``r``'s op indices, ``canonical[r]`` the index of its class's representative,
    ``used[r, e]`` whether changing edge ``e`` alone changes cell ``r``'s network, ``networks`` the number
    of classes.
    """

    digits: np.ndarray  # int64 [15625, 6]
    canonical: np.ndarray  # int64 [15625]
    used: np.ndarray  # bool [15625, 6]
    networks: int


@functools.cache
def cell_classes() -> CellClasses:
    """Computed once per process (about 0.1 s)."""
    digits = np.array(list(product(range(len(OPS)), repeat=len(EDGES))), dtype=np.int64)
    strings = [unique_string([OPS[d] for d in row]) for row in digits]
    ids: dict[str, int] = {}
    cls = np.array([ids.setdefault(s, len(ids)) for s in strings], dtype=np.int64)
    # representative: most `none` edges, then the lowest index (digits order: none first)
    nones = (digits == 0).sum(axis=1)
    order = np.lexsort((np.arange(N_CELLS), -nones))  # best member of each class first
    rep = np.full(len(ids), -1, dtype=np.int64)
    for r in order:
        if rep[cls[r]] < 0:
            rep[cls[r]] = r
    used = np.zeros((N_CELLS, len(EDGES)), dtype=bool)
    r = np.arange(N_CELLS)
    for e in range(len(EDGES)):
        for shift in range(1, len(OPS)):  # every other op on edge e
            other = r + (((digits[:, e] + shift) % len(OPS)) - digits[:, e]) * _POWERS[e]
            used[:, e] |= cls[other] != cls
    return CellClasses(digits, rep[cls], used, len(ids))


@functools.cache
def nats_strings() -> tuple[str, ...]:
    """The architecture string of every NATS index (the shipped table's row order)."""
    with gzip.open(NATS_TABLE, "rt", encoding="utf-8", newline="") as fh:
        return tuple(row["ArchitectureString"] for row in csv.DictReader(fh))


@functools.cache
def _nats_index() -> dict[str, int]:
    return {s: i for i, s in enumerate(nats_strings())}


# --------------------------------------------------------------------------- the space
class NB201Space(SearchSpace):
    """NAS-Bench-201 cell space: one op per edge of a 4-node cell, the same cell in every position."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        resolution: int = 32,
        width_mult: float = 1.0,
        C: int = 16,  # noqa: N803 - NAS-Bench-201's own names for its two settings
        N: int = 1,  # noqa: N803
        entangled: bool = True,
        name: str = "nb201",
    ):
        for what, v in (("C", C), ("N", N)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"nb201's {what} must be a whole number >= 1, got {v!r}")
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if not isinstance(entangled, bool):
            raise ValueError(f"nb201's entangled must be true or false, got {entangled!r}")
        if resolution < 4 or resolution % 4:
            raise ValueError(
                f"nb201 needs an input side divisible by 4 (two stride-2 reductions whose shortcut pools"
                f" 2x2), got {resolution}"
            )
        self.name, self.resolution = name, resolution
        self.cfg = NB201Config(in_channels, num_classes, max(1, round(C * width_mult)), N, entangled)
        super().__init__({k: OPS for k in KEYS})

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.cfg.in_channels, self.resolution, self.resolution)

    # --- architectures and networks -------------------------------------------------------------
    def _cell_index(self, values: Mapping[str, Any]) -> int:
        return int(sum(OPS.index(values[k]) * int(p) for k, p in zip(KEYS, _POWERS)))

    def _values(self, r: int) -> dict[str, str]:
        return {k: OPS[int(d)] for k, d in zip(KEYS, cell_classes().digits[r])}

    def canonicalize(self, values: dict[str, Any]) -> dict[str, Any]:
        """The representative of the cell's ``UniqueString`` class (the member with the most ``none``
        edges)."""
        return self._values(int(cell_classes().canonical[self._cell_index(values)]))

    def used_keys(self, arch: Mapping[str, Any]) -> tuple[str, ...]:
        """The edges whose op, changed alone, changes this cell's network.

        Exact for every one of the 15,625 cells, raw or canonical. ``UniqueString`` classes are not closed
        under this: in 101 of them (cells whose output is built from zero nodes, e.g. every edge ``none``)
        members differ in which single edge matters, so a raw cell's used edges can differ from its
        representative's.
        """
        self.validate(arch)
        row = cell_classes().used[self._cell_index(arch)]
        return tuple(k for k, u in zip(KEYS, row) if u)

    def num_architectures(self) -> int:
        """Distinct networks: the 6,466 ``UniqueString`` classes of the 15,625 cells."""
        return cell_classes().networks

    def enumerate(self) -> list[Arch]:
        return [Arch(self._values(int(r))) for r in np.unique(cell_classes().canonical)]

    def smallest(self) -> Arch:
        """The identity cell (``3<-0`` a skip, every other edge ``none``): the cheapest network that passes
        its input on. (Cheaper still by one identity op is every edge ``none``, whose output is zero: chance
        accuracy, and nothing for the sandwich rule's smallest subnet to learn.)"""
        return self.arch({k: "skip_connect" if k == "3<-0" else "none" for k in KEYS})

    def largest(self) -> Arch:
        """Every edge a 3x3 conv: the most parameters and MACs."""
        return self.arch({k: "nor_conv_3x3" for k in KEYS})

    def build_supernet(self) -> NB201Supernet:
        return NB201Supernet(self.cfg)

    def to_spec(self, arch: Mapping[str, Any]) -> tuple[str, ...]:
        """The canonical cell, one op per edge."""
        canonical = self.arch(arch)
        return tuple(canonical[k] for k in KEYS)

    def arch_from_spec(self, spec: Sequence[str]) -> Arch:
        return self.arch(dict(zip(KEYS, self.cfg.check(spec))))

    # --- text: JSON or the NATS string ---------------------------------------------------------------
    def parse_arch(self, text: str) -> Arch:
        """A NATS architecture string (``|nor_conv_3x3~0|+|...|``) or the JSON of the choices."""
        if text.strip().startswith("|"):
            return self.arch(dict(zip(KEYS, parse_nats_string(text))))
        return super().parse_arch(text)

    def format_arch(self, arch: Mapping[str, Any]) -> str:
        """The NATS architecture string of ``arch``'s network (its canonical cell)."""
        return self.nats_string(self.arch(arch))

    def nats_string(self, values: Mapping[str, Any]) -> str:
        """The NATS architecture string of these choices as given (not canonicalised)."""
        self.validate(values)
        return nats_string([values[k] for k in KEYS])

    def unique_string(self, values: Mapping[str, Any]) -> str:
        self.validate(values)
        return unique_string([values[k] for k in KEYS])

    def nats_index(self, values: Mapping[str, Any]) -> int:
        """The NATS-Bench index (row of the API and of the shipped table) of these choices as given."""
        return _nats_index()[self.nats_string(values)]

    def arch_from_nats_index(self, index: int) -> Arch:
        """The (canonical) architecture of NATS-Bench index ``index``."""
        strings = nats_strings()
        if isinstance(index, bool) or not 0 <= int(index) < len(strings) or int(index) != index:
            raise InvalidArchitectureError(f"a NATS-Bench index is a whole number in 0..{len(strings) - 1}")
        return self.parse_arch(strings[int(index)])

    # --- cost lowering ----------------------------------------------------------------------------
    def _stage_shape(self, stage: int) -> tuple[int, int, int]:
        side = self.resolution // 2**stage
        return (self.cfg.stage_channels(stage), side, side)

    @property
    def _n_cells(self) -> int:
        return 3 * self.cfg.cells_per_stage

    def _stage_of_cell(self, cell: int) -> int:
        return cell // self.cfg.cells_per_stage

    @functools.cached_property
    def _ops(self) -> dict[tuple[int, int], nn.Module]:
        """(stage, op id) -> the plain module of that op at that stage's width (op ids 1..4; ``none`` has
        none)."""
        return {
            (s, o): static_op(OPS[o], self.cfg.stage_channels(s), self.cfg.entangled).eval()
            for s in range(3)
            for o in range(1, len(OPS))
        }

    def op_modules(self) -> list[tuple[int, int, nn.Module, tuple[int, ...]]]:
        """Every cell position x edge x op (``none`` excluded: it runs nothing), with its input shape.

        Each op is timed alone; its addition into the target node is left out of the timing on purpose:
        timed as ``x + op(x)``, every edge carried a call's overhead the cell does not pay, and the op-by-op
        calibration (scale and a non-negative offset) over-predicted small networks by 61%. The addition is
        in the op's features (:meth:`cost_table`), which is where the analytical model and the whole-network
        fit price it."""
        out = []
        for cell in range(self._n_cells):
            stage = self._stage_of_cell(cell)
            for e in range(len(EDGES)):
                for o in range(1, len(OPS)):
                    out.append((1 + 6 * cell + e, o, self._ops[(stage, o)], self._stage_shape(stage)))
        return out

    def fixed_modules(self) -> list[tuple[int, int, list[tuple[nn.Module, tuple[int, ...]]]]]:
        """Slot 0: stem, the two reduction blocks and the head, on their input shapes."""
        ref = NB201Net(self.cfg, tuple(self.largest()[k] for k in KEYS)).eval()
        n = self.cfg.cells_per_stage
        return [
            (
                0,
                0,
                [
                    (ref.stem, self.input_shape),
                    (ref.cells[n], self._stage_shape(0)),
                    (ref.cells[2 * n + 1], self._stage_shape(1)),
                    (ref.head, self._stage_shape(2)),
                ],
            )
        ]

    @functools.cached_property
    def _cost_table(self) -> CostTable:
        feats = np.zeros((1 + 6 * self._n_cells, len(OPS), len(FEATURES)))
        measured: dict[tuple[int, int], np.ndarray] = {}
        for slot, op, module, shape in self.op_modules():
            stage = self._stage_of_cell((slot - 1) // 6)
            if (stage, op) not in measured:
                # the cell adds every running edge's output into its node: a skip costs that addition alone
                measured[(stage, op)] = forward_features(module, shape)[0] + add_features(shape)
            feats[slot, op] = measured[(stage, op)]
        for _, _, parts in self.fixed_modules():
            for module, shape in parts:
                feats[0, 0] += forward_features(module, shape)[0]
        names = ["fixed"] + [
            f"stage{self._stage_of_cell(c)}.cell{c % self.cfg.cells_per_stage}.{k}"
            for c in range(self._n_cells)
            for k in KEYS
        ]
        return CostTable(feats, FEATURES, tuple(names))

    def cost_table(self) -> CostTable:
        return self._cost_table

    def lower(self, codes: np.ndarray) -> np.ndarray:
        """Op id per slot: 0 for the fixed part, then the canonical cell's op indices in every cell
        position."""
        codes = self._checked_codes(codes)
        classes = cell_classes()
        cells = classes.digits[classes.canonical[codes.astype(np.int64) @ _POWERS]]  # [B, 6]
        out = np.zeros((codes.shape[0], 1 + 6 * self._n_cells), dtype=np.int32)
        out[:, 1:] = np.tile(cells, (1, self._n_cells))
        return out

    def op_descriptions(self) -> list[list[str]]:
        fixed = ["stem + reductions + head (always runs)"] + [""] * (len(OPS) - 1)
        rows = [fixed]
        for c in range(self._n_cells):
            ch, side, _ = self._stage_shape(self._stage_of_cell(c))
            rows += [[f"{op} at {ch} channels, {side}x{side}" for op in OPS] for _ in KEYS]
        return rows

    # --- probabilities over architectures ---------------------------------------------------------
    @functools.cached_property
    def _lowered_one_hot(self) -> np.ndarray:
        """``[15625, 6 * 5]``: 1 where cell ``r``'s canonical cell has op ``o`` on edge ``e`` (column ``5e +
        o``)."""
        classes = cell_classes()
        cells = classes.digits[classes.canonical]
        out = np.zeros((N_CELLS, len(EDGES) * len(OPS)))
        out[np.arange(N_CELLS)[:, None], np.arange(len(EDGES)) * len(OPS) + cells] = 1.0
        return out

    def op_probabilities(self, probs: Mapping[str, torch.Tensor], validate: bool = True) -> torch.Tensor:
        """Exact distribution of each slot's lowered op under independent per-edge choices, ``[*b, S, O]``.

        The lowering canonicalises (an edge out of a zero node costs nothing), so edges are not independent
        after it: the joint probability of all 15,625 cells is formed (an outer product) and mapped through
        the lowering, which keeps it differentiable and exact (one-hot probabilities give exactly one op
        per slot).
        """
        p, batch = self.probability_tensors(probs, validate)
        joint = p[KEYS[0]]
        for k in KEYS[1:]:
            joint = (joint.unsqueeze(-1) * p[k].unsqueeze(-2)).flatten(-2)  # [*b, 5**n], first edge major
        lowered = torch.as_tensor(self._lowered_one_hot, dtype=joint.dtype, device=joint.device)
        edges = (joint @ lowered).unflatten(-1, (len(EDGES), len(OPS)))  # [*b, 6, 5]
        cells = edges.unsqueeze(-3).expand(*batch, self._n_cells, len(EDGES), len(OPS))
        fixed = torch.zeros(*batch, 1, len(OPS), dtype=joint.dtype, device=joint.device)
        fixed[..., 0] = 1.0
        return torch.cat([fixed, cells.reshape(*batch, self._n_cells * len(EDGES), len(OPS))], dim=-2)

    def mixed_forward(
        self, supernet: nn.Module, x: torch.Tensor, probs: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """DARTS's mixture: every edge of every cell the ``probs``-weighted sum of its five ops."""
        if not isinstance(supernet, NB201Supernet):
            raise ValueError(
                f"gradient search on space {self.name!r} needs its own supernet (--supernet entangled), this"
                f" run's is {type(supernet).__name__}: use another controller"
            )
        return supernet.mixed_forward(x, torch.stack([probs[k] for k in KEYS]).to(x.dtype))


@register_space("nb201")
def nb201(**kwargs: Any) -> NB201Space:
    """NAS-Bench-201 / NATS-Bench topology cell: 15,625 architectures (6,466 distinct networks); C channels
    (x width), N cells per stage."""
    return NB201Space(**kwargs)


__all__ = ["KEYS", "NATS_TABLE", "N_CELLS", "NB201Space", "nats_string", "parse_nats_string", "unique_string"]
