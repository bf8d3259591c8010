"""How well nb201 supernets rank architectures against the Fashion-MNIST ground truth, per training recipe.

    python scripts/bench_nb201_ranking.py [--samplers uniform,fair,sandwich] [--distill false,true]
        [--entangled true,false] [--seeds 3] [--supernet-epochs 30] [--root runs/bench_nb201_ranking]

Reads the ground truth that ``scripts/bench_nb201_ground_truth.py`` accumulated
(``results/data/nb201_ground_truth.json``: the architectures, their standalone accuracy per seed, and the
recipe they were trained with) and trains only supernets: one per sampling rule x in-place distillation x
entangled or separate 1x1 weights x seed, on the ground truth's data, space configuration and recipe
(``nas train``; run directories under ``--root``, each resumable). Each supernet then scores every
ground-truth architecture with inherited weights (BN recalibrated), and the report gives, per recipe over its
supernet seeds (mean +- std): Kendall tau, Spearman, top-5 overlap and regret against the mean of the
standalone seeds, beside the zero-cost baselines (rank by MACs, by parameters) and the ground truth's own
reliability. Results are appended to ``results/data/nb201_ranking.json`` after every supernet; the report is
rendered from it alone (``render``). Needs Debian's dataset-fashion-mnist (for the ground truth's data).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
from _nas import nas  # scripts/ is on sys.path when a script runs
from _results import (
    load_raw,
    machine_block,
    measure_and_render,
    provenance,
    save_raw,
    write_markdown,
)

NAME = "nb201_ranking"
MARKDOWN = "nb201_ranking.md"
TOP_K = 5
SETTINGS = (
    "samplers",
    "distill",
    "entangled",
    "seeds",
    "supernet_epochs",
    "bn_recal_batches",
    "truth",
    "root",
)


def _flags(text: str) -> list[bool]:
    return [{"true": True, "false": False}[v.strip().lower()] for v in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samplers", default="uniform,fair,sandwich")
    ap.add_argument("--distill", default="false,true", help="in-place distillation off and/or on")
    ap.add_argument(
        "--entangled", default="true,false", help="nor_conv_1x1 the centre of nor_conv_3x3 or not"
    )
    ap.add_argument("--seeds", type=int, default=3, help="supernet seeds per recipe")
    ap.add_argument("--supernet-epochs", type=int, default=30)
    ap.add_argument("--bn-recal-batches", type=int, default=20)
    ap.add_argument("--truth", default="results/data/nb201_ground_truth.json")
    ap.add_argument("--root", default="runs/bench_nb201_ranking")
    ap.add_argument("--out", default=f"results/{MARKDOWN}")
    ap.add_argument("--report-only", action="store_true", help="render the data file, train nothing")
    args = ap.parse_args()
    measure_and_render(args, NAME, measure, render)


def truth_of(truth: dict[str, Any]) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The ground-truth architectures with a result on every seed, and those results [archs, seeds]."""
    seeds = sorted({r["seed"] for r in truth["results"]})
    acc = {(r["arch_id"], r["seed"]): r["val_acc"] for r in truth["results"]}
    archs = [a for a in truth["archs"] if all((a["arch_id"], s) in acc for s in seeds)]
    return archs, np.array([[acc[(a["arch_id"], s)] for s in seeds] for a in archs])


def train_args(recipe: dict[str, Any], sampler: str, distill: bool, entangled: bool, seed: int, epochs: int):
    """`nas train` settings of one supernet on the ground truth's data, space and recipe."""
    options = f"{{C: {recipe['C']}, N: {recipe['N']}, entangled: {str(entangled).lower()}}}"
    return [
        f"--data={recipe['data']}",
        f"--data.resolution={recipe['resolution']}",
        f"--train-limit={recipe['train_limit']}",
        *([f"--data.val_limit={recipe['val_limit']}"] if recipe["val_limit"] else []),
        f"--batch-size={recipe['batch_size']}",
        f"--train.lr={recipe['lr']}",
        "--space=nb201",
        "--width-mult=1",
        f"--space.options={options}",
        f"--train.sampler={sampler}",
        f"--train.distill={str(distill).lower()}",
        f"--epochs={epochs}",
        f"--seed={seed}",
        "--trackers=jsonl",
        "--device=cpu",
    ]


