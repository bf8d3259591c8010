"""Shared by the benchmark scripts and make_results.py: the measured-data JSON under results/data/ and its
provenance.

Every benchmark separates measuring from rendering: measuring writes what it
measured to ``results/data/<name>.json`` (this module), and the script's
``render(raw, out_dir)`` writes the markdown (and PNG) from that JSON alone, so
``scripts/make_results.py`` can regenerate every published table from committed
data without the git-ignored run directories.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

DATA_DIR = "data"  # under the results directory


def machine_info() -> dict[str, str]:
    """Where a figure was measured: platform, processor, cores and package versions, recorded next to every
    number."""
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


def data_path(out: str | Path, name: str) -> Path:
    """Where a benchmark writing ``out`` (a file in the results directory) keeps its measured data."""
    return Path(out).parent / DATA_DIR / f"{name}.json"


def command_line() -> str:
    """The invocation of the running script, as a user would type it (the provenance of its data)."""
    return " ".join(
        ["python", shlex.quote(f"scripts/{Path(sys.argv[0]).name}"), *(shlex.quote(a) for a in sys.argv[1:])]
    )


def provenance(name: str, settings: Mapping[str, Any], measured_in: Sequence[Path] = ()) -> dict[str, Any]:
    """The fields every data file starts with: what wrote it, with which settings, where and when.

    ``measured_in``: the run files a report-only call reads. The machine's date is
    then when the newest of them was written (when the figures were measured),
    not when they were collected; ``collected`` says the latter.
    """
    machine = machine_info()
    raw = {
        "benchmark": name,
        "script": f"scripts/bench_{name}.py",
        "command": command_line(),
        "settings": dict(settings),
        "machine": machine,
    }
    if measured_in:
        raw["collected"] = machine["date"]
        machine["date"] = time.strftime(
            "%Y-%m-%d %H:%M %Z", time.localtime(max(Path(f).stat().st_mtime for f in measured_in))
        )
    return raw


def _plain(v: Any) -> bool:
    return not isinstance(v, (dict, list, tuple))


def dumps_data(obj: Any, indent: str = "") -> str:
    """Key-sorted JSON, one key or record per line, with lists of values (or of short value lists) on one
    line: at indent 2 the controller study's per-trial curves took a line per number (525 KB; 213 KB
    like this), which made the data files and their diffs unreadable."""
    inner = indent + " "
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {dumps_data(v, inner)}" for k, v in sorted(obj.items())]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, (list, tuple)) and not all(
        _plain(v) or (isinstance(v, (list, tuple)) and all(map(_plain, v))) for v in obj
    ):
        return "[\n" + ",\n".join(inner + dumps_data(v, inner) for v in obj) + "\n" + indent + "]"
    return json.dumps(obj)


def save_raw(path: str | Path, raw: Mapping[str, Any]) -> None:
    """Write the measured data atomically (a crash never leaves half a data file to render from)."""
    from nas.run.files import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, dumps_data(dict(raw)) + "\n")


def load_raw(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def machine_block(info: Mapping[str, str]) -> str:
    """The machine lines of a report, for a recorded :func:`machine_info` dict: a re-render names the
    measuring machine, not this one."""
    versions = ", ".join(
        f"{k} {info[k]}" for k in ("python", "torch", "torchvision", "numpy", "numba", "optuna", "timm")
    )
    return (
        f"- date: {info['date']}\n- machine: {info['platform']}; {info['processor']}; {info['logical_cores']}"
        f" logical cores\n- versions: {versions}\n"
    )


def write_markdown(path: Path, lines: list[str]) -> Path:
    """Write a report's lines atomically; returns the path for the caller's list of outputs."""
    from nas.run.files import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines))
    return path


def measure_and_render(
    args: Any,
    name: str,
    measure: Callable[[Any, dict[str, Any] | None, Path], dict[str, Any]],
    render: Callable[..., list[Path]],
) -> None:
    """The shape of a resumable benchmark's ``main``: measure into ``data/<name>.json`` beside ``args.out``
    (continuing what the file holds; nothing with ``args.report_only``), then render ``args.out`` from the
    data alone and print it."""
    out = Path(args.out)
    path = data_path(out, name)
    raw = load_raw(path) if path.exists() else None
    if not args.report_only:
        raw = measure(args, raw, path)
    if raw is None:
        raise SystemExit(f"no data in {path}: run without --report-only first")
    render(raw, out.parent, md_name=out.name)
    print(out.read_text())
