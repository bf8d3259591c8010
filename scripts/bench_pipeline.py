"""Quick-start figures: run `nas run` on the digits default as a new user would, write results/pipeline.md.

    python scripts/bench_pipeline.py [--out results/pipeline.md] [-- extra nas settings]

Runs in a fresh run directory with an empty profile cache, so the cost-model
calibration a first-time user pays is included in the wall time. The figures go
to results/data/pipeline.json and the report is rendered from that file alone
(`render`, also called by scripts/make_results.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _results import data_path, machine_block, provenance, save_raw, write_markdown

NAME = "pipeline"
MARKDOWN = "pipeline.md"
EXPORT_KEYS = (
    "arch_id",
    "trial",
    "params",
    "macs",
    "val_accuracy",
    "test_accuracy",
    "latency_pred_ms",
    "latency_measured_ms",
    "latency_error_pct",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/pipeline.md")
    ap.add_argument("--sessions", type=int, default=3, help="separate `nas run` sessions (wall time varies)")
    ap.add_argument("settings", nargs="*", help="extra nas settings, e.g. --trials=20")
    args = ap.parse_args()
    sessions = []
    for _ in range(args.sessions):
        sessions.append(measure(args.settings))
        print(f"session {len(sessions)}: {sessions[-1]['wall_seconds']:.1f} s", flush=True)
    brief = [{k: v[k] for k in ("wall_seconds", "train", "search")} for v in sessions]
    for b, v in zip(brief, sessions):
        b["test_accuracy"] = v["export"]["test_accuracy"]
    raw = {**provenance(NAME, {"nas_settings": args.settings}), **sessions[-1], "sessions": brief}
    # the data is named after --out, so a run with other settings never overwrites the quick start's
    save_raw(data_path(args.out, Path(args.out).stem), raw)
    out = Path(args.out)
    render(raw, out.parent, md_name=out.name)
    print(out.read_text())


def measure(settings: list[str]) -> dict[str, Any]:
    """`nas run` in a fresh directory and profile cache: its wall time, summary, export and Pareto front."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "XDG_CACHE_HOME": str(Path(tmp) / "cache"),
            "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
        }
        cmd = [
            sys.executable,
            "-m",
            "nas.cli",
            "run",
            "--run-dir",
            str(Path(tmp) / "run"),
            "--json",
            "--quiet",
            *settings,
        ]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            sys.exit(f"nas run failed:\n{res.stderr}")
        summary = json.loads(res.stdout.strip().splitlines()[-1])
        meta = json.loads((Path(tmp) / "run" / "export" / "meta.json").read_text())
        pareto = json.loads((Path(tmp) / "run" / "search" / "pareto.json").read_text())
    return {
        "wall_seconds": wall,
        "train": {"epoch_seconds": summary["train"]["epoch_seconds"]},
        "search": {k: summary["search"][k] for k in ("trials", "search_seconds", "pareto_size")},
        "export": {
            **{k: meta[k] for k in EXPORT_KEYS},
            "latency_repeats": meta["latency_setup"]["repeats"],
            "supernet_vs_extracted_max_abs_diff": meta["verification"]["supernet_vs_extracted_max_abs_diff"],
            "formats_seconds": meta.get("formats_seconds"),
            "format_seconds": {f: r.get("seconds") for f, r in meta.get("formats", {}).items()},
        },
        "pareto_front": [
            {k: r[k] for k in ("trial", "arch_id", "accuracy", "latency_ms")} for r in pareto["front"]
        ],
    }


def _format_rows(meta: dict[str, Any]) -> list[str]:
    """Writing and checking the export formats (data from before these were recorded has none)."""
    if meta.get("formats_seconds") is None:
        return []
    each = ", ".join(f"{f} {sec:.1f} s" for f, sec in meta["format_seconds"].items() if sec is not None)
    timm = "; the timm check runs in a second process meanwhile" if "timm" in meta["format_seconds"] else ""
    return [
        f"| export formats written and checked (all of them{timm}) |"
        f" {meta['formats_seconds']:.1f} s ({each}) |"
    ]


def _wall(raw: dict[str, Any]) -> str:
    """The last session's wall time, and the mean and range over sessions where there were several."""
    sessions = raw.get("sessions", [])
    if len(sessions) < 2:
        return f"{raw['wall_seconds']:.1f} s"
    walls = [v["wall_seconds"] for v in sessions]
    return (
        f"{sum(walls) / len(walls):.1f} s mean over {len(walls)} sessions ({min(walls):.1f} -"
        f" {max(walls):.1f} s)"
    )


def render(raw: dict[str, Any], out_dir: Path, md_name: str = MARKDOWN, figures: bool = True) -> list[Path]:
    """pipeline.md from the data alone (no figure)."""
    settings, meta, search = raw["settings"]["nas_settings"], raw["export"], raw["search"]
    shown = "nas run " + " ".join(settings) if settings else "nas run"
    lines = [
        "# Quick start: `nas run` on digits",
        "",
        (
            f"Command: `{shown}` ({'otherwise ' if settings else ''}the quick start's defaults:"
            " `mbv3` width 0.5, 8 supernet epochs with the sandwich rule, 40 NSGA-II trials, cpu latency"
            " profile calibrated on first use). Reproduce with `python scripts/bench_pipeline.py"
            + (f" --out results/{md_name} -- {' '.join(settings)}" if settings else "")
            + "`."
        ),
        "",
        machine_block(raw["machine"]),
        "| figure | value |",
        "| --- | --- |",
        f"| wall time, whole command (process start to exit, calibration included) | {_wall(raw)} |",
        f"| supernet training, last epoch | {raw['train']['epoch_seconds']:.1f} s/epoch |",
        f"| search ({search['trials']} trials, evaluation included) | {search['search_seconds']:.1f} s |",
        f"| Pareto front size | {search['pareto_size']} |",
        f"| exported architecture | `{meta['arch_id']}` (trial {meta['trial']}) |",
        f"| params / MACs | {meta['params']:,} / {meta['macs']:,} |",
        f"| val accuracy (inherited weights, BN recalibrated) | {meta['val_accuracy']:.4f} |",
        f"| test accuracy | {meta['test_accuracy']:.4f} |",
        f"| latency predicted (cpu profile, batch 1, 1 thread) | {meta['latency_pred_ms']:.3f} ms |",
        (
            f"| latency measured (fastest of >= {meta['latency_repeats']} runs spread over >= 1.5 s) |"
            f" {meta['latency_measured_ms']:.3f} ms |"
        ),
        f"| prediction error | {meta['latency_error_pct']:+.1f} % |",
        f"| supernet vs extracted, max abs diff | {meta['supernet_vs_extracted_max_abs_diff']:.2e} |",
        *_format_rows(meta),
        "",
        (
            "The rows below the wall time are the last session's. Pareto front (validation accuracy vs."
            " predicted latency):"
        ),
        "",
        "| trial | arch id | val acc | predicted ms |",
        "| --- | --- | --- | --- |",
        *[
            f"| {r['trial']} | `{r['arch_id']}` | {r['accuracy']:.4f} | {r['latency_ms']:.3f} |"
            for r in raw["pareto_front"]
        ],
        "",
    ]
    return [write_markdown(out_dir / md_name, lines)]


if __name__ == "__main__":
    main()
