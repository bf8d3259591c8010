"""Every search controller on the same trained supernet, same evaluation budget, several seeds.

    python scripts/bench_controllers.py [--root runs/bench_controllers] [--trials 30] [--seeds 3]
    [--controllers all]

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
on the supernet separately). With ``results/data/distributed_search.json`` (from
``scripts/bench_distributed_search.py``) it also reports trials/minute with 1
vs. 4 workers. Writes the measured data to ``results/data/controllers.json``,
then ``results/controllers.md`` and ``results/controllers.png`` from it alone
(``render``, also called by ``scripts/make_results.py``). Resumable;
``--report-only`` collects the finished runs under ``--root`` without running
or writing anything there. Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from _nas import nas  # scripts/ is on sys.path when a script runs
from _results import DATA_DIR, data_path, machine_block, provenance, save_raw, write_markdown

from nas.pareto import hypervolume

NAME = "controllers"
MARKDOWN = "controllers.md"
WORKERS_DATA = "distributed_search.json"  # bench_distributed_search's data, next to this one
SETTINGS = (
    "root",
    "trials",
    "seeds",
    "controllers",
    "population",
    "epochs",
    "train_limit",
    "val_limit",
    "bn_recal_batches",
    "eval_images",
    "gradient_epochs",
    "gradient_steps",
)


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
    ap.add_argument(
        "--eval-images",
        type=int,
        default=0,
        help="evaluate on the first N validation images (0: all --val-limit)",
    )
    ap.add_argument("--gradient-epochs", type=int, default=1, help="darts/gdas: epochs of the gradient phase")
    ap.add_argument(
        "--gradient-steps", type=int, default=0, help="darts/gdas: at most this many steps (0: whole epochs)"
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="report the finished runs under --root, run nothing new and write nothing there",
    )
    ap.add_argument("--out", default="results/controllers.md")
    args = ap.parse_args()
    raw = collect(args) if args.report_only else measure(args)
    save_raw(data_path(args.out, NAME), raw)
    out = Path(args.out)
    render(raw, out.parent, md_name=out.name)
    print(out.read_text())


def _common(args: argparse.Namespace) -> list[str]:
    return [
        "--data=fashion_mnist",
        "--space=mbv3",
        "--width-mult=0.25",
        "--space.options={stem_stride: 1}",
        f"--train-limit={args.train_limit}",
        f"--data.val_limit={args.val_limit}",
        "--train.channels_last=true",
        "--train.sampler=uniform",
        "--trackers=jsonl",
    ]


def _budget(space, cost) -> dict[str, float]:
    """The latency budget (median predicted latency of 1,000 random architectures) and the space's
    extremes."""
    lats = cost.predict([space.sample(np.random.default_rng([7, i])) for i in range(1000)])
    largest_ms, smallest_ms = (float(v) for v in cost.predict([space.largest(), space.smallest()]))
    return {"budget_ms": float(np.median(lats)), "smallest_ms": smallest_ms, "largest_ms": largest_ms}


def _epoch_seconds(run_dir: Path) -> list[float]:
    """The supernet's training time per epoch, from its event log."""
    events = (
        json.loads(line)
        for line in (run_dir / "events.jsonl").read_text().splitlines()
        if '"epoch_seconds"' in line
    )
    return [float(e["epoch_seconds"]) for e in events]


def _names(args: argparse.Namespace) -> list[str]:
    from nas.controllers import list_controllers

    return list_controllers() if args.controllers == "all" else args.controllers.split(",")


