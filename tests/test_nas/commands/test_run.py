"""End to end through the `nas` command line on the `tiny` space (digits at 16x16)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import torch

from nas.cli import main

TINY = [
    "--space=tiny",
    "--data.resolution=16",
    "--trackers=jsonl,tensorboard",
    "--search.calibration_archs=8",
    "--export.latency_repeats=5",
]


def _nas(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real `nas run` on tiny, shared by the tests of this module (each test can also run alone)."""
    import contextlib
    import io

    run_dir = tmp_path_factory.mktemp("tiny_run")
    args = ["run", "--run-dir", str(run_dir), "--json", "--quiet", "--epochs=2", "--trials=6", *TINY]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    return run_dir, args, summary


def test_run_trains_searches_and_exports(tiny_run):
    run_dir, _, summary = tiny_run
    assert summary["run_dir"] == str(run_dir)
    for key in ("test_accuracy", "latency_pred_ms", "latency_measured_ms", "wall_seconds"):
        assert isinstance(summary[key], float) and summary[key] > 0
    meta = json.loads((run_dir / "export" / "meta.json").read_text())
    for key in (
        "arch",
        "params",
        "flops",
        "latency_pred_ms",
        "latency_measured_ms",
        "val_accuracy",
        "test_accuracy",
    ):
        assert key in meta
    assert meta["verification"]["supernet_vs_extracted_max_abs_diff"] <= 1e-5
    assert meta["test_accuracy"] == summary["test_accuracy"]
    # everything a user browses is in the run directory
    assert (run_dir / "config.yaml").exists() and (run_dir / "study.db").exists()
    assert (run_dir / "search" / "pareto.json").exists() and (run_dir / "search" / "history.csv").exists()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    kinds = {json.loads(line)["kind"] for line in (run_dir / "events.jsonl").read_text().splitlines()}
    assert {"epoch", "search_trial"} <= kinds
    # the study is a stock Optuna study: users can open it with Optuna's own tools
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{run_dir}/study.db")
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 6


def test_rerun_resumes_instead_of_starting_over(tiny_run, capsys):
    run_dir, args, _ = tiny_run
    before = (run_dir / "checkpoints" / "supernet_last.pt").stat().st_mtime_ns
    assert main(args) == 0
    capsys.readouterr()
    assert (run_dir / "checkpoints" / "supernet_last.pt").stat().st_mtime_ns == before  # not retrained
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{run_dir}/study.db")
    assert len(study.trials) == 6  # no new trials: the search was already complete


