"""An MBConv subnetwork as a timm MobileNetV3: an ``arch_def`` in timm's block-string format and timm's weight
names.

The static network ``MBNet`` that extraction produces is, layer for layer, a
timm ``MobileNetV3`` (``timm.models.mobilenetv3``) built from
``decode_arch_def(arch_def)`` with MobileNetV3's own settings: hard-swish stem
and head, "efficient head" (pool, 1x1 conv with bias, hard-swish, classifier),
hard-sigmoid squeeze-excite with a ReLU inside, reduced to
``round_channels(0.25 * mid)`` channels of the expanded width. Our blocks map as

- the fixed first block (3x3 depthwise, no expansion) -> ``ds_r1_k3_s1_e1_c<C>_nre``;
- a stage block with expand ratio ``e != 1`` -> ``ir_r1_k<k>_s<s>_e<e>_c<C>[_se0.25]_<nre|nhs>``
  (a block with ``e == 1`` has no expansion layer, as timm's ``ds`` block);
- the 1x1 head expansion -> ``cn_r1_k1_s1_c<H>_nhs``.

Where a space's networks cannot be reproduced exactly (a stem stride other than
timm's fixed 2, a total stride above timm's output stride 32, which timm would
turn into dilation, channel counts timm's rounding would change, squeeze-excite
widths rounded differently) :func:`timm_incompatibility` says why, and the
export refuses instead of writing an approximation.

``load_timm.py`` (written next to the weights, :data:`LOADER`) builds the model
with timm and torch alone.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nas.export.formats import ExportFormat, ExportJob, register_format
from nas.export.separate_check import start_separate_check, verdict
from nas.run.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from search_spaces.errors import UserError
from supernets.blocks import mid_channels, se_channels
from supernets.mbnet import MBNet, MBNetConfig, MBSpec

SPEC_FILE = "timm_model.json"
WEIGHTS_FILE = "model.timm.pth"
LOADER_FILE = "load_timm.py"

TIMM_OUTPUT_STRIDE = 32  # timm's MobileNetV3 builds its blocks with output_stride=32
TIMM_STEM_STRIDE = 2  # fixed in timm's MobileNetV3 stem
_ACT_SUFFIX = {"relu": "nre", "hswish": "nhs"}
_IR_NAMES = {
    "expand.conv": "conv_pw",
    "expand.bn": "bn1",
    "dw.conv": "conv_dw",
    "dw.bn": "bn2",
    "se.reduce": "se.conv_reduce",
    "se.expand": "se.conv_expand",
    "project.conv": "conv_pwl",
    "project.bn": "bn3",
}
_DS_NAMES = {
    "dw.conv": "conv_dw",
    "dw.bn": "bn1",
    "se.reduce": "se.conv_reduce",
    "se.expand": "se.conv_expand",
    "project.conv": "conv_pw",
    "project.bn": "bn2",
}

LOADER = '''"""Build the exported subnetwork as a timm MobileNetV3 with timm and torch alone.

nas-engine is not needed:

    import sys; sys.path.insert(0, "runs/demo/export")
    from load_timm import build_timm_model
    model = build_timm_model("runs/demo/export")  # eval mode, weights loaded

or `python load_timm.py [EXPORT_DIR]` to print the architecture. Inputs are
preprocessed as for the search (see meta.json: data, input_shape).
"""

import functools
import json
import sys
from pathlib import Path

import torch
from torch import nn
from timm.layers import get_act_layer
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import decode_arch_def, round_channels
from timm.models.mobilenetv3 import MobileNetV3


def build_timm_model(export_dir=Path(__file__).parent, load_weights=True):
    export_dir = Path(export_dir)
    spec = json.loads((export_dir / "timm_model.json").read_text())
    kwargs = dict(spec["model_kwargs"])
    kwargs["act_layer"] = get_act_layer(kwargs["act_layer"])
    model = MobileNetV3(
        block_args=decode_arch_def(spec["arch_def"]),
        norm_layer=functools.partial(nn.BatchNorm2d, eps=spec["bn_eps"], momentum=spec["bn_momentum"]),
        se_layer=functools.partial(
            SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU, rd_round_fn=round_channels
        ),
        **kwargs,
    )
    if load_weights:
        state = torch.load(export_dir / spec["state_dict"], map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.eval()


if __name__ == "__main__":
    print(build_timm_model(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent))
'''


class TimmExportError(UserError, ValueError):
    """A network that timm's MobileNetV3 cannot reproduce exactly (the message says why)."""


