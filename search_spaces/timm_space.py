"""``timm:<model>``: an elastic space built around a timm model's own layers.

The prefix factory creates the model (random weights: nothing is downloaded)
and hands it to the converter of its family:

- MobileNetV3 (here): the block definitions give the stages (widths, strides,
  activations, squeeze-excite), the stem and the head; the choices are taken
  *around* them: every kernel size the model uses plus 3/5/7, every expand ratio
  it uses plus 3/4/6 (never above its largest), and stage depths from its
  shallowest to its deepest stage. The model's own widths are the maximum
  (``width_mult`` scales them all, as for ``mbv3``). The model is a member of the
  space (``space.timm_arch``), and a local timm checkpoint initialises the supernet
  so that this architecture reproduces the timm model's outputs exactly (kernels
  are written into the centre of the superkernel, channels into the prefix);
- EfficientNet and MobileNetV2 (timm's EfficientNet class):
  :mod:`search_spaces.timm_efficientnet`;
- ResNet (basic and bottleneck, ``*d`` variants): :mod:`search_spaces.timm_resnet`;
- VisionTransformer: :mod:`search_spaces.timm_vit`.

Any other model, and any block a converter cannot map, is refused with one line
naming the module and the construct. With a checkpoint, every elastic layer's
channels are then sorted by importance (``reorder: false`` keeps the order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces.arch import Arch
from search_spaces.base import SearchSpace
from search_spaces.converted import ConversionError, read_checkpoint
from search_spaces.mbv3 import MBV3Space
from search_spaces.registry import SPACES
from supernets.extract import slice_like
from supernets.importance import reorder_by_importance
from supernets.mbnet import MBSupernet

_ACTS = {"ReLU": "relu", "Hardswish": "hswish"}


class TimmModelError(ConversionError):
    """A timm model that cannot be turned into a space (the message says why)."""


def _act(module: nn.Module, where: str) -> str:
    name = type(getattr(module, "act", module)).__name__
    if name not in _ACTS:
        raise TimmModelError(
            f"{where} uses activation {name}; the MBConv supernet supports {sorted(_ACTS)}"
            " (MobileNetV3-family models)"
        )
    return _ACTS[name]


def describe_timm_model(model: nn.Module, name: str) -> dict[str, Any]:
    """Stem, first block, stages (blocks with kernel/expand/stride/SE/act) and head of a timm MobileNetV3."""
    for attr in ("conv_stem", "bn1", "blocks", "conv_head", "classifier"):
        if not hasattr(model, attr):
            raise TimmModelError(
                f"timm model {name!r} has no {attr!r}: only EfficientNet/MobileNet-family models (timm's"
                " efficientnet.py / mobilenetv3.py) can become a space"
            )
    blocks = list(model.blocks)
    first, last = blocks[0], blocks[-1]
    if len(first) != 1 or not hasattr(first[0], "conv_pw") or hasattr(first[0], "conv_pwl"):
        raise TimmModelError(f"timm model {name!r} does not start with one depthwise-separable block")
    ds = first[0]
    if ds.conv_dw.stride[0] != 1 or ds.conv_dw.kernel_size[0] != 3 or not isinstance(ds.se, nn.Identity):
        raise TimmModelError(
            f"timm model {name!r}: its first block (stride {ds.conv_dw.stride[0]}, kernel"
            f" {ds.conv_dw.kernel_size[0]}, SE {type(ds.se).__name__}) is not the 3x3 stride-1 block without"
            " SE that the MBConv supernet fixes"
        )
    if len(last) != 1 or not hasattr(last[0], "conv") or last[0].conv.kernel_size[0] != 1:
        raise TimmModelError(
            f"timm model {name!r} does not end with a 1x1 conv head expansion (MobileNetV3 style);"
            " EfficientNet-style heads are not supported yet"
        )
    stages = []
    for si, stage in enumerate(blocks[1:-1], start=1):
        rows = []
        for bi, b in enumerate(stage):
            if not hasattr(b, "conv_pwl"):
                raise TimmModelError(
                    f"timm model {name!r}: block {si}.{bi} ({type(b).__name__}) is not an inverted residual"
                )
            se = b.se
            if not isinstance(se, nn.Identity) and type(getattr(se, "gate", None)).__name__ != "Hardsigmoid":
                raise TimmModelError(
                    f"timm model {name!r}: block {si}.{bi} has a {type(getattr(se, 'gate', se)).__name__}"
                    " squeeze-excite gate; the supernet's is hard-sigmoid (MobileNetV3)"
                )
            c_in, mid = b.conv_pw.in_channels, b.conv_pw.out_channels
            rows.append(
                {
                    "in": c_in,
                    "mid": mid,
                    "out": b.conv_pwl.out_channels,
                    "kernel": b.conv_dw.kernel_size[0],
                    "stride": b.conv_dw.stride[0],
                    "se": not isinstance(se, nn.Identity),
                    "act": _act(b.bn1, f"block {si}.{bi}"),
                    "expand": round(mid / c_in, 4),
                }
            )
        stages.append(rows)
    return {
        "stem_channels": model.conv_stem.out_channels,
        "stem_stride": model.conv_stem.stride[0],
        "stem_act": _act(model.bn1, "the stem"),
        "first_channels": ds.conv_pw.out_channels,
        "stages": stages,
        "head_channels": last[0].conv.out_channels,
        "feature_channels": model.conv_head.out_channels,
    }


@SPACES.register_prefix("timm:", shown_as="timm:<model name>")
def timm_space(
    model_name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    resolution: int = 224,
    width_mult: float = 1.0,
    checkpoint: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> SearchSpace:
    """Build the space around ``model_name`` (created with random weights: nothing is downloaded).

    ``model_kwargs`` go to ``timm.create_model`` (a model of custom widths); ``options`` to the family's
    converter (``reorder``, and ratios of the model's sizes such as ``width_ratios``).
    """
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - timm is a dependency
        raise TimmModelError("timm is not installed") from exc
    if checkpoint is not None and width_mult != 1.0:
        raise TimmModelError(
            "a timm checkpoint initialises the model's own widths: use --width-mult=1.0 with it (got"
            f" {width_mult})"
        )
    if model_name not in timm.list_models():
        raise TimmModelError(f"timm has no model {model_name!r} (see `timm.list_models('mobilenetv3*')`)")
    kwargs = dict(model_kwargs or {})
    model = _create(timm, model_name, num_classes, kwargs, resolution)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise TimmModelError(f"timm checkpoint {checkpoint} does not exist")
    common: dict[str, Any] = dict(
        model_name=model_name,
        num_classes=num_classes,
        in_channels=in_channels,
        resolution=resolution,
        width_mult=width_mult,
        checkpoint=checkpoint,
        model_kwargs=kwargs,
    )
    families = timm.models
    if isinstance(model, families.mobilenetv3.MobileNetV3):
        return _mobilenetv3_space(model, **common, **options)
    if isinstance(model, families.efficientnet.EfficientNet):
        from search_spaces.timm_efficientnet import describe_timm_mbconv, mbconv_space

        return mbconv_space("timm", describe_timm_mbconv(model, model_name), **common, **options)
    if isinstance(model, families.resnet.ResNet):
        from search_spaces.timm_resnet import resnet_space

        return resnet_space("timm", model, **common, **options)
    if isinstance(model, families.vision_transformer.VisionTransformer):
        from search_spaces.timm_vit import vit_space

        return vit_space(model, **common, **options)
    raise TimmModelError(
        f"timm model {model_name!r} is a {type(model).__module__}.{type(model).__name__}; the converter maps"
        " MobileNetV3, EfficientNet / MobileNetV2, ResNet and VisionTransformer models"
    )


def _create(timm: Any, name: str, num_classes: int, kwargs: dict[str, Any], resolution: int) -> nn.Module:
    """``timm.create_model`` with random weights; a ViT is created at the data's resolution."""
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
        if isinstance(model, timm.models.vision_transformer.VisionTransformer) and "img_size" not in kwargs:
            kwargs["img_size"] = resolution  # its position embeddings are sized for the images it sees
            model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise TimmModelError(f"timm model {name!r} with model_kwargs={kwargs}: {exc}") from None
    return model


def _mobilenetv3_space(
    model: nn.Module,
    model_name: str,
    num_classes: int,
    in_channels: int,
    resolution: int,
    width_mult: float,
    checkpoint: str | None,
    model_kwargs: dict[str, Any],
    reorder: bool = True,
) -> MBV3Space:
    """A MobileNetV3: the ``mbv3`` space around its own blocks (``timm:mobilenetv3_*``)."""
    d = describe_timm_model(model, model_name)
    if d["stem_act"] != "hswish":
        raise TimmModelError(
            f"timm model {model_name!r}: its stem uses {d['stem_act']}; the supernet's stem is hard-swish"
            " (MobileNetV3)"
        )
    if d["first_channels"] != d["stem_channels"]:
        raise TimmModelError(
            f"timm model {model_name!r}: first block changes width {d['stem_channels']} ->"
            f" {d['first_channels']}, which the supernet's fixed first block does not"
        )
    stage_defs, kernels, expands, depths = [], {3, 5, 7}, set(), []
    for rows in d["stages"]:
        acts, ses = {r["act"] for r in rows}, {r["se"] for r in rows}
        if len(acts) > 1 or len(ses) > 1 or any(r["stride"] != 1 for r in rows[1:]):
            raise TimmModelError(
                f"timm model {model_name!r}: a stage mixes activations, SE use or strides after its first"
                " block"
            )
        stage_defs.append((rows[0]["out"], rows[0]["stride"], acts.pop(), ses.pop()))
        kernels |= {r["kernel"] for r in rows}
        expands |= {r["expand"] for r in rows}
        depths.append(len(rows))
    top = max(expands)
    expands |= {e for e in (3, 4, 6) if e <= top}
    space = _TimmMBV3Space(
        num_classes=num_classes,
        in_channels=in_channels,
        resolution=resolution,
        width_mult=width_mult,
        stages=tuple(stage_defs),
        depths=tuple(range(min(depths), max(depths) + 1)),
        kernels=tuple(sorted(kernels)),
        expands=tuple(sorted(expands)),
        stem_channels=d["stem_channels"],
        head_channels=d["head_channels"],
        feature_channels=d["feature_channels"],
        stem_stride=d["stem_stride"],
        name=f"timm:{model_name}",
    )
    values: dict[str, Any] = {}
    for i, rows in enumerate(d["stages"]):
        values[f"s{i}.depth"] = len(rows)
        for j in range(space.max_depth):
            r = rows[j] if j < len(rows) else None
            values[f"s{i}.b{j}.kernel"] = r["kernel"] if r else space.cfg.kernels[0]
            values[f"s{i}.b{j}.expand"] = r["expand"] if r else space.cfg.expands[0]
    space.timm_arch = space.arch(values)
    space.model_kwargs = dict(model_kwargs)
    space.checkpoint, space.reorder = checkpoint, bool(reorder)
    return space


class _TimmMBV3Space(MBV3Space):
    timm_arch: Arch
    model_kwargs: dict[str, Any]
    checkpoint: str | None = None
    reorder: bool = True

    def reference_arch(self) -> Arch:
        """The timm model's own architecture: a ``"60%"`` budget is 60% of what the model costs."""
        return self.timm_arch

    def build_supernet(self) -> MBSupernet:
        net = super().build_supernet()
        if self.checkpoint is not None:
            load_timm_checkpoint(net, self, read_checkpoint(self.checkpoint))
            if self.reorder:
                reorder_by_importance(net, self.to_spec(self.timm_arch))
        return net


def _timm_to_supernet_names(space: MBV3Space, state: dict[str, torch.Tensor]) -> dict[str, str]:
    """timm state-dict name -> supernet name, for the blocks of the model's own architecture."""
    block = {
        "conv_pw": "expand.conv",
        "bn1": "expand.bn",
        "conv_dw": "dw.conv",
        "bn2": "dw.bn",
        "se.conv_reduce": "se.reduce",
        "se.conv_expand": "se.expand",
        "conv_pwl": "project.conv",
        "bn3": "project.bn",
    }
    first = {"conv_dw": "dw.conv", "bn1": "dw.bn", "conv_pw": "project.conv", "bn2": "project.bn"}
    n_stages = space.n_stages
    out = {}
    for name in state:
        parts = name.split(".")
        if parts[0] == "conv_stem":
            out[name] = "stem.conv." + parts[-1]
        elif parts[0] == "bn1":
            out[name] = "stem.bn." + parts[-1]
        elif parts[0] == "conv_head":
            out[name] = "feature_mix." + parts[-1]
        elif parts[0] == "classifier":
            out[name] = name
        elif parts[0] == "blocks":
            s, j, rest = int(parts[1]), int(parts[2]), ".".join(parts[3:])
            module, leaf = rest.rsplit(".", 1)
            if s == 0:
                out[name] = f"first.{first[module]}.{leaf}"
            elif s == n_stages + 1:
                out[name] = {"conv": "head_expand.conv", "bn1": "head_expand.bn"}[module] + "." + leaf
            else:
                out[name] = f"stages.{s - 1}.{j}.{block[module]}.{leaf}"
    return out


@torch.no_grad()
def load_timm_checkpoint(net: MBSupernet, space: MBV3Space, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Write a timm state dict into the supernet at the model's own architecture; returns what was skipped.

    A 3-channel stem is summed over its input channels for 1-channel data (as
    timm's ``adapt_input_conv`` does); a classifier of another class count is
    left at its initialisation.
    """
    target = net.state_dict()
    skipped = []
    for src, dst in _timm_to_supernet_names(space, state).items():
        t = state[src]
        if dst not in target:
            raise KeyError(f"checkpoint tensor {src!r} maps to {dst!r}, which the supernet does not have")
        s = target[dst]
        if dst == "stem.conv.weight" and t.shape[1] != s.shape[1]:
            if s.shape[1] != 1:
                raise ValueError(f"checkpoint stem has {t.shape[1]} input channels, the data {s.shape[1]}")
            t = t.sum(dim=1, keepdim=True)
        if dst.startswith("classifier.") and t.shape != s.shape:
            skipped.append(src)
            continue
        if t.dim() == 0:
            s.copy_(t)
        else:
            slice_like(s, t.shape).copy_(t)
    return {"skipped": skipped}


__all__ = ["TimmModelError", "describe_timm_model", "load_timm_checkpoint", "timm_space"]
