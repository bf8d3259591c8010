"""Every search controller on the same trained supernet, same evaluation budget, several seeds.

    python scripts/bench_controllers.py [--root runs/bench_controllers] [--trials 30] [--seeds 3] [--controllers all]

Trains one ``mbv3`` supernet on Fashion-MNIST (cached under ``--root``), fixes a
latency budget (the median predicted latency of 1,000 random architectures, so
about half the space is feasible), then runs each controller ``--trials``
evaluations per seed. An evaluation is the supernet accuracy of the asked
architecture (inherited weights, BN recalibrated) on the validation split; it
is deterministic per architecture, so it is cached and shared by all runs (a
duplicate ask costs a trial but not an evaluation, as in ``nas search``).

Reported per controller (mean +- std over seeds): hypervolume of the feasible
accuracy-latency front (reference point: the lowest accuracy seen anywhere in
the benchmark and the budget), its ratio to random search and Welch's t-test,
best accuracy under the budget, any-time curves (plot), and the controller's
own time (ask + tell, excluding evaluations; for darts/gdas the gradient phase
on the supernet separately). With ``results/controllers_workers.json`` (from
``scripts/bench_distributed_search.py``) it also reports trials/minute with 1
vs. 4 workers. Writes ``results/controllers.md`` and ``results/controllers.png``.
Resumable. Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
from scipy import stats
from torch.utils.data import Subset

from _nas import nas  # scripts/ is on sys.path when a script runs
from nas.context import open_run
from nas.controllers import Objectives, create_controller, list_controllers
from nas.machine import machine_markdown
from nas.pipeline import cost_model_for_run
from nas.rundir import atomic_write_json, atomic_write_text
from nas.train import evaluate_arch, load_supernet


def hypervolume(points: list[tuple[float, float]], acc_ref: float, lat_ref: float) -> float:
    """Area dominated by (accuracy up, latency down) points inside the reference box (2-D sweep)."""
    pts = sorted((lat, acc) for acc, lat in points if lat <= lat_ref and acc > acc_ref)
    area, best = 0.0, acc_ref
    for i, (lat, acc) in enumerate(pts):
        best = max(best, acc)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else lat_ref
        area += (nxt - lat) * (best - acc_ref)
    return area


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="runs/bench_controllers")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--controllers", default="all")
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=8, help="supernet training epochs")
    ap.add_argument("--train-limit", type=int, default=10000)
    ap.add_argument("--val-limit", type=int, default=2000)
    ap.add_argument("--bn-recal-batches", type=int, default=16)
    ap.add_argument("--eval-images", type=int, default=0, help="evaluate on the first N validation images (0: all --val-limit)")
    ap.add_argument("--gradient-epochs", type=int, default=1, help="darts/gdas: epochs of the gradient phase")
    ap.add_argument("--gradient-steps", type=int, default=0, help="darts/gdas: at most this many steps (0: whole epochs)")
    ap.add_argument("--report-only", action="store_true", help="report the finished runs under --root, run nothing new")
    ap.add_argument("--out", default="results/controllers.md")
    args = ap.parse_args()
    root = Path(args.root)
    names = list_controllers() if args.controllers == "all" else args.controllers.split(",")
    supernet_dir = root / "supernet"
    common = [
        "--data=fashion_mnist", "--space=mbv3", "--width-mult=0.25", "--space.options={stem_stride: 1}", f"--train-limit={args.train_limit}",
        f"--data.val_limit={args.val_limit}", "--train.channels_last=true", "--train.sampler=uniform", "--trackers=jsonl",
    ]
    t_train = time.perf_counter()
    nas("train", "--run-dir", str(supernet_dir), *common, "--quiet", f"--epochs={args.epochs}")
    t_train = time.perf_counter() - t_train

    with open_run(supernet_dir, overrides=[*common, f"--train.bn_recal_batches={args.bn_recal_batches}"], progress=False, quiet=True) as ctx:
        space = ctx.space
        if args.eval_images:
            ctx.data = dataclasses.replace(ctx.data, val=Subset(ctx.data.val, range(min(args.eval_images, len(ctx.data.val)))))
        tag = f"val{len(ctx.data.val)}_bn{args.bn_recal_batches}"  # evaluations and runs are only comparable within one setting
        supernet = load_supernet(ctx)
        cost = cost_model_for_run(ctx)
        lats = cost.predict([space.sample(np.random.default_rng([7, i])) for i in range(1000)])
        budget = float(np.median(lats))
        cache_path = root / f"eval_cache_{tag}.json"
        cache: dict[str, float] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
        eval_seconds = []

        def evaluate(arch) -> float:
            if arch.id not in cache:
                t = time.perf_counter()
                cache[arch.id] = evaluate_arch(ctx, supernet, arch)
                eval_seconds.append(time.perf_counter() - t)
                if len(eval_seconds) % 10 == 0:
                    atomic_write_json(cache_path, cache)
            return cache[arch.id]

        runs: dict[str, list[dict]] = {}
        for name in names:
            for seed in range(args.seeds):
                out = root / f"runs_{tag}_t{args.trials}" / f"{name}_seed{seed}.json"
                if out.exists():
                    runs.setdefault(name, []).append(json.loads(out.read_text()))
                    continue
                if args.report_only:
                    continue
                study_dir = root / "studies" / f"{name}_seed{seed}"
                shutil.rmtree(study_dir, ignore_errors=True)  # an interrupted run restarts (its evaluations are cached)
                study_dir.mkdir(parents=True)
                options = {"epochs": args.gradient_epochs, "max_steps": args.gradient_steps} if name in ("darts", "gdas") else {}
                ctl = create_controller(name, options=options, space=space, seed=seed, latency_budget_ms=budget, run_dir=study_dir, population=args.population)
                prepare_s = 0.0
                if getattr(ctl, "needs_supernet", False):
                    t = time.perf_counter()
                    ctl.prepare(supernet, lambda e: ctx.loader("train", shuffle=True, epoch=10_000 + e), lambda r: ctx.loader("val", shuffle=True, epoch=20_000 + r), cost, ctx.device, channels_last=True)
                    prepare_s = time.perf_counter() - t
                overhead, trace = 0.0, []
                while ctl.n_finished() < args.trials:
                    t = time.perf_counter()
                    (arch,) = ctl.ask(1)
                    overhead += time.perf_counter() - t
                    lat = float(cost.predict([arch])[0])
                    acc = evaluate(arch)
                    t = time.perf_counter()
                    ctl.tell([arch], [Objectives(acc, lat)])
                    overhead += time.perf_counter() - t
                    trace.append({"arch_id": arch.id, "accuracy": acc, "latency_ms": lat})
                result = {"controller": name, "seed": seed, "trace": trace, "overhead_s": overhead, "prepare_s": prepare_s}
                atomic_write_json(out, result)
                runs.setdefault(name, []).append(result)
                print(f"{name} seed {seed}: best feasible {max([r['accuracy'] for r in trace if r['latency_ms'] <= budget] or [0]):.4f}, overhead {overhead:.2f} s", flush=True)
        atomic_write_json(cache_path, cache)
        largest_ms, smallest_ms = (float(v) for v in cost.predict([space.largest(), space.smallest()]))
        mean_eval_s = float(np.mean(eval_seconds)) if eval_seconds else None

    acc_ref = min(r["accuracy"] for rs in runs.values() for run in rs for r in run["trace"])
    curves = {}
    for name, rs in runs.items():
        hv_curves, best_curves = [], []
        for run in rs:
            tr = run["trace"]
            hv_curves.append([hypervolume([(r["accuracy"], r["latency_ms"]) for r in tr[: t + 1]], acc_ref, budget) for t in range(len(tr))])
            best_curves.append([max([r["accuracy"] for r in tr[: t + 1] if r["latency_ms"] <= budget] or [np.nan]) for t in range(len(tr))])
        curves[name] = (np.array(hv_curves), np.array(best_curves))
    report(args, root, runs, curves, budget, acc_ref, smallest_ms, largest_ms, t_train, mean_eval_s, len(cache))


def report(args, root: Path, runs, curves, budget: float, acc_ref: float, smallest_ms: float, largest_ms: float, t_train: float, mean_eval_s, n_evals: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base_hv = curves["random"][0][:, -1] if "random" in curves else None
    lines = [
        "# Search controllers: same supernet, same budget",
        "",
        f"Command: `python scripts/bench_controllers.py --trials {args.trials} --seeds {args.seeds} --gradient-epochs {args.gradient_epochs} --gradient-steps {args.gradient_steps} --controllers {args.controllers} --eval-images {args.eval_images} --bn-recal-batches {args.bn_recal_batches}` (root `{args.root}`, resumable).",
        "",
        f"- Supernet: `mbv3` width 0.25, stem stride 1, Fashion-MNIST ({args.train_limit} training images, uniform sampling, {args.epochs} epochs, trained in {t_train / 60:.1f} min here or cached).",
        f"- Evaluation: supernet accuracy on {args.eval_images or args.val_limit} validation images after BN recalibration on {args.bn_recal_batches} batches; cached per architecture ({n_evals} distinct architectures evaluated"
        + (f", {mean_eval_s:.2f} s each" if mean_eval_s else "") + ").",
        f"- Latency: this machine's calibrated cpu cost model. Budget **{budget:.3f} ms** (median of 1,000 random architectures; smallest {smallest_ms:.3f} ms, largest {largest_ms:.3f} ms).",
        f"- Hypervolume: area of the feasible accuracy-latency front inside the box (accuracy {acc_ref:.4f} = lowest seen in the whole benchmark, latency {budget:.3f} ms); in accuracy x ms.",
        f"- Every controller gets {args.trials} trials (asks) per seed, population {args.population}; seeds 0..{args.seeds - 1}. p: Welch's t-test of the final hypervolume vs. random.",
        "",
        "| controller | seeds | hypervolume (mean ± std) | vs. random | p | best accuracy under budget | distinct archs | controller time per trial | learning phase |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = sorted(curves, key=lambda n: -np.nanmean(curves[n][0][:, -1]))
    for name in order:
        hv, best = curves[name]
        final, fbest = hv[:, -1], best[:, -1]
        ratio = f"{final.mean() / base_hv.mean():.2f}x" if base_hv is not None and base_hv.mean() > 0 else "-"
        p = "-" if name == "random" or base_hv is None else f"{stats.ttest_ind(final, base_hv, equal_var=False).pvalue:.2f}"
        rs = runs[name]
        distinct = np.mean([len({r["arch_id"] for r in run["trace"]}) for run in rs])
        per_trial_ms = np.mean([run["overhead_s"] / len(run["trace"]) for run in rs]) * 1000
        prep = np.mean([run["prepare_s"] for run in rs])
        lines.append(
            f"| {name} | {len(final)} | {final.mean():.4f} ± {final.std(ddof=1) if len(final) > 1 else 0:.4f} | {ratio} | {p} | {np.nanmean(fbest):.4f} ± {np.nanstd(fbest, ddof=1) if len(fbest) > 1 else 0:.4f} "
            f"| {distinct:.1f} | {per_trial_ms:.1f} ms | {f'{prep:.0f} s' if prep else '-'} |"
        )
    lines += ["", "Reading this table:", ""]
    if args.trials <= 2 * args.population:
        lines.append(f"- With {args.trials} trials and population {args.population}, NSGA-II/III (one random generation, then a few children) and the start-up phases of TPE and GP are mostly random sampling: their rows measure little more than the random phase, not the algorithms (NSGA-II and NSGA-III even ask the same architectures under the same per-trial seeds).")
    lines.append("- A p-value above 0.05 means the difference to random search is within the spread over seeds: not shown to be better or worse.")
    lines.append("- Controller time per trial is wall time of ask + tell (study storage included) on a shared 2-core machine: indicative only.")
    workers = Path("results/controllers_workers.json")
    if workers.exists():
        w = json.loads(workers.read_text())
        lines += ["", "## One study, several workers (PostgreSQL)", "", f"From `{w.get('command', 'python scripts/bench_distributed_search.py')}` (`results/controllers_workers.json`):", ""]
        lines += [
            f"Controller `{w.get('controller', '?')}`, {w.get('machine', {}).get('logical_cores', '?')} logical cores, measured {w.get('machine', {}).get('date', '?')}.",
            "",
            "| workers | trials | wall s (incl. start-up) | trials/min (wall) | trials/min (search loop) | distinct archs |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in w.get("results", []):
            lines.append(
                f"| {row['workers']} | {row['trials']} | {row['wall_seconds']:.1f} | {row['trials_per_minute_wall']:.0f} | {row['trials_per_minute_search']:.0f} | {row['distinct_architectures']} |"
            )
        if w.get("note"):
            lines += ["", w["note"]]
    lines += ["", "![any-time curves](controllers.png)", "", "## Machine", "", machine_markdown(), ""]
    out = Path(args.out)
    atomic_write_text(out, "\n".join(lines))

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(1, args.trials + 1)
    for name in order:
        hv, best = curves[name]
        for ax, data in ((axes[0], best), (axes[1], hv)):
            m = np.nanmean(data, axis=0)
            ax.plot(x[: len(m)], m, label=name, lw=2 if name in ("random", "darts", "gdas") else 1.2)
    axes[0].set(xlabel="trials (evaluations asked)", ylabel="best accuracy under the budget (mean over seeds)", title=f"Any-time best feasible accuracy (budget {budget:.2f} ms)")
    axes[1].set(xlabel="trials (evaluations asked)", ylabel="hypervolume (accuracy x ms, mean over seeds)", title="Any-time hypervolume of the feasible front")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(out.read_text())


if __name__ == "__main__":
    main()
