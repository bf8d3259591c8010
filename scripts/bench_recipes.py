"""Supernet training recipes compared over seeds against each study's ground truth, written to
results/recipes.md.

    python scripts/bench_recipes.py --space resnet20_pool [--recipes uniform,sandwich] [--seeds 5]

For each (recipe, seed): ``nas train`` a supernet with the study's settings plus
the recipe's (scripts/_studies.py), then evaluate every architecture of the
study's ground truth with inherited weights after BN recalibration. Each result
lands in ``results/data/recipes.json`` as it finishes (the supernets live under
``--root`` and resume; a fresh machine continues from the data file, retraining
only what it lacks). The report compares every recipe's Kendall tau, Spearman,
top-5 overlap and regret (mean +/- std over seeds) with the engine's default
recipe (Welch's t-test) and with ranking by MACs and by parameters (one-sample
t-test against the baseline's tau), beside the ground truth's reliability
(results/data/ground_truth.json, bench_ground_truth.py).
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from _results import data_path, load_raw, machine_block, machine_info, provenance, save_raw, write_markdown
from _studies import STUDIES, study

NAME = "recipes"
MARKDOWN = "recipes.md"
RECAL_RECIPES = ("uniform", "sandwich")  # also evaluated at every study.recal_sizes (evaluation only)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", required=True, help="a study name (scripts/_studies.py)")
    ap.add_argument("--recipes", default="all", help="comma-separated recipe names of the study, or all")
    ap.add_argument("--seeds", type=int, default=5, help="supernet seeds per recipe (0, 1, ...)")
    ap.add_argument("--workers", type=int, default=2, help="supernets trained in parallel (one thread each)")
    ap.add_argument("--root", default="runs/recipes")
    ap.add_argument("--out", default=f"results/{MARKDOWN}")
    ap.add_argument("--report-only", action="store_true", help="render from the data, train nothing")
    args = ap.parse_args()
    path = data_path(args.out, NAME)
    if not args.report_only:
        measure(args, path)
    out = Path(args.out)
    render(load_raw(path), out.parent, md_name=out.name)
    print(out.read_text())


def slug(recipe: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+=-]+", "_", recipe)


def recipe_args(name: str, recipe: str) -> list[str]:
    s = study(name)
    if recipe not in s.recipes:
        raise SystemExit(f"--recipes: {recipe!r} is not a recipe of {name}: use {', '.join(s.recipes)}")
    return [*s.common, f"--epochs={s.supernet_epochs}", *s.recipes[recipe]]


def run_item(
    run_dir: str, train_args: list[str], archs: list[dict[str, Any]], sizes: list[int]
) -> dict[str, Any]:
    """Train one supernet (in its own process, one thread) and evaluate the ground truth's architectures on
    it at each BN recalibration size."""
    import torch

    torch.set_num_threads(1)
    from nas.cli import main as nas_main
    from nas.evaluation import accuracy, recalibrate_bn
    from nas.run.context import open_run
    from nas.training.checkpoint import load_supernet

    t0 = time.perf_counter()
    rc = nas_main(["train", "--run-dir", run_dir, *train_args, "--quiet"])
    if rc != 0:
        raise RuntimeError(f"nas train --run-dir {run_dir} exited {rc}")
    train_wall = time.perf_counter() - t0
    with open_run(Path(run_dir), progress=False, quiet=True) as ctx:
        net = load_supernet(ctx)
        inherited = {}
        for size in sizes:
            accs = []
            for a in archs:  # an architecture's values, or its space's string form (nb201's NATS string)
                net.set_active(ctx.space.to_spec(_arch(ctx.space, a)))
                recalibrate_bn(net, ctx.loader("train", shuffle=True, epoch=-1), size, ctx.device)
                accs.append(accuracy(net, ctx.loader("val", shuffle=False), ctx.device))
            inherited[str(size)] = accs
        ids = [_arch(ctx.space, a).id for a in archs]
    epochs = [
        json.loads(line)["epoch_seconds"]
        for line in (Path(run_dir) / "events.jsonl").read_text().splitlines()
        if '"epoch_seconds"' in line
    ]
    return {
        "arch_ids": ids,
        "inherited": inherited,
        "epoch_seconds": epochs,
        "train_wall_seconds": train_wall,
    }


def _arch(space: Any, a: dict[str, Any] | str) -> Any:
    return space.parse_arch(a) if isinstance(a, str) else space.arch(a)


def measure(args: argparse.Namespace, path: Path) -> None:
    """Every missing (recipe, seed) of the study, seeds outermost (every recipe gets its first seed early)."""
    s = study(args.space)
    recipes = list(s.recipes) if args.recipes == "all" else args.recipes.split(",")
    raw = load_raw(path) if path.exists() else {**provenance(NAME, {}), "spaces": {}, "sessions": []}
    space = raw["spaces"].setdefault(args.space, {"recipes": {}, "items": {}})
    for r in recipes:
        wanted = recipe_args(args.space, r)
        known = space["recipes"].setdefault(r, wanted)
        if known != wanted:
            raise SystemExit(
                f"recipe {r!r} of {args.space} was measured with `{' '.join(known)}`, it is now"
                f" `{' '.join(wanted)}`: give the changed recipe a new name in scripts/_studies.py"
            )
    todo = [
        (r, seed) for seed in range(args.seeds) for r in recipes if str(seed) not in space["items"].get(r, {})
    ]
    print(
        f"{args.space}: {len(todo)} supernets to train ({len(recipes)} recipes x {args.seeds} seeds)",
        flush=True,
    )
    if not todo:
        save_raw(path, raw)
        return
    got = _truth(path.parent.parent, args.space)
    if got is None:
        raise SystemExit(f"no ground truth for {args.space} yet: run scripts/bench_{s.truth}.py")
    archs = [a["arch"] for a in got[2]["archs"]]
    raw["sessions"].append({**machine_info(), "command": provenance(NAME, {})["command"], "trained": 0})
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {
            pool.submit(
                run_item,
                str(Path(args.root) / args.space / slug(r) / f"seed{seed}"),
                [*recipe_args(args.space, r), f"--seed={s.supernet_seed0 + seed}"],
                archs,
                list(s.recal_sizes if r in RECAL_RECIPES else (s.recal_default,)),
            ): (r, seed)
            for r, seed in todo
        }
        for n, fut in enumerate(as_completed(futures), 1):
            r, seed = futures[fut]
            space["items"].setdefault(r, {})[str(seed)] = fut.result()
            raw["sessions"][-1]["trained"] += 1
            raw["sessions"][-1]["wall_seconds"] = time.perf_counter() - started
            save_raw(path, raw)
            print(f"  {n}/{len(todo)}: {r} seed {seed} done", flush=True)


def _truth(results_dir: Path, name: str) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]] | None:
    """The study's ground-truth mean per architecture, its summary and its entry (None when not measured)."""
    from bench_ground_truth import complete_matrix, summary

    truth = STUDIES[name].truth if name in STUDIES else "ground_truth"
    gt_path = results_dir / "data" / f"{truth}.json"
    if not gt_path.exists():
        return None
    entry = importlib.import_module(f"bench_{truth}").study_entry(load_raw(gt_path), name)  # one shape
    if entry is None:
        return None
    acc, seeds = complete_matrix(entry)
    if len(seeds) == 0:
        return None
    return acc.mean(axis=1), summary(entry), entry


