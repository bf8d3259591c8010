"""Does a budgeted search deliver networks that meet the budget when measured? Writes
results/latency_budget.md.

    python scripts/bench_latency_budget.py [--budget-ms 3.0] [--run-dir runs/bench_budget] [--report-only]

Runs the quick start with `--latency-budget-ms`, then `nas latency measure` on
the run (every Pareto architecture and the export, timed on this CPU as
calibration times) and checks measured latency <= budget + 10%. The figures go
to results/data/latency_budget.json and the report is rendered from that file
alone (`render`, also called by scripts/make_results.py); `--report-only`
collects them from a finished --run-dir without running or writing anything there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _nas import nas  # scripts/ is on sys.path when a script runs
from _results import data_path, machine_block, provenance, save_raw, write_markdown

NAME = "latency_budget"
MARKDOWN = "latency_budget.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--budget-ms",
        type=float,
        default=None,
        help=(
            "default: 40%% of the way from the smallest to the largest predicted latency (--report-only: the"
            " run's)"
        ),
    )
    ap.add_argument("--run-dir", default="runs/bench_budget")
    ap.add_argument("--report-only", action="store_true", help="report the finished --run-dir, run nothing")
    ap.add_argument("--out", default="results/latency_budget.md")
    args = ap.parse_args()
    run = Path(args.run_dir)
    if args.report_only:
        import yaml

        args.budget_ms = yaml.safe_load((run / "config.yaml").read_text())["search"]["latency_budget_ms"]
    else:
        measure(args)
    measured = json.loads((run / "search" / "latency_measured.json").read_text())
    meta = json.loads((run / "export" / "meta.json").read_text())
    raw = {
        **provenance(
            NAME,
            {"budget_ms": args.budget_ms, "run_dir": args.run_dir},
            measured_in=[run / "search" / "latency_measured.json"] if args.report_only else (),
        ),
        "built_from": str(run),
        "rows": measured["rows"],
        "refit": {k: measured["refit"][k] for k in ("mape_before", "mape_after")},
        "export": {k: meta[k] for k in ("arch_id", "latency_pred_ms", "test_accuracy")},
    }
    save_raw(data_path(args.out, NAME), raw)
    out = Path(args.out)
    render(raw, out.parent, md_name=out.name)
    print(out.read_text())


def measure(args: argparse.Namespace) -> None:
    """Calibrate afresh, run the budgeted quick start and measure its Pareto architectures into --run-dir."""
    from nas.cost import load_or_calibrate
    from nas.run.config import build_config
    from nas.run.context import build_space

    space = build_space(build_config())
    # A fresh calibration, cached where `nas run` will find it: a profile measured hours ago under other load
    # would test the cache, not the model.
    model = load_or_calibrate(space, device="cpu", recalibrate=True)
    if args.budget_ms is None:
        lo, hi = (float(v) for v in model.predict([space.smallest(), space.largest()]))
        args.budget_ms = round(lo + 0.4 * (hi - lo), 2)
    nas(
        "run",
        "--run-dir",
        args.run_dir,
        f"--latency-budget-ms={args.budget_ms}",
        "--trackers=jsonl",
        "--quiet",
        "--json",
    )
    nas("latency", "measure", "--run-dir", args.run_dir, "--refit", "--quiet", "--json")


def render(raw: dict[str, Any], out_dir: Path, md_name: str = MARKDOWN, figures: bool = True) -> list[Path]:
    """latency_budget.md from the data alone (no figure)."""
    budget = raw["settings"]["budget_ms"]
    rows, meta, refit = raw["rows"], raw["export"], raw["refit"]
    limit = budget * 1.10
    ok = [r for r in rows if r["measured_ms"] <= limit]
    lines = [
        "# Latency budget: predicted vs. measured",
        "",
        (
            f"`nas run --latency-budget-ms={budget}` (the digits quick start, `mbv3` width 0.5, cpu profile"
            " calibrated on this machine, batch 1, 1 thread), then `nas latency measure --refit` on the run"
            " (the profile is calibrated afresh first). Reproduce: `python scripts/bench_latency_budget.py"
            f" --budget-ms {budget}`."
        ),
        "",
        machine_block(raw["machine"]),
        "| architecture | predicted ms | measured ms | error | within budget + 10% |",
        "| --- | ---: | ---: | ---: | :---: |",
        *[
            f"| `{r['arch_id']}`{' (exported)' if r['arch_id'] == meta['arch_id'] else ''} |"
            f" {r['predicted_ms']:.3f} | {r['measured_ms']:.3f} | {r['error_pct']:+.1f}% |"
            f" {'yes' if r['measured_ms'] <= limit else '**no**'} |"
            for r in rows
        ],
        "",
        (
            f"**{len(ok)} of {len(rows)}** searched Pareto architectures measure within the budget + 10%"
            f" ({limit:.2f} ms); the exported network: predicted {meta['latency_pred_ms']:.3f} ms, measured"
            f" {next(r['measured_ms'] for r in rows if r['arch_id'] == meta['arch_id']):.3f} ms, test"
            f" accuracy {meta['test_accuracy']:.4f}."
        ),
        "",
        (
            "Closing the loop (`nas latency measure --refit`): refitting the profile's scale and offset to"
            f" these measurements moves the mean absolute error from {100 * refit['mape_before']:.1f}% to"
            f" {100 * refit['mape_after']:.1f}%."
        ),
        "",
    ]
    return [write_markdown(out_dir / md_name, lines)]


if __name__ == "__main__":
    main()
