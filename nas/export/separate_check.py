"""Checking an exported model in a separate Python process that imports only its library and torch.

The ``timm`` and ``original`` formats promise files a user loads without this project. Only a fresh
interpreter, started in an empty folder (nothing of this project on its import path unless installed),
can show that: it runs the format's loader on the validation batch and reports the logits' difference,
the batch accuracy both ways, the class it built and which of this project's modules got imported.
The check runs in the background while the other formats are written; ``finish`` waits for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas.export.formats import FORMAT_TOLERANCE, ExportJob


@dataclass
class SeparateCheck:
    """What the child reported (``report``), the tolerance it was held to, and what failed."""

    report: dict[str, Any]
    tolerance: float
    problems: list[str] = field(default_factory=list)


def start_separate_check(
    job: ExportJob, verify_script: str, loader_file: str, library: str
) -> Callable[[], SeparateCheck]:
    """Start ``verify_script`` (argv: loader path, export folder, batch file) on ``job``'s validation batch
    in a fresh interpreter; returns a function that waits for it and judges its JSON report."""
    tmp = tempfile.TemporaryDirectory(prefix=f"nas-{library}-check-")
    batch = Path(tmp.name) / "batch.pt"
    torch.save({"x": job.x, "y": job.y, "logits": job.logits}, batch)
    loader = str((job.out_dir / loader_file).resolve())
    cmd = [sys.executable, "-c", verify_script, loader, str(job.out_dir.resolve()), str(batch)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    # cwd is the temporary folder: nothing of this project is on the child's import path unless installed
    proc = subprocess.Popen(
        cmd, cwd=tmp.name, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )

    def finish() -> SeparateCheck:
        try:
            stdout, stderr = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
            tmp.cleanup()
        if proc.returncode != 0:
            last = (stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"building the {library} model in a separate python failed: {last}")
        res = json.loads(stdout.strip().splitlines()[-1])
        check = SeparateCheck(res, FORMAT_TOLERANCE * max(1.0, job.logits.abs().max().item()))
        if not res["max_abs_diff"] <= check.tolerance:
            check.problems.append(
                f"max abs difference {res['max_abs_diff']:.3g} > tolerance {check.tolerance:.3g}"
            )
        if res["accuracy"] != res["accuracy_ours"]:
            check.problems.append(
                f"validation-batch accuracy {res['accuracy']:.4f} in {library} vs {res['accuracy_ours']:.4f}"
                " here"
            )
        if res["project_modules_imported"]:
            check.problems.append(f"the check imported {res['project_modules_imported']}")
        return check

    return finish


def verdict(out: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """``out`` with ``ok`` and, when something failed, the ``error`` that names it."""
    out["ok"] = not problems
    if problems:
        out["error"] = "verification failed: " + "; ".join(problems)
    return out