def recipe_metrics(
    items: dict[str, Any], truth: np.ndarray, ids: list[str], size: str
) -> dict[str, list[float]]:
    """Per seed: Kendall tau, Spearman, top-5 overlap and regret (points) of the inherited accuracies at
    recalibration ``size``."""
    from nas.ranking import ranking_metrics

    out: dict[str, list[float]] = {"tau": [], "spearman": [], "top5": [], "regret": [], "epoch_s": []}
    for seed, item in sorted(items.items(), key=lambda kv: int(kv[0])):
        if item["arch_ids"] != ids:
            raise ValueError(f"seed {seed} evaluated other architectures than the ground truth holds")
        if size not in item["inherited"]:
            continue
        k = min(5, len(ids))
        m = ranking_metrics(np.array(item["inherited"][size]), truth, top_k=k)
        out["tau"].append(m["kendall_tau"])
        out["spearman"].append(m["spearman"])
        out["top5"].append(m[f"top{k}_overlap"])
        out["regret"].append(100 * m["regret"])
        out["epoch_s"].append(float(np.mean(item["epoch_seconds"])))
    return out


def _p(p: float) -> str:
    return "-" if not np.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else "<0.001")


def render(raw: dict[str, Any], out_dir: Path, md_name: str = MARKDOWN, figures: bool = True) -> list[Path]:
    """recipes.md from the data alone (and the ground truths beside it)."""
    from scipy import stats

    lines = [
        "# Supernet training recipes against reliable ground truths (Fashion-MNIST)",
        "",
        (
            "Each recipe: supernets trained with seeds 0, 1, ... (nb201: 1000, 1001, ..., as its ground"
            " truth's trainings seeded 0, 1, ... and the seed draws the validation split), each ranking every"
            " architecture of its study's ground truth (`results/ground_truth.md`,"
            " `results/nb201_ground_truth.md`) with inherited weights after batch-norm recalibration."
            " Figures: mean ± std over the supernet seeds. p vs. default: Welch's t-test of the Kendall taus"
            " against the engine's default recipe; p vs. MACs / params: one-sample t-test of the taus against"
            " ranking the architectures by MACs / by parameter count (a fixed number). Epoch time: the"
            " training loop's mean epoch, relative to the default recipe's (same run of this script, two"
            " supernets training at a time on the machine below, so indicative)."
        ),
        "",
    ]
    results_dir = out_dir
    for name, space in raw["spaces"].items():
        s = STUDIES.get(name)
        got = _truth(results_dir, name)
        lines += [f"## {name}", ""]
        if got is None or s is None:
            lines += ["No ground truth measured yet for this study.", ""]
            continue
        truth, gsum, entry = got
        ids = [a["id"] for a in entry["archs"]]
        macs_tau, params_tau = gsum.get("macs_tau", float("nan")), gsum.get("params_tau", float("nan"))
        rel = gsum.get("reliability")
        lines += [
            f"{s.about}. Ground truth: {gsum['seeds']} standalone seeds per architecture, split-half"
            f" reliability **{rel:.3f}**"
            + (
                " (below 0.8: read the differences below with that in mind)"
                if rel is not None and rel < 0.8
                else ""
            )
            + f". Zero-cost baselines: Kendall tau by MACs **{macs_tau:.3f}**, by parameters"
            f" **{params_tau:.3f}**.",
            "",
        ]
        size = str(s.recal_default)
        per = {r: recipe_metrics(items, truth, ids, size) for r, items in space["items"].items()}
        per = {r: m for r, m in per.items() if m["tau"]}
        default = per.get(s.default_recipe)
        base_epoch = np.mean(default["epoch_s"]) if default else float("nan")
        lines += [
            (
                "| recipe | seeds | Kendall tau | Spearman | top-5 overlap | regret (points) | p vs. default"
                " | p vs. MACs | p vs. params | epoch time |"
            ),
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        order = sorted(per, key=lambda r: -np.mean(per[r]["tau"]))
        for r in order:
            m = per[r]
            n = len(m["tau"])
            p_def = (
                stats.ttest_ind(m["tau"], default["tau"], equal_var=False).pvalue
                if default and r != s.default_recipe and n > 1 and len(default["tau"]) > 1
                else float("nan")
            )
            p_macs = stats.ttest_1samp(m["tau"], macs_tau).pvalue if n > 1 else float("nan")
            p_params = stats.ttest_1samp(m["tau"], params_tau).pvalue if n > 1 else float("nan")
            label = f"**{r}** (default)" if r == s.default_recipe else r
            lines.append(
                f"| {label} | {n} | {np.mean(m['tau']):.3f} ± {np.std(m['tau']):.3f} |"
                f" {np.mean(m['spearman']):.3f} ± {np.std(m['spearman']):.3f} |"
                f" {np.mean(m['top5']):.2f} ± {np.std(m['top5']):.2f} |"
                f" {np.mean(m['regret']):.2f} ± {np.std(m['regret']):.2f} | {_p(p_def)} | {_p(p_macs)} |"
                f" {_p(p_params)} | {np.mean(m['epoch_s']) / base_epoch:.2f}x |"
            )
        if order:
            best = order[0]
            lines += [
                "",
                (
                    f"Highest mean Kendall tau: **{best}** ({np.mean(per[best]['tau']):.3f}); the default"
                    f" ({s.default_recipe}): {np.mean(default['tau']):.3f}."
                    if default
                    else ""
                ),
            ]
        recal_rows = []
        for r in RECAL_RECIPES:
            if r not in space["items"]:
                continue
            row = []
            for size_ in s.recal_sizes:
                m = recipe_metrics(space["items"][r], truth, ids, str(size_))
                row.append(f"{np.mean(m['tau']):.3f} ± {np.std(m['tau']):.3f}" if m["tau"] else "-")
            recal_rows.append(f"| {r} | " + " | ".join(row) + " |")
        if recal_rows:
            lines += [
                "",
                (
                    "Batch-norm recalibration size (training batches recomputing the statistics before each"
                    " evaluation; evaluation only, same supernets): Kendall tau"
                ),
                "",
                "| recipe | " + " | ".join(f"{n} batches" for n in s.recal_sizes) + " |",
                "| --- |" + " ---: |" * len(s.recal_sizes),
                *recal_rows,
            ]
        lines += ["", "Recipes (settings added to the study's):", ""]
        for r in order:
            lines.append(f"- {r}: `{' '.join(a for a in space['recipes'][r] if a not in s.common)}`")
        lines.append("")
    lines += ["## Sessions", ""]
    for x in raw.get("sessions", []):
        lines.append(
            f"- {x['date']}: `{x['command']}`: {x['trained']} supernets in"
            f" {x.get('wall_seconds', 0) / 60:.0f} min"
        )
    if raw.get("sessions"):
        lines += ["", "Latest session's machine:", "", machine_block(raw["sessions"][-1])]
    return [write_markdown(out_dir / md_name, lines)]


if __name__ == "__main__":
    main()
