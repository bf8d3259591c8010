"""Ranking report: does the supernet rank architectures the way training them alone does?

``nas rank`` picks K architectures spread across the space by size, trains each
alone with the run's recipe (one result file per architecture and seed, so the
report resumes), evaluates each with inherited supernet weights, and writes
``ranking.json`` (Kendall tau, Spearman, top-k overlap, regret, per-architecture
rows) and a scatter plot. With two or more seeds it also reports the ground
truth's own reliability: the Kendall tau between seeds (mean over pairs). With
four or more, also the split-half tau: the agreement of the mean of one half of
the seeds with the mean of the other half, i.e. the reliability of a ground
truth that averages seeds. A supernet tau is only meaningful when these are high.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from nas.evaluation import evaluate_arch
from nas.report.figures import ranking_figure
from nas.run.config import SUPERNET, NASConfig, build_config, keys_with
from nas.run.context import RunContext, build_space, load_config_data, resolve_device
from nas.run.files import atomic_write_bytes, atomic_write_json
from nas.run.tracking import Trackers
from nas.training.checkpoint import load_supernet
from nas.training.plans import FixedPlan
from nas.training.trainer import Trainer
from search_spaces import Arch, SearchSpace

if TYPE_CHECKING:
    from torch import nn

STANDALONE_OVERRIDES = {"checkpoint_every_steps": 0, "ema_decay": None}
"""``train.*`` settings a standalone training sets itself (besides ``epochs``, given per report): no mid-epoch
checkpoints (none are kept), no weight averaging (the ground truth is the network as trained)."""


def arch_macs(space: SearchSpace, archs: list[Arch]) -> np.ndarray:
    """Multiply-accumulates per architecture from the cost table (vectorised)."""
    table = space.cost_table()
    cols = [table.feature_names.index("dense_macs"), table.feature_names.index("depthwise_macs")]
    macs = table.features[:, :, cols].sum(axis=2)  # [S, O]
    ops = space.lower(space.encode_batch(archs))  # [B, S]
    return macs[np.arange(macs.shape[0]), ops].sum(axis=1)


def size_biased_pool(space: SearchSpace, n: int, rng: np.random.Generator) -> list[Arch]:
    """``n`` architectures whose sizes cover the space from its smallest to its largest network.

    Uniform sampling concentrates on mid-sized networks (by the central limit
    theorem over many independent choices), yet a search front runs from the
    smallest network to the largest. Each candidate draws a bias ``p`` in [0, 1]
    and picks every choice's option index from Binomial(n_options - 1, p), so
    small and large networks are as likely as medium ones. The space's smallest
    and largest networks are always included.
    """
    keys = list(space.keys)
    sizes = np.array([len(space.choices[k]) for k in keys])
    bias = rng.random(n)
    idx = rng.binomial(sizes[None, :] - 1, bias[:, None])  # [n, choices]
    pool = [space.smallest(), space.largest()]
    pool += [space.arch({k: space.choices[k][int(i)] for k, i in zip(keys, row)}) for row in idx]
    return pool


def stratified_archs(
    space: SearchSpace, k: int, seed: int, pool: int = 5000, span: str = "full"
) -> list[Arch]:
    """K distinct architectures spread over the space's size range, in size order.

    ``span="full"`` (the ranking report): K strata of equal width in log-MACs
    between the smallest and the largest network, one random member of each
    (the nearest unused network when a stratum is empty), so the report covers
    the range a search front covers. ``span="pool"``: K equal-count strata of a
    uniform random pool, i.e. typical networks (used for "the median network").
    """
    if span not in ("full", "pool"):
        raise ValueError(f"span must be 'full' or 'pool', got {span!r}")
    rng = np.random.default_rng(seed)
    drawn = size_biased_pool(space, pool, rng) if span == "full" else [space.sample(rng) for _ in range(pool)]
    candidates = sorted({a.id: a for a in drawn}.values(), key=lambda a: a.id)
    if k > len(candidates):
        raise ValueError(
            f"asked for {k} architectures but the space yielded only {len(candidates)} distinct ones"
        )
    macs = arch_macs(space, candidates)
    order = np.argsort(macs, kind="stable")
    if span == "pool":
        return [candidates[int(rng.choice(stratum))] for stratum in np.array_split(order, k)]
    log_macs = np.log(macs)
    edges = np.linspace(log_macs.min(), log_macs.max(), k + 1)
    used: set[int] = set()
    picked = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        members = [int(i) for i in order if lo <= log_macs[i] <= hi and int(i) not in used]
        if members:
            choice = int(rng.choice(members))
        else:  # empty stratum: the unused network closest to its centre
            free = np.array([int(i) for i in order if int(i) not in used])
            choice = int(free[np.argmin(np.abs(log_macs[free] - (lo + hi) / 2))])
        used.add(choice)
        picked.append(candidates[choice])
    return sorted(picked, key=lambda a: float(arch_macs(space, [a])[0]))


def train_alone(
    cfg_dict: dict[str, Any], arch_json: str, seed: int, epochs: int, desc: str = "standalone"
) -> tuple[RunContext, nn.Module, dict[str, Any], float]:
    """Train one architecture alone with the standalone recipe: its context, trained network, the trainer's
    result and the seconds it took (shared by ``nas rank`` and the benchmarks that train networks alone)."""
    cfg = build_config(cfg_dict)
    cfg.train = replace(cfg.train, epochs=epochs, **STANDALONE_OVERRIDES)
    cfg.seed = seed
    data = load_config_data(cfg)
    space = build_space(cfg, data)
    ctx = RunContext(
        cfg, Path("."), resolve_device(cfg.device), data, space, Trackers([]), progress=False, quiet=True
    )
    arch = space.arch(json.loads(arch_json))
    t0 = time.perf_counter()
    model = space.build_standalone(arch, seed=seed)
    result = Trainer(ctx, model, FixedPlan(), ckpt=None, seed=seed, desc=desc, evaluate_last_only=True).fit()
    return ctx, model, result, time.perf_counter() - t0


def _standalone_worker(
    cfg_dict: dict[str, Any], arch_json: str, seed: int, epochs: int, threads: int
) -> dict[str, Any]:
    """Train one architecture alone (in its own process) and return its accuracies."""
    import torch

    torch.set_num_threads(threads)
    ctx, _, result, seconds = train_alone(cfg_dict, arch_json, seed, epochs)
    return {
        "arch_id": ctx.space.arch(json.loads(arch_json)).id,
        "seed": seed,
        "epochs": epochs,
        "val_acc": result["val_acc"],
        "seconds": seconds,
    }


def standalone_recipe_id(cfg: NASConfig) -> str:
    """Short hash of everything that shapes a standalone training (data, space, recipe).

    Part of each result file's name, so a shared ``--standalone-dir`` never
    hands a result trained with a different recipe to another report.
    """
    d = cfg.to_dict()
    ignored = set(keys_with(SUPERNET)) | {
        f"train.{k}" for k in ("epochs", *STANDALONE_OVERRIDES)
    }  # epochs: in the file name
    space = {
        k: v for k, v in d["space"].items() if f"space.{k}" not in ignored
    }  # a standalone network has no supernet kind
    recipe = {
        "data": d["data"],
        "space": space,
        "train": {k: v for k, v in d["train"].items() if f"train.{k}" not in ignored},
    }
    return hashlib.sha1(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:8]


def train_standalone_all(
    cfg: NASConfig,
    archs: list[Arch],
    seeds: list[int],
    epochs: int,
    out_dir: Path,
    workers: int,
    say: Any = print,
) -> dict[tuple[str, int], dict[str, Any]]:
    """Standalone results for every (arch, seed), training only those without a result file yet."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    recipe = standalone_recipe_id(cfg)
    todo = []
    for arch in archs:
        for seed in seeds:
            f = out_dir / f"{arch.id}-seed{seed}-e{epochs}-{recipe}.json"
            if f.exists():
                results[(arch.id, seed)] = json.loads(f.read_text())
            else:
                todo.append((arch, seed, f))
    if not todo:
        return results
    cores = os.cpu_count() or 1
    workers = max(1, min(workers, len(todo)))
    threads = max(1, cores // workers)
    say(
        f"training {len(todo)} standalone networks ({workers} in parallel, {threads} thread(s) each);"
        f" {len(results)} already done"
    )
    cfg_dict = cfg.to_dict()
    if workers == 1:
        for arch, seed, f in todo:
            res = _standalone_worker(cfg_dict, arch.to_json(), seed, epochs, threads)
            atomic_write_json(f, res)
            results[(arch.id, seed)] = res
        return results
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {
            pool.submit(_standalone_worker, cfg_dict, arch.to_json(), seed, epochs, threads): (arch, seed, f)
            for arch, seed, f in todo
        }
        for n, fut in enumerate(futures, 1):
            arch, seed, f = futures[fut]
            res = fut.result()
            atomic_write_json(
                f, res
            )  # written as each finishes: a killed report loses at most the running ones
            results[(arch.id, seed)] = res
            say(
                f"  standalone {n}/{len(todo)}: {arch.id} seed {seed}: val acc {res['val_acc']:.4f}"
                f" ({res['seconds']:.0f}s)"
            )
    return results


def ranking_metrics(supernet_acc: np.ndarray, standalone_acc: np.ndarray, top_k: int) -> dict[str, float]:
    tau = stats.kendalltau(supernet_acc, standalone_acc).statistic
    rho = stats.spearmanr(supernet_acc, standalone_acc).statistic
    k = min(top_k, len(supernet_acc))
    top_super = set(np.argsort(-supernet_acc, kind="stable")[:k])
    top_true = set(np.argsort(-standalone_acc, kind="stable")[:k])
    pick = int(np.argmax(supernet_acc))
    return {
        "kendall_tau": float(tau),
        "spearman": float(rho),
        f"top{k}_overlap": len(top_super & top_true) / k,
        "regret": float(
            standalone_acc.max() - standalone_acc[pick]
        ),  # standalone accuracy lost by trusting the supernet's best
    }


RELIABILITY_NEEDED = 0.7  # below this a supernet's Kendall tau measures training noise as much as ranking


def seeds_for_reliability(tau: float, seeds_per_half: int, target: float = RELIABILITY_NEEDED) -> int | None:
    """Seeds per architecture for a split-half Kendall tau of ``target``, from one measured at
    ``seeds_per_half`` seeds a side.

    Kendall tau maps to a correlation by r = sin(pi/2 tau) (Greiner's relation); Spearman-Brown then
    says how the correlation of two k-seed means grows with k. Returns the total (both halves), or
    None when the measured tau carries no signal to extrapolate from.
    """
    r_m = float(np.sin(np.pi / 2 * tau))
    if not r_m > 0:
        return None
    r_one = r_m / (seeds_per_half - (seeds_per_half - 1) * r_m)  # one seed against one seed
    r_target = float(np.sin(np.pi / 2 * target))
    if r_one >= r_target:
        return 2
    per_half = r_target * (1 - r_one) / (r_one * (1 - r_target))
    return 2 * int(np.ceil(per_half - 1e-9))


SPLIT_HALVES = 50  # random balanced splits a split-half tau averages


def split_half_taus(per_seed: np.ndarray, splits: int = SPLIT_HALVES, seed: int = 0) -> np.ndarray:
    """Kendall tau between the seed means of two disjoint halves of the seeds, one value per random
    balanced split (a single split with two or three seeds).

    One fixed split (first half against second) swings by several hundredths with which seeds land
    where: on the nb201 ground truth at 6 seeds it read 0.698 where the mean over splits is 0.620.
    """
    n = per_seed.shape[1] // 2 * 2
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(splits if n > 2 else 1):
        perm = rng.permutation(per_seed.shape[1])[:n]
        a, b = per_seed[:, perm[: n // 2]].mean(axis=1), per_seed[:, perm[n // 2 :]].mean(axis=1)
        taus.append(float(stats.kendalltau(a, b).statistic))
    return np.asarray(taus)


def ground_truth_reliability(per_seed: np.ndarray) -> dict[str, Any]:
    """How far a ground truth of ``per_seed`` accuracies ([architectures, seeds]) can be trusted.

    Reliability is the split-half Kendall tau: the mean of half the seeds against the mean of the
    other half, averaged over random balanced splits (with two or three seeds, one seed against
    another, averaged over pairs). Below 0.7
    the report says so and how many seeds would reach it, because a supernet cannot be shown to rank
    better than its yardstick agrees with itself.
    """
    seeds = per_seed.shape[1]
    out: dict[str, Any] = {}
    if seeds < 2:
        out["ground_truth_warning"] = (
            "ground truth reliability unknown: one standalone seed per architecture; use --seeds 4 or more"
        )
        return out
    taus = [
        stats.kendalltau(per_seed[:, i], per_seed[:, j]).statistic
        for i in range(seeds)
        for j in range(i + 1, seeds)
    ]
    out["seed_to_seed_kendall_tau"] = float(np.mean(taus))
    reliability, per_half = out["seed_to_seed_kendall_tau"], 1
    if seeds >= 4:  # averaging seeds: how well does one half's mean agree with the other half's?
        per_half = seeds // 2
        reliability = out["split_half_kendall_tau"] = float(split_half_taus(per_seed).mean())
    out["ground_truth_reliability"] = float(reliability)
    if not reliability >= RELIABILITY_NEEDED:
        needed = seeds_for_reliability(reliability, per_half)
        out[f"seeds_for_reliability_{RELIABILITY_NEEDED}"] = needed
        out["ground_truth_warning"] = (
            f"ground truth reliability {reliability:.3f} < {RELIABILITY_NEEDED}: the supernet's tau measures"
            " standalone training noise as much as ranking; "
            + (
                f"about {needed} standalone seeds per architecture would reach {RELIABILITY_NEEDED}"
                f" (rerun nas rank with --seeds {needed}: the seeds already trained are kept)"
                if needed is not None
                else "the seeds disagree completely; train the architectures longer (--epochs) first"
            )
        )
    return out


def run_ranking(
    ctx: RunContext,
    k: int,
    epochs: int,
    seeds: int = 1,
    workers: int | None = None,
    standalone_dir: Path | None = None,
    arch_seed: int = 0,
) -> dict[str, Any]:
    """The whole report for a run directory with a trained supernet; writes ranking.json and ranking.png."""
    archs = stratified_archs(ctx.space, k, seed=arch_seed)
    seed_list = [ctx.cfg.seed + i for i in range(seeds)]
    out_dir = standalone_dir or ctx.run_dir / "ranking" / "standalone"
    standalone = train_standalone_all(
        ctx.cfg, archs, seed_list, epochs, out_dir, workers or (os.cpu_count() or 1), say=ctx.say
    )
    net = load_supernet(ctx)
    inherited = np.array([evaluate_arch(ctx, net, a) for a in archs])
    per_seed = np.array([[standalone[(a.id, s)]["val_acc"] for s in seed_list] for a in archs])  # [K, seeds]
    truth = per_seed.mean(axis=1)
    macs = arch_macs(ctx.space, archs)
    report: dict[str, Any] = {
        "k": k,
        "standalone_epochs": epochs,
        "seeds": seed_list,
        "sampler": ctx.cfg.train.sampler,
        "distill": ctx.cfg.train.distill,
        "supernet_epochs": ctx.cfg.train.epochs,
        **ranking_metrics(inherited, truth, top_k=max(1, k // 4)),
        "macs_kendall_tau": float(
            stats.kendalltau(macs, truth).statistic
        ),  # a zero-cost baseline: bigger is better
    }
    report.update(ground_truth_reliability(per_seed))
    report["rows"] = [
        {
            "arch_id": a.id,
            "arch": a.to_dict(),
            "macs": int(m),
            "supernet_val_acc": float(s),
            "standalone_val_acc": [float(v) for v in row],
            "standalone_mean": float(t),
        }
        for a, m, s, row, t in zip(archs, macs, inherited, per_seed, truth)
    ]
    atomic_write_json(ctx.run_dir / "ranking.json", report)
    plot_ranking(report, ctx.run_dir / "ranking.png")
    ctx.trackers.summary({k_: v for k_, v in report.items() if isinstance(v, float)})
    return report


def plot_ranking(report: dict[str, Any], path: Path) -> None:
    """Write ``nas rank``'s scatter plot (the same figure ``nas report`` shows) atomically."""
    import io

    buf = io.BytesIO()
    ranking_figure(report).savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
