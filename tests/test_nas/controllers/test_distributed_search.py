"""Distributed search: several `nas search` workers share one Optuna study on a real PostgreSQL server.

A session fixture starts a private PostgreSQL cluster from Debian's packages
(installed with apt-get when missing; the tests are skipped only if that fails).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main
from nas.testing.pg_server import PostgresServer, PostgresUnavailable

TINY = [
    "--space=tiny",
    "--data.resolution=16",
    "--trackers=jsonl",
    "--train-limit=256",
    "--data.val_limit=128",
]
FAST_EVAL = [
    "--train.bn_recal_batches=2"
]  # not part of the trained supernet's identity: free to set per search


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer(install=True)
    try:
        server.start()
    except PostgresUnavailable as exc:
        server.stop()
        pytest.skip(f"PostgreSQL could not be installed or started here: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny supernet trained once on digits, with its latency profile pinned (workers must not each
    calibrate)."""
    run_dir = tmp_path_factory.mktemp("dist_run")
    cache = tmp_path_factory.getbasetemp() / "xdg-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["train", "--run-dir", str(run_dir), "--quiet", "--epochs=1", *TINY]) == 0
            assert (
                main(
                    [
                        "latency",
                        "calibrate",
                        "--run-dir",
                        str(run_dir),
                        "--profile",
                        str(run_dir / "cost_profile.json"),
                        "--n",
                        "8",
                        "--quiet",
                        "--json",
                    ]
                )
                == 0
            )
    # several workers on 2 cores: one thread each, as a user would run them side by side
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(cache),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "OMP_NUM_THREADS": "1",
    }
    return run_dir, env


def _url(postgres: PostgresServer, name: str) -> str:
    return postgres.create_database(name)


