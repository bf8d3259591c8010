"""Does a balanced mixture of supernets rank resnet20_pool configurations better than one supernet?

    python scripts/bench_mixtures.py [--root runs/bench_mixtures] [--ks 1,2,4] [--seeds 3] ...

Ground truth: every one of the 36 downsampling configurations trained alone
(``--truth-seeds`` seeds; their seed-to-seed Kendall tau says how reliable it
is). For each K (1 = the plain weight-entangled supernet) and supernet seed: train
the supernet, evaluate all 36 configurations with inherited weights, Kendall tau
against the ground truth; and the training time per step relative to K = 1.
Writes the measured data to results/data/mixtures.json (per run: the inherited
accuracies and epoch times; the ground truth per seed), then results/mixtures.md
from that file alone (`render`, also called by scripts/make_results.py).
Resumable: every training is cached under --root; `--report-only` collects the
finished runs without training or writing anything under --root. Needs Debian's
dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from _nas import nas  # scripts/ is on sys.path when a script runs
from _results import data_path, machine_block, provenance, save_raw, write_markdown

NAME = "mixtures"
MARKDOWN = "mixtures.md"
SETTINGS = (
    "root",
    "ks",
    "seeds",
    "truth_seeds",
    "train_limit",
    "val_limit",
    "bn_recal_batches",
    "width_mult",
    "supernet_epochs",
    "standalone_epochs",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="runs/bench_mixtures")
    ap.add_argument("--ks", default="1,2,4")
    ap.add_argument("--seeds", type=int, default=3, help="supernet training seeds per K")
    ap.add_argument("--truth-seeds", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=5000)
    ap.add_argument("--val-limit", type=int, default=2000)
    ap.add_argument("--bn-recal-batches", type=int, default=20)
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--supernet-epochs", type=int, default=6)
    ap.add_argument("--standalone-epochs", type=int, default=4)
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="report the finished runs under --root: train nothing, write nothing there",
    )
    ap.add_argument("--out", default="results/mixtures.md")
    args = ap.parse_args()
    raw = collect(args) if args.report_only else measure(args)
    save_raw(data_path(args.out, NAME), raw)
    out = Path(args.out)
    render(raw, out.parent, md_name=out.name)
    print(out.read_text())


def _ks(args: argparse.Namespace) -> list[int]:
    return [int(v) for v in args.ks.split(",")]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or find) every supernet and the ground truth; their data."""
    from nas.evaluation import evaluate_arch
    from nas.run.context import open_run
    from nas.run.files import atomic_write_json
    from nas.training.checkpoint import load_supernet

    root = Path(args.root)
    common = [
        "--data=fashion_mnist",
        "--space=resnet20_pool",
        f"--train-limit={args.train_limit}",
        f"--data.val_limit={args.val_limit}",
        f"--width-mult={args.width_mult}",
        "--train.channels_last=true",
        f"--train.bn_recal_batches={args.bn_recal_batches}",
        "--train.sampler=uniform",
        "--trackers=jsonl",
        "--quiet",
    ]
    started = time.perf_counter()
    rows = []
    truth = None
    for k in _ks(args):
        for seed in range(args.seeds):
            run_dir = root / f"k{k}_seed{seed}"
            kind = (
                ["--supernet=entangled"]
                if k == 1
                else ["--supernet=balanced_mixture", f"--space.supernet_options={{k: {k}}}"]
            )
            nas(
                "train",
                "--run-dir",
                str(run_dir),
                *common,
                *kind,
                f"--epochs={args.supernet_epochs}",
                f"--seed={seed}",
            )
            result_file = run_dir / "mixture_eval.json"
            if not result_file.exists():
                with open_run(run_dir, progress=False, quiet=True) as ctx:
                    archs = ctx.space.enumerate()
                    if truth is None:
                        truth = ground_truth(ctx.cfg, archs, args, root)
                    net = load_supernet(ctx)
                    inherited = [evaluate_arch(ctx, net, a) for a in archs]
                epochs = [
                    json.loads(line)
                    for line in (run_dir / "events.jsonl").read_text().splitlines()
                    if '"epoch_seconds"' in line
                ]
                atomic_write_json(
                    result_file,
                    {
                        "k": k,
                        "seed": seed,
                        "arch_ids": [a.id for a in archs],
                        "inherited": inherited,
                        "epoch_seconds": [e["epoch_seconds"] for e in epochs],
                    },
                )
            rows.append(json.loads(result_file.read_text()))
            print(f"K={k} seed {seed}: done", flush=True)
    if truth is None:
        with open_run(root / f"k{rows[0]['k']}_seed0", progress=False, quiet=True) as ctx:
            truth = ground_truth(ctx.cfg, ctx.space.enumerate(), args, root)
    # Wall time over every call that did work for this root (a rerun that finds everything cached adds seconds
    # only).
    timing = root / "bench_seconds.json"
    total = (
        (json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0)
        + time.perf_counter()
        - started
    )
    atomic_write_json(timing, {"seconds": total})
    return {
        **provenance(NAME, {k: getattr(args, k) for k in SETTINGS}),
        "built_from": str(root),
        "wall_seconds": total,
        "truth": truth,
        "rows": rows,
    }


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """The data of the finished runs under --root, read without opening (or writing to) any run directory."""
    from nas.run.config import load_yaml
    from nas.run.context import build_space, load_config_data, resolve_config

    root = Path(args.root)
    files = [root / f"k{k}_seed{seed}" / "mixture_eval.json" for k in _ks(args) for seed in range(args.seeds)]
    rows = [json.loads(f.read_text()) for f in files]
    cfg = resolve_config(None, load_yaml(root / f"k{rows[0]['k']}_seed0" / "config.yaml"), [])
    archs = build_space(cfg, load_config_data(cfg)).enumerate()
    truth = ground_truth(cfg, archs, args, root, train=False)
    wall = json.loads((root / "bench_seconds.json").read_text())["seconds"]
    measured_in = [*files, *(root / "standalone").glob("*.json")]
    return {
        **provenance(NAME, {k: getattr(args, k) for k in SETTINGS}, measured_in=measured_in),
        "built_from": str(root),
        "wall_seconds": wall,
        "truth": truth,
        "rows": rows,
    }


