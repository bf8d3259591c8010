"""``torchvision:<model>``: elastic spaces around torchvision's ResNets and MobileNetV3s.

A second prefix family for users of torchvision's model zoo. ``torchvision:resnet*``
(and ``wide_resnet*``) become the ResNet space of ``timm:resnet*`` (both libraries
lay a ResNet out alike); ``torchvision:mobilenet_v3_large`` / ``_small`` become the
MBConv space of ``timm:efficientnet_*``: per block kernel and expand ratio, per
stage depth, with torchvision's hard-sigmoid squeeze-excite sized on the
expanded width, its batch-norm eps (0.001) and its linear layer after pooling.
Models are created with ``weights=None``: nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from search_spaces.base import SearchSpace
from search_spaces.converted import ConversionError, Where
from search_spaces.registry import SPACES
from search_spaces.timm_efficientnet import act_name, check_conv, expand_of, mbconv_space
from search_spaces.timm_resnet import resnet_space
from supernets.blocks import make_divisible
from supernets.zoo_mbconv import SEConfig


def _conv_norm_act(
    m: Any, where: Where, k: int | None, depthwise: bool = False
) -> tuple[nn.Conv2d, str | None]:
    """torchvision's ``Conv2dNormActivation``: conv, batch norm, [activation]."""
    layers = list(m) if isinstance(m, nn.Sequential) else []
    if len(layers) not in (2, 3) or not isinstance(layers[1], nn.BatchNorm2d):
        raise ConversionError(f"{where} ({type(m).__name__}) is not a conv + batch norm [+ activation]")
    check_conv(layers[0], where / "0", k, depthwise)
    return layers[0], act_name(layers[2], where / "2") if len(layers) == 3 else None


