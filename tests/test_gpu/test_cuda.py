"""What only a CUDA device can show: mixed-precision training, extraction parity, BN recalibration and
latency calibration on the GPU.

Skipped where no CUDA device is visible; ``scripts/gpu_check.sh`` runs them on a GPU machine and fails
if they were skipped there. Every test is small (the ``tiny`` space, 16x16 digits): seconds on a GPU.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from nas.cli import main
from nas.cost.profile import DeviceProfile
from nas.evaluation import evaluate_arch
from nas.run.context import open_run
from nas.training.checkpoint import checkpoint_path, load_supernet
from nas.training.trainer import train_supernet
from search_spaces import create_space

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device: scripts/gpu_check.sh runs these on a GPU machine",
)

DEVICE = "cuda"
CHANCE = 0.1  # digits: 10 balanced classes
# Small and quick, as tests/test_nas/training/test_trainer.py's TINY, with enough images to learn something.
TINY = ["space.name=tiny", "data.resolution=16", "trackers=jsonl", "data.train_limit=1024"]


@pytest.fixture
def exact_float32() -> Iterator[None]:
    """TF32 off while a test compares float32 results: parity is then float rounding, not TF32's 10-bit
    mantissa."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _nas(*argv: str) -> dict[str, Any]:
    """Run one `nas` command in this process; its one-line ``--json`` summary."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--json", "--quiet"]) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.mark.parametrize(
    "settings",
    [["--train.amp=fp16"], ["--train.amp=bf16", "--train.channels_last=true"]],
    ids=["fp16", "bf16-channels-last"],
)
def test_nas_train_on_cuda_with_amp_is_finite_and_above_chance(tmp_path: Path, settings: list[str]) -> None:
    """`nas train` on the GPU under autocast: a finite loss, both end subnetworks well above chance, and the
    checkpoint shows the precision options really were in force (fp16's loss scaler, channels-last
    weights) on CUDA tensors."""
    run_dir = tmp_path / "run"
    summary = _nas(
        "train", "--run-dir", str(run_dir), *(f"--{s}" for s in TINY), "--epochs=3", f"--device={DEVICE}",
        *settings,
    )  # fmt: skip
    metrics = summary["train"]
    assert math.isfinite(metrics["train_loss"]) and metrics["epoch"] == 3
    assert metrics["val_acc_largest"] > 3 * CHANCE, metrics
    assert metrics["val_acc_smallest"] > 3 * CHANCE, metrics
    state = torch.load(checkpoint_path(run_dir), weights_only=False)
    weights = [t for t in state["model"].values() if t.is_floating_point()]
    assert weights and all(t.device.type == DEVICE for t in weights)
    if "--train.amp=fp16" in settings:
        assert state["scaler"].get("scale", 0) > 0, "fp16 trained without its gradient scaler"
    if "--train.channels_last=true" in settings:
        convs = [t for t in weights if t.dim() == 4 and t.shape[-1] > 1]
        assert convs and all(t.is_contiguous(memory_format=torch.channels_last) for t in convs)


def _randomise_bn(net: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters, as after training."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


@pytest.mark.parametrize("space_name", ["tiny", "mbv3"])
def test_subnet_in_cuda_supernet_equals_its_extracted_network(space_name: str, exact_float32: None) -> None:
    """The supernet on the GPU, restricted to an architecture, gives the logits of that architecture's
    extracted standalone network, on the GPU and back on the CPU (what `nas export` writes)."""
    kwargs = {"width_mult": 0.35} if space_name == "mbv3" else {}
    space = create_space(space_name, num_classes=7, in_channels=3, **kwargs)
    torch.manual_seed(0)
    net = space.build_supernet()
    with torch.no_grad():
        _randomise_bn(net, torch.Generator().manual_seed(1))
    net = net.to(DEVICE).eval()
    x = torch.randn(4, *space.input_shape, generator=torch.Generator().manual_seed(2))
    rng = np.random.default_rng(0)
    for arch in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(4))]:
        with torch.no_grad(), net.active(space.to_spec(arch)):
            y_super = net(x.to(DEVICE))
            static = net.extract().eval()
            y_cpu = static(x)
            y_cuda = static.to(DEVICE)(x.to(DEVICE))
        scale = y_super.abs().max().item()
        assert scale > 0, arch.id
        assert (y_super - y_cuda).abs().max().item() <= 1e-5 * max(1.0, scale), arch.id
        assert (y_super.cpu() - y_cpu).abs().max().item() <= 1e-4 * max(1.0, scale), arch.id


def _bn_stats(net: nn.Module) -> list[torch.Tensor]:
    return [
        b.detach().cpu().double()
        for m in net.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for b in (m.running_mean, m.running_var)
    ]


def test_bn_recalibration_and_evaluation_on_cuda_match_cpu(tmp_path: Path) -> None:
    """A supernet trained on the GPU, evaluated per architecture (BN recalibration + accuracy) on the GPU and
    on the CPU: the same recalibrated statistics and the same accuracy, up to the rounding of a few
    borderline images. In the precision `nas search` runs in on a GPU: cuDNN's TF32 convolutions (torch's
    default) round to about 1e-3, hence the statistics' tolerance; a wrong or stale recalibration is off by
    far more."""
    overrides = [*TINY, "train.epochs=2", "train.bn_recal_batches=4"]

    def run(name: str, device: str) -> Any:
        return open_run(
            tmp_path / name, overrides=[*overrides, f"device={device}"], progress=False, quiet=True
        )

    with run("gpu", DEVICE) as g, run("cpu", "cpu") as c:
        train_supernet(g)
        gpu_net, cpu_net = load_supernet(g), load_supernet(g).to("cpu")
        assert next(gpu_net.parameters()).device.type == DEVICE
        rng = np.random.default_rng(0)
        archs = [g.space.largest(), g.space.smallest(), *(g.space.sample(rng) for _ in range(2))]
        n_val = len(c.loader("val").dataset)
        for arch in archs:
            acc_gpu, acc_cpu = evaluate_arch(g, gpu_net, arch), evaluate_arch(c, cpu_net, arch)
            assert acc_gpu > 2 * CHANCE, (arch.id, acc_gpu)  # trained: the comparison means something
            assert abs(acc_gpu - acc_cpu) <= max(3 / n_val, 0.01), (arch.id, acc_gpu, acc_cpu)
            for a, b in zip(_bn_stats(gpu_net), _bn_stats(cpu_net)):
                assert torch.allclose(a, b, rtol=1e-2, atol=1e-3), arch.id


def test_latency_calibrate_on_cuda_ranks_held_out_networks(tmp_path: Path) -> None:
    """`nas latency calibrate --device cuda` times networks on the GPU and saves a profile whose held-out
    Kendall tau is positive: the cost model ranks GPU latency better than chance."""
    profile_path = tmp_path / "cuda_profile.json"
    summary = _nas(
        "latency", "calibrate", "--space=tiny", "--device", DEVICE, "--n", "32", "--batch", "32",
        "--profile", str(profile_path),
    )  # fmt: skip
    assert summary["device"].startswith(DEVICE) and Path(summary["profile"]) == profile_path
    meta = DeviceProfile.load(profile_path).meta
    fit = meta["fit"]
    assert meta["measured_on"] == torch.cuda.get_device_name(0)
    assert fit["evaluated_on"] == "holdout" and fit["n_holdout"] >= 6
    assert fit["kendall_tau"] > 0, fit
