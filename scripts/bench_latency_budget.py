"""Does a budgeted search deliver networks that meet the budget when measured? Writes results/latency_budget.md.

    python scripts/bench_latency_budget.py [--budget-ms 3.0] [--run-dir runs/bench_budget]

Runs the quick start with `--latency-budget-ms`, then `nas latency measure` on
the run (every Pareto architecture and the export, timed on this CPU as
calibration times) and checks measured latency <= budget + 10%.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _nas import nas  # scripts/ is on sys.path when a script runs
from nas.machine import machine_markdown
from nas.rundir import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-ms", type=float, default=None, help="default: 40% of the way from the smallest to the largest predicted latency")
    ap.add_argument("--run-dir", default="runs/bench_budget")
    ap.add_argument("--out", default="results/latency_budget.md")
    args = ap.parse_args()
    from nas.config import build_config
    from nas.context import build_space
    from nas.cost import load_or_calibrate

    space = build_space(build_config())
    # A fresh calibration, cached where `nas run` will find it: a profile measured hours ago under other load would test the cache, not the model.
    model = load_or_calibrate(space, device="cpu", recalibrate=True)
    if args.budget_ms is None:
        lo, hi = (float(v) for v in model.predict([space.smallest(), space.largest()]))
        args.budget_ms = round(lo + 0.4 * (hi - lo), 2)
    nas("run", "--run-dir", args.run_dir, f"--latency-budget-ms={args.budget_ms}", "--trackers=jsonl", "--quiet", "--json")
    nas("latency", "measure", "--run-dir", args.run_dir, "--refit", "--quiet", "--json")
    run = Path(args.run_dir)
    measured = json.loads((run / "search" / "latency_measured.json").read_text())
    meta = json.loads((run / "export" / "meta.json").read_text())
    limit = args.budget_ms * 1.10
    rows = measured["rows"]
    ok = [r for r in rows if r["measured_ms"] <= limit]
    lines = [
        "# Latency budget: predicted vs. measured",
        "",
        f"`nas run --latency-budget-ms={args.budget_ms}` (the digits quick start, `mbv3` width 0.5, cpu profile calibrated on this machine, batch 1, 1 thread), "
        f"then `nas latency measure --refit` on the run (the profile is calibrated afresh first). Reproduce: `python scripts/bench_latency_budget.py --budget-ms {args.budget_ms}`.",
        "",
        machine_markdown(),
        "| architecture | predicted ms | measured ms | error | within budget + 10% |",
        "| --- | ---: | ---: | ---: | :---: |",
        *[
            f"| `{r['arch_id']}`{' (exported)' if r['arch_id'] == meta['arch_id'] else ''} | {r['predicted_ms']:.3f} | {r['measured_ms']:.3f} | {r['error_pct']:+.1f}% | {'yes' if r['measured_ms'] <= limit else '**no**'} |"
            for r in rows
        ],
        "",
        f"**{len(ok)} of {len(rows)}** searched Pareto architectures measure within the budget + 10% ({limit:.2f} ms); "
        f"the exported network: predicted {meta['latency_pred_ms']:.3f} ms, measured {next(r['measured_ms'] for r in rows if r['arch_id'] == meta['arch_id']):.3f} ms, "
        f"test accuracy {meta['test_accuracy']:.4f}.",
        "",
        f"Closing the loop (`nas latency measure --refit`): refitting the profile's scale and offset to these measurements moves the mean absolute error "
        f"from {100 * measured['refit']['mape_before']:.1f}% to {100 * measured['refit']['mape_after']:.1f}%.",
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
