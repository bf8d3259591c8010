"""``timm:resnet*``: an elastic ResNet space built around a timm (or torchvision) ResNet.

The model's stages give the choices: each stage's depth (from ``depth_drop``
blocks fewer up to its own), width (``width_ratios`` of its own output
channels) and, for bottleneck blocks, bottleneck width (``mid_ratios`` of its
own). The model itself is the largest architecture; a local checkpoint makes
that architecture compute exactly what the model computes. Reading the model
(:func:`describe_resnet`) is shared with ``torchvision:resnet*``: both libraries
name a ResNet's layers alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np
from torch import nn

from search_spaces.arch import Arch
from search_spaces.base import CostTable
from search_spaces.converted import DEFAULT_RATIOS, ConversionError, ConvertedSpace, Where, check_ratios
from supernets.blocks import make_divisible
from supernets.zoo_resnet import ResBlock, ZooResNetConfig, ZooResNetSpec, ZooResNetSupernet, build_stem

N_STAGES = 4


def _type(m: Any) -> str:
    return type(m).__name__


def _is_conv(m: Any, k: int, stride: int) -> bool:
    return (
        isinstance(m, nn.Conv2d)
        and m.kernel_size == (k, k)
        and m.stride == (stride, stride)
        and m.padding == (k // 2, k // 2)
        and m.dilation == (1, 1)
        and m.groups == 1
        and m.bias is None
    )


def _relu(m: Any, where: str) -> None:
    if not isinstance(m, nn.ReLU):
        raise ConversionError(f"{where} is {_type(m)}; the ResNet converter supports ReLU only")


def _describe_stem(model: nn.Module, name: str) -> dict[str, Any]:
    conv1 = model.conv1
    if isinstance(conv1, nn.Sequential):  # timm's deep stems: conv-bn-act, conv-bn-act, conv
        layers = list(conv1)
        ok = len(layers) == 7 and _is_conv(layers[0], 3, 2) and _is_conv(layers[3], 3, 1)
        ok = ok and _is_conv(layers[6], 3, 1) and all(isinstance(layers[i], nn.BatchNorm2d) for i in (1, 4))
        if not ok:
            raise ConversionError(
                f"{name}: module 'conv1' is a stem the converter cannot read ({layers!r:.80})"
            )
        for i in (2, 5):
            _relu(layers[i], f"{name}: module 'conv1.{i}'")
        stem, widths, out = "deep", (layers[0].out_channels, layers[3].out_channels), layers[6].out_channels
    elif _is_conv(conv1, 7, 2):
        stem, widths, out = "conv7", (), conv1.out_channels
    else:
        raise ConversionError(
            f"{name}: module 'conv1' ({_type(conv1)}) is not a 7x7 stride-2 conv or a deep stem"
        )
    act = model.act1 if isinstance(getattr(model, "act1", None), nn.Module) else getattr(model, "relu", None)
    _relu(act, f"{name}: the stem activation")
    pool = model.maxpool
    if not (
        isinstance(pool, nn.MaxPool2d) and pool.kernel_size == 3 and pool.stride == 2 and pool.padding == 1
    ):
        raise ConversionError(f"{name}: module 'maxpool' ({_type(pool)}) is not a 3x3 stride-2 max pool")
    return {"stem": stem, "stem_widths": widths, "stem_channels": out}


def _describe_block(b: nn.Module, where: Where, c_in: int) -> dict[str, Any]:
    kind = {"BasicBlock": "basic", "Bottleneck": "bottleneck"}.get(_type(b))
    if kind is None:
        raise ConversionError(f"{where} is a {_type(b)}; the converter maps BasicBlock and Bottleneck")
    for attr in ("se", "attn"):
        if isinstance(getattr(b, attr, None), nn.Module) and not isinstance(getattr(b, attr), nn.Identity):
            raise ConversionError(
                f"{where / attr} is a {_type(getattr(b, attr))} attention block: not supported"
            )
    for attr in ("aa", "drop_block"):
        if isinstance(getattr(b, attr, None), nn.Module) and not isinstance(getattr(b, attr), nn.Identity):
            raise ConversionError(f"{where / attr} ({_type(getattr(b, attr))}) is not supported")
    for attr in ("act1", "act2", "act3", "relu"):
        if isinstance(getattr(b, attr, None), nn.Module):
            _relu(getattr(b, attr), str(where / attr))
    if kind == "basic":
        stride = b.conv1.stride[0]
        ok = _is_conv(b.conv1, 3, stride) and _is_conv(b.conv2, 3, 1)
        width = mid = b.conv2.out_channels
        ok = ok and b.conv1.out_channels == width
    else:
        stride = b.conv2.stride[0]
        ok = _is_conv(b.conv1, 1, 1) and _is_conv(b.conv2, 3, stride) and _is_conv(b.conv3, 1, 1)
        mid, width = b.conv1.out_channels, b.conv3.out_channels
        ok = ok and b.conv2.out_channels == mid
    if not ok or b.conv1.in_channels != c_in:
        raise ConversionError(
            f"{where}: its convolutions are not a plain {kind} block (grouped, dilated, reduced-first or"
            " biased convolutions are not supported)"
        )
    avg_down, ds = False, b.downsample
    if ds is not None:
        layers = list(ds) if isinstance(ds, nn.Sequential) else [ds]
        if len(layers) == 3 and isinstance(layers[0], (nn.AvgPool2d, nn.Identity)):
            pool, layers = layers[0], layers[1:]
            avg_down = True
            if isinstance(pool, nn.AvgPool2d) and not (
                pool.kernel_size == 2 and pool.ceil_mode and not pool.count_include_pad
            ):
                raise ConversionError(f"{where / 'downsample.0'} ({pool}) is not timm's 2x2 average pool")
        conv_ok = len(layers) == 2 and _is_conv(layers[0], 1, 1 if avg_down else stride)
        if not conv_ok or not isinstance(layers[1], nn.BatchNorm2d):
            raise ConversionError(f"{where / 'downsample'} is not a 1x1 conv + batch norm shortcut")
    elif stride != 1 or c_in != width:
        raise ConversionError(f"{where} changes shape without a shortcut projection")
    return {
        "kind": kind,
        "stride": stride,
        "width": width,
        "mid": mid,
        "project": ds is not None,
        "avg": avg_down,
    }


def describe_resnet(model: nn.Module, name: str) -> dict[str, Any]:
    """Stem, stages (block kind, stride, width, bottleneck width, depth) and head of a timm or torchvision
    ResNet.

    Raises :class:`ConversionError` naming the first module the converter cannot map.
    """
    d = _describe_stem(model, name)
    c_in, stages, kinds, avg = d["stem_channels"], [], set(), set()
    for i in range(1, N_STAGES + 1):
        layer = getattr(model, f"layer{i}", None)
        if not isinstance(layer, nn.Sequential):
            raise ConversionError(f"{name}: no module 'layer{i}' (a ResNet has four stages layer1..layer4)")
        rows = []
        for j, b in enumerate(layer):
            rows.append(_describe_block(b, Where(name, f"layer{i}.{j}"), c_in))
            c_in = rows[-1]["width"]
        first = rows[0]
        if any(r["project"] or r["stride"] != 1 for r in rows[1:]):
            raise ConversionError(f"{name}: module 'layer{i}' projects or strides after its first block")
        if len({(r["width"], r["mid"]) for r in rows}) > 1:
            raise ConversionError(f"{name}: module 'layer{i}' mixes block widths within the stage")
        kinds |= {r["kind"] for r in rows}
        if first["project"]:
            avg.add(first["avg"])
        stages.append({**first, "depth": len(rows)})
    if len(kinds) > 1 or len(avg) > 1:
        raise ConversionError(f"{name}: mixes block kinds {sorted(kinds)} or shortcut kinds across stages")
    fc = model.fc
    if not isinstance(fc, nn.Linear) or fc.in_features != c_in:
        raise ConversionError(
            f"{name}: module 'fc' ({_type(fc)}) is not a linear classifier on {c_in} features"
        )
    eps = {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    if len(eps) != 1:
        raise ConversionError(f"{name}: its batch norms use several eps values {sorted(eps)}")
    return {
        **d,
        "block": kinds.pop(),
        "avg_down": bool(avg and avg.pop()),
        "stages": stages,
        "bn_eps": eps.pop(),
    }


def _scaled(c: int, width_mult: float) -> int:
    return c if width_mult == 1 else make_divisible(c * width_mult)


def _choices(c: int, ratios: tuple[float, ...]) -> tuple[int, ...]:
    return tuple(sorted({c, *(max(8, make_divisible(c * r)) for r in ratios if make_divisible(c * r) <= c)}))


class _Head(nn.Module):
    def __init__(self, c: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class ZooResNetSpace(ConvertedSpace):
    """Choices ``s{i}.depth``, ``s{i}.width`` and (bottlenecks) ``s{i}.mid`` per stage, around a model."""

    def __init__(self, cfg: ZooResNetConfig, resolution: int, name: str):
        self.cfg, self.resolution, self.name = cfg, resolution, name
        self.n_stages = len(cfg.strides)
        choices: dict[str, tuple[Any, ...]] = {}
        for i in range(self.n_stages):
            choices[f"s{i}.depth"] = cfg.depths[i]
            choices[f"s{i}.width"] = cfg.widths[i]
            if cfg.block == "bottleneck":
                choices[f"s{i}.mid"] = cfg.mids[i]
        super().__init__(choices)
        self.original_arch = self.largest()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.cfg.in_channels, self.resolution, self.resolution)

    def num_architectures(self) -> int:
        return int(np.prod([len(v) for v in self.choices.values()]))  # every choice changes the network

    def build_supernet(self) -> ZooResNetSupernet:
        net = ZooResNetSupernet(self.cfg)
        self.init_from_checkpoint(net)
        return net

    def to_spec(self, arch: Mapping[str, Any]) -> ZooResNetSpec:
        mid = (
            (lambda i: arch[f"s{i}.mid"])
            if self.cfg.block == "bottleneck"
            else (lambda i: arch[f"s{i}.width"])
        )
        return tuple((arch[f"s{i}.depth"], arch[f"s{i}.width"], mid(i)) for i in range(self.n_stages))

    def arch_from_spec(self, spec: ZooResNetSpec) -> Arch:
        values: dict[str, Any] = {}
        for i, (d, w, m) in enumerate(spec):
            values[f"s{i}.depth"], values[f"s{i}.width"] = d, w
            if self.cfg.block == "bottleneck":
                values[f"s{i}.mid"] = m
        return self.arch(values)

    def original_layout(self, arch: Arch) -> dict[str, Any]:
        """timm and torchvision both hold stage ``i`` in ``layer{i+1}``; a shallower stage keeps its first."""
        depths = [(i, arch[f"s{i}.depth"]) for i in range(self.n_stages)]
        return {"keep": {f"layer{i + 1}": list(range(d)) for i, d in depths if d < self.cfg.depths[i][-1]}}

    # --- cost lowering ----------------------------------------------------------------------------
    # Slot 0: stem + head, op = stem_idx * |last widths| + last width idx (the stem's width follows stage 0's
    # when they are tied, else stem_idx is 0). Slot offset(i) + j: block j of stage i; op 0 = skipped, else
    # 1 + (in_idx * NW + width_idx) * NM + mid_idx (in_idx: the previous stage's width, the stem's for stage
    # 0, the stage's own after its first block).
    @cached_property
    def _layout(self) -> tuple[list[int], int, int]:
        offsets, pos = [], 1
        for d in self.cfg.depths:
            offsets.append(pos)
            pos += max(d)
        nw = max(len(w) for w in self.cfg.widths)
        nm = max(len(m) for m in self.cfg.mids) if self.cfg.block == "bottleneck" else 1
        return offsets, nw, nm

    def _stem_widths(self) -> tuple[int, ...]:
        return self.cfg.widths[0] if self.cfg.tie_stem else (self.cfg.stem_channels,)

    def _sides(self) -> list[int]:
        """Input side of every stage."""
        h = -(-self.resolution // 2)  # the stem's stride 2
        h = -(-h // 2)  # the max pool's
        sides = []
        for s in self.cfg.strides:
            sides.append(h)
            h = -(-h // s)
        return sides + [h]

    def _block(self, i: int, j: int, c_in: int, w: int, m: int) -> ResBlock:
        cfg = self.cfg
        stride = cfg.strides[i] if j == 0 else 1
        return ResBlock(
            cfg.block, c_in, w, m, stride, cfg.projects[i] and j == 0, cfg.avg_down, cfg.bn_eps, False
        )

    def op_modules(self) -> list[tuple[int, int, nn.Module, tuple[int, ...]]]:
        cfg, out = self.cfg, []
        offsets, nw, nm = self._layout
        sides = self._sides()
        for i in range(self.n_stages):
            mids = cfg.mids[i] if cfg.block == "bottleneck" else (None,)
            ins = self._stem_widths() if i == 0 else cfg.widths[i - 1]
            for j in range(max(cfg.depths[i])):
                side = sides[i] if j == 0 else sides[i + 1]
                for wi, w in enumerate(cfg.widths[i]):
                    for mi, m in enumerate(mids):
                        pairs = list(enumerate(ins)) if j == 0 else [(wi, w)]
                        if j == 0 and i == 0 and cfg.tie_stem:
                            pairs = [(wi, w)]
                        for ii, c_in in pairs:
                            op = 1 + (ii * nw + wi) * nm + mi
                            block = self._block(i, j, c_in, w, w if m is None else m)
                            out.append((offsets[i] + j, op, block, (c_in, side, side)))
        return out

    def fixed_modules(self) -> list[tuple[int, int, list[tuple[nn.Module, tuple[int, ...]]]]]:
        """Slot 0: the stem (at each of its widths) and the head (at each last-stage width)."""
        cfg, side = self.cfg, self._sides()[-1]
        last = cfg.widths[-1]
        out = []
        for si, s in enumerate(self._stem_widths()):
            stem = build_stem(cfg, s, elastic=False)
            for wi, w in enumerate(last):
                head = _Head(w, cfg.num_classes)
                out.append((0, si * len(last) + wi, [(stem, self.input_shape), (head, (w, side, side))]))
        return out

    @cached_property
    def _cost_table(self) -> CostTable:
        offsets, nw, nm = self._layout
        slots = offsets[-1] + max(self.cfg.depths[-1])
        n_ops = max(1 + nw * nw * nm, len(self._stem_widths()) * len(self.cfg.widths[-1]))
        names = ["stem + head"] + [f"s{i}.b{j}" for i, d in enumerate(self.cfg.depths) for j in range(max(d))]
        return self.cost_table_from_modules(slots, n_ops, tuple(names))

    def cost_table(self) -> CostTable:
        return self._cost_table

    def lower(self, codes: np.ndarray) -> np.ndarray:
        codes = self._checked_codes(codes)
        cfg = self.cfg
        col = {k: i for i, k in enumerate(self.keys)}
        offsets, nw, nm = self._layout
        out = np.zeros((codes.shape[0], offsets[-1] + max(cfg.depths[-1])), dtype=np.int32)
        stem = codes[:, col["s0.width"]] if cfg.tie_stem else np.zeros(codes.shape[0], dtype=np.int64)
        out[:, 0] = stem * len(cfg.widths[-1]) + codes[:, col[f"s{self.n_stages - 1}.width"]]
        prev = stem
        for i in range(self.n_stages):
            w = codes[:, col[f"s{i}.width"]]
            m = codes[:, col[f"s{i}.mid"]] if cfg.block == "bottleneck" else np.zeros_like(w)
            d = np.asarray(cfg.depths[i])[codes[:, col[f"s{i}.depth"]]]
            for j in range(max(cfg.depths[i])):
                op = 1 + ((prev if j == 0 else w) * nw + w) * nm + m
                out[:, offsets[i] + j] = np.where(j < d, op, 0)
            prev = w
        return out


def resnet_config(
    d: dict[str, Any],
    in_channels: int,
    num_classes: int,
    width_mult: float,
    width_ratios: Any,
    mid_ratios: Any,
    depth_drop: int,
) -> ZooResNetConfig:
    """The supernet configuration around a described ResNet (``describe_resnet``)."""
    w_r = check_ratios(width_ratios, "width_ratios")
    m_r = check_ratios(mid_ratios, "mid_ratios")
    if not isinstance(depth_drop, int) or depth_drop < 0:
        raise ConversionError(f"depth_drop={depth_drop!r} is not allowed: give a whole number of blocks >= 0")
    st = d["stages"]
    widths = tuple(_choices(_scaled(s["width"], width_mult), w_r) for s in st)
    mids = (
        tuple(_choices(_scaled(s["mid"], width_mult), m_r) for s in st)
        if d["block"] == "bottleneck"
        else widths
    )
    projects = tuple(s["project"] for s in st)
    stem = _scaled(d["stem_channels"], width_mult)
    if not projects[0] and stem != widths[0][-1]:
        raise ConversionError(
            "the stem's width must equal the first stage's when its first block adds the identity"
        )
    return ZooResNetConfig(
        in_channels=in_channels,
        num_classes=num_classes,
        block=d["block"],
        stem=d["stem"],
        stem_widths=tuple(_scaled(c, width_mult) for c in d["stem_widths"]),
        stem_channels=stem,
        strides=tuple(s["stride"] for s in st),
        depths=tuple(tuple(range(max(1, s["depth"] - depth_drop), s["depth"] + 1)) for s in st),
        widths=widths,
        mids=mids,
        projects=projects,
        avg_down=d["avg_down"],
        bn_eps=d["bn_eps"],
    )


def resnet_space(
    library: str,
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
    mid_ratios: Any = DEFAULT_RATIOS,
    depth_drop: int = 2,
) -> ZooResNetSpace:
    """The space around ``model`` (created with random weights) of ``library`` ("timm" or "torchvision")."""
    prefix = f"{library}:{model_name}"
    d = describe_resnet(model, f"{library} model {model_name!r}")
    cfg = resnet_config(d, in_channels, num_classes, width_mult, width_ratios, mid_ratios, depth_drop)
    space = ZooResNetSpace(cfg, resolution, prefix)
    space.library, space.model_name, space.model_kwargs = library, model_name, dict(model_kwargs)
    space.checkpoint, space.reorder = checkpoint, bool(reorder)
    return space


__all__ = ["ZooResNetSpace", "describe_resnet", "resnet_config", "resnet_space"]
