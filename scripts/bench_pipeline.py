"""Quick-start figures: run `nas run` on the digits default as a new user would, write results/pipeline.md.

    python scripts/bench_pipeline.py [--out results/pipeline.md] [-- extra nas settings]

Runs in a fresh run directory with an empty profile cache, so the cost-model
calibration a first-time user pays is included in the wall time.
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

from nas.machine import machine_markdown
from nas.rundir import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/pipeline.md")
    ap.add_argument("settings", nargs="*", help="extra nas settings, e.g. --trials=20")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache"), "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
        cmd = [sys.executable, "-m", "nas.cli", "run", "--run-dir", str(Path(tmp) / "run"), "--json", "--quiet", *args.settings]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            sys.exit(f"nas run failed:\n{res.stderr}")
        summary = json.loads(res.stdout.strip().splitlines()[-1])
        meta = json.loads((Path(tmp) / "run" / "export" / "meta.json").read_text())
        pareto = json.loads((Path(tmp) / "run" / "search" / "pareto.json").read_text())
    shown = "nas run " + " ".join(args.settings) if args.settings else "nas run"
    lines = [
        "# Quick start: `nas run` on digits",
        "",
        f"Command: `{shown}` (defaults: `mbv3` width 0.5, 8 supernet epochs with the sandwich rule, 40 NSGA-II trials, "
        "cpu latency profile calibrated on first use). Reproduce with `python scripts/bench_pipeline.py`.",
        "",
        machine_markdown(),
        "| figure | value |",
        "| --- | --- |",
        f"| wall time, whole command (process start to exit, calibration included) | {wall:.1f} s |",
        f"| supernet training, last epoch | {summary['train']['epoch_seconds']:.1f} s/epoch |",
        f"| search ({summary['search']['trials']} trials, evaluation included) | {summary['search']['search_seconds']:.1f} s |",
        f"| Pareto front size | {summary['search']['pareto_size']} |",
        f"| exported architecture | `{meta['arch_id']}` (trial {meta['trial']}) |",
        f"| params / MACs | {meta['params']:,} / {meta['macs']:,} |",
        f"| val accuracy (inherited weights, BN recalibrated) | {meta['val_accuracy']:.4f} |",
        f"| test accuracy | {meta['test_accuracy']:.4f} |",
        f"| latency predicted (cpu profile, batch 1, 1 thread) | {meta['latency_pred_ms']:.3f} ms |",
        f"| latency measured (fastest of >= {meta['latency_setup']['repeats']} runs spread over >= 1.5 s) | {meta['latency_measured_ms']:.3f} ms |",
        f"| prediction error | {meta['latency_error_pct']:+.1f} % |",
        f"| supernet vs extracted, max abs diff | {meta['verification']['supernet_vs_extracted_max_abs_diff']:.2e} |",
        "",
        "Pareto front (validation accuracy vs. predicted latency):",
        "",
        "| trial | arch id | val acc | predicted ms |",
        "| --- | --- | --- | --- |",
        *[f"| {r['trial']} | `{r['arch_id']}` | {r['accuracy']:.4f} | {r['latency_ms']:.3f} |" for r in pareto["front"]],
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
