"""One finished `nas run` shared by the fault and bad-input suites (not a test module).

Training, searching and exporting even the `tiny` space costs tens of seconds, so
both suites copy (or read without changing) one uninterrupted run made here once
per test session; whichever module asks first makes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nas.cli import main

# Small and quick, but every stage is real: 3 epochs, 8 trials, two export formats.
EPOCHS, TRIALS = 3, 8
SETTINGS = [
    "--space=tiny",
    "--data.resolution=16",
    "--data.train_limit=256",
    "--data.val_limit=128",
    "--train.bn_recal_batches=2",
    "--trackers=jsonl",
    f"--epochs={EPOCHS}",
    f"--trials={TRIALS}",
    "--search.calibration_archs=8",
    "--export.latency_repeats=5",
    "--format=torch,torchscript",
    "--quiet",
]

_made: dict[str, tuple[Path, dict[str, Any]]] = {}


def cache_dir(factory: pytest.TempPathFactory) -> Path:
    """The session's profile/data cache (the one tests/conftest.py points XDG_CACHE_HOME at)."""
    return factory.getbasetemp() / "xdg-cache"


def env(factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for `nas` subprocesses: the session cache, offline trackers."""
    return {
        **os.environ,
        "XDG_CACHE_HOME": str(cache_dir(factory)),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }


def finished_run(factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(run directory, `--json` summary) of one uninterrupted `nas run` with :data:`SETTINGS`; made once."""
    if "run" not in _made:
        run_dir = factory.mktemp("finished_run") / "run"
        out = io.StringIO()
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
            mp.setenv("XDG_CACHE_HOME", str(cache_dir(factory)))
            assert main(["run", "--run-dir", str(run_dir), "--json", *SETTINGS]) == 0
        _made["run"] = (run_dir, json.loads(out.getvalue().strip().splitlines()[-1]))
    return _made["run"]


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (the lock file, which only holds a pid,
    excluded)."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def nas_subprocess(args: list[str], factory: pytest.TempPathFactory, **kwargs: Any) -> subprocess.Popen:
    """`python -m nas.cli ARGS` as a real process (for SIGKILL and lock tests)."""
    return subprocess.Popen([sys.executable, "-m", "nas.cli", *args], env=env(factory), **kwargs)


def sigkill_when(
    proc: subprocess.Popen, ready: Callable[[], bool], timeout: float, poll: float = 0.01
) -> int | None:
    """SIGKILL ``proc`` the moment ``ready()`` holds (or at ``timeout``) and return its exit code.

    ``-signal.SIGKILL`` means it was killed; anything else means it ended on its own first,
    which a fault test should report, since then it tested nothing.
    """
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline and not ready():
            time.sleep(poll)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode
