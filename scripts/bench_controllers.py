"""Every search controller on the same trained supernet, same evaluation budget, many seeds.

    python scripts/bench_controllers.py [--space mbv3|nb201] [--root runs/bench_controllers] [--trials 100]
    [--seeds 10] [--controllers all]

Trains one supernet on Fashion-MNIST (cached under ``--root``): ``mbv3`` (width 0.25, stem stride 1, uniform
sampling) or ``nb201`` (the nb201 ranking study's C=8, N=1 cells, uniform sampling with in-place
distillation: the recipe that ranked best in ``results/recipes.md``). It fixes a latency budget (the median
predicted latency of 1,000 random architectures, so about half the space is feasible), then runs each
controller ``--trials`` evaluations per seed. An evaluation is the supernet accuracy of the asked
architecture (inherited weights, BN recalibrated) on the validation split; it is deterministic per
architecture, so it is cached under ``--root`` and shared by all runs (a duplicate ask costs a trial but not
an evaluation, as in ``nas search``). Studies live in memory: the controllers' own time is the algorithm's,
not a database's.

Reported per controller (mean +- std over seeds): hypervolume of the feasible accuracy-latency front
(reference point: the lowest accuracy seen anywhere in the benchmark and the budget), its ratio to random
search, best accuracy under the budget, each with Welch's t-test against random search, any-time curves
(plot), and the controller's own time (ask + tell, excluding evaluations; for darts/gdas the gradient phase
on the supernet separately). For ``mbv3``, with ``results/data/distributed_search.json`` (from
``scripts/bench_distributed_search.py``) it also reports trials/minute with 1 vs. 4 workers.

Every finished run is appended to ``results/data/controllers.json`` (``controllers_nb201.json``) at once, so
the study resumes and accumulates over sessions; the data records a fingerprint of the supernet's weights,
and runs measured on another supernet (a fresh machine that trained it again differently) are never mixed
in: the script stops and says so. ``results/controllers.md`` (``controllers_nb201.md``) and its plot are
rendered from the data alone (``render``, also called by ``scripts/make_results.py``); ``--report-only``
renders without running anything. Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from _nas import nas  # scripts/ is on sys.path when a script runs
from _results import DATA_DIR, machine_block, measure_and_render, provenance, save_raw, write_markdown
from _studies import NB201, SAMPLING

from nas.pareto import hypervolume

NAME = "controllers"
WORKERS_DATA = "distributed_search.json"  # bench_distributed_search's data, next to this one
SETTINGS = (  # what fixes the measured data; a data file holds runs of one setting (seeds, controllers grow)
    "space",
    "root",
    "trials",
    "population",
    "epochs",
    "train_limit",
    "val_limit",
    "bn_recal_batches",
    "eval_images",
    "gradient_epochs",
    "gradient_steps",
)
GROWING = ("seeds", "controllers")  # a later call may ask for more of these
SPACES: dict[str, dict[str, Any]] = {  # per space: its CLI settings, default training size and description
    "mbv3": {
        "common": (
            "--data=fashion_mnist",
            "--space=mbv3",
            "--width-mult=0.25",
            "--space.options={stem_stride: 1}",
            "--train.channels_last=true",
            "--train.sampler=uniform",
            "--trackers=jsonl",
        ),
        "train_limit": 10000,
        "about": "`mbv3` width 0.25, stem stride 1, uniform sampling",
    },
    "nb201": {
        "common": (  # the nb201 ranking study's cells and data, with its best-ranking recipe
            *(a for a in NB201.common if not a.startswith("--train-limit=")),
            *SAMPLING["uniform+distill"],
        ),
        "train_limit": 5000,
        "about": (
            "`nb201` C=8, N=1 (the ranking study's cells), uniform sampling with in-place distillation (the"
            " best-ranking nb201 recipe in `results/recipes.md`)"
        ),
    },
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", choices=tuple(SPACES), default="mbv3")
    ap.add_argument("--root", default=None, help="default: runs/bench_controllers (nb201: ..._nb201)")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--controllers", default="all")
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=8, help="supernet training epochs")
    ap.add_argument("--train-limit", type=int, default=None, help="default: mbv3 10000, nb201 5000")
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
    ap.add_argument("--report-only", action="store_true", help="render the data file, run nothing")
    ap.add_argument(
        "--out", default=None, help="default: results/controllers.md (nb201: controllers_nb201.md)"
    )
    args = ap.parse_args()
    suffix = "" if args.space == "mbv3" else f"_{args.space}"
    args.root = args.root or f"runs/bench_controllers{suffix}"
    args.out = args.out or f"results/{NAME}{suffix}.md"
    if args.train_limit is None:
        args.train_limit = SPACES[args.space]["train_limit"]
    measure_and_render(args, NAME + suffix, measure, render)


def _common(args: argparse.Namespace) -> list[str]:
    return [
        *SPACES[args.space]["common"],
        f"--train-limit={args.train_limit}",
        f"--data.val_limit={args.val_limit}",
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


def weights_fingerprint(module: Any) -> str:
    """Short hash of a network's parameters and buffers: runs are only comparable on the same weights."""
    h = hashlib.sha1()
    for key, tensor in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def check_same_study(
    raw: dict[str, Any], settings: dict[str, Any], fingerprint: str, budget_ms: float, path: Path
) -> None:
    """Stop (before anything runs) when the data file holds runs of another setting, another supernet or
    another latency model (a fresh machine calibrates its own: its budget and predictions differ)."""
    old = {k: raw["settings"].get(k, "mbv3" if k == "space" else None) for k in SETTINGS}
    differ = [f"{k}: {old[k]!r} there, {settings[k]!r} now" for k in SETTINGS if old[k] != settings[k]]
    if raw.get("supernet_fingerprint", fingerprint) != fingerprint:
        differ.append(f"supernet weights: {raw['supernet_fingerprint']} there, {fingerprint} now")
    if "budget_ms" in raw and abs(raw["budget_ms"] - budget_ms) > 1e-9 * max(1.0, budget_ms):
        differ.append(f"latency budget: {raw['budget_ms']:.6f} ms there, {budget_ms:.6f} ms now")
    if differ:
        raise SystemExit(
            f"{path} holds runs of another study ({'; '.join(differ)}): pass another --out, or move that file"
            " away to start over"
        )


def measure(args: argparse.Namespace, raw: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    """Train (or find) the supernet, run every controller and seed the data file does not hold yet (each
    saved as it finishes); the data of all of them."""
    import dataclasses
    import shutil

    import optuna
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
    settings = {k: getattr(args, k) for k in SETTINGS}

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
        supernet = load_supernet(ctx)
        fingerprint = weights_fingerprint(supernet)
        cost = run_cost_model(ctx)
        latency = _budget(space, cost)
        budget = latency["budget_ms"]
        if raw is not None:
            check_same_study(raw, settings, fingerprint, budget, path)
        cache_path = root / f"eval_cache_val{len(ctx.data.val)}_bn{args.bn_recal_batches}.json"
        cache: dict[str, float] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
        timed = dict((raw or {}).get("evaluation_seconds", {"count": 0, "total": 0.0}))

        def evaluate(arch) -> float:
            if arch.id not in cache:
                t = time.perf_counter()
                cache[arch.id] = evaluate_arch(ctx, supernet, arch)
                timed["count"] += 1
                timed["total"] += time.perf_counter() - t
                if timed["count"] % 10 == 0:
                    atomic_write_json(cache_path, cache)
            return cache[arch.id]

        runs: list[dict] = list((raw or {}).get("runs", []))
        done = {(r["controller"], r["seed"]) for r in runs}

        def data() -> dict[str, Any]:
            return {
                **provenance(NAME, {**settings, **{k: getattr(args, k) for k in GROWING}}),
                **latency,
                "supernet_fingerprint": fingerprint,
                "storage": "in-memory",
                "supernet_epoch_seconds": _epoch_seconds(supernet_dir),
                "evaluation_seconds": {"count": timed["count"], "total": round(timed["total"], 3)},
                "runs": sorted(runs, key=lambda r: (r["controller"], r["seed"])),
            }

        for name in _names(args):
            for seed in range(args.seeds):
                if (name, seed) in done:
                    continue
                study_dir = root / "studies" / f"{name}_seed{seed}"
                shutil.rmtree(study_dir, ignore_errors=True)  # an interrupted run restarts (evals cached)
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
                    storage=optuna.storages.InMemoryStorage(),
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
                overhead = 0.0
                trace: dict[str, list] = {"arch_ids": [], "accuracy": [], "latency_ms": []}
                while ctl.n_finished() < args.trials:
                    t = time.perf_counter()
                    (arch,) = ctl.ask(1)
                    overhead += time.perf_counter() - t
                    lat = float(cost.predict([arch])[0])
                    acc = evaluate(arch)
                    t = time.perf_counter()
                    ctl.tell([arch], [Objectives(acc, lat)])
                    overhead += time.perf_counter() - t
                    for key, value in zip(trace, (arch.id, acc, lat)):
                        trace[key].append(value)
                ctl.close()
                runs.append(
                    {
                        "controller": name,
                        "seed": seed,
                        **trace,
                        "overhead_s": overhead,
                        "prepare_s": prepare_s,
                    }
                )
                atomic_write_json(cache_path, cache)
                save_raw(path, data())
                feasible = [a for a, lat in zip(trace["accuracy"], trace["latency_ms"]) if lat <= budget]
                best = max(feasible or [0])
                print(f"{name} seed {seed}: best feasible {best:.4f}, overhead {overhead:.2f} s", flush=True)
        atomic_write_json(cache_path, cache)
        return data()


def curves(raw: dict[str, Any]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float]:
    """Per controller: any-time hypervolume and best feasible accuracy (seeds x trials), and the accuracy
    reference point."""
    budget = raw["budget_ms"]
    acc_ref = min(min(run["accuracy"]) for run in raw["runs"])
    hv: dict[str, list[list[float]]] = {}
    best: dict[str, list[list[float]]] = {}
    for run in raw["runs"]:
        acc, lat = np.asarray(run["accuracy"]), np.asarray(run["latency_ms"])
        points = list(zip(acc, lat))
        hv.setdefault(run["controller"], []).append(
            [hypervolume(points[: t + 1], acc_ref, budget) for t in range(len(points))]
        )
        best.setdefault(run["controller"], []).append(
            list(np.fmax.accumulate(np.where(lat <= budget, acc, np.nan)))
        )
    return {name: (np.array(hv[name]), np.array(best[name])) for name in hv}, acc_ref


def _welch_p(values: np.ndarray, base: np.ndarray | None) -> str:
    from scipy import stats

    if base is None or len(values) < 2 or len(base) < 2:
        return "-"
    p = stats.ttest_ind(values, base, equal_var=False, nan_policy="omit").pvalue
    return "-" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _mean_std(values: np.ndarray, digits: int = 4) -> str:
    spread = np.nanstd(values, ddof=1) if np.sum(np.isfinite(values)) > 1 else 0.0
    return f"{np.nanmean(values):.{digits}f} ± {spread:.{digits}f}"


def render(
    raw: dict[str, Any], out_dir: Path, md_name: str = "controllers.md", figures: bool = True
) -> list[Path]:
    """controllers.md (for mbv3 plus the worker table from distributed_search.json next to this data) and the
    any-time plot, from the data alone."""
    s = raw["settings"]
    space = s.get("space", "mbv3")
    budget = raw["budget_ms"]
    by_name, acc_ref = curves(raw)
    base_hv, base_best = (
        (by_name["random"][0][:, -1], by_name["random"][1][:, -1]) if "random" in by_name else (None, None)
    )
    timed = raw.get("evaluation_seconds", {"count": 0})
    png = Path(md_name).with_suffix(".png").name
    distinct = len({a for run in raw["runs"] for a in run["arch_ids"]})
    lines = [
        f"# Search controllers on one `{space}` supernet: same budget, many seeds",
        "",
        (
            f"Command: `python scripts/bench_controllers.py --space {space} --trials {s['trials']} --seeds"
            f" {s['seeds']} --population {s['population']} --epochs {s['epochs']} --train-limit"
            f" {s['train_limit']} --val-limit {s['val_limit']} --gradient-epochs {s['gradient_epochs']}"
            f" --gradient-steps {s['gradient_steps']} --controllers {s['controllers']} --eval-images"
            f" {s['eval_images']} --bn-recal-batches {s['bn_recal_batches']}` (root `{s['root']}`,"
            " resumable)."
        ),
        "",
        (
            f"- Supernet: {SPACES[space]['about']}, Fashion-MNIST ({s['train_limit']} training images,"
            f" {s['epochs']} epochs, {sum(raw['supernet_epoch_seconds']) / 60:.1f} min of training epochs)."
        ),
        f"- Evaluation: supernet accuracy on {s['eval_images'] or s['val_limit']} validation images after BN"
        f" recalibration on {s['bn_recal_batches']} batches; cached per architecture ({distinct} distinct"
        " architectures evaluated"
        + (f", {timed['total'] / timed['count']:.2f} s each" if timed["count"] else "")
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
            f" seeds 0..{max(r['seed'] for r in raw['runs'])}. p: Welch's t-test (two-sided) of the final"
            " hypervolume and of the best accuracy under the budget against random search, over seeds."
        ),
        "",
        (
            "| controller | seeds | hypervolume (mean ± std) | vs. random | p | best accuracy under budget"
            " | p | distinct archs | controller time per trial | learning phase |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = sorted(by_name, key=lambda n: -np.nanmean(by_name[n][0][:, -1]))
    for name in order:
        hv, best = by_name[name]
        final, fbest = hv[:, -1], best[:, -1]
        ratio = f"{final.mean() / base_hv.mean():.2f}x" if base_hv is not None and base_hv.mean() > 0 else "-"
        rival = name != "random"
        rs = [run for run in raw["runs"] if run["controller"] == name]
        archs = np.mean([len(set(run["arch_ids"])) for run in rs])
        per_trial_ms = np.mean([run["overhead_s"] / len(run["arch_ids"]) for run in rs]) * 1000
        prep = np.mean([run["prepare_s"] for run in rs])
        lines.append(
            f"| {name} | {len(final)} | {_mean_std(final)} | {ratio} |"
            f" {_welch_p(final, base_hv) if rival else '-'} | {_mean_std(fbest)} |"
            f" {_welch_p(fbest, base_best) if rival else '-'} | {archs:.1f} | {per_trial_ms:.1f}"
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
        "- Controller time per trial is the wall time of ask + tell on a shared 2-core machine"
        + ("" if raw.get("storage") == "in-memory" else " (these runs kept their studies in a file)")
        + ": indicative only."
    )
    workers = out_dir / DATA_DIR / WORKERS_DATA
    if space == "mbv3" and workers.exists():
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
