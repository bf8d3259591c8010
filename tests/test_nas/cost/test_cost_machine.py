"""Machine-state guard: the reference op a calibration records, the warning when the machine has changed, and
a calibration beside a CPU-bound process being flagged."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nas.cli import main
from nas.cost import calibrate
from nas.cost.fit import fit_op_table, fitted_profile
from nas.cost.machine import DRIFT_LIMIT, ReferenceTracker, machine_id, machine_state_warning
from nas.run.context import build_space, resolve_config

SPACE = build_space(resolve_config(None, None, ["space.name=tiny", "data.resolution=16"]))
TINY = ["--space=tiny", "--data.resolution=16", "--quiet"]


def _profile_with_reference(tmp_path, reference_ms: float, host: str | None = None):
    archs = [SPACE.smallest(), SPACE.largest(), *(SPACE.sample(np.random.default_rng(i)) for i in range(10))]
    y = 0.2 + 0.01 * SPACE.lower(SPACE.encode_batch(archs)).sum(axis=1)
    fit, _ = fit_op_table(SPACE, archs, y, cross_validate=False)
    state = {**machine_id(), "reference_ms": reference_ms}
    if host is not None:
        state["host"] = host
    return fitted_profile(SPACE, fit, "cpu", {"machine_state": state}).save(tmp_path / "p.json")


class _BusyLoops:
    """CPU-bound processes, enough to take most of every core, from before a calibration's first reference
    sample until its ``samples``-th. The competition is tied to the calibration's progress, not to the wall
    clock: on a slow machine, building the networks can outlast a fixed busy period."""

    def __init__(self, monkeypatch, samples: int = 3):
        code = "print('go', flush=True)\nwhile True: pass\n"
        cmd = [sys.executable, "-c", code]
        self.procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE) for _ in range(4 * (os.cpu_count() or 1))]
        for p in self.procs:  # each is spinning before the calibration starts
            assert p.stdout.readline().strip() == b"go"
        original = ReferenceTracker.sample

        def sample(tracker):
            original(tracker)
            if len(tracker.samples_ms) == samples:
                self.stop()

        monkeypatch.setattr(ReferenceTracker, "sample", sample)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()


def test_warning_names_both_speeds_and_the_remedy():
    meta = {"machine_state": {**machine_id(), "reference_ms": 0.100}}
    slower = machine_state_warning(meta, "cpu", reference_ms=0.130)
    assert (
        slower is not None
        and "0.130 ms now" in slower
        and "took 0.100 ms" in slower
        and "30% slower" in slower
    )
    assert "nas latency calibrate" in slower and "nas latency measure --refit" in slower
    assert "faster" in machine_state_warning(meta, "cpu", reference_ms=0.05)
    assert machine_state_warning(meta, "cpu", reference_ms=0.100 * (1 + DRIFT_LIMIT * 0.9)) is None
    other = {"machine_state": {**machine_id(), "host": "another-machine", "reference_ms": 0.1}}
    assert machine_state_warning(other, "cpu", reference_ms=1.0) is None  # not calibrated here: not checked
    assert machine_state_warning({}, "cpu", reference_ms=1.0) is None


def test_predicting_with_a_profile_whose_machine_changed_prints_one_warning_line(tmp_path, capsys):
    """A profile recording a reference op 1000x faster than any machine runs it: this machine has changed."""
    arch = tmp_path / "arch.json"
    arch.write_text(SPACE.largest().to_json())
    prof = _profile_with_reference(tmp_path, reference_ms=1e-4)
    assert main(["latency", "predict", "--arch", str(arch), "--profile", str(prof), *TINY]) == 0
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("nas: warning: machine state changed"), captured.err
    assert "took 0.000 ms" in lines[0] and "slower" in lines[0] and "nas latency measure --refit" in lines[0]
    assert "ms predicted on cpu" in captured.out
    other = _profile_with_reference(tmp_path, reference_ms=1e-4, host="another-machine")
    assert main(["latency", "predict", "--arch", str(arch), "--profile", str(other), *TINY]) == 0
    assert "warning" not in capsys.readouterr().err


def test_calibration_records_the_reference_and_load():
    profile, diag = calibrate(SPACE, n_archs=4, seed=0, warmup=1, repeats=2, lut=False)
    state = profile.meta["machine_state"]
    assert state["host"] == machine_id()["host"] and len(state["reference_samples_ms"]) >= 2
    assert state["reference_ms"] > 0 and state["drift"] >= 0 and isinstance(state["unstable"], bool)
    assert state["load_average_1min"]["start"] >= 0 and diag["machine_unstable"] == state["unstable"]


@pytest.mark.full_timing
def test_calibration_beside_a_cpu_bound_process_is_flagged(monkeypatch):
    """Busy loops take the cores for the first three reference samples of a >= 3 s calibration: its
    reference op slows, then recovers, and the profile is marked unstable with the reason."""
    busy = _BusyLoops(monkeypatch)
    try:
        profile, _ = calibrate(SPACE, n_archs=4, seed=0, warmup=1, repeats=2, lut=False)
    finally:
        busy.stop()
    state = profile.meta["machine_state"]
    assert state["unstable"] is True and state["drift"] > DRIFT_LIMIT, state
    assert "moved by" in state["why"] and "load average" in state["why"]


@pytest.mark.full_timing
def test_strict_calibration_on_a_busy_machine_saves_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cpu.json"
    busy = _BusyLoops(monkeypatch)
    try:
        rc = main(["latency", "calibrate", "--n=4", "--strict", "--profile", str(out), *TINY])
    finally:
        busy.stop()
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "not saved" in err and "moved by" in err, err
    assert not out.exists()


def test_validate_sessions_reports_mean_and_range(tmp_path, capsys):
    args = ["latency", "validate", "--sessions=2", "--n=4", "--calibration-n=4", "--json", *TINY]
    assert main([*args, "--out-dir", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    sessions = summary["sessions"]
    assert sessions["sessions"] == 2
    for key in ("kendall_tau", "mape", "within_10pct"):
        s = sessions[key]
        assert len(s["per_session"]) == 2 and s["min"] <= s["mean"] <= s["max"]
        assert s["mean"] == pytest.approx(np.mean(s["per_session"]))
    report = json.loads((tmp_path / "latency_validation.json").read_text())
    assert len(report["per_session"]) == 2 and all(len(r["rows"]) == 4 for r in report["per_session"])


@pytest.mark.full_timing
def test_the_timing_floor_is_3_s_unless_the_environment_lowers_it(monkeypatch, tmp_path, capsys):
    from nas.timing_floor import ENV, min_timing_seconds

    assert min_timing_seconds() == 3.0
    monkeypatch.setenv(ENV, "0.25")
    assert min_timing_seconds() == 0.25
    out = tmp_path / "cpu.json"
    for bad in ("abc", "-1", "nan"):
        monkeypatch.setenv(ENV, bad)
        assert main(["latency", "calibrate", "--n=4", "--profile", str(out), *TINY]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{ENV}='{bad}'" in err and "seconds >= 0" in err, err
        assert not out.exists()