def recipe_name(sampler: str, distill: bool, entangled: bool) -> str:
    return f"{sampler}{'+distill' if distill else ''}{'' if entangled else '+separate'}"


def measure(args: argparse.Namespace, raw: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    from nas.evaluation import evaluate_arch
    from nas.ranking import ranking_metrics
    from nas.run.context import open_run
    from nas.training.checkpoint import load_supernet

    truth = load_raw(args.truth)
    archs, per_seed = truth_of(truth)
    if len(archs) < TOP_K:
        raise SystemExit(
            f"{args.truth} has {len(archs)} architectures on every seed; a ranking needs {TOP_K}+"
        )
    target = per_seed.mean(axis=1)
    settings = {k: getattr(args, k) for k in SETTINGS}
    if raw is None:
        raw = {**provenance(NAME, settings), "runs": []}
    raw.update(
        {
            "settings": settings,
            "command": provenance(NAME, settings)["command"],
            "truth": {"file": args.truth, "recipe_id": truth["recipe_id"], "recipe": truth["recipe"]},
        }
    )
    done = {
        (r["recipe"], r["seed"]) for r in raw["runs"] if r["truth_archs"] == [a["arch_id"] for a in archs]
    }
    raw["runs"] = [r for r in raw["runs"] if (r["recipe"], r["seed"]) in done]  # drop runs of an older truth
    grid = itertools.product(args.samplers.split(","), _flags(args.distill), _flags(args.entangled))
    started = time.perf_counter()
    for (sampler, distill, entangled), seed in itertools.product(list(grid), range(args.seeds)):
        name = recipe_name(sampler, distill, entangled)
        if (name, seed) in done:
            continue
        run_dir = Path(args.root) / f"{name.replace('+', '_')}_seed{seed}"
        settings_ = train_args(truth["recipe"], sampler, distill, entangled, seed, args.supernet_epochs)
        t0 = time.perf_counter()
        nas("train", "--run-dir", str(run_dir), *settings_, "--quiet")
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with open_run(
            run_dir, overrides=[*settings_, f"--train.bn_recal_batches={args.bn_recal_batches}"], quiet=True
        ) as ctx:
            net = load_supernet(ctx)
            inherited = np.array([evaluate_arch(ctx, net, ctx.space.parse_arch(a["nats"])) for a in archs])
        raw["runs"].append(
            {
                "recipe": name,
                "sampler": sampler,
                "distill": distill,
                "entangled": entangled,
                "seed": seed,
                "truth_archs": [a["arch_id"] for a in archs],
                "supernet_acc": [float(v) for v in inherited],
                **ranking_metrics(inherited, target, top_k=TOP_K),
                "train_seconds": train_s,
                "eval_seconds": time.perf_counter() - t0,
            }
        )
        save_raw(path, raw)
        print(f"{name} seed {seed}: kendall tau {raw['runs'][-1]['kendall_tau']:.3f}", flush=True)
    raw["wall_seconds_last_call"] = time.perf_counter() - started
    raw["baselines"] = baselines(archs, target)
    raw["truth"].update(reliability_of(per_seed), archs=len(archs), seeds=int(per_seed.shape[1]))
    save_raw(path, raw)
    return raw


def baselines(archs: list[dict[str, Any]], target: np.ndarray) -> dict[str, dict[str, float]]:
    """Zero-cost rankings: bigger is better, by MACs and by parameters."""
    from nas.ranking import ranking_metrics

    return {
        by: ranking_metrics(np.array([a[by] for a in archs], dtype=float), target, top_k=TOP_K)
        for by in ("macs", "params")
    }


def reliability_of(per_seed: np.ndarray) -> dict[str, float]:
    from nas.ranking import ground_truth_reliability

    rel = ground_truth_reliability(per_seed)
    return {k: v for k, v in rel.items() if isinstance(v, float)}


def _ms(values: list[float], scale: float = 1.0) -> str:
    v = np.array(values) * scale
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def render(raw: dict[str, Any], out_dir: Path, md_name: str = MARKDOWN, figures: bool = True) -> list[Path]:
    """nb201_ranking.md from the data alone."""
    s, t = raw["settings"], raw["truth"]
    rec = t["recipe"]
    recipes: dict[str, list[dict[str, Any]]] = {}
    for r in raw["runs"]:
        recipes.setdefault(r["recipe"], []).append(r)
    wall = sum(r["train_seconds"] + r["eval_seconds"] for r in raw["runs"])
    reliability = t.get("split_half_kendall_tau", t.get("seed_to_seed_kendall_tau", float("nan")))
    topk = f"top{TOP_K}_overlap"
    lines = [
        "# nb201 supernet ranking on Fashion-MNIST",
        "",
        f"Ground truth: `{t['file']}` (recipe {t['recipe_id']}): {t.get('archs', '?')} architectures trained"
        f" alone, {t.get('seeds', '?')} seeds each, `nb201` C={rec['C']} N={rec['N']} at"
        f" {rec['resolution']}x{rec['resolution']}, {rec['train_limit']} training images, {rec['epochs']}"
        " epochs. Supernets: the same data, space and recipe, trained"
        f" {s['supernet_epochs']} epochs; every ground-truth architecture scored with inherited weights after"
        f" BN recalibration on {s['bn_recal_batches']} batches. Per recipe: mean ± std over {s['seeds']}"
        f" supernet seeds. Reproduce: `{raw['command']}` (resumable; {wall / 60:.0f} min of training and"
        " evaluation in all).",
        "",
        machine_block(raw["machine"]),
        "Ground-truth reliability: seed-to-seed Kendall tau"
        f" {t.get('seed_to_seed_kendall_tau', float('nan')):.3f}"
        + (f", split-half {t['split_half_kendall_tau']:.3f}" if "split_half_kendall_tau" in t else "")
        + (
            "; **below 0.8: these taus measure the ground truth's noise as much as the supernets**."
            if not reliability >= 0.8
            else "."
        ),
        "",
        "| recipe | sampler | distill | 1x1 weights | supernets | Kendall tau | Spearman |"
        f" top-{TOP_K} overlap | regret (points) | minutes per supernet |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in recipes.items():
        r0 = runs[0]
        minutes = np.mean([r["train_seconds"] + r["eval_seconds"] for r in runs]) / 60
        lines.append(
            f"| {name} | {r0['sampler']} | {'yes' if r0['distill'] else 'no'} |"
            f" {'centre of 3x3' if r0['entangled'] else 'separate'} | {len(runs)} |"
            f" {_ms([r['kendall_tau'] for r in runs])} | {_ms([r['spearman'] for r in runs])} |"
            f" {_ms([r[topk] for r in runs])} | {_ms([r['regret'] for r in runs], 100)} | {minutes:.1f} |"
        )
    for by, m in raw.get("baselines", {}).items():
        lines.append(
            f"| rank by {by} (zero-cost) | - | - | - | - | {m['kendall_tau']:.3f} | {m['spearman']:.3f} |"
            f" {m[topk]:.3f} | {100 * m['regret']:.3f} | - |"
        )
    lines += [
        "",
        "Regret: standalone accuracy (points) lost by taking the architecture the supernet (or the baseline)"
        f" ranks first; top-{TOP_K} overlap: the share of the ground truth's {TOP_K} best among the"
        f" supernet's {TOP_K} best. Per-architecture supernet accuracies are in `results/data/{NAME}.json`.",
        "",
    ]
    return [write_markdown(out_dir / md_name, lines)]


if __name__ == "__main__":
    main()