def _runs_dir(args: argparse.Namespace, n_val: int) -> tuple[str, Path]:
    tag = (  # evaluations and runs are only comparable within one setting
        f"val{n_val}_bn{args.bn_recal_batches}"
    )
    return tag, Path(args.root) / f"runs_{tag}_t{args.trials}"


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """The data of the finished runs under --root, read without opening (or writing to) the run
    directories."""
    from nas.cost import CostModel, DeviceProfile
    from nas.cost.store import PROFILE_IN_RUN
    from nas.run.config import load_yaml
    from nas.run.context import build_space, load_config_data, resolve_config

    supernet_dir = Path(args.root) / "supernet"
    cfg = resolve_config(
        None,
        load_yaml(supernet_dir / "config.yaml"),
        [*_common(args), f"--train.bn_recal_batches={args.bn_recal_batches}"],
    )
    data = load_config_data(cfg)
    space = build_space(cfg, data)
    cost = CostModel(space, DeviceProfile.load(supernet_dir / PROFILE_IN_RUN))
    n_val = min(args.eval_images, len(data.val)) if args.eval_images else len(data.val)
    tag, runs_dir = _runs_dir(args, n_val)
    files = [
        f
        for name in _names(args)
        for seed in range(args.seeds)
        if (f := runs_dir / f"{name}_seed{seed}.json").exists()
    ]
    runs = [json.loads(f.read_text()) for f in files]
    cache_path = Path(args.root) / f"eval_cache_{tag}.json"
    cache = json.loads(cache_path.read_text())
    return {
        **provenance(NAME, {k: getattr(args, k) for k in SETTINGS}, measured_in=[*files, cache_path]),
        "built_from": str(runs_dir),
        **_budget(space, cost),
        "supernet_epoch_seconds": _epoch_seconds(supernet_dir),
        "distinct_evaluations": len(cache),
        "mean_eval_seconds": None,
        "runs": runs,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or find) the supernet, run every controller and seed not yet finished; the data of all of
    them."""
    import dataclasses
    import shutil

    from torch.utils.data import Subset

    from nas.controllers import Objectives, create_controller
    from nas.cost.store import run_cost_model
    from nas.evaluation import evaluate_arch
    from nas.run.context import open_run
    from nas.run.files import atomic_write_json
    from nas.training.checkpoint import load_supernet

    root = Path(args.root)
    supernet_dir = root / "supernet"
    common = _common(args)
    nas("train", "--run-dir", str(supernet_dir), *common, "--quiet", f"--epochs={args.epochs}")

    with open_run(
        supernet_dir,
        overrides=[*common, f"--train.bn_recal_batches={args.bn_recal_batches}"],
        progress=False,
        quiet=True,
    ) as ctx:
        space = ctx.space
        if args.eval_images:
            ctx.data = dataclasses.replace(
                ctx.data, val=Subset(ctx.data.val, range(min(args.eval_images, len(ctx.data.val))))
            )
        tag, runs_dir = _runs_dir(args, len(ctx.data.val))
        supernet = load_supernet(ctx)
        cost = run_cost_model(ctx)
        latency = _budget(space, cost)
        budget = latency["budget_ms"]
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

        runs: list[dict] = []
        for name in _names(args):
            for seed in range(args.seeds):
                out = runs_dir / f"{name}_seed{seed}.json"
                if out.exists():
                    runs.append(json.loads(out.read_text()))
                    continue
                study_dir = root / "studies" / f"{name}_seed{seed}"
                shutil.rmtree(
                    study_dir, ignore_errors=True
                )  # an interrupted run restarts (its evaluations are cached)
                study_dir.mkdir(parents=True)
                options = (
                    {"epochs": args.gradient_epochs, "max_steps": args.gradient_steps}
                    if name in ("darts", "gdas")
                    else {}
                )
                ctl = create_controller(
                    name,
                    options=options,
                    space=space,
                    seed=seed,
                    latency_budget_ms=budget,
                    run_dir=study_dir,
                    population=args.population,
                )
                prepare_s = 0.0
                if getattr(ctl, "needs_supernet", False):
                    t = time.perf_counter()
                    ctl.prepare(
                        supernet,
                        lambda e: ctx.loader("train", shuffle=True, epoch=10_000 + e),
                        lambda r: ctx.loader("val", shuffle=True, epoch=20_000 + r),
                        cost,
                        ctx.device,
                        channels_last=True,
                    )
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
                result = {
                    "controller": name,
                    "seed": seed,
                    "trace": trace,
                    "overhead_s": overhead,
                    "prepare_s": prepare_s,
                }
                atomic_write_json(out, result)
                runs.append(result)
                print(
                    f"{name} seed {seed}: best feasible"
                    f" {max([r['accuracy'] for r in trace if r['latency_ms'] <= budget] or [0]):.4f},"
                    f" overhead {overhead:.2f} s",
                    flush=True,
                )
        atomic_write_json(cache_path, cache)
        return {
            **provenance(NAME, {k: getattr(args, k) for k in SETTINGS}),
            "built_from": str(runs_dir),
            **latency,
            "supernet_epoch_seconds": _epoch_seconds(supernet_dir),
            "distinct_evaluations": len(cache),
            "mean_eval_seconds": float(np.mean(eval_seconds)) if eval_seconds else None,
            "runs": runs,
        }


def curves(raw: dict[str, Any]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float]:
    """Per controller: any-time hypervolume and best feasible accuracy (seeds x trials), and the accuracy
    reference point."""
    budget = raw["budget_ms"]
    acc_ref = min(r["accuracy"] for run in raw["runs"] for r in run["trace"])
    hv: dict[str, list[list[float]]] = {}
    best: dict[str, list[list[float]]] = {}
    for run in raw["runs"]:
        tr = run["trace"]
        hv.setdefault(run["controller"], []).append(
            [
                hypervolume([(r["accuracy"], r["latency_ms"]) for r in tr[: t + 1]], acc_ref, budget)
                for t in range(len(tr))
            ]
        )
        best.setdefault(run["controller"], []).append(
            [
                max([r["accuracy"] for r in tr[: t + 1] if r["latency_ms"] <= budget] or [np.nan])
                for t in range(len(tr))
            ]
        )
    return {name: (np.array(hv[name]), np.array(best[name])) for name in hv}, acc_ref


def render(raw: dict[str, Any], out_dir: Path, md_name: str = MARKDOWN, figures: bool = True) -> list[Path]:
    """controllers.md (plus the worker table from distributed_search.json next to this data) and the any-time
    plot, from the data alone."""
    from scipy import stats

    s = raw["settings"]
    budget = raw["budget_ms"]
    by_name, acc_ref = curves(raw)
    base_hv = by_name["random"][0][:, -1] if "random" in by_name else None
    mean_eval_s = raw["mean_eval_seconds"]
    png = Path(md_name).with_suffix(".png").name
    lines = [
        "# Search controllers: same supernet, same budget",
        "",
        (
            f"Command: `python scripts/bench_controllers.py --trials {s['trials']} --seeds {s['seeds']}"
            f" --population {s['population']} --epochs {s['epochs']} --train-limit {s['train_limit']}"
            f" --val-limit {s['val_limit']} --gradient-epochs {s['gradient_epochs']} --gradient-steps"
            f" {s['gradient_steps']} --controllers {s['controllers']} --eval-images {s['eval_images']}"
            f" --bn-recal-batches {s['bn_recal_batches']}` (root `{s['root']}`, resumable)."
        ),
        "",
        (
            f"- Supernet: `mbv3` width 0.25, stem stride 1, Fashion-MNIST ({s['train_limit']} training"
            f" images, uniform sampling, {s['epochs']} epochs, {sum(raw['supernet_epoch_seconds']) / 60:.1f}"
            " min of training epochs)."
        ),
        f"- Evaluation: supernet accuracy on {s['eval_images'] or s['val_limit']} validation images after BN"
        f" recalibration on {s['bn_recal_batches']} batches; cached per architecture"
        f" ({raw['distinct_evaluations']} distinct architectures evaluated"
        + (f", {mean_eval_s:.2f} s each" if mean_eval_s else "")
        + ").",
        (
            f"- Latency: this machine's calibrated cpu cost model. Budget **{budget:.3f} ms** (median of"
            f" 1,000 random architectures; smallest {raw['smallest_ms']:.3f} ms, largest"
            f" {raw['largest_ms']:.3f} ms)."
        ),
        (
            "- Hypervolume: area of the feasible accuracy-latency front inside the box (accuracy"
            f" {acc_ref:.4f} = lowest seen in the whole benchmark, latency {budget:.3f} ms); in accuracy"
            " x ms."
        ),
        (
            f"- Every controller gets {s['trials']} trials (asks) per seed, population {s['population']};"
            f" seeds 0..{s['seeds'] - 1}. p: Welch's t-test of the final hypervolume vs. random."
        ),
        "",
        (
            "| controller | seeds | hypervolume (mean ± std) | vs. random | p | best accuracy under budget |"
            " distinct archs | controller time per trial | learning phase |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = sorted(by_name, key=lambda n: -np.nanmean(by_name[n][0][:, -1]))
    for name in order:
        hv, best = by_name[name]
        final, fbest = hv[:, -1], best[:, -1]
        ratio = f"{final.mean() / base_hv.mean():.2f}x" if base_hv is not None and base_hv.mean() > 0 else "-"
        p = (
            "-"
            if name == "random" or base_hv is None
            else f"{stats.ttest_ind(final, base_hv, equal_var=False).pvalue:.2f}"
        )
        rs = [run for run in raw["runs"] if run["controller"] == name]
        distinct = np.mean([len({r["arch_id"] for r in run["trace"]}) for run in rs])
        per_trial_ms = np.mean([run["overhead_s"] / len(run["trace"]) for run in rs]) * 1000
        prep = np.mean([run["prepare_s"] for run in rs])
        lines.append(
            f"| {name} | {len(final)} | {final.mean():.4f} ± {final.std(ddof=1) if len(final) > 1 else 0:.4f}"
            f" | {ratio} | {p} | {np.nanmean(fbest):.4f} ±"
            f" {np.nanstd(fbest, ddof=1) if len(fbest) > 1 else 0:.4f} | {distinct:.1f} | {per_trial_ms:.1f}"
            f" ms | {f'{prep:.0f} s' if prep else '-'} |"
        )
    lines += ["", "Reading this table:", ""]
    if s["trials"] <= 2 * s["population"]:
        lines.append(
            f"- With {s['trials']} trials and population {s['population']}, NSGA-II/III (one random"
            " generation, then a few children) and the start-up phases of TPE and GP are mostly random"
            " sampling: their rows measure little more than the random phase, not the algorithms (NSGA-II"
            " and NSGA-III even ask the same architectures under the same per-trial seeds)."
        )
    lines.append(
        "- A p-value above 0.05 means the difference to random search is within the spread over seeds: not"
        " shown to be better or worse."
    )
    lines.append(
        "- Controller time per trial is wall time of ask + tell (study storage included) on a shared 2-core"
        " machine: indicative only."
    )
    workers = out_dir / DATA_DIR / WORKERS_DATA
    if workers.exists():
        w = json.loads(workers.read_text())
        lines += [
            "",
            "## One study, several workers (PostgreSQL)",
            "",
            (
                f"From `{w.get('command', 'python scripts/bench_distributed_search.py')}`"
                f" (`results/{DATA_DIR}/{WORKERS_DATA}`):"
            ),
            "",
        ]
        lines += [
            (
                f"Controller `{w.get('controller', '?')}`, {w.get('machine', {}).get('logical_cores', '?')}"
                f" logical cores, measured {w.get('machine', {}).get('date', '?')}."
            ),
            "",
            (
                "| workers | trials | wall s (incl. start-up) | trials/min (wall) | trials/min (search loop)"
                " | distinct archs |"
            ),
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in w.get("results", []):
            lines.append(
                f"| {row['workers']} | {row['trials']} | {row['wall_seconds']:.1f} |"
                f" {row['trials_per_minute_wall']:.0f} | {row['trials_per_minute_search']:.0f} |"
                f" {row['distinct_architectures']} |"
            )
        if w.get("note"):
            lines += ["", w["note"]]
    lines += ["", f"![any-time curves]({png})", "", "## Machine", "", machine_block(raw["machine"]), ""]
    written = [write_markdown(out_dir / md_name, lines)]
    if figures:
        written.append(_plot(by_name, order, budget, s["trials"], out_dir / png))
    return written


def _plot(
    by_name: dict[str, tuple[np.ndarray, np.ndarray]],
    order: list[str],
    budget: float,
    trials: int,
    path: Path,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(1, trials + 1)
    for name in order:
        hv, best = by_name[name]
        for ax, data in ((axes[0], best), (axes[1], hv)):
            m = np.nanmean(data, axis=0)
            ax.plot(x[: len(m)], m, label=name, lw=2 if name in ("random", "darts", "gdas") else 1.2)
    axes[0].set(
        xlabel="trials (evaluations asked)",
        ylabel="best accuracy under the budget (mean over seeds)",
        title=f"Any-time best feasible accuracy (budget {budget:.2f} ms)",
    )
    axes[1].set(
        xlabel="trials (evaluations asked)",
        ylabel="hypervolume (accuracy x ms, mean over seeds)",
        title="Any-time hypervolume of the feasible front",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
