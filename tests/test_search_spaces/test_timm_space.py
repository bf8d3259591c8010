"""`timm:<model>` spaces: the timm model is a member of the space and a timm checkpoint reproduces it
exactly."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from nas.cli import main
from search_spaces import create_space
from search_spaces.timm_space import TimmModelError

MODEL = "mobilenetv3_large_100"


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model(MODEL, pretrained=False, num_classes=10).eval()
    with torch.no_grad():  # statistics as after training, so BN copying is really tested
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("timm") / f"{MODEL}.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_space_is_built_around_the_models_own_choices(timm_checkpoint):
    space = create_space(f"timm:{MODEL}", num_classes=10, resolution=32)
    assert (
        {3, 5} <= set(space.cfg.kernels)
        and {2.3, 2.5, 3, 4, 6} <= set(space.cfg.expands)
        and max(space.cfg.expands) == 6
    )
    assert [st.out_channels for st in space.cfg.stages] == [
        24,
        40,
        80,
        112,
        160,
    ]  # its own widths are the maximum
    arch = space.timm_arch
    assert [arch[f"s{i}.depth"] for i in range(space.n_stages)] == [2, 3, 4, 2, 3]
    assert arch["s3.b0.expand"] == 6 and arch["s2.b1.expand"] == 2.5 and arch["s1.b0.kernel"] == 5


def test_checkpoint_makes_the_models_architecture_reproduce_the_timm_model(timm_checkpoint):
    model, path = timm_checkpoint
    space = create_space(f"timm:{MODEL}", num_classes=10, resolution=32, checkpoint=str(path))
    net = space.build_supernet().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), net.active(space.to_spec(space.timm_arch)):
        want = model(x)
        assert (net(x) - want).abs().max().item() <= 1e-5
        assert (net.extract().eval()(x) - want).abs().max().item() <= 1e-5  # and so does the exported network


def test_one_channel_data_sums_the_rgb_stem(timm_checkpoint):
    model, path = timm_checkpoint
    space = create_space(f"timm:{MODEL}", num_classes=10, in_channels=1, resolution=32, checkpoint=str(path))
    net = space.build_supernet().eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad(), net.active(space.to_spec(space.timm_arch)):
        assert (net(x) - model(x.repeat(1, 3, 1, 1))).abs().max().item() <= 1e-4


def test_width_multiplier_scales_the_model_and_refuses_a_checkpoint(timm_checkpoint):
    _, path = timm_checkpoint
    half = create_space(f"timm:{MODEL}", resolution=32, width_mult=0.5)
    assert [st.out_channels for st in half.cfg.stages] == [16, 24, 40, 56, 80]
    with pytest.raises(TimmModelError, match="--width-mult=1.0"):
        create_space(f"timm:{MODEL}", resolution=32, width_mult=0.5, checkpoint=str(path))


def test_unsupported_and_unknown_models_are_named():
    with pytest.raises(TimmModelError, match="'convnext_atto' is a timm.models.convnext.ConvNeXt"):
        create_space("timm:convnext_atto")
    with pytest.raises(TimmModelError, match="no model 'mobilenetv9'"):
        create_space("timm:mobilenetv9")


def test_the_models_architecture_is_the_reference_and_reordering_keeps_it(timm_checkpoint):
    """A "60%" budget is a share of the timm model's own architecture; sorting channels keeps its outputs."""
    model, path = timm_checkpoint
    plain = create_space(f"timm:{MODEL}", resolution=32, checkpoint=str(path), reorder=False)
    space = create_space(f"timm:{MODEL}", resolution=32, checkpoint=str(path))
    assert space.reference_arch() == space.timm_arch != space.largest()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outs = {}
        for label, s in (("plain", plain), ("sorted", space)):
            net = s.build_supernet().eval()
            with net.active(s.to_spec(s.timm_arch)):
                outs[label] = net(x)
            with net.active(s.to_spec(s.smallest())):
                outs[label + "_small"] = net(x)
        assert (outs["sorted"] - model(x)).abs().max().item() <= 1e-5
        assert (outs["plain"] - outs["sorted"]).abs().max().item() <= 1e-5
        assert (outs["plain_small"] - outs["sorted_small"]).abs().max().item() > 1e-6  # other channels kept


def test_nas_train_on_a_timm_space_from_the_command_line(timm_checkpoint, tmp_path):
    _, path = timm_checkpoint
    run_dir = tmp_path / "timm"
    args = [
        "train",
        "--run-dir",
        str(run_dir),
        f"--space=timm:{MODEL}",
        f"--space.options={{checkpoint: {path}}}",
        "--width-mult=1.0",
        "--data.resolution=32",
        "--train-limit=128",
        "--data.val_limit=64",
        "--epochs=1",
        "--trackers=jsonl",
        "--quiet",
    ]
    assert main(args) == 0
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert any("val_acc_largest" in e for e in events)