def ground_truth(cfg, archs, args: argparse.Namespace, root: Path, train: bool = True) -> dict[str, Any]:
    """Standalone accuracy of every configuration per truth seed (trained here when missing, unless ``train``
    is off)."""
    from nas.ranking import standalone_recipe_id, train_standalone_all

    seeds = list(range(100, 100 + args.truth_seeds))  # not the supernet seeds
    out_dir = root / "standalone"
    if train:
        res = train_standalone_all(
            cfg, archs, seeds, args.standalone_epochs, out_dir, os.cpu_count() or 1, say=print
        )
    else:
        recipe = standalone_recipe_id(cfg)
        res = {
            (a.id, s): json.loads(
                (out_dir / f"{a.id}-seed{s}-e{args.standalone_epochs}-{recipe}.json").read_text()
            )
            for a in archs
            for s in seeds
        }
    acc = np.array([[res[(a.id, s)]["val_acc"] for s in seeds] for a in archs])
    return {
        "ids": [a.id for a in archs],
        "labels": [a["downsample_at"] for a in archs],
        "per_seed": acc.tolist(),
    }


def render(raw: dict[str, Any], out_dir: Path, md_name: str = MARKDOWN, figures: bool = True) -> list[Path]:
    """mixtures.md from the data alone (no figure)."""
    from scipy import stats

    args = argparse.Namespace(**raw["settings"])
    rows, truth, wall = raw["rows"], raw["truth"], raw["wall_seconds"]
    acc = np.array(truth["per_seed"])
    mean = acc.mean(axis=1)
    pair = float(stats.kendalltau(acc[:, 0], acc[:, 1]).statistic) if acc.shape[1] > 1 else float("nan")
    half = acc.shape[1] // 2
    split = (
        float(stats.kendalltau(acc[:, :half].mean(1), acc[:, half : 2 * half].mean(1)).statistic)
        if acc.shape[1] >= 4
        else None
    )
    by_k: dict[int, list[dict]] = {}
    for r in rows:
        if r["arch_ids"] != truth["ids"]:
            raise ValueError(
                f"K={r['k']} seed {r['seed']} evaluated other configurations than the ground truth"
            )
        by_k.setdefault(r["k"], []).append(r)
    base_time = np.mean([np.mean(r["epoch_seconds"]) for r in by_k.get(1, [])]) if 1 in by_k else float("nan")
    lines = [
        "# Mixtures of supernets on resnet20_pool (Fashion-MNIST)",
        "",
        (
            f"All 36 downsampling placements of a CIFAR-style ResNet20 (width {args.width_mult}, 28x28"
            f" input). Supernets trained {args.supernet_epochs} epochs with uniform sampling on"
            f" {args.train_limit} training images; ground truth = each configuration trained alone for"
            f" {args.standalone_epochs} epochs ({args.truth_seeds} seeds, mean), accuracy on {args.val_limit}"
            " held-out images. K = 1 is the plain weight-entangled supernet; K > 1 the balanced mixture"
            " (learned, capacity-balanced routing). Reproduce: `python scripts/bench_mixtures.py --ks"
            f" {args.ks} --seeds {args.seeds} --truth-seeds {args.truth_seeds} --train-limit"
            f" {args.train_limit} --val-limit {args.val_limit} --bn-recal-batches {args.bn_recal_batches}"
            f" --width-mult {args.width_mult} --supernet-epochs {args.supernet_epochs} --standalone-epochs"
            f" {args.standalone_epochs}` (wall time, all calls for this root together: {wall / 60:.0f} min on"
            " this machine)."
        ),
        "",
        machine_block(raw["machine"]),
        f"Ground truth: standalone accuracy {100 * mean.min():.2f}-{100 * mean.max():.2f}% (std"
        f" {100 * mean.std():.2f} points across configurations); Kendall tau between two single seeds"
        f" **{pair:.3f}**"
        + (
            f", between the means of seeds {{1..{half}}} and {{{half + 1}..{2 * half}}} (split half)"
            f" **{split:.3f}**"
            if split is not None
            else ""
        )
        + " (how far the ground truth itself can be trusted; the ground truth used below is the mean of all"
        " seeds).",
        "",
        "| weight sets K | Kendall tau (mean ± std over seeds) | per seed | epoch time vs. K = 1 |",
        "| ---: | ---: | --- | ---: |",
    ]
    for k, runs in sorted(by_k.items()):
        taus = [float(stats.kendalltau(r["inherited"], mean).statistic) for r in runs]
        ratio = np.mean([np.mean(r["epoch_seconds"]) for r in runs]) / base_time
        lines.append(
            f"| {k} | **{np.mean(taus):.3f} ± {np.std(taus):.3f}** | {', '.join(f'{t:.3f}' for t in taus)} |"
            f" {ratio:.2f}x |"
        )
    best = max(
        by_k, key=lambda k: np.mean([stats.kendalltau(r["inherited"], mean).statistic for r in by_k[k]])
    )
    taus_by_k = {
        k: [float(stats.kendalltau(r["inherited"], mean).statistic) for r in runs] for k, runs in by_k.items()
    }
    tests = []
    for k in sorted(taus_by_k):
        if k != 1 and 1 in taus_by_k and len(taus_by_k[k]) > 1 and len(taus_by_k[1]) > 1:
            t = stats.ttest_ind(taus_by_k[k], taus_by_k[1], equal_var=False)
            tests.append(
                f"K = {k} vs. K = 1: {np.mean(taus_by_k[k]) - np.mean(taus_by_k[1]):+.3f} (Welch t-test p ="
                f" {t.pvalue:.2f})"
            )
    lines += [
        "",
        "Difference in mean Kendall tau against the plain supernet, with its significance over the seeds: "
        + "; ".join(tests)
        + ".",
        "",
        (
            f"Highest mean Kendall tau: K = {best}. Epoch time is the training loop only (evaluation"
            " excluded) and includes the mixtures' routing probes (K no-grad forwards every 4K steps);"
            " ratios are means over the seeds of each K, all measured in this run."
        ),
        "",
    ]
    return [write_markdown(out_dir / md_name, lines)]


if __name__ == "__main__":
    main()
