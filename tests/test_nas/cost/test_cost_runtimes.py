"""Latency in other inference runtimes: timing in each, profiles recording their runtime, and a profile of
another runtime refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas.cli import main
from nas.cost import CostModel, ProfileError, calibrate
from nas.cost.calibrate import measure_latencies_ms
from nas.cost.fit import fit_op_table, fitted_profile
from nas.cost.runtimes import RUNTIMES, get_runtime, runtime_names
from nas.cost.store import profile_for
from nas.run.context import build_space, resolve_config

SPACE = build_space(resolve_config(None, None, ["space.name=tiny", "data.resolution=16"]))
TINY = ["--space=tiny", "--data.resolution=16", "--quiet"]


def _needs(runtime: str) -> None:
    why = get_runtime(runtime).missing()
    if why:
        pytest.skip(
            f"package not installed: {why} (install it with .ci/run's two pip lines: the runtimes extra and"
            " .ci/litert-torch.txt)"
        )


def _profile(tmp_path, runtime: str, name: str = "cpu"):
    archs = [SPACE.smallest(), SPACE.largest(), *(SPACE.sample(np.random.default_rng(i)) for i in range(10))]
    y = 0.2 + 0.01 * SPACE.lower(SPACE.encode_batch(archs)).sum(axis=1)
    fit, _ = fit_op_table(SPACE, archs, y, cross_validate=False)
    return fitted_profile(SPACE, fit, name, {"runtime": runtime, "runtime_version": "9.9"}).save(
        tmp_path / f"{name}-{runtime}.json"
    )


def test_the_five_runtimes_are_registered_and_export_runtime_allows_exactly_them():
    from nas.run.config import INFERENCE_RUNTIMES

    assert runtime_names() == ["torch", "onnxruntime", "openvino", "executorch", "litert"]
    assert list(INFERENCE_RUNTIMES) == runtime_names()


@pytest.mark.parametrize("runtime", sorted(RUNTIMES.names()))
def test_each_installed_runtime_times_networks_and_ops(runtime):
    _needs(runtime)
    net = SPACE.build_static(SPACE.largest())
    _, _, block, shape = SPACE.op_modules()[-1]
    ms = measure_latencies_ms(
        [net, block],
        SPACE.input_shape,
        shapes=[SPACE.input_shape, shape],
        warmup=1,
        repeats=2,
        runtime=runtime,
    )
    assert ms.shape == (2,) and np.all(np.isfinite(ms)) and np.all(ms > 0)


@pytest.mark.parametrize("method", ["ops", "networks"])
def test_calibration_in_onnxruntime_records_runtime_version_threads_and_batch(method):
    profile, diag = calibrate(
        SPACE, n_archs=6, seed=0, warmup=1, repeats=2, runtime="onnxruntime", method=method, batch=2
    )
    import onnxruntime

    assert profile.runtime == "onnxruntime" and profile.meta["runtime_version"] == onnxruntime.__version__
    assert profile.meta["threads"] == 1 and profile.meta["batch"] == 2 and diag["method"] == method
    preds = CostModel(SPACE, profile).predict([SPACE.smallest(), SPACE.largest()])
    assert np.all(preds > 0)
    if method == "networks":
        assert diag["model"].startswith("whole networks") and diag["lut_ops_measured"] == 0
    else:
        assert diag["lut_ops_measured"] == len(SPACE.op_modules())


def test_a_profile_of_another_runtime_is_refused_by_name(tmp_path, capsys):
    prof = _profile(tmp_path, "onnxruntime")
    with pytest.raises(ProfileError, match="measured in runtime 'onnxruntime' 9.9, not 'torch'"):
        profile_for(SPACE, "cpu", str(prof), runtime="torch")
    for command in (["validate", "--n=3"], ["measure", "--run-dir", str(tmp_path)]):
        assert main(["latency", *command, "--profile", str(prof), "--runtime", "torch", *TINY]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert "measured in runtime 'onnxruntime' 9.9, not 'torch'" in err
        assert "--runtime onnxruntime" in err and "nas latency calibrate --runtime torch" in err
    # a profile made before runtimes were recorded is a torch profile
    old = json.loads(prof.read_text())
    del old["meta"]["runtime"]
    prof.write_text(json.dumps(old))
    with pytest.raises(ProfileError, match="measured in runtime 'torch'"):
        profile_for(SPACE, "cpu", str(prof), runtime="onnxruntime")


def test_profiles_of_any_runtime_serve_search_devices_unchanged(tmp_path):
    """`--search.devices` and constraints take a profile whatever runtime it was measured in."""
    prof = _profile(tmp_path, "litert", name="phone")
    model = profile_for(SPACE, str(prof))
    assert model.profile.runtime == "litert" and model.predict([SPACE.largest()])[0] > 0


def test_unknown_runtime_is_one_line(capsys):
    assert main(["latency", "calibrate", "--runtime", "tensorrt", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown runtime 'tensorrt'" in err and "onnxruntime" in err, err
