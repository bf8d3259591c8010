"""A ranking ground truth for nb201 on Fashion-MNIST: K architectures, each trained alone on several seeds.

    python scripts/bench_nb201_ground_truth.py [--archs 40] [--seeds 2] [--epochs 8] [--train-limit 10000]
        [--C 8] [--N 1] [--stratify cifar10|macs] [--max-new N]

The K architectures are stratified over the NATS-Bench CIFAR-10 test accuracy of the 6,466 networks (K
equal-count strata of the networks ranked by it, one seeded draw from each; ``--stratify macs``: K
equal-width log-MACs strata as ``nas rank`` does), and each is trained alone with the engine's trainer
(``nas.ranking.train_standalone_all``, the training behind ``nas rank``), one result per architecture and
seed. Every result is appended to ``results/data/nb201_ground_truth.json`` as it finishes: the truth
accumulates, a rerun (with more ``--archs`` or ``--seeds``) trains only what is missing, and a benchmark that
ranks supernets against it (``scripts/bench_recipes.py --space nb201``, through :func:`study_entry`) never
retrains it. The recipe is fixed by
the data file: a call with another recipe is refused (use another ``--data``).

``--max-new N`` trains at most N new (architecture, seed) pairs in this call, in an order that spreads them
over the strata (a pilot: ``--max-new 8`` gives 4 architectures x 2 seeds across the range).

The report (``results/nb201_ground_truth.md``, rendered from the data alone) gives the reliability: Kendall
tau between seeds (mean over pairs) and, with 4 seeds or more, the split-half tau of seed means (it must reach
0.8 for the truth to rank supernets), the Kendall tau of the seed means against the NATS CIFAR-10 column,
and the seconds per training. Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import (
    machine_block,
    measure_and_render,
    provenance,
    save_raw,
    write_markdown,
)
from bench_ground_truth import split_half_curve

NAME = "nb201_ground_truth"
MARKDOWN = "nb201_ground_truth.md"
RELIABILITY_TARGET = 0.8
RECIPE = (  # the settings that define a training: fixed for the life of a data file
    "epochs", "train_limit", "val_limit", "C", "N", "entangled", "batch_size", "lr", "resolution", "data",
)  # fmt: skip
SELECTION = ("archs", "stratify", "arch_seed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--train-limit", type=int, default=10000)
    ap.add_argument("--val-limit", type=int, default=None, help="default: the whole held-out 10%% (6,000)")
    ap.add_argument("--C", type=int, default=8, help="nb201 channels of the first stage")
    ap.add_argument("--N", type=int, default=1, help="nb201 cells per stage")
    ap.add_argument("--entangled", action="store_true", help="(static networks are the same either way)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--resolution", type=int, default=28)
    ap.add_argument("--data", default="fashion_mnist")
    ap.add_argument("--stratify", choices=("cifar10", "macs"), default="cifar10")
    ap.add_argument("--arch-seed", type=int, default=0, help="seeds the draw within each stratum")
    ap.add_argument("--workers", type=int, default=2, help="trainings in parallel (1 thread each)")
    ap.add_argument("--max-new", type=int, default=None, help="train at most this many new results now")
    ap.add_argument("--cache", default="runs/bench_nb201_ground_truth", help="per-training result files")
    ap.add_argument("--out", default=f"results/{MARKDOWN}")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    measure_and_render(args, NAME, measure, render)


def recipe_of(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in RECIPE}


def config(recipe: dict[str, Any]) -> Any:
    """The engine configuration of one standalone training of the recipe (seed set per training)."""
    from nas.run.config import build_config

    return build_config(
        {
            "data": {
                "name": recipe["data"],
                "train_limit": recipe["train_limit"],
                "val_limit": recipe["val_limit"],
                "resolution": recipe["resolution"],
                "batch_size": recipe["batch_size"],
            },
            "space": {
                "name": "nb201",
                "width_mult": 1.0,
                "options": {"C": recipe["C"], "N": recipe["N"], "entangled": recipe["entangled"]},
            },
            "train": {"epochs": recipe["epochs"], "lr": recipe["lr"]},
            "trackers": ["jsonl"],
            "device": "cpu",
        }
    )


def space_of(recipe: dict[str, Any]) -> Any:
    from search_spaces import create_space

    return create_space(
        "nb201",
        num_classes=10,
        in_channels=1,
        resolution=recipe["resolution"],
        C=recipe["C"],
        N=recipe["N"],
        entangled=recipe["entangled"],
    )


def select(space: Any, k: int, stratify: str, seed: int) -> list[Any]:
    """K distinct networks spread over the NATS CIFAR-10 accuracy (equal-count strata) or over log-MACs."""
    from nas.ranking import stratified_archs
    from nas.tables import load_table

    if stratify == "macs":
        return stratified_archs(space, k, seed=seed)
    table = load_table(space, "nats:cifar10")
    ordered = sorted(table.archs.values(), key=lambda a: (table.accuracy[a.id], a.id))
    rng = np.random.default_rng(seed)
    strata = np.array_split(np.arange(len(ordered)), k)
    return [ordered[int(stratum[rng.integers(len(stratum))])] for stratum in strata]


def spread_order(n: int) -> list[int]:
    """0..n-1 in an order whose every prefix is spread over the range (bit-reversed, then the rest)."""
    bits = max(1, math.ceil(math.log2(max(n, 2))))
    rev = [int(f"{i:0{bits}b}"[::-1], 2) for i in range(2**bits)]
    order = [r * n // 2**bits for r in rev]
    seen: list[int] = []
    for i in [*order, *range(n)]:
        if i < n and i not in seen:
            seen.append(i)
    return seen


def describe_archs(space: Any, archs: list[Any]) -> list[dict[str, Any]]:
    from nas.cost.metrics import network_metrics
    from nas.tables import NATS_COLUMNS, load_table

    tables = {name.split(":")[1]: load_table(space, name) for name in NATS_COLUMNS}
    metrics = network_metrics(space, archs)
    return [
        {
            "arch_id": a.id,
            "nats": space.format_arch(a),
            "nats_index": space.nats_index(a),
            "macs": float(metrics["macs"][i]),
            "params": float(metrics["params"][i]),
            **{f"nats_{ds}": round(100 * t.accuracy_of(a), 4) for ds, t in tables.items()},
        }
        for i, a in enumerate(archs)
    ]


def measure(args: argparse.Namespace, raw: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    from nas.ranking import standalone_recipe_id, train_standalone_all

    recipe = recipe_of(args)
    cfg = config(recipe)
    space = space_of(recipe)
    recipe_id = standalone_recipe_id(cfg)
    if raw is not None and raw["recipe"] != recipe:
        changed = sorted(k for k in recipe if raw["recipe"].get(k) != recipe[k])
        raise SystemExit(
            f"{path} holds a ground truth trained with other settings ({', '.join(changed)}: "
            + ", ".join(f"{k}={raw['recipe'].get(k)!r}" for k in changed)
            + "); give those settings, or --out results/<other>.md for a new ground truth"
        )
    selection = {k: getattr(args, k) for k in SELECTION}
    archs = select(space, args.archs, args.stratify, args.arch_seed)
    if raw is None:
        raw = {**provenance(NAME, {**recipe, **selection}), "recipe": recipe, "recipe_id": recipe_id}
        raw.update({"selection": selection, "archs": [], "results": []})
    if raw["selection"]["stratify"] != args.stratify or raw["selection"]["arch_seed"] != args.arch_seed:
        raise SystemExit(f"{path} was selected with {raw['selection']}; keep --stratify and --arch-seed")
    known = {a["arch_id"] for a in raw["archs"]}
    raw["archs"] += [d for d in describe_archs(space, archs) if d["arch_id"] not in known]
    raw["selection"]["archs"] = max(raw["selection"]["archs"], args.archs)
    done = {(r["arch_id"], r["seed"]) for r in raw["results"]}
    budget = len(archs) * args.seeds if args.max_new is None else args.max_new
    todo = []  # per architecture (spread over the strata), its seeds without a result
    for i in spread_order(len(archs)):
        seeds = [s for s in range(args.seeds) if (archs[i].id, s) not in done][:budget]
        if seeds:
            todo.append((archs[i], seeds))
            budget -= len(seeds)
    n_new = sum(len(s) for _, s in todo)
    print(f"{len(done)} trainings in {path}; training {n_new} now ({args.workers} at a time)", flush=True)
    started = time.perf_counter()
    cache = Path(args.cache) / recipe_id
    for arch, seeds in todo:  # one architecture's seeds in parallel; the data file grows after each
        got = train_standalone_all(cfg, [arch], seeds, args.epochs, cache, workers=args.workers, say=print)
        raw["results"] += [{**got[(arch.id, s)], "arch_id": arch.id, "seed": s} for s in seeds]
        save_raw(path, raw)
    raw["last_call"] = {"command": provenance(NAME, {})["command"], "seconds": time.perf_counter() - started}
    save_raw(path, raw)
    return raw


def per_seed(raw: dict[str, Any]) -> tuple[list[dict[str, Any]], np.ndarray, list[int]]:
    """The architectures with a result on every seed any of them has, and their accuracies [archs, seeds]."""
    seeds = sorted({r["seed"] for r in raw["results"]})
    acc = {(r["arch_id"], r["seed"]): r["val_acc"] for r in raw["results"]}
    complete = [a for a in raw["archs"] if all((a["arch_id"], s) in acc for s in seeds)]
    return complete, np.array([[acc[(a["arch_id"], s)] for s in seeds] for a in complete]), seeds


def study_entry(raw: dict[str, Any], name: str = "nb201") -> dict[str, Any]:
    """This ground truth in the shape of a study's entry in ``ground_truth.json`` (architectures with their
    NATS string, MACs and parameters; results per architecture and seed), so the recipes benchmark and its
    report read both alike."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for r in raw["results"]:
        results.setdefault(r["arch_id"], {})[str(r["seed"])] = {
            "val_acc": r["val_acc"],
            "seconds": r["seconds"],
        }
    return {
        "recipe": raw["recipe"],
        "archs": [
            {"id": a["arch_id"], "arch": a["nats"], "macs": a["macs"], "params": a["params"]}
            for a in raw["archs"]
        ],
        "results": results,
    }