def _tv_block(b: Any, where: Where) -> dict[str, Any]:
    if type(b).__name__ != "InvertedResidual":
        raise ConversionError(
            f"{where} is a {type(b).__name__}; the converter maps torchvision's InvertedResidual"
        )
    parts = list(b.block)
    first = parts[0][0] if isinstance(parts[0], nn.Sequential) and len(parts[0]) else None
    if not isinstance(first, nn.Conv2d):
        raise ConversionError(f"{where / 'block.0'} ({type(parts[0]).__name__}) is not a conv + batch norm")
    has_expand = (
        first.groups == 1
    )  # a pointwise expansion; the block starts with its depthwise conv otherwise
    c_in = first.in_channels
    if has_expand:
        pw, act = _conv_norm_act(parts.pop(0), where / "block.0", 1)
        mid = pw.out_channels
    else:
        mid, act = c_in, None
    offset = 1 if has_expand else 0
    dw, dw_act = _conv_norm_act(parts.pop(0), where / f"block.{offset}", None, depthwise=True)
    if act is not None and dw_act != act:
        raise ConversionError(f"{where}: expansion and depthwise convolution use different activations")
    se = None
    if type(parts[0]).__name__ == "SqueezeExcitation":
        s = parts.pop(0)
        se = SEConfig(
            "mid",
            act_name(s.activation, where / "se.activation"),
            act_name(s.scale_activation, where / "se.scale_activation"),
        )
        if s.fc1.out_channels != make_divisible(mid // 4):
            raise ConversionError(f"{where}: squeeze-excite of {s.fc1.out_channels} channels is not mid // 4")
    proj, proj_act = _conv_norm_act(parts.pop(0), where / "block (projection)", 1)
    if proj_act is not None or parts:
        raise ConversionError(f"{where}: the projection must be a linear 1x1 conv + batch norm")
    return {
        "in": c_in,
        "out": proj.out_channels,
        "mid": mid,
        "expand": expand_of(c_in, mid, where),
        "kernel": dw.kernel_size[0],
        "stride": dw.stride[0],
        "act": dw_act,
        "se": se,
        "residual": bool(b.use_res_connect),
        "where": where,
    }


def describe_tv_mobilenet_v3(model: nn.Module, name: str) -> dict[str, Any]:
    """torchvision MobileNetV3 in the MBConv space's terms: stem, first blocks, stages (by width), head."""
    where = Where(f"torchvision model {name!r}")
    feats = list(model.features)
    stem, stem_act = _conv_norm_act(feats[0], where / "features.0", 3)
    if stem.stride != (2, 2):
        raise ConversionError(f"{where / 'features.0'} has stride {stem.stride}; the converter maps 2")
    blocks = [_tv_block(b, where / f"features.{i}") for i, b in enumerate(feats[1:-1], start=1)]
    head, head_act = _conv_norm_act(feats[-1], where / f"features.{len(feats) - 1}", 1)
    cls = list(model.classifier)
    linears = [m for m in cls if isinstance(m, nn.Linear)]
    acts = [m for m in cls if not isinstance(m, (nn.Linear, nn.Dropout))]
    if len(linears) != 2 or len(acts) != 1:
        raise ConversionError(f"{where / 'classifier'} is not linear, activation, dropout, linear")
    first, stages, addresses, width = [], [], [], stem.out_channels
    for idx, r in enumerate(blocks, start=1):
        if not stages and r["out"] == stem.out_channels:
            first.append(r)
            continue
        if r["out"] != width or not stages:
            stages.append([])
            addresses.append([])
        stages[-1].append(r)
        addresses[-1].append(("features", idx))
        width = r["out"]
    eps = {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    if len(eps) != 1:
        raise ConversionError(
            f"torchvision model {name!r}: its batch norms use several eps values {sorted(eps)}"
        )
    return {
        "stem_channels": stem.out_channels,
        "stem_act": stem_act,
        "first": first,
        "stages": stages,
        "addresses": addresses,
        "sequences": {"features": len(feats)},
        "head_channels": head.out_channels,
        "head_act": head_act,
        "feature_channels": linears[0].out_features,
        "feature_act": act_name(acts[0], where / "classifier"),
        "bn_eps": eps.pop(),
    }


@SPACES.register_prefix("torchvision:", shown_as="torchvision:<model name>")
def torchvision_space(
    model_name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    resolution: int = 224,
    width_mult: float = 1.0,
    checkpoint: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> SearchSpace:
    """Build the space around torchvision's ``model_name`` (created with ``weights=None``)."""
    import torchvision

    if checkpoint is not None and width_mult != 1.0:
        raise ConversionError(
            "a checkpoint initialises the model's own widths: use --width-mult=1.0 with it (got"
            f" {width_mult})"
        )
    if model_name not in torchvision.models.list_models(module=torchvision.models):
        raise ConversionError(
            f"torchvision has no classification model {model_name!r} (see"
            " `torchvision.models.list_models(module=torchvision.models)`)"
        )
    kwargs = dict(model_kwargs or {})
    try:
        model = torchvision.models.get_model(model_name, weights=None, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"torchvision model {model_name!r} with model_kwargs={kwargs}: {exc}") from None
    common: dict[str, Any] = dict(
        model_name=model_name,
        num_classes=num_classes,
        in_channels=in_channels,
        resolution=resolution,
        width_mult=width_mult,
        checkpoint=checkpoint,
        model_kwargs=kwargs,
    )
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ConversionError(f"checkpoint {checkpoint} does not exist")
    if isinstance(model, torchvision.models.ResNet):
        return resnet_space("torchvision", model, **common, **options)
    if isinstance(model, torchvision.models.MobileNetV3):
        return mbconv_space("torchvision", describe_tv_mobilenet_v3(model, model_name), **common, **options)
    raise ConversionError(
        f"torchvision model {model_name!r} is a {type(model).__module__}.{type(model).__name__}; the"
        " converter maps torchvision's ResNet and MobileNetV3 models"
    )


__all__ = ["describe_tv_mobilenet_v3", "torchvision_space"]
