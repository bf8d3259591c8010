"""`nas dashboard DIR`: optuna-dashboard on a finished tiny run's study, read back in headless Chromium.

The dashboard runs as users start it (`python -m nas.cli dashboard DIR`, a real process on a free port) and
its pages are rendered by Debian's chromium (installed with apt-get when missing; the browser test is skipped
only if that fails), which must show the study's trial count, one trial's architecture and accuracy, and the
objectives under the names the controller gave them. The server is stopped when each test ends.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from nas_runs import env, finished_run

from nas.cli import main
from nas.commands.dashboard import open_dashboard
from nas.controllers import create_controller
from nas.controllers.optuna_controller import objective_names
from search_spaces import create_space

pytest.importorskip("optuna_dashboard", reason='optuna-dashboard is an extra: pip install -e ".[dashboard]"')


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory)[0]


def _study(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="search", storage=f"sqlite:///{run_dir}/study.db")


def _start(args: list[str], factory: pytest.TempPathFactory) -> tuple[subprocess.Popen, dict[str, Any]]:
    """`nas dashboard ARGS --json` as a real process; returns it and the line it printed (address, study)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "dashboard", *args, "--json", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(factory),
    )
    line = proc.stdout.readline()  # printed once the port is bound
    if not line:
        proc.wait(timeout=30)
        pytest.fail(f"nas dashboard printed nothing (exit {proc.returncode}): {proc.stderr.read()[-500:]}")
    return proc, json.loads(line)


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture
def dashboard(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    proc, info = _start([str(run_dir)], tmp_path_factory)
    try:
        yield info
    finally:
        _stop(proc)


def _chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (root only); skip with the reason if that
    fails (as tests/test_nas/report/test_report.py does)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and shutil.which("apt-get") and os.geteuid() == 0:
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            subprocess.run(cmd, capture_output=True, env=apt_env, timeout=900)
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed and `apt-get install chromium` was not possible here")
    return exe


def _page_text(url: str, profile: Path, wanted: str) -> str:
    """The text of ``url`` once chromium has run its scripts (tried again if ``wanted`` is not shown yet)."""
    exe = _chromium()
    text = ""
    for budget in (20_000, 60_000):
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # the dashboard only, nothing outside
            "--window-size=1600,2400",
            f"--virtual-time-budget={budget}",
            "--dump-dom",
            url,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"chromium could not be started here: {exc}")
        if proc.returncode != 0 and "<html" not in proc.stdout:
            pytest.skip(f"chromium could not be started here (exit {proc.returncode}): {proc.stderr[-300:]}")
        page = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", proc.stdout, flags=re.S)
        text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
        if wanted in text:
            break
    return text


# --------------------------------------------------------------------------- in a browser


def test_dashboard_shows_the_trials_and_an_architectures_accuracy_in_headless_chromium(
    run_dir: Path, dashboard: dict[str, Any], tmp_path: Path
) -> None:
    study = _study(run_dir)
    n = len(study.trials)
    assert dashboard["trials"] == n and dashboard["study"] == "search"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/dashboard/studies/\d+", dashboard["url"])
    text = _page_text(dashboard["url"] + "/trials", tmp_path / "profile", f"{n} Trials")
    assert f"{n} Trials" in text, text[:2000]
    first = study.trials[0]
    assert f"Trial 0 (trial_id={first._trial_id})" in text
    shown = text.split(f"Trial 0 (trial_id={first._trial_id})", 1)[1]
    assert f"accuracy {first.user_attrs['accuracy']!r}" in shown  # the architecture's accuracy...
    assert f"arch_id {first.user_attrs['arch_id']}" in shown  # ...and which architecture it is
    for key, value in first.params.items():  # its choices, the parameters importance is computed over
        assert f"{key} {value}" in shown


def test_dashboard_names_the_objectives_on_the_pareto_front(
    run_dir: Path, dashboard: dict[str, Any], tmp_path: Path
) -> None:
    text = _page_text(dashboard["url"], tmp_path / "profile", "Objective Y: latency_ms")
    assert "Pareto Front" in text and "Objective X: accuracy" in text and "Objective Y: latency_ms" in text
    assert "Hyperparameter Importance" in text
    assert _study(run_dir).metric_names == ["accuracy", "latency_ms"]


# --------------------------------------------------------------------------- the server itself


def test_the_server_stops_on_sigterm_and_frees_its_port(
    run_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    proc, info = _start([str(run_dir)], tmp_path_factory)
    try:
        with socket.create_connection(("127.0.0.1", info["port"]), timeout=5):
            pass  # serving
    finally:
        code = _stop(proc)
    assert code == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", info["port"]), timeout=5).close()


def test_a_storage_url_and_study_open_without_a_run_directory(run_dir: Path) -> None:
    url = f"sqlite:///{run_dir}/study.db"
    dash = open_dashboard(url, None)  # the storage's only study
    try:
        assert dash.study == "search" and dash.trials == len(_study(run_dir).trials)
        assert dash.url.startswith(f"http://127.0.0.1:{dash.server.server_port}/dashboard/studies/")
    finally:
        dash.server.server_close()


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["dashboard", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nas: error: "), err
    return err


def test_what_cannot_be_served_is_one_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "needs a run directory" in _error(capsys)
    assert "not a run directory" in _error(capsys, str(tmp_path))
    unsearched = tmp_path / "unsearched"
    unsearched.mkdir()
    shutil.copy(run_dir / "config.yaml", unsearched / "config.yaml")
    assert "has no study yet" in _error(capsys, str(unsearched))
    assert "has no study 'other'; its studies: search" in _error(capsys, str(run_dir), "--study", "other")
    assert not (tmp_path / "x.db").exists() and "no study database" in _error(
        capsys, "--storage", f"sqlite:///{tmp_path}/x.db"
    )
    assert not (tmp_path / "x.db").exists()  # looking did not create it
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert "cannot listen" in _error(capsys, str(run_dir), "--port", str(taken.getsockname()[1]))
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # not installed
    assert 'pip install -e ".[dashboard]"' in _error(capsys, str(run_dir))


# --------------------------------------------------------------------------- what the study carries


def test_controllers_name_the_objectives_of_new_and_older_studies(tmp_path: Path) -> None:
    space = create_space("tiny")
    kwargs: dict[str, Any] = dict(space=space, seed=0, latency_budget_ms=None, run_dir=tmp_path, population=4)
    fresh = optuna.storages.InMemoryStorage()
    create_controller("random", n_devices=2, storage=fresh, **kwargs).close()
    assert optuna.load_study(study_name="search", storage=fresh).metric_names == [
        "accuracy",
        "latency_ms",
        "latency_ms_2",
    ]
    older = optuna.storages.InMemoryStorage()  # a study made before the names were set
    optuna.create_study(storage=older, study_name="search", directions=["maximize", "minimize"])
    create_controller("nsga2", n_devices=1, storage=older, **kwargs).close()
    assert optuna.load_study(study_name="search", storage=older).metric_names == objective_names(1)