def _worker(run_dir: Path, url: str, study: str, trials: int, env: dict, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "nas.cli",
        "search",
        "--run-dir",
        str(run_dir),
        "--storage",
        url,
        "--study",
        study,
        f"--trials={trials}",
        "--quiet",
        "--json",
        *FAST_EVAL,
        *extra,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _storage(url: str) -> optuna.storages.RDBStorage:
    # what a user types: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; we install psycopg2
    return optuna.storages.RDBStorage(url.replace("postgresql://", "postgresql+psycopg2://"))


def _load(storage: optuna.storages.RDBStorage, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=storage)


def _by_state(study: optuna.Study) -> dict[TrialState, list[optuna.trial.FrozenTrial]]:
    out: dict[TrialState, list[optuna.trial.FrozenTrial]] = {s: [] for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state].append(t)
    return out


def _history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "search" / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_four_workers_share_one_study_and_its_exact_budget(postgres, trained):
    run_dir, env = trained
    url, n = _url(postgres, "four"), 12
    t0 = time.time()
    procs = [_worker(run_dir, url, "four", n, env) for _ in range(4)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert (
            json.loads(out.strip().splitlines()[-1])["search"]["trials"] == n
        )  # each worker reports the whole study
    study = _load(_storage(url), "four")
    states = _by_state(study)
    assert len(states[TrialState.COMPLETE]) == n
    assert not states[TrialState.RUNNING] and not states[TrialState.WAITING] and not states[TrialState.FAIL]
    # surplus trials of racing workers are pruned before any architecture is drawn: never evaluated; a
    # proposal
    # of a network the study already holds is pruned as a duplicate of it: never evaluated either
    surplus = [t for t in states[TrialState.PRUNED] if "duplicate_of" not in t.user_attrs]
    assert all(not t.params and "accuracy" not in t.user_attrs for t in surplus)
    assert all("accuracy" not in t.user_attrs for t in states[TrialState.PRUNED])
    # every completion was told once: one search_trial event per complete trial, over all workers
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert sum(e["kind"] == "search_trial" and e["time"] >= t0 for e in events) == n
    workers = {t.user_attrs["worker"] for t in states[TrialState.COMPLETE]}
    assert len(workers) >= 2, "the workers did not share the search"
    rows = _history(run_dir)
    assert sorted(int(r["trial"]) for r in rows) == sorted(t.number for t in states[TrialState.COMPLETE])
    assert json.loads((run_dir / "search" / "pareto.json").read_text())["front"]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # retried_trial_number
def test_a_killed_workers_trial_fails_and_is_retried(postgres, trained):
    run_dir, env = trained
    url, n = _url(postgres, "killed"), 4
    storage = _storage(url)
    first = _worker(run_dir, url, "killed", n, env, "--search.heartbeat_s=1")
    killed = None
    deadline = time.monotonic() + 120
    try:
        while killed is None:
            assert time.monotonic() < deadline, "the first worker never started a trial"
            assert first.poll() is None, first.communicate()[1]
            try:
                running = [
                    t
                    for t in _load(storage, "killed").get_trials(states=(TrialState.RUNNING,))
                    if "arch_id" in t.user_attrs
                ]
            except KeyError:  # the study does not exist yet
                running = []
            if running:
                first.send_signal(signal.SIGSTOP)  # freeze it, then make sure the trial is still running
                again = {
                    t.number: t for t in _load(storage, "killed").get_trials(states=(TrialState.RUNNING,))
                }
                if running[0].number in again:
                    first.kill()  # SIGKILL: no chance to tell anything
                    killed = running[0]
                else:
                    first.send_signal(signal.SIGCONT)
            time.sleep(0.05)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    assert (
        _load(storage, "killed").trials[killed.number].state == TrialState.RUNNING
    )  # left running by the dead worker

    second = _worker(run_dir, url, "killed", n, env, "--search.heartbeat_s=1")
    out, err = second.communicate(timeout=180)
    assert second.returncode == 0, err
    study = _load(storage, "killed")
    states = _by_state(study)
    assert study.trials[killed.number].state == TrialState.FAIL
    retries = [
        t
        for t in study.trials
        if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number
    ]
    assert (
        len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == killed.params
    )
    assert retries[0].user_attrs["worker"].endswith(f":{second.pid}")
    assert len(states[TrialState.COMPLETE]) == n
    assert not states[TrialState.RUNNING] and not states[TrialState.WAITING]
    assert len(_history(run_dir)) == n


def test_racing_asks_never_exceed_the_budget(postgres, trained):
    """A worker that asked while the last trials were being taken gets a surplus trial: pruned, then it waits
    for the others."""
    from nas.controllers import create_controller
    from nas.controllers.base import Objectives
    from nas.controllers.optuna_controller import open_storage
    from nas.run.context import build_space, resolve_config

    run_dir, _ = trained
    url = _url(postgres, "race")
    space = build_space(resolve_config(run_dir, None, []))

    def controller():
        return create_controller(
            "nsga2",
            space=space,
            seed=0,
            latency_budget_ms=None,
            run_dir=run_dir,
            storage=open_storage(url, heartbeat_s=1),
            study_name="race",
        )

    a, b, late = controller(), controller(), controller()
    first, second = a.ask_within(2), b.ask_within(2)
    real_counts = late.counts
    stale = iter([{**real_counts(), TrialState.RUNNING: 0}])  # it looked before a and b asked
    late.counts = lambda: next(stale, None) or real_counts()
    got: list = []
    waiting = threading.Thread(target=lambda: got.append(late.ask_within(2, poll_s=0.05)))
    waiting.start()
    time.sleep(1.0)
    assert waiting.is_alive() and not got  # budget taken by running trials: it waits, one could still fail
    a.tell([first], [Objectives(0.5, 1.0)])
    b.tell([second], [Objectives(0.6, 2.0)])
    waiting.join(timeout=30)
    assert got == [None]
    states = _by_state(_load(_storage(url), "race"))
    assert len(states[TrialState.COMPLETE]) == 2
    assert [t.number for t in states[TrialState.PRUNED]] == [2] and not states[TrialState.PRUNED][0].params
    for c in (a, b, late):
        c.close()


def test_an_unreachable_storage_is_a_one_line_error(trained, capsys):
    run_dir, _ = trained
    url = "postgresql://nobody:secret@127.0.0.1:1/nowhere"
    assert (
        main(["search", "--run-dir", str(run_dir), "--storage", url, "--study", "x", "--trials=2", "--quiet"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert (
        "cannot open search storage postgresql://nobody:***@127.0.0.1:1/nowhere" in err
        and "secret" not in err
    )
