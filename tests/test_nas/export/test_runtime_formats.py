"""On-device export formats: ExecuTorch (.pte, XNNPACK), LiteRT (.tflite) and the ONNX file in OpenVINO, each
run in its own runtime on the validation batch; and the export's latency measured in another runtime."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

import numpy as np
import pytest
import torch

from nas.cli import main
from nas.cost.runtimes import get_runtime
from nas.export.formats import EXPORT_FORMATS, format_names, load_subnet, resolve_formats
from nas.run.config import ConfigError
from search_spaces import create_space

FAST = [
    "--space=tiny",
    "--data.resolution=16",
    "--trackers=jsonl",
    "--search.calibration_archs=8",
    "--export.latency_repeats=5",
    "--train.bn_recal_batches=2",
]
ON_DEVICE = ("openvino", "executorch", "litert")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One fast `nas run` (torch format), then `nas export` of the on-device formats that install here."""
    from nas.data import load_data

    run_dir = tmp_path_factory.mktemp("runtime_formats")
    with contextlib.redirect_stdout(io.StringIO()):
        run = ["run", "--run-dir", str(run_dir), "--quiet", "--epochs=1", "--trials=3", "--format=torch"]
        assert main([*run, *FAST]) == 0  # the on-device formats are exported below
    installed = [f for f in ON_DEVICE if EXPORT_FORMATS.get(f).missing() is None]
    if installed:
        formats = ",".join(["torch", *installed])  # torch: load_subnet gives the reference logits
        args = ["export", "--run-dir", str(run_dir), "--quiet", f"--format={formats}", *FAST]
        assert main([*args, "--runtime=onnxruntime"]) == 0
    data = load_data("digits", resolution=16, seed=0)
    x = torch.stack([data.val[i][0] for i in range(64)])
    return run_dir, installed, x


def _needs(run, fmt):
    if fmt not in run[1]:
        pytest.skip(
            f"package not installed: {EXPORT_FORMATS.get(fmt).missing()} (the runtimes extra and"
            " .ci/litert-torch.txt, as .ci/run installs them)"
        )


def _reference(run_dir, x):
    with torch.no_grad():
        return load_subnet(run_dir).eval()(x).numpy()


@pytest.mark.parametrize("fmt", ON_DEVICE)
def test_format_is_verified_in_its_own_runtime(run, fmt):
    _needs(run, fmt)
    run_dir, _, _ = run
    res = json.loads((run_dir / "export" / "meta.json").read_text())["formats"][fmt]
    assert res["ok"] is True and "error" not in res, res
    assert 0 <= res["max_abs_diff"] <= res["tolerance"] <= 1e-3
    assert res["checked_with"].startswith(f"{fmt} {get_runtime(fmt).version()}")
    assert res["latency_ms"] > 0 and res["size_bytes"] == (run_dir / "export" / res["file"]).stat().st_size


def test_executorch_file_runs_in_executorch_within_1e4(run):
    _needs(run, "executorch")
    from executorch.runtime import Runtime

    run_dir, _, x = run
    data = (run_dir / "export" / "model.pte").read_bytes()
    method = Runtime.get().load_program(data).load_method("forward")
    # the file has batch 1, as deployed: one sample at a time
    out = np.concatenate([method.execute([x[i : i + 1].clone()])[0].numpy() for i in range(len(x))])
    assert out.shape == (64, 10)
    assert np.abs(out - _reference(run_dir, x)).max() <= 1e-4


def test_litert_file_runs_in_litert_within_1e4(run):
    _needs(run, "litert")
    from ai_edge_litert.interpreter import Interpreter

    run_dir, _, x = run
    interpreter = Interpreter(model_path=str(run_dir / "export" / "model.tflite"), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    logits = []
    for i in range(len(x)):
        interpreter.set_tensor(inp["index"], x[i : i + 1].numpy())
        interpreter.invoke()
        logits.append(interpreter.get_tensor(out["index"]))
    assert np.abs(np.concatenate(logits) - _reference(run_dir, x)).max() <= 1e-4


def test_onnx_file_runs_in_openvino_within_1e4(run):
    _needs(run, "openvino")
    import openvino as ov

    run_dir, _, x = run
    core = ov.Core()
    compiled = core.compile_model(
        str(run_dir / "export" / "model.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    out = compiled([x.numpy()])[compiled.output(0)]
    assert np.abs(out - _reference(run_dir, x)).max() <= 1e-4


def test_measured_latency_is_timed_in_the_runtime_asked_for(run):
    if not run[1]:
        pytest.skip("package not installed: no on-device runtime (nothing was re-exported)")
    run_dir, _, _ = run
    meta = json.loads((run_dir / "export" / "meta.json").read_text())
    import onnxruntime

    setup = meta["latency_setup"]
    assert setup["runtime"] == "onnxruntime" and setup["runtime_version"] == onnxruntime.__version__
    # the run's profile was measured in torch: its prediction is not compared with an onnxruntime timing
    assert setup["profile_runtime"] == "torch" and meta["latency_error_pct"] is None
    assert meta["latency_measured_ms"] > 0


def test_on_device_formats_are_written_only_when_asked_for():
    space = create_space("tiny")
    defaults = resolve_formats(None, space)
    assert not set(ON_DEVICE) & set(defaults) and set(ON_DEVICE) <= set(format_names())
    installed = [f for f in ON_DEVICE if EXPORT_FORMATS.get(f).missing() is None]
    assert set(installed) <= set(resolve_formats(["all"], space))


def test_a_format_whose_runtime_is_missing_is_refused_before_any_work(monkeypatch):
    import nas.export.formats as formats

    litert = EXPORT_FORMATS.get("litert")
    gone = dataclasses.replace(litert, missing=lambda: "runtime 'litert' needs ai-edge-litert (simulated)")
    monkeypatch.setitem(formats.EXPORT_FORMATS._members, "litert", gone)
    with pytest.raises(ConfigError, match="export format 'litert' cannot be written here: .*simulated"):
        resolve_formats(["onnx", "litert"], create_space("tiny"))
    assert "litert" not in resolve_formats(["all"], create_space("tiny"))
