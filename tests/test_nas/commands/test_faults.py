"""Faults a user meets with `nas run` (issue 7, deliverable 4), through real processes.

- SIGKILL during training, during the search and during the export, each followed by
  the same command: no finished epoch or trial is lost or redone, and the final result
  has the same form as an uninterrupted run's.
- Two processes on one run directory: the second is refused with the holder's pid.
- Atomic writes: after every SIGKILL each JSON parses, the checkpoint loads, the study opens.

Kill moments are chosen by watching files appear (checkpoint, study trials, export files).
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from nas_runs import EPOCHS, SETTINGS, TRIALS, finished_run, nas_subprocess, sigkill_when

from nas.cli import main
from nas.run.files import remove_stale_temp_files
from nas.training.checkpoint import checkpoint_path

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _complete_trials(run_dir: Path) -> int:
    """COMPLETE trials in the run's study, read with plain sqlite (cheap enough to poll)."""
    db = run_dir / "study.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:  # tables not created yet, or locked for a moment
        return 0


def _kill_when(
    args: list[str],
    ready: Callable[[], bool],
    factory: pytest.TempPathFactory,
    log: Path,
    timeout: float = 300,
) -> None:
    """Start `nas ARGS`, SIGKILL it the moment ``ready()`` holds; fail if it ends on its own first."""
    with log.open("w") as err:
        proc = nas_subprocess(args, factory, stdout=subprocess.DEVNULL, stderr=err)
        sigkill_when(proc, ready, timeout)
    assert proc.returncode == -signal.SIGKILL, (
        f"`nas {' '.join(args[:1])}` ended before the kill (rc {proc.returncode}): {log.read_text()[-2000:]}"
    )


def _integrity(run_dir: Path) -> list[str]:
    """Every file a later command reads is whole: problems found (empty list = all good)."""
    problems = []
    for p in run_dir.rglob("*.json"):
        try:
            json.loads(p.read_text())
        except ValueError as exc:
            problems.append(f"{p}: {exc}")
    events = run_dir / "events.jsonl"
    if events.exists():
        for i, line in enumerate(events.read_text().splitlines()):
            try:
                json.loads(line)
            except ValueError as exc:
                problems.append(f"{events} line {i + 1}: {exc}")
    try:
        yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        problems.append(f"config.yaml: {exc}")
    ckpt = checkpoint_path(run_dir)
    if ckpt.exists():
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            assert state["model"] and state["epoch"] >= 1
        except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
            problems.append(f"{ckpt}: {exc!r}")
    if (run_dir / "study.db").exists():
        try:
            study = optuna.load_study(study_name="search", storage=f"sqlite:///{run_dir / 'study.db'}")
            [t.state for t in study.trials]
        except Exception as exc:  # noqa: BLE001
            problems.append(f"study.db: {exc!r}")
    return problems


def _complete(run_dir: Path) -> dict[int, tuple[tuple[float, ...], str]]:
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{run_dir / 'study.db'}")
    return {
        t.number: (tuple(t.values), t.user_attrs["arch_id"])
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
    }


