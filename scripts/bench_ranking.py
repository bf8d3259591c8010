"""Ranking quality of supernet training recipes on Fashion-MNIST, written to results/ranking.md.

    python scripts/bench_ranking.py [--root runs/bench_ranking] [--archs 20] [--seeds 2] ...

For each recipe: `nas train` a supernet, then `nas rank` the same K architectures
(stratified by size) against standalone trainings shared by all recipes (the
ground truth does not depend on the recipe). Everything lives under --root and
the script resumes where it stopped. The figures go to results/data/ranking.json
(per recipe: its ranking.json without the architectures' choices, and the phase
times), and the report and scatter plots are rendered from that file alone
(`render`, also called by scripts/make_results.py). Needs Debian's
dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from _nas import nas  # scripts/ is on sys.path when a script runs
from _results import data_path, machine_block, provenance, save_raw, write_markdown

from nas.run.files import atomic_write_text

NAME = "ranking"
MARKDOWN = "ranking.md"
SETTINGS = (
    "root",
    "recipes",
    "archs",
    "seeds",
    "train_limit",
    "val_limit",
    "width_mult",
    "stem_stride",
    "supernet_epochs",
    "standalone_epochs",
    "bn_recal_batches",
    "no_channels_last",
    "set",
    "note",
)

RECIPES = {
    "sandwich": ["--train.sampler=sandwich"],
    "sandwich+distill": ["--train.sampler=sandwich", "--train.distill=true"],
    "uniform": ["--train.sampler=uniform"],
    "fair": ["--train.sampler=fair"],
    "sorted": ["--train.sampler=sorted"],
    "progressive": ["--train.sampler=progressive"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="runs/bench_ranking")
    ap.add_argument("--recipes", default="sandwich,uniform,sandwich+distill")
    ap.add_argument("--archs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=10000)
    ap.add_argument("--val-limit", type=int, default=10000)
    ap.add_argument("--width-mult", type=float, default=0.25)
    ap.add_argument(
        "--stem-stride",
        type=int,
        default=1,
        help=(
            "1 keeps 28x28 maps in the first stage (with 2, the last stages run at 1x1-2x2, where kernel"
            " choices only see padding)"
        ),
    )
    ap.add_argument("--supernet-epochs", type=int, default=12)
    ap.add_argument("--standalone-epochs", type=int, default=6)
    ap.add_argument(
        "--bn-recal-batches",
        type=int,
        default=40,
        help="BN recalibration batches before every evaluation (more = less evaluation noise)",
    )
    ap.add_argument(
        "--no-channels-last",
        action="store_true",
        help="NCHW instead of channels-last (channels-last trains about 2.8x faster on CPU here)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "another nas setting for every supernet and standalone training, e.g. --set train.lr=0.05"
            " (repeatable)"
        ),
    )
    ap.add_argument("--out", default="results/ranking.md")
    ap.add_argument(
        "--note", default="", help="context to print under the figures (e.g. what else ran on the machine)"
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report from the run directories' ranking.json, running nothing",
    )
    args = ap.parse_args()
    root = Path(args.root)
    common = [
        "--data=fashion_mnist",
        f"--train-limit={args.train_limit}",
        f"--data.val_limit={args.val_limit}",
        f"--width-mult={args.width_mult}",
        f"--space.options={{stem_stride: {args.stem_stride}}}",
        f"--epochs={args.supernet_epochs}",
        f"--train.bn_recal_batches={args.bn_recal_batches}",
        f"--train.channels_last={str(not args.no_channels_last).lower()}",
        "--trackers=jsonl",
        "--quiet",
        *(f"--{kv}" for kv in args.set),
    ]
    reports, seconds = {}, {}
    started = time.perf_counter()
    for name in args.recipes.split(","):
        run_dir = root / name.replace("+", "_")
        if args.report_only:
            reports[name] = _published(run_dir)
            continue
        t0 = time.perf_counter()
        nas("train", "--run-dir", str(run_dir), *common, *RECIPES[name])
        seconds[name] = time.perf_counter() - t0
        print(f"{name}: supernet trained ({seconds[name]:.0f}s this call)", flush=True)
        t0 = time.perf_counter()
        nas(
            "rank",
            "--run-dir",
            str(run_dir),
            f"--archs={args.archs}",
            f"--epochs={args.standalone_epochs}",
            f"--seeds={args.seeds}",
            "--standalone-dir",
            str(root / "standalone"),
            "--quiet",
            "--json",
        )
        bench_seconds = {"supernet": seconds[name], "rank": time.perf_counter() - t0}
        atomic_write_text(run_dir / "bench_seconds.json", json.dumps(bench_seconds))
        reports[name] = _published(run_dir)
        print(f"{name}: kendall tau {reports[name]['kendall_tau']:.3f}", flush=True)
    raw = {
        **provenance(
            NAME,
            {k: getattr(args, k) for k in SETTINGS},
            measured_in=(
                [root / n.replace("+", "_") / "ranking.json" for n in reports] if args.report_only else ()
            ),
        ),
        "built_from": str(root),
        "wall_seconds": None if args.report_only else time.perf_counter() - started,
        "reports": reports,
    }
    save_raw(data_path(args.out, NAME), raw)
    out = Path(args.out)
    render(raw, out.parent, md_name=out.name)
    print(out.read_text())


def _published(run_dir: Path) -> dict[str, Any]:
    """A recipe's ranking.json as published: per-architecture figures by arch id (the choices stay in the run
    directory), plus its phase times."""
    report = json.loads((run_dir / "ranking.json").read_text())
    report["rows"] = [{k: v for k, v in row.items() if k != "arch"} for row in report["rows"]]
    timing = run_dir / "bench_seconds.json"
    if timing.exists():
        report["bench_seconds"] = json.loads(timing.read_text())
    return report


def spread_sentence(report: dict) -> str:
    """Architecture spread vs. seed noise of the ground truth, in accuracy points (what limits its
    reliability)."""
    acc = np.array([r["standalone_val_acc"] for r in report["rows"]]) * 100
    noise = float(
        np.std(acc - acc.mean(axis=1, keepdims=True), ddof=0)
        * np.sqrt(acc.shape[1] / max(acc.shape[1] - 1, 1))
    )
    spread = float(acc.mean(axis=1).std())
    # Gaussian model: two independent m-seed means correlate with r = s^2 / (s^2 + n^2 / m); tau = 2/pi *
    # asin(r).
    r_needed = np.sin(0.7 * np.pi / 2)
    seeds_needed = int(np.ceil(noise**2 / (spread**2 * (1 / r_needed - 1)))) if spread > 0 else None
    return (
        f"Standalone accuracy ranges {acc.mean(axis=1).min():.2f}-{acc.mean(axis=1).max():.2f}% across the"
        f" architectures (std {spread:.2f} points) against a seed-to-seed noise of {noise:.2f} points per"
        f" training; under a Gaussian model a reliability of 0.7 needs the mean of about {seeds_needed} seeds"
        " per architecture on each side of the comparison."
    )


def render(raw: dict[str, Any], out_dir: Path, md_name: str = MARKDOWN, figures: bool = True) -> list[Path]:
    """ranking.md and one scatter plot per recipe, from the data alone."""
    args = argparse.Namespace(**{"set": [], **raw["settings"]})
    reports, wall_seconds = raw["reports"], raw["wall_seconds"]
    if wall_seconds is None and all(
        "bench_seconds" in r for r in reports.values()
    ):  # --report-only: the recorded phases
        wall_seconds = sum(sum(r["bench_seconds"].values()) for r in reports.values())
    first = next(iter(reports.values()))
    k = first["k"]
    topk = next(key for key in first if key.startswith("top"))
    lines = [
        "# Supernet ranking quality on Fashion-MNIST",
        "",
        f"K = {k} `mbv3` architectures (width {args.width_mult}, stem stride {args.stem_stride}, 28x28"
        " input), one from each of K equal-width log-MACs strata between the space's smallest and largest"
        f" network; supernet trained {args.supernet_epochs} epochs on {args.train_limit} training"
        f" images{' with ' + ', '.join(f'`{kv}`' for kv in args.set) if args.set else ''}; ground truth ="
        f" each architecture trained alone with the same recipe for {args.standalone_epochs} epochs,"
        f" {args.seeds} seeds, accuracy on {min(args.val_limit, 6000)} validation images (Fashion-MNIST's"
        " validation split is the 6,000 training images held out, 10%; `--val-limit` caps it). Reproduce:"
        f" `python scripts/bench_ranking.py --recipes {args.recipes} --archs {args.archs} --seeds"
        f" {args.seeds} --train-limit {args.train_limit} --val-limit {args.val_limit} --width-mult"
        f" {args.width_mult} --stem-stride {args.stem_stride} --supernet-epochs {args.supernet_epochs}"
        f" --standalone-epochs {args.standalone_epochs} --bn-recal-batches"
        f" {args.bn_recal_batches}{' --no-channels-last' if args.no_channels_last else ''}"
        + "".join(f" --set {kv}" for kv in args.set)
        + "`"
        + (
            f" (wall time of this run: {wall_seconds / 60:.0f} min on 2 cores; per recipe: "
            + ", ".join(
                f"{n} supernet {r['bench_seconds']['supernet'] / 60:.0f} min + ranking"
                f" {r['bench_seconds']['rank'] / 60:.0f} min"
                for n, r in reports.items()
                if "bench_seconds" in r
            )
            + ")."
            if wall_seconds
            else "."
        ),
        "",
        machine_block(raw["machine"]),
        "Ground-truth reliability: Kendall tau between standalone seeds ="
        f" **{first.get('seed_to_seed_kendall_tau', float('nan')):.3f}**"
        + (
            f"; split-half (mean of seeds {{0..{args.seeds // 2 - 1}}} vs. the rest) ="
            f" **{first['split_half_kendall_tau']:.3f}**"
            if "split_half_kendall_tau" in first
            else ""
        )
        + " (a supernet tau is only meaningful when the ground truth's reliability is >= 0.7)."
        f" {spread_sentence(first)} Zero-cost baseline (rank by MACs): Kendall tau ="
        f" {first['macs_kendall_tau']:.3f}.",
        "",
        f"| recipe | Kendall tau | Spearman | {topk.replace('_', ' ')} | regret (acc. points) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in reports.items():
        lines.append(
            f"| {name} | **{r['kendall_tau']:.3f}** | {r['spearman']:.3f} | {r[topk]:.2f} |"
            f" {100 * r['regret']:.2f} |"
        )
    best = max(reports, key=lambda n: reports[n]["kendall_tau"])
    reliability = first.get("split_half_kendall_tau", first.get("seed_to_seed_kendall_tau", float("nan")))
    verdict = (
        "**This comparison does not count**: the ground truth is not reliable enough (reliability"
        f" {reliability:.3f} < 0.7), so the recipes' Kendall taus measure training noise as much as supernet"
        " quality. It needs longer standalone training on more data, or more seeds averaged (`--seeds 4`"
        " reports the split-half reliability of a two-seed average)."
        if not reliability >= 0.7
        else f"The ground truth is reliable ({reliability:.3f} >= 0.7)."
    )
    lines += [
        "",
        verdict,
        "",
        f"Best recipe here: **{best}** (Kendall tau {reports[best]['kendall_tau']:.3f}). Scatter plots: "
        + ", ".join(f"`ranking_{n.replace('+', '_')}.png`" for n in reports)
        + ".",
        "",
        (
            "Per-architecture rows (arch id, MACs, supernet accuracy, standalone accuracy per seed) are in"
            " `results/data/ranking.json`; the architectures' choices in each run directory's `ranking.json`."
        ),
        *(["", f"Note: {args.note}"] if args.note else []),
        "",
    ]
    written = [write_markdown(out_dir / md_name, lines)]
    if figures:
        from nas.ranking import plot_ranking

        for n, r in reports.items():
            written.append(out_dir / f"ranking_{n.replace('+', '_')}.png")
            plot_ranking(r, written[-1])
    return written


if __name__ == "__main__":
    main()
