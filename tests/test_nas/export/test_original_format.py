"""The ``original`` export format: a network found in a converted space goes back to its timm or torchvision
family (the library's own model class, loadable with that library and torch alone), and every family converts,
trains, searches and exports from the command line."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from nas.cli import main
from nas.export.formats import ExportJob, resolve_formats, write_formats
from nas.export.original_format import loader_functions, original_model_spec, original_state_dict
from nas.run.config import ConfigError
from search_spaces import create_space

SMALL = {  # one small randomly initialised model per family
    "timm:resnet18d": {"stem_width": 8, "channels": [16, 32, 64, 128]},
    "timm:resnet26": {"channels": [8, 16, 32, 64]},
    "torchvision:resnet18": {},
    "timm:efficientnet_b0": {},
    "timm:mobilenetv2_050": {},
    "torchvision:mobilenet_v3_small": {"width_mult": 0.5},
    "timm:vit_tiny_patch16_224": {"depth": 3, "patch_size": 8},
}
RES = 32


def _static(space, arch, seed: int = 0) -> torch.nn.Module:
    """``arch`` extracted from a fresh supernet, with batch-norm statistics as after training."""
    torch.manual_seed(seed)
    net = space.build_supernet()
    net.train()
    with torch.no_grad(), net.active(space.to_spec(arch)):
        for _ in range(2):
            net(torch.randn(4, *space.input_shape))
        return net.extract().eval()


@pytest.mark.parametrize("name", list(SMALL))
def test_every_family_goes_back_to_its_own_model_class(name):
    """Built as the shipped loader builds it, the family's model computes what the found network does."""
    space = create_space(name, num_classes=6, in_channels=1, resolution=RES, model_kwargs=SMALL[name])
    build = loader_functions()
    rng = np.random.default_rng(0)
    for arch in (space.smallest(), space.sample(rng), space.original_arch):
        static = _static(space, arch)
        spec = original_model_spec(space, space.to_spec(arch))
        assert spec["is_original"] == (arch == space.original_arch)
        state = original_state_dict(space, static, spec)
        model = build["resize"](build["skeleton"](spec), state)
        model.load_state_dict(state)  # strict: every tensor has its place under the library's names
        assert type(model).__module__.split(".")[0] == name.split(":")[0]
        x = torch.randn(3, 1, RES, RES, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert (model.eval()(x) - static(x)).abs().max().item() <= 1e-5


def test_the_original_architecture_is_the_named_model_itself():
    """No block dropped, no layer resized: timm.create_model(name) loads the exported weights as they are."""
    name = "timm:resnet26"
    space = create_space(name, num_classes=6, in_channels=1, resolution=RES, model_kwargs=SMALL[name])
    static = _static(space, space.original_arch)
    spec = original_model_spec(space, space.to_spec(space.original_arch))
    assert spec["keep"] == {} and spec["kwargs"] == {"num_classes": 6, "in_chans": 1, **SMALL[name]}
    model = timm.create_model("resnet26", pretrained=False, **spec["kwargs"]).eval()
    model.load_state_dict(original_state_dict(space, static, spec))
    x = torch.randn(2, 1, RES, RES)
    with torch.no_grad():
        assert (model(x) - static(x)).abs().max().item() <= 1e-5


def test_the_format_is_checked_in_a_separate_interpreter(tmp_path: Path):
    name = "torchvision:mobilenet_v3_small"
    space = create_space(name, num_classes=6, in_channels=1, resolution=RES, model_kwargs=SMALL[name])
    arch = space.sample(np.random.default_rng(3))
    static = _static(space, arch)
    x = torch.randn(8, 1, RES, RES)
    with torch.no_grad():
        logits = static(x)
    job = ExportJob(static, tmp_path, space, space.to_spec(arch), x, logits.argmax(1), logits, {})
    res = write_formats(job, ["original"])["original"]
    assert res["ok"] and res["separate_process"] and res["max_abs_diff"] <= 1e-5, res
    assert res["model_class"] == "torchvision.models.mobilenetv3.MobileNetV3"
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from load_original import build_original_model;"
        f" m = build_original_model({str(tmp_path)!r}); print(type(m).__module__,"
        " sorted({k.split('.')[0] for k in sys.modules} & {'nas', 'supernets', 'search_spaces'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["torchvision.models.mobilenetv3", "[]"]


def test_the_format_applies_to_converted_spaces_only():
    assert "original" in resolve_formats(None, create_space("timm:resnet26", resolution=RES))
    assert "original" not in resolve_formats(None, create_space("tiny"))
    with pytest.raises(ConfigError, match="'original' does not apply to space 'tiny'.*not converted"):
        resolve_formats(["original"], create_space("tiny"))


FAMILIES = [
    "timm:resnet18d",
    "timm:mobilenetv2_050",
    "timm:vit_tiny_patch16_224",
    "torchvision:mobilenet_v3_small",
]
FAST = [
    f"--data.resolution={RES}",
    "--train-limit=64",
    "--data.val_limit=32",
    "--epochs=1",
    "--trials=2",
    "--search.devices=[laptop-cpu]",
    "--train.bn_recal_batches=1",
    "--export.latency_repeats=2",
    "--format=torch,original",
    "--trackers=jsonl",
    "--width-mult=1.0",
    "--quiet",
    "--json",
]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_trains_searches_and_exports_from_its_checkpoint(name, tmp_path: Path):
    library, model_name = name.split(":")
    kwargs = dict(SMALL[name])
    if library == "timm":
        model = timm.create_model(
            model_name, num_classes=10, **kwargs, **({"img_size": RES} if "vit" in name else {})
        )
    else:
        import torchvision

        model = torchvision.models.get_model(model_name, weights=None, num_classes=10, **kwargs)
    ckpt = tmp_path / "model.pth"
    torch.save(model.state_dict(), ckpt)
    run_dir = tmp_path / "run"
    options = json.dumps({"checkpoint": str(ckpt), "model_kwargs": kwargs})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert (
            main(["run", "--run-dir", str(run_dir), f"--space={name}", f"--space.options={options}", *FAST])
            == 0
        )
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["formats"] == {"torch": True, "original": True}
    meta = json.loads((run_dir / "export" / "meta.json").read_text())
    assert meta["formats"]["original"]["model_class"].startswith(library + ".")
    assert "distill: true" in (run_dir / "config.yaml").read_text()  # the original teaches by default


def test_an_unsupported_model_is_one_line_and_nothing_is_written(tmp_path: Path, capsys):
    run_dir = tmp_path / "never"
    assert main(["train", "--run-dir", str(run_dir), "--space=timm:convnext_atto", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "timm.models.convnext.ConvNeXt" in err and "Traceback" not in err
    assert not run_dir.exists()
