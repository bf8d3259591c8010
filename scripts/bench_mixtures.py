"""Does a balanced mixture of supernets rank resnet20_pool configurations better than one supernet?

    python scripts/bench_mixtures.py [--root runs/bench_mixtures] [--ks 1,2,4] [--seeds 3] ...

Ground truth: every one of the 36 downsampling configurations trained alone
(``--truth-seeds`` seeds; their seed-to-seed Kendall tau says how reliable it
is). For each K (1 = the plain weight-entangled supernet) and supernet seed: train
the supernet, evaluate all 36 configurations with inherited weights, Kendall tau
against the ground truth; and the training time per step relative to K = 1.
Writes results/mixtures.md. Resumable: every training is cached under --root.
Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from scipy import stats

from _nas import nas  # scripts/ is on sys.path when a script runs
from nas.context import open_run
from nas.machine import machine_markdown
from nas.ranking import train_standalone_all
from nas.rundir import atomic_write_json, atomic_write_text
from nas.train import evaluate_arch, load_supernet


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
    ap.add_argument("--out", default="results/mixtures.md")
    args = ap.parse_args()
    root = Path(args.root)
    common = [
        "--data=fashion_mnist", "--space=resnet20_pool", f"--train-limit={args.train_limit}", f"--data.val_limit={args.val_limit}",
        f"--width-mult={args.width_mult}", "--train.channels_last=true", f"--train.bn_recal_batches={args.bn_recal_batches}", "--train.sampler=uniform",
        "--trackers=jsonl", "--quiet",
    ]
    started = time.perf_counter()
    rows = []
    truth = None
    for k in [int(v) for v in args.ks.split(",")]:
        for seed in range(args.seeds):
            run_dir = root / f"k{k}_seed{seed}"
            kind = ["--supernet=entangled"] if k == 1 else ["--supernet=balanced_mixture", f"--space.supernet_options={{k: {k}}}"]
            nas("train", "--run-dir", str(run_dir), *common, *kind, f"--epochs={args.supernet_epochs}", f"--seed={seed}")
            result_file = run_dir / "mixture_eval.json"
            if not result_file.exists():
                with open_run(run_dir, progress=False, quiet=True) as ctx:
                    archs = ctx.space.enumerate()
                    if truth is None:
                        truth = ground_truth(ctx, archs, args, root)
                    net = load_supernet(ctx)
                    inherited = [evaluate_arch(ctx, net, a) for a in archs]
                epochs = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if '"epoch_seconds"' in line]
                atomic_write_json(result_file, {"k": k, "seed": seed, "arch_ids": [a.id for a in archs], "inherited": inherited, "epoch_seconds": [e["epoch_seconds"] for e in epochs]})
            rows.append(json.loads(result_file.read_text()))
            print(f"K={k} seed {seed}: done", flush=True)
    if truth is None:
        with open_run(root / f"k{rows[0]['k']}_seed0", progress=False, quiet=True) as ctx:
            truth = ground_truth(ctx, ctx.space.enumerate(), args, root)
    # Wall time over every call that did work for this root (a rerun that finds everything cached adds seconds only).
    timing = root / "bench_seconds.json"
    total = (json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0) + time.perf_counter() - started
    atomic_write_json(timing, {"seconds": total})
    write_report(args, rows, truth, total)


def ground_truth(ctx, archs, args, root: Path) -> dict:
    seeds = list(range(100, 100 + args.truth_seeds))  # not the supernet seeds
    res = train_standalone_all(ctx.cfg, archs, seeds, args.standalone_epochs, root / "standalone", os.cpu_count() or 1, say=print)
    acc = np.array([[res[(a.id, s)]["val_acc"] for s in seeds] for a in archs])
    return {"ids": [a.id for a in archs], "labels": [a["downsample_at"] for a in archs], "per_seed": acc.tolist()}


def write_report(args: argparse.Namespace, rows: list[dict], truth: dict, wall: float) -> None:
    acc = np.array(truth["per_seed"])
    mean = acc.mean(axis=1)
    pair = float(stats.kendalltau(acc[:, 0], acc[:, 1]).statistic) if acc.shape[1] > 1 else float("nan")
    half = acc.shape[1] // 2
    split = float(stats.kendalltau(acc[:, :half].mean(1), acc[:, half : 2 * half].mean(1)).statistic) if acc.shape[1] >= 4 else None
    by_k: dict[int, list[dict]] = {}
    for r in rows:
        assert r["arch_ids"] == truth["ids"]
        by_k.setdefault(r["k"], []).append(r)
    base_time = np.mean([np.mean(r["epoch_seconds"]) for r in by_k.get(1, [])]) if 1 in by_k else float("nan")
    lines = [
        "# Mixtures of supernets on resnet20_pool (Fashion-MNIST)",
        "",
        f"All 36 downsampling placements of a CIFAR-style ResNet20 (width {args.width_mult}, 28x28 input). Supernets trained {args.supernet_epochs} epochs "
        f"with uniform sampling on {args.train_limit} training images; ground truth = each configuration trained alone for {args.standalone_epochs} epochs "
        f"({args.truth_seeds} seeds, mean), accuracy on {args.val_limit} held-out images. K = 1 is the plain weight-entangled supernet; K > 1 the "
        "balanced mixture (learned, capacity-balanced routing). Reproduce: "
        f"`python scripts/bench_mixtures.py --ks {args.ks} --seeds {args.seeds} --truth-seeds {args.truth_seeds} --train-limit {args.train_limit} "
        f"--val-limit {args.val_limit} --bn-recal-batches {args.bn_recal_batches} --width-mult {args.width_mult} --supernet-epochs {args.supernet_epochs} --standalone-epochs {args.standalone_epochs}` "
        f"(wall time, all calls for this root together: {wall / 60:.0f} min on this machine).",
        "",
        machine_markdown(),
        f"Ground truth: standalone accuracy {100 * mean.min():.2f}-{100 * mean.max():.2f}% (std {100 * mean.std():.2f} points across configurations); "
        f"Kendall tau between two single seeds **{pair:.3f}**"
        + (f", between the means of seeds {{1..{half}}} and {{{half + 1}..{2 * half}}} (split half) **{split:.3f}**" if split is not None else "")
        + " (how far the ground truth itself can be trusted; the ground truth used below is the mean of all seeds).",
        "",
        "| weight sets K | Kendall tau (mean ± std over seeds) | per seed | epoch time vs. K = 1 |",
        "| ---: | ---: | --- | ---: |",
    ]
    for k, runs in sorted(by_k.items()):
        taus = [float(stats.kendalltau(r["inherited"], mean).statistic) for r in runs]
        ratio = np.mean([np.mean(r["epoch_seconds"]) for r in runs]) / base_time
        lines.append(f"| {k} | **{np.mean(taus):.3f} ± {np.std(taus):.3f}** | {', '.join(f'{t:.3f}' for t in taus)} | {ratio:.2f}x |")
    best = max(by_k, key=lambda k: np.mean([stats.kendalltau(r["inherited"], mean).statistic for r in by_k[k]]))
    taus_by_k = {k: [float(stats.kendalltau(r["inherited"], mean).statistic) for r in runs] for k, runs in by_k.items()}
    tests = []
    for k in sorted(taus_by_k):
        if k != 1 and 1 in taus_by_k and len(taus_by_k[k]) > 1 and len(taus_by_k[1]) > 1:
            t = stats.ttest_ind(taus_by_k[k], taus_by_k[1], equal_var=False)
            tests.append(f"K = {k} vs. K = 1: {np.mean(taus_by_k[k]) - np.mean(taus_by_k[1]):+.3f} (Welch t-test p = {t.pvalue:.2f})")
    lines += [
        "",
        "Difference in mean Kendall tau against the plain supernet, with its significance over the seeds: " + "; ".join(tests) + ".",
        "",
        f"Highest mean Kendall tau: K = {best}. Epoch time is the training loop only (evaluation excluded) and includes the mixtures' routing "
        "probes (K no-grad forwards every 4K steps); ratios are means over the seeds of each K, all measured in this run.",
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
