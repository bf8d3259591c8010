"""End to end on Fashion-MNIST: is the network the search exports better than a random one of the same budget?

    python scripts/bench_end_to_end.py [--space mbv3] [--recipe uniform] [--trials 100] [--random 10]
        [--seeds 2] [--epochs 5]

1. ``nas run`` (supernet training, search under a MACs budget, export) with the
   study's data and the given supernet recipe (scripts/_studies.py); the budget
   is the median MACs of 1,000 uniformly sampled architectures.
2. ``--random`` distinct architectures drawn uniformly among those that meet the
   same budget.
3. All of them trained alone with the same recipe on the full training set
   (54,000 images; 6,000 held out for validation), ``--seeds`` seeds each, and
   measured on the 10,000 test images.

Each training lands in ``results/data/end_to_end.json`` as it finishes (the
search run lives under ``--root``). The report gives the percentile of the
search's pick among the random networks and its test accuracy beside published
Fashion-MNIST results of networks of similar size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from _nas import nas
from _results import data_path, load_raw, machine_block, machine_info, provenance, save_raw, write_markdown
from _studies import study

NAME = "end_to_end"
MARKDOWN = "end_to_end.md"
SOURCE = "https://github.com/zalandoresearch/fashion-mnist#benchmark"
PUBLISHED = [  # submitted to the data set's benchmark table (not validated by its authors), with sizes
    {"network": "2 conv layers, < 100K parameters, no augmentation", "params": 1e5, "test_acc": 0.925},
    {"network": "2 conv layers, 113K parameters, normalisation", "params": 1.13e5, "test_acc": 0.922},
    {"network": "DenseNet-BC, 768K parameters, crops + flips", "params": 7.68e5, "test_acc": 0.954},
    {"network": "MobileNet, horizontal flips", "params": None, "test_acc": 0.950},
    {"network": "ResNet18, flips, translation, rotation", "params": None, "test_acc": 0.949},
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mbv3", help="a study name (scripts/_studies.py)")
    ap.add_argument("--recipe", default="uniform", help="the study's supernet recipe to search with")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--random", type=int, default=10, help="random architectures under the same budget")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5, help="epochs of each final training")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--root", default="runs/end_to_end")
    ap.add_argument("--out", default=f"results/{MARKDOWN}")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    path = data_path(args.out, NAME)
    if not args.report_only:
        measure(args, path)
    out = Path(args.out)
    render(load_raw(path), out.parent, md_name=out.name)
    print(out.read_text())


def median_macs(space: Any, n: int = 1000) -> int:
    from nas.cost.metrics import network_metrics

    rng = np.random.default_rng(0)
    return int(np.median(network_metrics(space, [space.sample(rng).to_dict() for _ in range(n)])["macs"]))


def random_under_budget(space: Any, budget: int, k: int, exclude: set[str]) -> list[Any]:
    """``k`` distinct uniformly drawn architectures with at most ``budget`` MACs (seeded: the same every
    session)."""
    from nas.cost.metrics import network_metrics

    rng = np.random.default_rng(1)
    picked: dict[str, Any] = {}
    for _ in range(100_000):
        if len(picked) == k:
            break
        a = space.sample(rng)
        if a.id not in exclude and a.id not in picked:
            if network_metrics(space, [a.to_dict()])["macs"][0] <= budget:
                picked[a.id] = a
    else:
        raise SystemExit(f"only {len(picked)} distinct architectures meet {budget:,} MACs; asked for {k}")
    return list(picked.values())


def final_worker(cfg_dict: dict[str, Any], arch_json: str, seed: int, epochs: int) -> dict[str, Any]:
    """Train one architecture alone on the full training set (own process, one thread): val and test
    accuracy."""
    import torch

    torch.set_num_threads(1)
    from nas.evaluation import accuracy
    from nas.ranking import train_alone

    ctx, model, result, seconds = train_alone(cfg_dict, arch_json, seed, epochs, desc="final")
    return {
        "val_acc": result["val_acc"],
        "test_acc": accuracy(model, ctx.loader("test"), ctx.device),
        "seconds": seconds,
    }


def measure(args: argparse.Namespace, path: Path) -> None:
    from nas.cost.metrics import network_metrics
    from nas.run.config import build_config
    from nas.run.context import build_space, load_config_data

    s = study(args.space)
    if args.recipe not in s.recipes:
        raise SystemExit(
            f"--recipe={args.recipe!r} is not a recipe of {args.space}: use {', '.join(s.recipes)}"
        )
    cfg = build_config(None, list(s.common))
    space = build_space(cfg, load_config_data(cfg))
    budget = median_macs(space)
    run_dir = Path(args.root) / f"{args.space}_{args.recipe.replace(' ', '_')}"
    settings = {k: getattr(args, k) for k in ("space", "recipe", "trials", "random", "seeds", "epochs")}
    raw = (
        load_raw(path)
        if path.exists()
        else {
            **provenance(NAME, settings),
            "budget_macs": budget,
            "published": PUBLISHED,
            "published_source": SOURCE,
            "results": {},
            "sessions": [],
        }
    )
    if raw["settings"] != settings or raw["budget_macs"] != budget:
        raise SystemExit(f"{path} holds another end-to-end setting ({raw['settings']}); move it away first")
    if "pick" not in raw:
        nas(
            "run",
            "--run-dir",
            str(run_dir),
            *s.common,
            f"--epochs={s.supernet_epochs}",
            *s.recipes[args.recipe],
            f"--max-macs={budget}",
            f"--trials={args.trials}",
            "--seed=0",
            "--quiet",
        )
        pick = space.arch(json.loads((run_dir / "export" / "arch.json").read_text()))
        raw["pick"] = {"id": pick.id, "arch": pick.to_dict()}
        raw["search_run"] = str(run_dir)
        save_raw(path, raw)
    pick = space.arch(raw["pick"]["arch"])
    if "random" not in raw:
        raw["random"] = [
            {"id": a.id, "arch": a.to_dict()}
            for a in random_under_budget(space, budget, args.random, {pick.id})
        ]
        save_raw(path, raw)
    archs = [pick, *(space.arch(r["arch"]) for r in raw["random"])]
    metrics = network_metrics(space, [a.to_dict() for a in archs])
    raw["sizes"] = {
        a.id: {"macs": int(m), "params": int(p)} for a, m, p in zip(archs, metrics["macs"], metrics["params"])
    }
    full = build_config(None, [*s.common, "--data.train_limit=null", "--data.val_limit=null"]).to_dict()
    todo = [
        (a, seed)
        for seed in range(args.seeds)
        for a in archs
        if str(seed) not in raw["results"].get(a.id, {})
    ]
    print(f"end to end: {len(todo)} final trainings to do", flush=True)
    if not todo:
        save_raw(path, raw)
        return
    raw["sessions"].append({**machine_info(), "command": provenance(NAME, settings)["command"], "trained": 0})
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {
            pool.submit(final_worker, full, a.to_json(), seed, args.epochs): (a, seed) for a, seed in todo
        }
        for n, fut in enumerate(as_completed(futures), 1):
            a, seed = futures[fut]
            raw["results"].setdefault(a.id, {})[str(seed)] = fut.result()
            raw["sessions"][-1]["trained"] += 1
            raw["sessions"][-1]["wall_seconds"] = time.perf_counter() - started
            save_raw(path, raw)
            print(
                f"  {n}/{len(todo)}: {a.id} seed {seed}: test"
                f" {raw['results'][a.id][str(seed)]['test_acc']:.4f}",
                flush=True,
            )


def render(raw: dict[str, Any], out_dir: Path, md_name: str = MARKDOWN, figures: bool = True) -> list[Path]:
    """end_to_end.md from the data alone."""
    st = raw["settings"]
    res = raw["results"]
    pick_id = raw.get("pick", {}).get("id")
    rows = []
    for aid in [pick_id, *(r["id"] for r in raw.get("random", []))]:
        if aid is None or not res.get(aid):
            continue
        tests = [v["test_acc"] for v in res[aid].values()]
        rows.append((aid, np.mean(tests), np.std(tests), len(tests), raw["sizes"][aid]))
    lines = [
        "# End to end: the search's pick against random networks of the same budget (Fashion-MNIST)",
        "",
        (
            f"`nas run` on the {st['space']} study's data (`results/ground_truth.md`) with the"
            f" `{st['recipe']}` supernet recipe, {st['trials']} trials, budget: at most"
            f" {raw['budget_macs']:,} MACs (the median of 1,000 uniformly sampled architectures). Then the"
            f" exported architecture and {st['random']} random architectures under the same budget, each"
            f" trained alone from scratch with the same recipe for {st['epochs']} epochs on the full training"
            f" set (54,000 images), {st['seeds']} seeds; accuracy on the 10,000 test images. Reproduce:"
            f" `python scripts/bench_end_to_end.py --space {st['space']} --recipe '{st['recipe']}' --trials"
            f" {st['trials']} --random {st['random']} --seeds {st['seeds']} --epochs {st['epochs']}`."
        ),
        "",
    ]
    pick = next((r for r in rows if r[0] == pick_id), None)
    others = [r for r in rows if r[0] != pick_id]
    if pick is not None and others:
        below = sum(o[1] < pick[1] for o in others) + 0.5 * sum(o[1] == pick[1] for o in others)
        pct = 100 * below / len(others)
        best = max(o[1] for o in others)
        lines += [
            (
                f"**The search's pick beats {below:g} of {len(others)} random networks under the budget"
                f" (percentile {pct:.0f})**: test accuracy {100 * pick[1]:.2f}% ± {100 * pick[2]:.2f} against"
                f" a random median of {100 * np.median([o[1] for o in others]):.2f}% (best random"
                f" {100 * best:.2f}%)."
            ),
            "",
        ]
    lines += [
        "| network | MACs | parameters | seeds | test accuracy (%) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for aid, m, sd, n, size in sorted(rows, key=lambda r: -r[1]):
        label = f"**search's pick** `{aid}`" if aid == pick_id else f"random `{aid}`"
        lines.append(
            f"| {label} | {size['macs']:,} | {size['params']:,} | {n} | {100 * m:.2f} ± {100 * sd:.2f} |"
        )
    lines += [
        "",
        (
            f"Published Fashion-MNIST test accuracies for comparison ({SOURCE}; submitted results, not"
            " validated by the data set's authors, most with longer training and augmentation):"
        ),
        "",
    ]
    for p in raw.get("published", PUBLISHED):
        size = f", {p['params'] / 1e3:.0f}K parameters" if p.get("params") else ""
        lines.append(f"- {p['network']}{size}: {100 * p['test_acc']:.1f}%")
    lines += ["", "## Sessions", ""]
    for x in raw.get("sessions", []):
        lines.append(
            f"- {x['date']}: `{x['command']}`: {x['trained']} trainings in"
            f" {x.get('wall_seconds', 0) / 60:.0f} min"
        )
    if raw.get("sessions"):
        lines += ["", "Latest session's machine:", "", machine_block(raw["sessions"][-1])]
    return [write_markdown(out_dir / md_name, lines)]


if __name__ == "__main__":
    main()
