"""Search loop: controller.ask -> predicted latency -> inherited-weight accuracy -> controller.tell.

Evaluations are cached by architecture id (within and across resumed runs, and
across the workers sharing one study), so a controller that proposes the same
network twice costs one evaluation.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from nas.controllers import Controller, Objectives, create_controller
from nas.controllers.optuna_controller import describe_storage, open_storage
from nas.cost import CostModel, predict_many
from nas.evaluation import evaluate_arch
from nas.pareto import pareto_front
from nas.run.context import RunContext
from nas.run.files import atomic_write_json, atomic_write_text
from nas.trials import TrialRow
from supernets.base import Supernet


def run_search(ctx: RunContext, supernet: Supernet, costs: list[CostModel]) -> dict[str, Any]:
    """``costs[0]`` is the device the budget applies to; further models add latency objectives."""
    scfg = ctx.cfg.search
    budget = scfg.latency_budget_ms
    cost = costs[0]
    if budget is not None:
        floor = float(cost.predict([ctx.space.smallest()])[0])
        if budget < floor:
            raise ValueError(
                f"latency budget {budget} ms is below the smallest architecture's predicted latency"
                f" ({floor:.3f} ms) on this device profile: no architecture can meet it"
            )
    controller = create_controller(
        scfg.controller,
        options=scfg.controller_options,
        space=ctx.space,
        seed=ctx.cfg.seed,
        latency_budget_ms=budget,
        run_dir=ctx.run_dir,
        population=scfg.population,
        n_devices=len(costs),
        storage=open_storage(scfg.storage, heartbeat_s=scfg.heartbeat_s) if scfg.storage else None,
        study_name=scfg.study,
    )
    learn_s = 0.0
    if controller.needs_supernet:  # gradient controllers (darts, gdas) learn on the supernet first
        t_learn = time.perf_counter()
        state = controller.prepare(
            supernet,
            lambda epoch: ctx.loader("train", shuffle=True, epoch=10_000 + epoch),
            lambda rnd: ctx.loader("val", shuffle=True, epoch=20_000 + rnd),
            cost,
            ctx.device,
            channels_last=ctx.cfg.train.channels_last,
            progress=ctx.progress,
        )
        learn_s = time.perf_counter() - t_learn
        ctx.say(
            f"{scfg.controller}: argmax architecture {ctx.space.arch(state['argmax_arch']).id}, predicted"
            f" {state['argmax_latency_ms']:.3f} ms; evaluated first"
        )
    try:
        result = _search_loop(ctx, supernet, costs, controller)
        result["search_seconds"] += learn_s  # a gradient controller's learning phase is part of its search
        return result
    finally:
        controller.close()  # stops a shared storage's heartbeat thread


def _search_loop(
    ctx: RunContext, supernet: Supernet, costs: list[CostModel], controller: Controller
) -> dict[str, Any]:
    scfg = ctx.cfg.search
    budget = scfg.latency_budget_ms
    shared = controller.shared  # other workers add trials to the same study
    cache = {r["arch_id"]: r["accuracy"] for r in controller.history()}
    done = controller.n_finished()
    chosen_spec = supernet.read_spec()
    if done == 0 and chosen_spec is not None:  # single-path: the thresholds' choice is evaluated first
        chosen = ctx.space.arch_from_spec(chosen_spec)
        controller.enqueue(chosen)
        ctx.say(f"single-path thresholds chose {chosen.id}; it is the search's first trial")
    if shared:
        ctx.say(
            f"search worker on study {scfg.study or 'search'!r} in {describe_storage(scfg.storage)}:"
            f" {done}/{scfg.trials} trials finished by all workers"
        )
    elif done:
        ctx.say(f"resuming search: {done}/{scfg.trials} trials already finished")
    t0 = time.perf_counter()
    bar = tqdm(
        total=scfg.trials, initial=done, desc="search", leave=False, disable=None if ctx.progress else True
    )
    while (arch := controller.ask_within(scfg.trials)) is not None:
        latency, *extra = (float(v) for v in predict_many(costs, [arch])[0])  # one encoding for every device
        if arch.id not in cache and shared:  # another worker may have evaluated it meanwhile
            cache.update((r["arch_id"], r["accuracy"]) for r in controller.history())
        if arch.id not in cache:
            cache[arch.id] = evaluate_arch(ctx, supernet, arch)
        acc = cache[arch.id]
        controller.tell([arch], [Objectives(acc, latency, tuple(extra))])
        n = controller.n_finished()
        ctx.trackers.log(
            "search_trial", n, {"val_accuracy": acc, "latency_pred_ms": latency, "arch_id": arch.id}
        )
        bar.update(min(n, scfg.trials) - bar.n)
        bar.set_postfix(acc=f"{acc:.3f}", lat=f"{latency:.2f}ms")
    bar.close()
    rows = controller.history()
    front = pareto_front(rows)
    _write_outputs(ctx.run_dir, rows, front, budget, scfg.devices)
    ctx.trackers.log_table(
        "pareto_front",
        ["trial", "arch_id", "val_accuracy", "latency_pred_ms"],
        [[r["trial"], r["arch_id"], r["accuracy"], r["latency_ms"]] for r in front],
    )
    return {
        "trials": len(rows),
        "pareto": front,
        "search_seconds": time.perf_counter() - t0,
        "latency_budget_ms": budget,
        "devices": list(scfg.devices),
    }


def _write_outputs(
    run_dir: Path, rows: list[TrialRow], front: list[TrialRow], budget: float | None, devices: list[str]
) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", "arch_id", "val_accuracy", *(f"latency_pred_ms_{d}" for d in devices), "feasible"])
    for r in rows:
        lats = [r["latency_ms"], *r.get("extra_latencies_ms", ())]
        w.writerow(
            [
                r["trial"],
                r["arch_id"],
                f"{r['accuracy']:.6f}",
                *(f"{v:.6f}" for v in lats),
                int(r["feasible"]),
            ]
        )
    atomic_write_text(run_dir / "search" / "history.csv", buf.getvalue())
    atomic_write_json(
        run_dir / "search" / "pareto.json", {"latency_budget_ms": budget, "devices": devices, "front": front}
    )


def format_front(front: list[dict[str, Any]], budget: float | None, devices: list[str] | None = None) -> str:
    """The Pareto front as a fixed-width text table (what the CLI prints)."""
    devices = devices or ["cpu"]
    lines = [
        f"Pareto front ({len(front)} architectures"
        + (f", budget {budget:g} ms on {devices[0]}" if budget is not None else "")
        + ")"
    ]
    lines.append(
        f"{'trial':>5}  {'arch id':<12}  {'val acc':>7}"
        + "".join(f"  {('ms ' + d)[:16]:>16}" for d in devices)
    )
    for r in front:
        lats = [r["latency_ms"], *r.get("extra_latencies_ms", ())]
        lines.append(
            f"{r['trial']:>5}  {r['arch_id']:<12}  {r['accuracy']:>7.4f}"
            + "".join(f"  {v:>16.3f}" for v in lats)
        )
    return "\n".join(lines)
