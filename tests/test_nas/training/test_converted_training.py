"""Training a converted space keeps what the original knew: with a checkpoint, distillation is on by default
and the original architecture is the teacher; budgets are shares of the original's cost."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nas.commands.profile import profile
from nas.run.context import resolve_config
from nas.training.plans import SupernetPlan
from search_spaces import create_space

SPACE = "--space=timm:resnet26"
OPTIONS = "--space.options={model_kwargs: {channels: [8, 16, 32, 64]}, checkpoint: model.pth}"


@pytest.mark.parametrize(
    "settings, distill",
    [
        ([SPACE], False),
        ([SPACE, OPTIONS], True),  # a checkpoint: the original teaches
        ([SPACE, OPTIONS, "--train.distill=false"], False),  # unless asked not to
        (["--space=tiny", "--train.distill=true"], True),
    ],
)
def test_distillation_defaults_to_on_exactly_when_a_checkpoint_is_given(settings, distill):
    assert resolve_config(None, None, settings).train.distill is distill


@pytest.mark.parametrize("name", ["timm:mobilenetv3_large_100", "timm:resnet26", "tiny"])
def test_the_teacher_is_the_reference_architecture(name):
    """The original model's architecture for a converted space (not the largest for a MobileNetV3), the
    largest otherwise."""
    space = create_space(name, resolution=32)
    cfg = resolve_config(None, None, [f"--space={name}"])
    plan = SupernetPlan(SimpleNamespace(cfg=cfg, space=space))  # type: ignore[arg-type]
    assert plan.teacher() == space.reference_arch()
    if name.startswith("timm:mobilenetv3"):
        assert plan.teacher() == space.timm_arch != space.largest()
    else:
        assert plan.teacher() == space.largest()


def test_a_share_budget_is_a_share_of_the_original_model():
    """``nas profile`` reports the original's metrics as the reference and resolves "60%" against them."""
    name = "timm:mobilenetv3_large_100"  # its space reaches beyond the model: original != largest
    settings = [f"--space={name}", "--data.resolution=32", "--search.devices=[laptop-cpu]", "--max-macs=60%"]
    report = profile(resolve_config(None, None, settings), None, samples=50)
    space = create_space(name, num_classes=10, in_channels=1, resolution=32, width_mult=0.5)
    assert report["reference_arch_id"] == space.timm_arch.id and not report["reference_is_largest"]
    macs = report["metrics"]["macs"]
    assert macs["smallest"] < macs["reference"] < macs["largest"]
    limit = 0.6 * macs["reference"]
    shown = f"{limit:.4g}" if limit < 1e5 else f"{limit:.3g}"
    assert report["constraints"][0]["constraint"] == f"macs <= 60% = {shown}"