def _epochs_logged(run_dir: Path) -> list[int]:
    return [
        e["step"]
        for e in map(json.loads, (run_dir / "events.jsonl").read_text().splitlines())
        if e["kind"] == "epoch"
    ]


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`nas run` killed during training, during the search and during the export, then run to the end.

    Returns what was seen after each kill and at the end; the tests below judge it.
    """
    finished_run(tmp_path_factory)  # the reference; also warms the profile cache the killed runs share
    work = tmp_path_factory.mktemp("killed")
    run_dir = work / "run"
    args = ["run", "--run-dir", str(run_dir), *SETTINGS]
    seen: dict[str, Any] = {"integrity": {}}
    ckpt = checkpoint_path(run_dir)

    _kill_when(args, ckpt.exists, tmp_path_factory, work / "1.log")  # 1: during training
    seen["epoch_after_kill_1"] = torch.load(ckpt, weights_only=False)["epoch"]
    seen["integrity"]["training"] = _integrity(run_dir)

    _kill_when(
        args, lambda: _complete_trials(run_dir) >= 2, tmp_path_factory, work / "2.log"
    )  # 2: during the search
    seen["trials_after_kill_2"] = _complete(run_dir)
    seen["integrity"]["search"] = _integrity(run_dir)

    pareto = run_dir / "search" / "pareto.json"  # written as the search ends, before the export starts
    _kill_when(args, pareto.exists, tmp_path_factory, work / "3.log")  # 3: during the export
    seen["meta_after_kill_3"] = (run_dir / "export" / "meta.json").exists()
    seen["trials_after_kill_3"] = _complete(run_dir)
    seen["integrity"]["export"] = _integrity(run_dir)

    final = nas_subprocess(
        [*args, "--json"], tmp_path_factory, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    seen["summary"] = json.loads(out.strip().splitlines()[-1])
    seen["run_dir"] = run_dir
    return seen


def test_sigkill_at_any_stage_then_same_command_loses_nothing(
    killed_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Training, search and export each killed once: epochs and trials survive, the result matches an
    uninterrupted run's form."""
    run_dir: Path = killed_run["run_dir"]
    ref_dir, ref_summary = finished_run(tmp_path_factory)
    # training: killed after an epoch's checkpoint; the next process trained only the epochs left
    assert 1 <= killed_run["epoch_after_kill_1"] < EPOCHS
    epochs = list(range(1, EPOCHS + 1))
    assert (
        _epochs_logged(run_dir) == epochs
    )  # every epoch trained (and logged) exactly once over four processes
    state = torch.load(checkpoint_path(run_dir), weights_only=False)
    assert state["epoch"] == EPOCHS and [h["epoch"] for h in state["history"]] == epochs
    # search: trials finished before a kill keep their number, architecture and values
    before = killed_run["trials_after_kill_2"]
    assert 2 <= len(before) < TRIALS
    after = _complete(run_dir)
    assert all(after[n] == v for n, v in before.items())
    assert killed_run["trials_after_kill_3"] == after  # the search was complete before the export was killed
    assert len(after) == TRIALS
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert not [
        t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING
    ]  # the killed trial was failed, not left running
    # export: killed before meta.json (which marks a complete export); the re-run completed it
    assert killed_run["meta_after_kill_3"] is False
    meta, ref_meta = (json.loads((d / "export" / "meta.json").read_text()) for d in (run_dir, ref_dir))
    assert set(meta) == set(ref_meta) and set(meta["formats"]) == set(ref_meta["formats"]) == {
        "torch",
        "torchscript",
    }
    assert all(r["ok"] for r in meta["formats"].values())
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == sorted(
        p.name for p in (ref_dir / "export").iterdir()
    )
    assert set(killed_run["summary"]) == set(ref_summary)
    assert killed_run["summary"]["search"]["trials"] == ref_summary["search"]["trials"] == TRIALS


def test_two_processes_on_one_run_dir(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second command on a busy run directory exits 2 naming the holder's pid; the first finishes
    untouched."""
    ref_dir, _ = finished_run(tmp_path_factory)
    run_dir = tmp_path / "run"
    shutil.copytree(ref_dir, run_dir, ignore=shutil.ignore_patterns(".lock"))
    args = ["search", "--run-dir", str(run_dir), "--quiet", f"--trials={TRIALS + 2}"]
    first = nas_subprocess(
        args, tmp_path_factory, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lock = run_dir / ".lock"
    deadline = time.time() + 120
    while (
        first.poll() is None
        and time.time() < deadline
        and not (lock.exists() and lock.read_text().strip() == str(first.pid))
    ):
        time.sleep(0.01)
    try:
        assert main(args) == 2  # this process is the second one
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("nas: error: ")
        assert f"another process (pid {first.pid}) is using run directory {run_dir}" in err
        _, first_err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, first_err
    assert len(_complete(run_dir)) == TRIALS + 2  # the first process did all its work
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["search"]["trials"] == TRIALS + 2


def test_writes_are_atomic_when_killed(killed_run: dict[str, Any]) -> None:
    """After each SIGKILL every JSON parses, the checkpoint loads, the study opens; a re-run sweeps leftover
    temp files."""
    assert set(killed_run["integrity"]) == {"training", "search", "export"}
    for stage, problems in killed_run["integrity"].items():
        assert problems == [], f"after the kill during {stage}: {problems}"
    run_dir: Path = killed_run["run_dir"]
    assert _integrity(run_dir) == []
    assert (
        remove_stale_temp_files(run_dir) == []
    )  # nothing half-written is left behind once the run has finished
