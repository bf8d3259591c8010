"""``timm:efficientnet_b*`` and ``timm:mobilenetv2_*``: elastic MBConv spaces around timm's EfficientNet.

The model's blocks give the choices: per block its kernel (the model's, and
every ``kernels`` value below it) and expand ratio (``expand_ratios`` of the
model's), per stage its depth (``depth_drop`` blocks fewer up to its own).
Activations, squeeze-excite (sigmoid, sized on the block input), the 1x1 conv
head and stage widths are the model's; the first stage (depthwise-separable
blocks) is kept as it is. The model is the largest architecture. The space
class is shared with ``torchvision:mobilenet_v3_*`` (``search_spaces.torchvision_space``),
which describes its model in the same terms.
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
from supernets.zoo_mbconv import BlockDef, MBBlock, SEConfig, ZooMBConfig, ZooMBNet, ZooMBSpec, ZooMBSupernet

ACT_NAMES = {
    "ReLU": "relu",
    "ReLU6": "relu6",
    "SiLU": "silu",
    "Swish": "silu",
    "Hardswish": "hswish",
    "HardSwish": "hswish",
    "Sigmoid": "sigmoid",
    "Hardsigmoid": "hardsigmoid",
    "HardSigmoid": "hardsigmoid",
}
KERNELS = (3, 5, 7)


def act_name(m: Any, where: object) -> str:
    """Our name of an activation module; anything else is refused naming ``where``."""
    name = ACT_NAMES.get(type(m).__name__)
    if name is None:
        raise ConversionError(
            f"{where} uses activation {type(m).__name__}; supported: {sorted(set(ACT_NAMES))}"
        )
    return name


def check_conv(
    m: Any, where: object, k: int | None = None, depthwise: bool = False, bias: bool = False
) -> None:
    """A plain ``nn.Conv2d`` with "same" padding for odd kernels (TensorFlow-style padding is refused)."""
    if type(m) is not nn.Conv2d:
        raise ConversionError(
            f"{where} is a {type(m).__name__}; only plain Conv2d with symmetric padding maps"
            " (TensorFlow-ported 'same' padding, mixed or conditional convolutions do not)"
        )
    kh = m.kernel_size[0]
    ok = (
        m.kernel_size == (kh, kh) and kh % 2 == 1 and m.padding == (kh // 2, kh // 2) and m.dilation == (1, 1)
    )
    ok = ok and (k is None or kh == k) and (m.bias is not None) == bias
    ok = ok and (m.groups == m.in_channels == m.out_channels if depthwise else m.groups == 1)
    if not ok:
        raise ConversionError(
            f"{where}: a {kh}x{kh} convolution (groups {m.groups}, padding {m.padding}, dilation"
            f" {m.dilation}) that is not the plain one the converter maps"
        )


def expand_of(c_in: int, mid: int, where: object) -> float:
    """The expand ratio whose rounding gives ``mid`` channels from ``c_in``."""
    e = 1.0 if mid == c_in else round(mid / c_in, 4)
    if e != 1 and make_divisible(c_in * e) != mid:
        raise ConversionError(f"{where}: {mid} expanded channels from {c_in} are not a rounded expand ratio")
    return e


def _is_identity(m: Any) -> bool:
    return m is None or isinstance(m, nn.Identity)


def _timm_se(se: nn.Module, mid: int, e: float, where: Where) -> SEConfig | None:
    if _is_identity(se):
        return None
    if type(se).__name__ != "SqueezeExcite":
        raise ConversionError(
            f"{where / 'se'} is a {type(se).__name__}; the converter maps timm's SqueezeExcite"
        )
    check_conv(se.conv_reduce, where / "se.conv_reduce", 1, bias=True)
    check_conv(se.conv_expand, where / "se.conv_expand", 1, bias=True)
    cfg = SEConfig("input", act_name(se.act1, where / "se.act1"), act_name(se.gate, where / "se.gate"))
    if se.conv_reduce.out_channels != cfg.channels(mid, e):
        raise ConversionError(
            f"{where / 'se'} reduces {mid} channels to {se.conv_reduce.out_channels}; the converter maps"
            f" squeeze-excite sized at a quarter of the block input ({cfg.channels(mid, e)})"
        )
    return cfg


def _norm_act(bn: Any, where: Where, act: bool) -> str | None:
    if not isinstance(bn, nn.BatchNorm2d):
        raise ConversionError(f"{where} is a {type(bn).__name__}, not a batch norm")
    a = bn.act if isinstance(getattr(bn, "act", None), nn.Module) else nn.Identity()
    drop = getattr(bn, "drop", None)
    if not _is_identity(drop):
        raise ConversionError(f"{where / 'drop'} ({type(drop).__name__}) is not supported")
    if not act:
        if not isinstance(a, nn.Identity):
            raise ConversionError(f"{where} applies {type(a).__name__} where the converter expects none")
        return None
    return act_name(a, where / "act")


def _timm_block(b: nn.Module, where: Where) -> dict[str, Any]:
    kind = type(b).__name__
    if kind not in ("DepthwiseSeparableConv", "InvertedResidual"):
        raise ConversionError(
            f"{where} is a {kind}; the converter maps DepthwiseSeparableConv and InvertedResidual blocks"
        )
    for attr in ("aa", "drop_path"):
        if not _is_identity(getattr(b, attr, None)):
            raise ConversionError(f"{where / attr} ({type(getattr(b, attr)).__name__}) is not supported")
    if getattr(b, "conv_s2d", None) is not None:
        raise ConversionError(f"{where} uses space-to-depth, which is not supported")
    dw = b.conv_dw
    check_conv(dw, where / "conv_dw", depthwise=True)
    if kind == "DepthwiseSeparableConv":
        c_in = dw.in_channels
        act = _norm_act(b.bn1, where / "bn1", True)
        check_conv(b.conv_pw, where / "conv_pw", 1)
        _norm_act(b.bn2, where / "bn2", False)
        out, mid, e = b.conv_pw.out_channels, c_in, 1.0
    else:
        check_conv(b.conv_pw, where / "conv_pw", 1)
        c_in, mid = b.conv_pw.in_channels, b.conv_pw.out_channels
        act = _norm_act(b.bn1, where / "bn1", True)
        if _norm_act(b.bn2, where / "bn2", True) != act:
            raise ConversionError(f"{where}: bn1 and bn2 use different activations")
        check_conv(b.conv_pwl, where / "conv_pwl", 1)
        _norm_act(b.bn3, where / "bn3", False)
        out, e = b.conv_pwl.out_channels, expand_of(c_in, mid, where)
    return {
        "in": c_in,
        "out": out,
        "mid": mid,
        "expand": e,
        "kernel": dw.kernel_size[0],
        "stride": dw.stride[0],
        "act": act,
        "se": _timm_se(b.se, mid, e, where),
        "residual": bool(b.has_skip),
        "where": where,
    }


def describe_timm_mbconv(model: nn.Module, name: str) -> dict[str, Any]:
    """Stem, fixed first stage, elastic stages and head of a timm EfficientNet (MobileNetV2 too)."""
    where = Where(f"timm model {name!r}")
    check_conv(model.conv_stem, where / "conv_stem", 3)
    if model.conv_stem.stride != (2, 2):
        raise ConversionError(
            f"{where / 'conv_stem'} has stride {model.conv_stem.stride}; the converter maps 2"
        )
    stem_act = _norm_act(model.bn1, where / "bn1", True)
    stages = []
    for i, stage in enumerate(model.blocks):
        stages.append([_timm_block(b, where / f"blocks.{i}.{j}") for j, b in enumerate(stage)])
    check_conv(model.conv_head, where / "conv_head", 1)
    head_act = _norm_act(model.bn2, where / "bn2", True)
    pool = getattr(model.global_pool, "pool_type", None)
    if pool != "avg" or not isinstance(model.classifier, nn.Linear):
        raise ConversionError(
            f"{where / 'classifier'}: only average pooling and a linear classifier are supported"
        )
    addresses = [[(f"blocks.{i}", j) for j in range(len(s))] for i, s in enumerate(stages)]
    return {
        "stem_channels": model.conv_stem.out_channels,
        "stem_act": stem_act,
        "first": stages[0],
        "stages": stages[1:],
        "addresses": addresses[1:],
        "sequences": {f"blocks.{i}": len(s) for i, s in enumerate(stages)},
        "head_channels": model.conv_head.out_channels,
        "head_act": head_act,
        "feature_channels": None,
        "feature_act": head_act,
        "bn_eps": _eps(model, name),
    }


def _eps(model: nn.Module, name: str) -> float:
    eps = {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    if len(eps) != 1:
        raise ConversionError(f"model {name!r}: its batch norms use several eps values {sorted(eps)}")
    return eps.pop()


def _check_stages(d: dict[str, Any], name: str) -> None:
    for rows in d["stages"]:
        for r in rows[1:]:
            if r["stride"] != 1 or r["in"] != r["out"]:
                raise ConversionError(
                    f"model {name!r}: {r['where']} changes shape after its stage's first block, so the stage"
                    " cannot be made shallower"
                )


def _scaled(c: int, width_mult: float) -> int:
    return c if width_mult == 1 else make_divisible(c * width_mult)


def _block_def(
    r: dict[str, Any], width_mult: float, kernels: tuple[int, ...], ratios: tuple[float, ...] | None
):
    k, e = r["kernel"], r["expand"]
    ks = (k,) if ratios is None else tuple(sorted({k, *(v for v in kernels if v < k and v % 2 == 1)}))
    if ratios is None or e == 1:
        es: tuple[float, ...] = (e,)
    else:
        es = tuple(sorted({e, *(round(e * q, 2) for q in ratios if round(e * q, 2) > 1)}))
    return BlockDef(
        in_ch=_scaled(r["in"], width_mult),
        out_ch=_scaled(r["out"], width_mult),
        stride=r["stride"],
        kernels=ks,
        expands=es,
        act=r["act"],
        se=r["se"],
        residual=r["residual"],
    )


def mbconv_config(
    d: dict[str, Any],
    in_channels: int,
    num_classes: int,
    width_mult: float,
    kernels: Any,
    expand_ratios: Any,
    depth_drop: int,
) -> ZooMBConfig:
    """The supernet configuration around a described MBConv model."""
    ratios = check_ratios(expand_ratios, "expand_ratios")
    try:
        ks = tuple(sorted({int(k) for k in kernels}))
    except (TypeError, ValueError):
        raise ConversionError(f"kernels must be a list of odd kernel sizes, got {kernels!r}") from None
    if not ks or any(k < 1 or k % 2 == 0 for k in ks):
        raise ConversionError(
            f"kernels={list(kernels)} is not allowed: kernels are odd (they are centre-cropped)"
        )
    if not isinstance(depth_drop, int) or depth_drop < 0:
        raise ConversionError(f"depth_drop={depth_drop!r} is not allowed: give a whole number of blocks >= 0")
    feature = d["feature_channels"]
    return ZooMBConfig(
        in_channels=in_channels,
        num_classes=num_classes,
        stem_channels=_scaled(d["stem_channels"], width_mult),
        stem_act=d["stem_act"],
        first=tuple(_block_def(r, width_mult, ks, None) for r in d["first"]),
        stages=tuple(tuple(_block_def(r, width_mult, ks, ratios) for r in rows) for rows in d["stages"]),
        depths=tuple(tuple(range(max(1, len(rows) - depth_drop), len(rows) + 1)) for rows in d["stages"]),
        head_channels=_scaled(d["head_channels"], width_mult),
        head_act=d["head_act"],
        feature_channels=feature,
        feature_act=d["feature_act"],
        bn_eps=d["bn_eps"],
    )


class _Head(nn.Module):
    """The network's head as one module, so its cost is counted like a block's."""

    def __init__(self, net: ZooMBNet):
        super().__init__()
        self.cfg, self.head, self.classifier = net.cfg, net.head, net.classifier
        if net.cfg.feature_channels is not None:
            self.feature, self.feature_act = net.feature, net.feature_act

    def forward(self, x):
        x = self.head(x).mean((2, 3))
        if self.cfg.feature_channels is not None:
            x = self.feature_act(self.feature(x))
        return self.classifier(x)


class ZooMBSpace(ConvertedSpace):
    """Choices ``s{i}.depth``, ``s{i}.b{j}.kernel``, ``s{i}.b{j}.expand`` (each block's own values)."""

    def __init__(self, cfg: ZooMBConfig, resolution: int, name: str, description: dict[str, Any]):
        self.cfg, self.resolution, self.name = cfg, resolution, name
        self.description = description
        self.n_stages = len(cfg.stages)
        choices: dict[str, tuple[Any, ...]] = {}
        for i, defs in enumerate(cfg.stages):
            choices[f"s{i}.depth"] = cfg.depths[i]
            for j, b in enumerate(defs):
                choices[f"s{i}.b{j}.kernel"] = b.kernels
                choices[f"s{i}.b{j}.expand"] = b.expands
        super().__init__(choices)
        self.original_arch = self.largest()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.cfg.in_channels, self.resolution, self.resolution)

    def canonicalize(self, values: dict[str, Any]) -> dict[str, Any]:
        for i, defs in enumerate(self.cfg.stages):  # blocks past a stage's depth never run
            for j in range(values[f"s{i}.depth"], len(defs)):
                values[f"s{i}.b{j}.kernel"] = defs[j].kernels[0]
                values[f"s{i}.b{j}.expand"] = defs[j].expands[0]
        return values

    def used_keys(self, arch: Mapping[str, Any]) -> tuple[str, ...]:
        used = []
        for i in range(self.n_stages):
            used.append(f"s{i}.depth")
            for j in range(arch[f"s{i}.depth"]):
                used += [f"s{i}.b{j}.kernel", f"s{i}.b{j}.expand"]
        return tuple(used)

    def num_architectures(self) -> int:
        total = 1
        for defs, depths in zip(self.cfg.stages, self.cfg.depths):
            per = [len(b.kernels) * len(b.expands) for b in defs]
            total *= sum(int(np.prod(per[:d])) for d in depths)
        return total

    def build_supernet(self) -> ZooMBSupernet:
        net = ZooMBSupernet(self.cfg)
        self.init_from_checkpoint(net)
        return net

    def to_spec(self, arch: Mapping[str, Any]) -> ZooMBSpec:
        return tuple(
            tuple((arch[f"s{i}.b{j}.kernel"], arch[f"s{i}.b{j}.expand"]) for j in range(arch[f"s{i}.depth"]))
            for i in range(self.n_stages)
        )

    def arch_from_spec(self, spec: ZooMBSpec) -> Arch:
        values: dict[str, Any] = {}
        for i, (blocks, defs) in enumerate(zip(spec, self.cfg.stages)):
            values[f"s{i}.depth"] = len(blocks)
            for j, b in enumerate(defs):
                k, e = blocks[j] if j < len(blocks) else (b.kernels[0], b.expands[0])
                values[f"s{i}.b{j}.kernel"], values[f"s{i}.b{j}.expand"] = k, e
        return self.arch(values)

    def original_layout(self, arch: Arch) -> dict[str, Any]:
        dropped: dict[str, set[int]] = {}
        for i, addresses in enumerate(self.description["addresses"]):
            for j, (path, index) in enumerate(addresses):
                if j >= arch[f"s{i}.depth"]:
                    dropped.setdefault(path, set()).add(index)
        keep = {
            p: [c for c in range(n) if c not in dropped.get(p, ())]
            for p, n in self.description["sequences"].items()
        }
        return {"keep": {p: k for p, k in keep.items() if len(k) != self.description["sequences"][p]}}

    # --- cost lowering -----------------------------------------------------------------------------
    # Slot 0: the fixed part (stem, first blocks, head), op 0. Slot offset(i) + j: block j of stage i; op 0 =
    # skipped, else 1 + kernel_idx * NE + expand_idx (indices into that block's own choices).
    @cached_property
    def _offsets(self) -> list[int]:
        out, pos = [], 1
        for defs in self.cfg.stages:
            out.append(pos)
            pos += len(defs)
        return out

    @cached_property
    def _n_expands(self) -> int:
        return max(len(b.expands) for defs in self.cfg.stages for b in defs)

    def _sides(self) -> tuple[int, list[list[int]], int]:
        """Side after the stem and first blocks, each elastic block's input side, the head's input side."""
        h = -(-self.resolution // 2)
        for b in self.cfg.first:
            h = -(-h // b.stride)
        first, sides = h, []
        for defs in self.cfg.stages:
            row = []
            for b in defs:
                row.append(h)
                h = -(-h // b.stride)
            sides.append(row)
        return first, sides, h

    def op_modules(self) -> list[tuple[int, int, nn.Module, tuple[int, ...]]]:
        out = []
        _, sides, _ = self._sides()
        bn = lambda c: nn.BatchNorm2d(c, eps=self.cfg.bn_eps)  # noqa: E731
        for i, defs in enumerate(self.cfg.stages):
            for j, b in enumerate(defs):
                for ki, k in enumerate(b.kernels):
                    for ei, e in enumerate(b.expands):
                        module = MBBlock(b, bn, False, k, e)
                        out.append(
                            (
                                self._offsets[i] + j,
                                1 + ki * self._n_expands + ei,
                                module,
                                (b.in_ch, sides[i][j], sides[i][j]),
                            )
                        )
        return out

    def fixed_modules(self) -> list[tuple[int, int, list[tuple[nn.Module, tuple[int, ...]]]]]:
        """Slot 0: the stem with the first blocks, and the head."""
        ref = ZooMBNet(self.cfg, self.to_spec(self.smallest())).eval()
        _, _, h = self._sides()
        c_last = self.cfg.stages[-1][0].out_ch
        return [
            (0, 0, [(nn.Sequential(ref.stem, ref.first), self.input_shape), (_Head(ref), (c_last, h, h))])
        ]

    @cached_property
    def _cost_table(self) -> CostTable:
        slots = self._offsets[-1] + len(self.cfg.stages[-1])
        n_ops = 1 + max(len(b.kernels) for defs in self.cfg.stages for b in defs) * self._n_expands
        names = ["fixed"] + [f"s{i}.b{j}" for i, defs in enumerate(self.cfg.stages) for j in range(len(defs))]
        return self.cost_table_from_modules(slots, n_ops, tuple(names))

    def cost_table(self) -> CostTable:
        return self._cost_table

    def lower(self, codes: np.ndarray) -> np.ndarray:
        codes = self._checked_codes(codes)
        col = {k: i for i, k in enumerate(self.keys)}
        out = np.zeros((codes.shape[0], self._offsets[-1] + len(self.cfg.stages[-1])), dtype=np.int32)
        for i, defs in enumerate(self.cfg.stages):
            depth = np.asarray(self.cfg.depths[i])[codes[:, col[f"s{i}.depth"]]]
            for j in range(len(defs)):
                op = (
                    1
                    + codes[:, col[f"s{i}.b{j}.kernel"]] * self._n_expands
                    + codes[:, col[f"s{i}.b{j}.expand"]]
                )
                out[:, self._offsets[i] + j] = np.where(j < depth, op, 0)
        return out


def mbconv_space(
    library: str,
    description: dict[str, Any],
    model_name: str,
    num_classes: int,
    in_channels: int,
    resolution: int,
    width_mult: float,
    checkpoint: str | None,
    model_kwargs: dict[str, Any],
    reorder: bool = True,
    kernels: Any = KERNELS,
    expand_ratios: Any = DEFAULT_RATIOS,
    depth_drop: int = 2,
) -> ZooMBSpace:
    """The space around a described MBConv model of ``library``."""
    _check_stages(description, model_name)
    cfg = mbconv_config(description, in_channels, num_classes, width_mult, kernels, expand_ratios, depth_drop)
    space = ZooMBSpace(cfg, resolution, f"{library}:{model_name}", description)
    space.library, space.model_name, space.model_kwargs = library, model_name, dict(model_kwargs)
    space.checkpoint, space.reorder = checkpoint, bool(reorder)
    return space


__all__ = ["ZooMBSpace", "act_name", "check_conv", "describe_timm_mbconv", "expand_of", "mbconv_space"]