def _timm_round(channels: float) -> int:
    """timm's ``round_channels`` / ``make_divisible`` (divisor 8, round limit 0.9), without importing timm."""
    new = max(8, int(channels + 4) // 8 * 8)
    return new + 8 if new < 0.9 * channels else new


def _config(space: Any) -> MBNetConfig | None:
    from search_spaces.mbv3 import MBV3Space

    return space.cfg if isinstance(space, MBV3Space) else None


def timm_incompatibility(space: Any) -> str | None:
    """Why ``space``'s networks cannot be exported as timm MobileNetV3 models exactly, or ``None`` if they all
    can."""
    cfg = _config(space)
    if cfg is None:
        return f"space {space.name!r} is not an MBConv space; timm export covers mbv3, tiny and timm:<model>"
    if cfg.stem_stride != TIMM_STEM_STRIDE:
        return (
            f"its stem has stride {cfg.stem_stride}; timm's MobileNetV3 stem is fixed at stride"
            f" {TIMM_STEM_STRIDE}"
        )
    total = cfg.stem_stride * math.prod(st.stride for st in cfg.stages)
    if total > TIMM_OUTPUT_STRIDE:
        return (
            f"its total stride is {total}; timm's MobileNetV3 turns strides beyond {TIMM_OUTPUT_STRIDE} into"
            " dilation"
        )
    for what, c in [
        ("first block", cfg.first_channels),
        *((f"stage {i}", st.out_channels) for i, st in enumerate(cfg.stages)),
        ("head", cfg.head_channels),
    ]:
        if _timm_round(c) != c:
            return (
                f"its {what} has {c} channels, which timm's channel rounding would change to {_timm_round(c)}"
            )
    for i, (st, c_in) in enumerate(zip(cfg.stages, cfg.stage_in_channels())):
        for c in {c_in, st.out_channels}:
            for e in cfg.expands:
                mid = mid_channels(c, e)
                timm_mid = c if e == 1 else _timm_round(c * e)
                if mid != timm_mid:
                    return (
                        f"stage {i}: expand {e} of {c} channels gives {mid} channels here, {timm_mid} in timm"
                    )
                if st.use_se and se_channels(mid) != _timm_round(mid * 0.25):
                    return (
                        f"stage {i}: squeeze-excite of {mid} channels reduces to {se_channels(mid)} here,"
                        f" {_timm_round(mid * 0.25)} in timm"
                    )
    return None


def _num(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def timm_arch_def(cfg: MBNetConfig, spec: MBSpec) -> list[list[str]]:
    """timm ``arch_def`` (stages of block strings, for ``decode_arch_def``) of the network ``spec``."""
    arch_def = [[f"ds_r1_k3_s1_e1_c{cfg.first_channels}_nre"]]
    for st, blocks in zip(cfg.stages, spec):
        strings = []
        for j, (k, e) in enumerate(blocks):
            kind = "ds" if e == 1 else "ir"
            se = "_se0.25" if st.use_se else ""
            stride = st.stride if j == 0 else 1
            strings.append(
                f"{kind}_r1_k{k}_s{stride}_e{_num(e)}_c{st.out_channels}{se}_{_ACT_SUFFIX[st.act]}"
            )
        merged: list[list[Any]] = []  # runs of equal blocks -> one string with r<N>, as timm writes them
        for s in strings:
            if (
                merged and merged[-1][0] == s
            ):  # timm gives every block after a stage's first stride 1, as we do
                merged[-1][1] += 1
            else:
                merged.append([s, 1])
        arch_def.append([s.replace("_r1_", f"_r{n}_", 1) for s, n in merged])
    arch_def.append([f"cn_r1_k1_s1_c{cfg.head_channels}_nhs"])
    return arch_def


def _timm_name(static: MBNet, name: str) -> str:
    parts = name.split(".")
    n_stages = len(static.stages)
    head, leaf = parts[0], parts[-1]
    if head == "stem":
        return {"conv": "conv_stem", "bn": "bn1"}[parts[1]] + "." + leaf
    if head == "first":
        return f"blocks.0.0.{_DS_NAMES['.'.join(parts[1:-1])]}.{leaf}"
    if head == "stages":
        i, j = int(parts[1]), int(parts[2])
        names = _DS_NAMES if isinstance(static.stages[i][j].expand, nn.Identity) else _IR_NAMES
        return f"blocks.{i + 1}.{j}.{names['.'.join(parts[3:-1])]}.{leaf}"
    if head == "head_expand":
        return f"blocks.{n_stages + 1}.0." + {"conv": "conv", "bn": "bn1"}[parts[1]] + "." + leaf
    if head == "feature_mix":
        return "conv_head." + leaf
    if head == "classifier":
        return name
    raise KeyError(name)


def timm_state_dict(static: MBNet) -> dict[str, torch.Tensor]:
    """``static``'s weights and BN statistics under the names of the timm model built from its
    ``arch_def``."""
    out = {}
    for name, tensor in static.state_dict().items():
        try:
            out[_timm_name(static, name)] = tensor.detach().clone()
        except KeyError as exc:
            raise TimmExportError(
                f"tensor {name!r} of the exported network has no place in timm's MobileNetV3 (unmapped {exc})"
            ) from None
    return out


def timm_model_spec(space: Any, static: nn.Module, spec: MBSpec) -> dict[str, Any]:
    """The content of ``timm_model.json``: arch_def and constructor settings; raises :class:`TimmExportError`
    when no exact mapping exists."""
    reason = timm_incompatibility(space)
    if reason is not None:
        raise TimmExportError(f"timm export refused for space {space.name!r}: {reason}")
    if not isinstance(static, MBNet):
        raise TimmExportError(f"timm export needs the static MBConv network, got {type(static).__name__}")
    cfg = space.cfg
    bns = [m for m in static.modules() if isinstance(m, nn.BatchNorm2d)]
    eps, momentum = {m.eps for m in bns}, {m.momentum for m in bns}
    if len(eps) != 1 or len(momentum) != 1:
        raise TimmExportError(
            f"timm's MobileNetV3 uses one batch-norm setting; this network mixes eps {sorted(eps)} / momentum"
            f" {sorted(momentum, key=str)}"
        )
    import timm

    return {
        "format": (
            "timm MobileNetV3 (timm.models.mobilenetv3.MobileNetV3, blocks from decode_arch_def(arch_def))"
        ),
        "arch_def": timm_arch_def(cfg, spec),
        "model_kwargs": {
            "num_classes": cfg.num_classes,
            "in_chans": cfg.in_channels,
            "stem_size": cfg.stem_channels,
            "fix_stem": True,
            "num_features": cfg.feature_channels,
            "head_bias": True,
            "act_layer": "hard_swish",
            "drop_rate": cfg.dropout,
        },
        "bn_eps": eps.pop(),
        "bn_momentum": momentum.pop(),
        "se_layer": (
            "SqueezeExcite(gate_layer='hard_sigmoid', force_act_layer=nn.ReLU, rd_round_fn=round_channels),"
            " reduced from the expanded width (se_from_exp)"
        ),
        "state_dict": WEIGHTS_FILE,
        "loader": LOADER_FILE,
        "usage": (
            "from load_timm import build_timm_model; model = build_timm_model(EXPORT_DIR)  # timm + torch"
            f" only, see {LOADER_FILE}"
        ),
        "input_shape": [cfg.in_channels, space.resolution, space.resolution],
        "timm_version": timm.__version__,
    }


# Run in a separate interpreter by the export: builds the model with the shipped loader and compares outputs.
VERIFY_SCRIPT = r"""
import json, runpy, sys
import torch
loader, export_dir, batch = sys.argv[1:4]
build = runpy.run_path(loader)["build_timm_model"]
model = build(export_dir)
data = torch.load(batch, weights_only=True)
with torch.no_grad():
    out = model(data["x"])
ours = data["logits"]
foreign = sorted({m.split(".")[0] for m in sys.modules} & {"nas", "supernets", "search_spaces"})
print(json.dumps({
    "max_abs_diff": (out - ours).abs().max().item(),
    "accuracy": (out.argmax(1) == data["y"]).float().mean().item(),
    "accuracy_ours": (ours.argmax(1) == data["y"]).float().mean().item(),
    "argmax_agree": (out.argmax(1) == ours.argmax(1)).float().mean().item(),
    "project_modules_imported": foreign,
}))
"""


__all__ = [
    "LOADER",
    "LOADER_FILE",
    "SPEC_FILE",
    "TimmExportError",
    "VERIFY_SCRIPT",
    "WEIGHTS_FILE",
    "timm_arch_def",
    "timm_incompatibility",
    "timm_model_spec",
    "timm_state_dict",
]


def _start_timm(job: ExportJob) -> Callable[[], dict[str, Any]]:
    """Write the timm files and start their check in a separate interpreter; returns a function that waits for
    it."""
    spec = timm_model_spec(job.space, job.net, job.spec)
    buf = io.BytesIO()
    torch.save(timm_state_dict(job.net), buf)
    atomic_write_bytes(job.out_dir / WEIGHTS_FILE, buf.getvalue())
    atomic_write_text(job.out_dir / LOADER_FILE, LOADER)
    atomic_write_json(job.out_dir / SPEC_FILE, spec)
    wait = start_separate_check(job, VERIFY_SCRIPT, LOADER_FILE, "timm")

    def finish() -> dict[str, Any]:
        check = wait()
        res = check.report
        out = {
            "file": WEIGHTS_FILE,
            "files": [SPEC_FILE, WEIGHTS_FILE, LOADER_FILE],
            "load": (
                "from load_timm import build_timm_model; build_timm_model(EXPORT_DIR)  (timm"
                f" {spec['timm_version']} + torch only)"
            ),
            "arch_def": spec["arch_def"],
            "max_abs_diff": res["max_abs_diff"],
            "tolerance": check.tolerance,
            "val_batch_accuracy": res["accuracy"],
            "val_batch_accuracy_ours": res["accuracy_ours"],
            "argmax_agreement": res["argmax_agree"],
            "separate_process": True,
        }
        return verdict(out, check.problems)

    return finish


register_format(
    ExportFormat(
        "timm",
        (SPEC_FILE, WEIGHTS_FILE, LOADER_FILE),
        _start_timm,
        inapplicable=timm_incompatibility,
        background=True,
    )
)
