"""Shared by the benchmark scripts: run a `nas` command in a fresh process, exit with its stderr on
failure."""

from __future__ import annotations

import subprocess
import sys


def nas(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"`nas {' '.join(args)}` failed:\n{res.stderr[-4000:]}")
    return res.stdout