def test_torchscript_export_runs_without_this_project(tiny_run, tmp_path):
    """The exported TorchScript file reproduces meta.json's test accuracy in a process that never imports
    us."""
    run_dir, _, _ = tiny_run
    meta = json.loads((run_dir / "export" / "meta.json").read_text())
    from nas.data import load_data

    data = load_data("digits", resolution=16, seed=0)
    xs = torch.stack([data.test[i][0] for i in range(len(data.test))])
    ys = torch.stack([data.test[i][1] for i in range(len(data.test))])
    torch.save({"x": xs, "y": ys}, tmp_path / "test.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        model = torch.jit.load({str(run_dir / "export" / "model.torchscript.pt")!r})
        d = torch.load({str(tmp_path / "test.pt")!r})
        with torch.no_grad():
            acc = (model(d["x"]).argmax(1) == d["y"]).sum().item() / len(d["y"])
        banned = [m for m in sys.modules if m.split(".")[0] in ("nas", "supernets", "search_spaces")]
        print(acc, banned)
        """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    acc, banned = out.stdout.split(maxsplit=1)
    assert banned.strip() == "[]"
    assert abs(float(acc) - meta["test_accuracy"]) < 1e-9


def test_search_killed_with_sigkill_resumes_without_losing_trials(tiny_run, tmp_path):
    """Kill `nas search` mid-way, re-run the same command: finished trials are kept, the rest are run."""
    run_dir, _, _ = tiny_run
    import shutil

    work = tmp_path / "run"
    shutil.copytree(run_dir, work, ignore=shutil.ignore_patterns("study.db", "search", "export", ".lock"))
    cmd = [
        sys.executable,
        "-m",
        "nas.cli",
        "search",
        "--run-dir",
        str(work),
        "--quiet",
        "--trials=40",
        "--search.controller=random",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{work}/study.db"
    finished_before: dict[int, str] = {}
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            try:
                trials = optuna.load_study(study_name="search", storage=storage).trials
            except Exception:  # study not created yet
                continue
            done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
            if len(done) >= 3:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                break
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, (
        f"search finished or failed before it could be killed: {proc.stderr.read()}"
    )
    trials = optuna.load_study(study_name="search", storage=storage).trials
    finished_before = {
        t.number: t.user_attrs["arch_id"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE
    }
    assert 3 <= len(finished_before) < 40

    cmd[cmd.index("--trials=40")] = "--trials=8"
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    trials = optuna.load_study(study_name="search", storage=storage).trials
    complete = {
        t.number: t.user_attrs["arch_id"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE
    }
    assert all(
        complete.get(n) == a for n, a in finished_before.items()
    )  # nothing finished was lost or redone
    assert len(complete) == max(8, len(finished_before))
    assert not [
        t for t in trials if t.state == optuna.trial.TrialState.RUNNING
    ]  # the killed trial is failed, not left running


def test_changing_trained_settings_on_a_run_dir_is_refused(tiny_run, capsys):
    run_dir, _, _ = tiny_run
    assert main(["train", "--run-dir", str(run_dir), "--quiet", "--space.width_mult=1.0"]) == 2
    err = capsys.readouterr().err
    assert "space.width_mult" in err and "new --run-dir" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--train.epochz=3"], "unknown config key 'train.epochz'"),
        (["train", "--space=nope"], "unknown search space 'nope'"),
        (["train", "--epochs=many"], "'train.epochs' expects int"),
        (["train", "--data=nope"], "unknown data set 'nope'"),
        (["train", "--trials=0"], "search.trials=0 (--trials) is not allowed"),
        (["search", "--search.controller=nope"], "unknown controller 'nope'"),
        (["train", "--supernet=nope"], "unknown supernet kind 'nope'"),
        (["train", "--supernet=single_path"], "give --latency-budget-ms"),
        (
            ["train", "--space=resnet20_pool", "--supernet=single_path", "--latency-budget-ms=1"],
            "need an MBConv space",
        ),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, args, message):
    command, *settings = args
    assert main([command, "--run-dir", str(tmp_path / "r"), "--quiet", *TINY, *settings]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_export_without_search_says_what_to_run(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert main(["export", "--run-dir", str(run_dir), "--quiet", *TINY]) == 2
    assert "nas train" in capsys.readouterr().err


def test_spaces_lists_sizes(capsys):
    assert main(["spaces", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in listing["spaces"]}
    assert rows["mbv3"]["num_architectures"] == (81 + 729 + 6561) ** 5
    assert rows["tiny"]["num_architectures"] == 400
    assert rows["resnet20_pool"]["num_architectures"] == 36
    assert {k["supernet"] for k in listing["supernet_kinds"]} >= {"entangled", "balanced_mixture"}


def test_latency_predict_for_an_exported_arch(tiny_run, capsys):
    run_dir, _, _ = tiny_run
    profile = run_dir / "cost_profile.json"
    args = [
        "latency",
        "predict",
        "--arch",
        str(run_dir / "export" / "arch.json"),
        "--profile",
        str(profile),
        "--json",
        "--quiet",
        "--space=tiny",
        "--data.resolution=16",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    meta = json.loads((run_dir / "export" / "meta.json").read_text())
    assert out["latency_pred_ms"] == pytest.approx(meta["latency_pred_ms"])


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("nas")
    res = subprocess.run(
        [str(exe) if exe.exists() else "nas", "--help"], capture_output=True, text=True, env={**os.environ}
    )
    assert res.returncode == 0 and "train" in res.stdout


def test_corrupt_checkpoint_is_a_clear_error_and_is_kept(tmp_path, capsys):
    run_dir = tmp_path / "r"
    ckpt = run_dir / "checkpoints" / "supernet_last.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint")
    assert main(["train", "--run-dir", str(run_dir), "--quiet", *TINY]) == 2
    assert "corrupt or unreadable" in capsys.readouterr().err
    assert ckpt.read_bytes() == b"not a checkpoint"  # never overwritten silently


def test_latency_measure_and_refit_close_the_loop(tiny_run, tmp_path, capsys):
    run_dir, _, _ = tiny_run
    assert main(["latency", "measure", "--run-dir", str(run_dir), "--refit", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    result = json.loads((run_dir / "search" / "latency_measured.json").read_text())
    assert out["n"] == len(result["rows"]) >= 1
    assert all(r["measured_ms"] > 0 and r["predicted_ms"] > 0 for r in result["rows"])
    check = json.loads((run_dir / "export" / "latency_check.json").read_text())
    assert check["arch_id"] == json.loads((run_dir / "export" / "meta.json").read_text())["arch_id"]
    assert (run_dir / "cost_profile_refit.json").exists()
    assert set(result["refit"]) == {"profile", "mape_before", "mape_after"}
    _refit_lowers_the_error_on_held_out_networks(run_dir, tmp_path, capsys)


def _run_space(run_dir: Path):
    from nas.run.context import build_space, resolve_config

    return build_space(resolve_config(run_dir, None, []))


def _refit_lowers_the_error_on_held_out_networks(run_dir: Path, tmp_path: Path, capsys) -> None:
    """Close the loop on networks the refit never saw.

    The profile given to `latency measure` predicts 10x the run's calibrated latencies (a badly scaled
    device profile); the refit, fitted on a front of 6 networks from the smallest to the largest, must bring
    the prediction error down on 6 other networks, measured here afterwards. By construction the held-out
    error before is about 900% (|10 p - m| / m with p ~ m), so the check holds unless this machine got
    several times slower between the two measurements.
    """
    import shutil
    from dataclasses import replace

    import numpy as np

    from nas.cost.calibrate import distinct_samples
    from nas.cost.model import CostModel
    from nas.cost.profile import DeviceProfile
    from nas.cost.validate import measure_archs

    work = tmp_path / "refit"
    shutil.copytree(run_dir, work, ignore=shutil.ignore_patterns("study.db*", ".lock*"))
    space = _run_space(work)
    calibrated = DeviceProfile.load(work / "cost_profile.json")
    wrong = (
        replace(calibrated, lut_scale=10 * calibrated.lut_scale, intercept=10 * calibrated.intercept)
        if calibrated.lut is not None
        else replace(
            calibrated, coef=tuple(10 * c for c in calibrated.coef), intercept=10 * calibrated.intercept
        )
    )
    wrong.save(tmp_path / "wrong.json")
    exported = space.arch(json.loads((work / "export" / "arch.json").read_text()))
    pool = distinct_samples(space, 40, seed=77, first=[space.smallest(), space.largest()])
    fitted = [a for a in pool if a.id != exported.id][:6]
    pareto_file = work / "search" / "pareto.json"
    pareto_file.write_text(
        json.dumps({**json.loads(pareto_file.read_text()), "front": [{"arch": dict(a)} for a in fitted]})
    )
    args = ["latency", "measure", "--run-dir", str(work), "--profile", str(tmp_path / "wrong.json")]
    assert main([*args, "--refit", "--json", "--quiet"]) == 0
    capsys.readouterr()
    result = json.loads((work / "search" / "latency_measured.json").read_text())
    seen = {r["arch_id"] for r in result["rows"]}
    assert seen == {a.id for a in fitted} | {exported.id}  # what the refit was fitted on
    assert result["refit"]["mape_after"] < result["refit"]["mape_before"]
    held_out = [a for a in pool if a.id not in seen][:6]
    assert len(held_out) == 6
    measured = np.asarray(measure_archs(CostModel(space, wrong), held_out))
    before = CostModel(space, wrong).predict(held_out)
    after = CostModel(space, DeviceProfile.load(work / "cost_profile_refit.json")).predict(held_out)
    mape_before = float(np.mean(np.abs(before - measured) / measured))
    mape_after = float(np.mean(np.abs(after - measured) / measured))
    assert mape_after < 0.5 * mape_before, (mape_before, mape_after)


def test_latency_validate_and_multi_device_predict(tiny_run, tmp_path, capsys):
    run_dir, _, _ = tiny_run
    assert (
        main(
            [
                "latency",
                "validate",
                "--run-dir",
                str(run_dir),
                "--n=6",
                "--out-dir",
                str(tmp_path),
                "--json",
                "--quiet",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "latency_validation.json").read_text())
    assert report["n"] == 6 and {"kendall_tau", "mape", "within_10pct"} <= set(report)
    assert (tmp_path / "latency_validation.png").stat().st_size > 1000
    capsys.readouterr()
    args = [
        "latency",
        "predict",
        "--run-dir",
        str(run_dir),
        "--arch",
        str(run_dir / "export" / "arch.json"),
        "--devices=mobile-big-core,datacenter-gpu",
        "--json",
        "--quiet",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["by_device"]) == {"cpu", "mobile-big-core", "datacenter-gpu"} and all(
        v > 0 for v in out["by_device"].values()
    )


def test_search_trades_accuracy_against_latency_on_two_devices(tiny_run, tmp_path, capsys):
    import shutil

    run_dir, _, _ = tiny_run
    work = tmp_path / "multi"
    shutil.copytree(run_dir, work, ignore=shutil.ignore_patterns("study.db", "search", "export", ".lock"))
    args = [
        "run",
        "--run-dir",
        str(work),
        "--quiet",
        "--json",
        "--trials=5",
        "--search.devices=cpu,mobile-big-core",
        "--format=torch",  # formats: tests/test_nas/export; this test is the devices'
    ]
    assert main(args) == 0
    capsys.readouterr()
    pareto = json.loads((work / "search" / "pareto.json").read_text())
    assert pareto["devices"] == ["cpu", "mobile-big-core"]
    assert all(len(r["extra_latencies_ms"]) == 1 and r["extra_latencies_ms"][0] > 0 for r in pareto["front"])
    header = (work / "search" / "history.csv").read_text().splitlines()[0]
    assert "latency_pred_ms_cpu" in header and "latency_pred_ms_mobile-big-core" in header
    meta = json.loads((work / "export" / "meta.json").read_text())
    assert set(meta["latency_pred_ms_by_device"]) == {"cpu", "mobile-big-core"}
    _two_opposite_devices_are_traded_off(run_dir, tmp_path, capsys)
    # the study's objectives are fixed: asking for other devices on the same run is refused clearly
    assert main(["search", "--run-dir", str(work), "--quiet", "--search.devices=cpu"]) == 2
    assert "search.devices changed" in capsys.readouterr().err


def _opposite_profiles(space, folder: Path) -> tuple[Path, Path]:
    """Two device profiles on which every network's latencies add up to the same total: what is slow on one
    is fast on the other, for every pair of networks with different latencies.

    Each (slot, op) of the space's cost table, the skipped block included, costs ``a`` on device A and
    ``1 - a`` on device B (``a`` random, so different networks get different latencies): ``lat_A + lat_B``
    is the same for every network.
    """
    import numpy as np

    from nas.cost.profile import DeviceProfile, space_signature

    ct = space.cost_table()
    a = np.random.default_rng(5).uniform(0.05, 0.95, size=ct.features.shape[:2])
    paths = []
    for name, lut in (("trade-a", a), ("trade-b", 1.0 - a)):
        profile = DeviceProfile(
            name,
            ct.feature_names,
            (0.0,) * len(ct.feature_names),
            0.5,
            space_signature(space),
            {"made_by": "test: opposite devices"},
            lut=tuple(tuple(float(v) for v in row) for row in lut),
        )
        paths.append(profile.save(folder / f"{name}.json"))
    return paths[0], paths[1]


def _two_opposite_devices_are_traded_off(run_dir: Path, tmp_path: Path, capsys) -> None:
    """On two devices that rank networks in opposite orders no network can be faster on both, so the
    two-device front holds every network searched, each pair faster on one device and slower on the other;
    and it cannot be the front of either device alone (for one device alone to keep every network, accuracy
    would have to rise with its latency, so fall with the other's: both at once is impossible)."""
    import csv
    import shutil

    from nas.pareto import pareto_front

    work = tmp_path / "opposite"
    shutil.copytree(run_dir, work, ignore=shutil.ignore_patterns("study.db*", "search", "export", ".lock*"))
    dev_a, dev_b = _opposite_profiles(_run_space(work), tmp_path)
    args = ["run", "--run-dir", str(work), "--quiet", "--json", "--trials=6", "--format=torch"]
    assert main([*args, f"--search.devices={dev_a},{dev_b}"]) == 0
    capsys.readouterr()
    pareto = json.loads((work / "search" / "pareto.json").read_text())
    assert pareto["devices"] == [str(dev_a), str(dev_b)]
    with open(work / "search" / "history.csv", newline="") as f:
        searched = {r["arch_id"] for r in csv.DictReader(f)}
    front = {r["arch_id"]: r for r in pareto["front"]}  # full precision
    assert set(front) == searched  # no network is faster on both devices: every one is on the front
    pairs = {(r["latency_ms"], r["extra_latencies_ms"][0]) for r in front.values()}
    totals = [a + b for a, b in pairs]
    assert max(totals) - min(totals) < 1e-9  # the construction: the same total on both devices
    assert len(pairs) >= 2  # the search evaluated networks of different latencies
    for i in front.values():
        for j in front.values():
            if i["latency_ms"] < j["latency_ms"] - 1e-9:  # faster on A, hence slower on B
                assert i["extra_latencies_ms"][0] > j["extra_latencies_ms"][0]
    rows = list(front.values())
    alone_a = {r["arch_id"] for r in pareto_front([{**r, "extra_latencies_ms": []} for r in rows])}
    alone_b = {
        r["arch_id"]
        for r in pareto_front(
            [{**r, "latency_ms": r["extra_latencies_ms"][0], "extra_latencies_ms": []} for r in rows]
        )
    }
    # the two devices together keep networks that at least one device alone would drop
    assert alone_a != set(front) or alone_b != set(front), (alone_a, alone_b, set(front))


@pytest.mark.parametrize("controller", ["tpe", "nsga3", "gp", "evolution", "reinforce", "darts", "gdas"])
def test_search_with_each_optuna_controller_end_to_end(tiny_run, tmp_path, capsys, controller):
    import shutil

    run_dir, _, _ = tiny_run
    work = tmp_path / "run"
    shutil.copytree(run_dir, work, ignore=shutil.ignore_patterns("study.db*", "search", "export", ".lock*"))
    assert (
        main(
            [
                "run",
                "--run-dir",
                str(work),
                "--quiet",
                "--json",
                "--trials=5",
                f"--search.controller={controller}",
                "--epochs=2",
                "--format=torch",  # formats: tests/test_nas/export; this test is the controller's
                *TINY,
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["search"]["trials"] == 5 and summary["search"]["pareto_size"] >= 1
    assert (work / "export" / "meta.json").exists()
