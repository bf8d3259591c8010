"""Spaces converted from timm and torchvision models: the original is one architecture and a checkpoint
reproduces it exactly, channels are sorted without changing the function, choices never exceed the model, and
what cannot be mapped is refused in one line naming the module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import torchvision

from search_spaces import create_space
from search_spaces.converted import ConversionError, ConvertedSpace
from supernets.importance import channel_groups

# One small randomly initialised model per family (model_kwargs shrink the ones that allow it).
MODELS: dict[str, dict[str, Any]] = {
    "timm:resnet18d": {"stem_width": 8, "channels": [16, 32, 64, 128]},  # basic, deep stem tied to stage 0
    "timm:resnet26": {"channels": [8, 16, 32, 64]},  # bottleneck, 7x7 stem, projecting first blocks
    "torchvision:resnet18": {},
    "timm:efficientnet_b0": {},
    "timm:mobilenetv2_050": {},
    "torchvision:mobilenet_v3_small": {"width_mult": 0.5},
    "timm:vit_tiny_patch16_224": {"depth": 3, "patch_size": 8},
}
RES = 32


def original_model(name: str) -> torch.nn.Module:
    """The family's own model (random weights), with batch-norm statistics as after training."""
    library, model_name = name.split(":")
    kwargs = dict(MODELS[name])
    torch.manual_seed(0)
    if library == "timm":
        if model_name.startswith("vit"):
            kwargs["img_size"] = RES
        model = timm.create_model(model_name, pretrained=False, num_classes=10, **kwargs)
    else:
        model = torchvision.models.get_model(model_name, weights=None, num_classes=10, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
        if isinstance(model, torchvision.models.MobileNetV3):  # its classifier starts near zero
            for m in model.classifier:
                if isinstance(m, torch.nn.Linear):
                    m.weight.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="module", params=list(MODELS))
def converted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(name, the original model, its checkpoint file)."""
    name = request.param
    model = original_model(name)
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    torch.save(model.state_dict(), path)
    return name, model, path


def space_of(name: str, in_channels: int = 3, **options: Any) -> ConvertedSpace:
    opts = {"model_kwargs": MODELS[name], **options}
    return create_space(name, num_classes=10, in_channels=in_channels, resolution=RES, **opts)


@pytest.mark.parametrize("in_channels", [3, 1])
def test_a_checkpoint_makes_the_original_architecture_reproduce_the_model(converted, in_channels):
    name, model, path = converted
    space = space_of(name, in_channels, checkpoint=str(path))
    assert space.reference_arch() == space.original_arch == space.largest()  # never larger than the model
    net = space.build_supernet().eval()
    x = torch.randn(2, in_channels, RES, RES, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), net.active(space.to_spec(space.original_arch)):
        want = model(x if in_channels == 3 else x.repeat(1, 3, 1, 1))  # 1 channel: the RGB stem is summed
        scale = max(1.0, want.abs().max().item())
        assert (net(x) - want).abs().max().item() <= 1e-4 * scale
        assert (net.extract().eval()(x) - want).abs().max().item() <= 1e-4 * scale


def test_importance_ordering_keeps_the_function_and_sorts_every_group(converted):
    name, _, path = converted
    plain = space_of(name, 1, checkpoint=str(path), reorder=False).build_supernet().eval()
    space = space_of(name, 1, checkpoint=str(path))
    ordered = space.build_supernet().eval()
    x = torch.randn(3, 1, RES, RES, generator=torch.Generator().manual_seed(4))
    original, small = space.to_spec(space.original_arch), space.to_spec(space.smallest())
    with torch.no_grad():
        with plain.active(original), ordered.active(original):
            a, b = plain(x), ordered(x)
            assert (a - b).abs().max().item() <= 1e-5 * max(1.0, a.abs().max().item())
        with plain.active(small), ordered.active(small):
            assert not torch.allclose(plain(x), ordered(x))  # a narrow subnetwork now keeps other channels
    groups = channel_groups(ordered, original)
    assert groups
    for g in groups:  # the first k channels of every group are its k most important
        score = g.importance()[: g.keep]
        assert bool((score[:-1] >= score[1:] - 1e-6 * score.max()).all()), g.size


def test_choices_come_from_the_model_and_ratios_narrow_or_widen_them():
    r = space_of("timm:resnet26")
    assert r.choices["s3.width"] == (128, 192, 256) and r.choices["s3.mid"] == (32, 48, 64)
    assert r.choices["s0.depth"] == (1, 2)
    wide = space_of("timm:resnet26", width_ratios=[0.25, 0.5, 0.75, 1.0], mid_ratios=[1.0], depth_drop=0)
    assert wide.choices["s3.width"] == (64, 128, 192, 256) and wide.choices["s3.mid"] == (64,)
    assert wide.choices["s0.depth"] == (2,)
    e = space_of("timm:efficientnet_b0", expand_ratios=[0.5, 1.0])
    assert e.choices["s1.b0.kernel"] == (3, 5) and e.choices["s0.b0.kernel"] == (
        3,
    )  # never above the model's
    assert e.choices["s0.b0.expand"] == (3.0, 6.0)
    v = space_of("timm:vit_tiny_patch16_224")
    assert v.choices["embed_dim"] == (96, 144, 192) and v.choices["l0.heads"] == (2, 3)
    assert v.choices["l0.mlp_ratio"] == (2.0, 3.0, 4.0) and v.choices["depth"] == (1, 2, 3)
    with pytest.raises(
        ConversionError, match=r"width_ratios=\[1.5\] is not allowed.*never larger than its model"
    ):
        space_of("timm:resnet26", width_ratios=[1.5])


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("timm:convnext_atto", {}, "'convnext_atto' is a timm.models.convnext.ConvNeXt; the converter maps"),
        ("timm:seresnet18", {}, "module 'layer1.0.se' is a SEModule attention block: not supported"),
        ("timm:tf_efficientnet_b0", {}, "module 'conv_stem' is a Conv2dSame; only plain Conv2d"),
        ("timm:efficientnet_es", {}, "module 'blocks.0.0' is a EdgeResidual; the converter maps"),
        (
            "timm:vit_tiny_patch16_224",
            {"init_values": 1e-5},
            "module 'blocks.0.ls1' (LayerScale, layer scale)",
        ),
        ("torchvision:resnext50_32x4d", {}, "module 'layer1.0': its convolutions are not a plain bottleneck"),
        ("torchvision:vgg11", {}, "'vgg11' is a torchvision.models.vgg.VGG; the converter maps"),
    ],
)
def test_what_cannot_be_mapped_is_refused_naming_the_module(name, kwargs, message):
    with pytest.raises(ConversionError) as info:
        create_space(name, num_classes=10, resolution=RES, model_kwargs=kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_checkpoint_of_another_model_is_refused_in_one_line(tmp_path: Path):
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("resnet18", num_classes=10).state_dict(), path)
    space = space_of("timm:resnet26", checkpoint=str(path))
    with pytest.raises(
        ConversionError, match=r"checkpoint tensor .* has shape .*is it a checkpoint of this model"
    ):
        space.build_supernet()
    with pytest.raises(ConversionError, match="does not exist"):
        space_of("timm:resnet26", checkpoint=str(tmp_path / "missing.pth"))