def reliability(table: np.ndarray) -> dict[str, Any]:
    from nas.ranking import ground_truth_reliability

    return ground_truth_reliability(table) if len(table) >= 3 and table.shape[1] >= 2 else {}


def render(raw: dict[str, Any], out_dir: Path, md_name: str = MARKDOWN, figures: bool = True) -> list[Path]:
    """nb201_ground_truth.md from the data alone."""
    from scipy import stats

    rec, sel = raw["recipe"], raw["selection"]
    archs, table, seeds = per_seed(raw)
    wanted = sel["archs"] * max(len(seeds), 1)
    seconds = np.array([r["seconds"] for r in raw["results"]]) if raw["results"] else np.zeros(0)
    rel = reliability(table)
    lines = [
        "# nb201 ranking ground truth on Fashion-MNIST",
        "",
        "Each architecture trained alone with the engine's trainer (`nas.ranking.train_standalone_all`, as"
        f" `nas rank`): `nb201` C={rec['C']}, N={rec['N']}, {rec['resolution']}x{rec['resolution']}"
        f" {rec['data']}, {rec['train_limit']} training images, {rec['epochs']} epochs, batch"
        f" {rec['batch_size']}, lr {rec['lr']} (the engine's default recipe otherwise: SGD, cosine, label"
        " smoothing 0.1); accuracy on the validation split"
        f" ({rec['val_limit'] or 'all 6,000'} held-out training images). The validation split and the"
        " training subset follow each training's seed, as in `nas rank`. Architectures: "
        + (
            f"{sel['archs']} equal-count strata of the 6,466 networks ranked by their NATS-Bench CIFAR-10"
            " accuracy, one drawn from each"
            if sel["stratify"] == "cifar10"
            else f"{sel['archs']} equal-width log-MACs strata (as `nas rank`)"
        )
        + f" (draw seed {sel['arch_seed']}). Reproduce and extend: `{raw['command']}` (resumable: trains only"
        " what the data file lacks).",
        "",
        machine_block(raw["machine"]),
    ]
    status = f"{len(raw['results'])} of {wanted} trainings done ({len(archs)} architectures on every seed)."
    if len(raw["results"]) < wanted:
        lines.append(f"**Incomplete: {status}** The figures below are those of what is done so far.")
    else:
        lines.append(status)
    lines.append("")
    if len(seconds):
        lines.append(
            f"Seconds per training (wall clock): median {np.median(seconds):.0f}, min {seconds.min():.0f},"
            f" max {seconds.max():.0f} (trainings in parallel on a shared 2-core machine; the wall clock of"
            " one paused while a timing benchmark had the machine includes the pause, hence the median)."
        )
    if len(archs) >= 2 and len(seeds) >= 2:
        spread = (table * 100).std(axis=1, ddof=1)
        lines.append(
            f"Seed spread: std over seeds of one architecture's accuracy, mean {spread.mean():.2f} points"
            f" (max {spread.max():.2f}); the architectures' means span {100 * table.mean(axis=1).min():.2f}-"
            f"{100 * table.mean(axis=1).max():.2f}%."
        )
    if rel:
        split = rel.get("split_half_kendall_tau")
        value = rel["ground_truth_reliability"]
        lines += [
            "",
            f"- Seed-to-seed Kendall tau (mean over seed pairs): **{rel['seed_to_seed_kendall_tau']:.3f}**",
            *(
                [
                    "- Split-half Kendall tau of seed means (mean over random balanced splits):"
                    f" **{split:.3f}**"
                ]
                if split is not None
                else []
            ),
            *(
                [
                    "- Reliability against the number of seeds (split half, min-max over the splits): "
                    + ", ".join(
                        f"{c['seeds']} seeds {c['tau']:.3f} ({c['lo']:.2f}-{c['hi']:.2f})"
                        for c in split_half_curve(table)
                    )
                ]
                if len(seeds) >= 4
                else []
            ),
            f"- Reliability {value:.3f}: "
            + (
                f"reaches {RELIABILITY_TARGET}."
                if value >= RELIABILITY_TARGET
                else f"below the {RELIABILITY_TARGET} a ranking benchmark needs."
            )
            + (" (Few architectures: not yet meaningful.)" if len(archs) < 10 else ""),
        ]
        if value < RELIABILITY_TARGET:
            from nas.ranking import seeds_for_reliability

            per_half = max(1, len(seeds) // 2) if split is not None else 1
            need = seeds_for_reliability(value, per_half, RELIABILITY_TARGET)
            missing = max(0, (need or 0) * sel["archs"] - len(raw["results"]))  # trainings still to run
            hours = missing * (np.median(seconds) if len(seconds) else 0) / 7200
            lines.append(
                f"- Seeds per architecture for {RELIABILITY_TARGET} (Spearman-Brown on the measured tau,"
                " Kendall tau to correlation by r = sin(pi tau / 2)): "
                + (f"**{need}** with this recipe" if need is not None else "none: no signal to extrapolate")
                + (
                    f" ({sel['archs']} architectures: about {hours:.1f} h more on 2 cores at the"
                    " measured seconds per training, two at a time)"
                    if need is not None and len(seconds)
                    else ""
                )
                + "."
            )
    if len(archs) >= 3:
        tau = stats.kendalltau(table.mean(axis=1), [a["nats_cifar10"] for a in archs]).statistic
        lines.append(f"- Kendall tau of the seed means vs. NATS-Bench CIFAR-10 test accuracy: {tau:.3f}")
        for metric, label in (("macs", "MACs"), ("params", "parameter count")):
            zc = stats.kendalltau(table.mean(axis=1), [a[metric] for a in archs]).statistic
            lines.append(f"- Kendall tau of the seed means vs. {label} (a zero-cost baseline): {zc:.3f}")
    lines += [
        "",
        "| NATS index | cell | NATS CIFAR-10 | MMACs | params | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | mean |",
        "| ---: | --- | ---: | ---: | ---: |" + " ---: |" * (len(seeds) + 1),
    ]
    acc = {(r["arch_id"], r["seed"]): r["val_acc"] for r in raw["results"]}
    for a in sorted(raw["archs"], key=lambda a: a["nats_cifar10"]):
        vals = [acc.get((a["arch_id"], s)) for s in seeds]
        if all(v is None for v in vals):
            continue
        got = [v for v in vals if v is not None]
        cell = a["nats"].replace("|", "\\|")  # a pipe inside a table cell, even in code, ends the cell
        lines.append(
            f"| {a['nats_index']} | `{cell}` | {a['nats_cifar10']:.2f} | {a['macs'] / 1e6:.2f} |"
            f" {a['params']:,.0f} | "
            + " | ".join("-" if v is None else f"{100 * v:.2f}" for v in vals)
            + f" | {100 * np.mean(got):.2f} |"
        )
    lines.append("")
    return [write_markdown(out_dir / md_name, lines)]


if __name__ == "__main__":
    main()
