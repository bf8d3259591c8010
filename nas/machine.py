"""Where a figure was measured: every file under results/ records this next to its numbers."""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata


def machine_info() -> dict[str, str]:
    from nas.cost.calibrate import processor_name

    versions = {}
    for pkg in ("torch", "torchvision", "numpy", "numba", "optuna", "timm"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "platform": platform.platform(),
        "processor": processor_name(),
        "logical_cores": str(os.cpu_count()),
        "python": sys.version.split()[0],
        **versions,
    }


def machine_markdown() -> str:
    info = machine_info()
    versions = ", ".join(f"{k} {info[k]}" for k in ("python", "torch", "torchvision", "numpy", "numba", "optuna", "timm"))
    return f"- date: {info['date']}\n- machine: {info['platform']}; {info['processor']}; {info['logical_cores']} logical cores\n- versions: {versions}\n"
