"""Search loop: controller.ask -> predicted latency -> accuracy (supernet or table) -> controller.tell.

Evaluations are cached by architecture id (within and across resumed runs, and
across the workers sharing one study), so a controller that proposes the same
network twice costs one evaluation.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from tqdm.auto import tqdm

from nas.constraints import Limit, annotate, describe, from_json, limits_for, to_json, violations
from nas.controllers import Controller, Objectives, SearchSpaceExhausted, create_controller
from nas.controllers.optuna_controller import describe_storage, open_storage
from nas.cost import CostModel, predict_many
from nas.cost.metrics import network_metrics, row_metrics
from nas.evaluation import evaluate_arch
from nas.pareto import pareto_front
from nas.run.context import RunContext
from nas.run.files import atomic_write_json, atomic_write_text
from nas.tables import BenchmarkTable, found_summary
from nas.trials import TrialRow
from supernets.base import Supernet


def open_controller(
    ctx: RunContext, costs: list[CostModel], announce: bool = True
) -> tuple[Controller, dict[str, Limit]]:
    """The run's controller on its study, judging trials by the constraints in force now, and those limits.

    When the study was last searched (or exported) under other constraints, says so in one line: the new ones
    apply to every trial, old and new, from here on (the study records the latest).
    """
    scfg = ctx.cfg.search
    limits = limits_for(ctx.cfg, ctx.space, costs)
    controller = create_controller(
        scfg.controller,
        options=scfg.controller_options,
        space=ctx.space,
        seed=ctx.cfg.seed,
        latency_budget_ms=scfg.latency_budget_ms,
        run_dir=ctx.run_dir,
        population=scfg.population,
        n_devices=len(costs),
        storage=open_storage(scfg.storage, heartbeat_s=scfg.heartbeat_s) if scfg.storage else None,
        study_name=scfg.study,
    )
    names = list(limits)
    devices, batch = list(scfg.devices), ctx.cfg.export.batch_size
    controller.set_constraints(
        lambda row: dict(zip(names, violations(row_metrics(row, devices, batch), limits)))
    )
    recorded = controller.recorded_constraints()
    if announce and recorded is not None and recorded != to_json(limits):
        ctx.say(
            f"constraints changed from {describe(from_json(recorded))} to {describe(limits)}: applied to"
            " every trial"
        )
    return controller, limits


def history(ctx: RunContext, controller: Controller, limits: dict[str, Limit]) -> list[TrialRow]:
    """The study's finished trials with their network size and ``feasible`` for ``limits``."""
    return annotate(
        controller.history(), ctx.space, limits, ctx.cfg.search.devices, ctx.cfg.export.batch_size
    )


def run_search(
    ctx: RunContext, supernet: Supernet | None, costs: list[CostModel], table: BenchmarkTable | None = None
) -> dict[str, Any]:
    """``costs[0]`` is the first device's model; one latency objective per device of ``search.devices``.

    With a benchmark ``table`` (``search.evaluator=table``) accuracies (and, with its latency column, the
    first device's latency) come from the table and ``supernet`` may be None.
    """
    scfg = ctx.cfg.search
    controller, limits = open_controller(ctx, costs)
    learn_s = 0.0
    try:
        if controller.needs_supernet:  # gradient controllers (darts, gdas) learn on the supernet first
            t_learn = time.perf_counter()
            state = controller.prepare(
                supernet,
                lambda epoch: ctx.loader("train", shuffle=True, epoch=10_000 + epoch),
                lambda rnd: ctx.loader("val", shuffle=True, epoch=20_000 + rnd),
                costs[0],
                ctx.device,
                channels_last=ctx.cfg.train.channels_last,
                progress=ctx.progress,
            )
            learn_s = time.perf_counter() - t_learn
            argmax = ctx.space.arch(state["argmax_arch"])
            done = {r["arch_id"] for r in controller.history()}
            ctx.say(
                f"{scfg.controller}: argmax architecture {argmax.id}, predicted"
                f" {state['argmax_latency_ms']:.3f} ms; "
                + ("already evaluated" if argmax.id in done else "evaluated first")
            )
        result = _search_loop(ctx, supernet, costs, controller, limits, table)
        result["search_seconds"] += learn_s  # a gradient controller's learning phase is part of its search
        if table is not None and result["rows"]:
            found = result["table"] = found_summary(table, ctx.space, result["rows"])
            ctx.say(
                f"{table.describe()}: best found trial {found['trial']} {found['arch']}:"
                f" {100 * found['accuracy']:.2f}%; the table's optimum {100 * found['optimum']:.2f}% (regret"
                f" {100 * found['regret']:.2f} points, rank {found['rank']} of {found['networks']} networks)"
            )
        return result
    finally:
        controller.close()  # stops a shared storage's heartbeat thread


def _search_loop(
    ctx: RunContext,
    supernet: Supernet | None,
    costs: list[CostModel],
    controller: Controller,
    limits: dict[str, Limit],
    table: BenchmarkTable | None = None,
) -> dict[str, Any]:
    scfg = ctx.cfg.search
    shared = controller.shared  # other workers add trials to the same study
    cache = {r["arch_id"]: r["accuracy"] for r in controller.history()}
    done = controller.n_finished()
    chosen_spec = supernet.read_spec() if supernet is not None else None
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
    while True:
        try:
            arch = controller.ask_within(scfg.trials)
        except SearchSpaceExhausted as exc:  # every network it can find is evaluated: end with those
            ctx.say(str(exc))
            break
        if arch is None:
            break
        latency, *extra = (float(v) for v in predict_many(costs, [arch])[0])  # one encoding for every device
        tabulated = table.latency_of(arch) if table is not None else None
        latency = latency if tabulated is None else tabulated
        network = {k: float(v[0]) for k, v in network_metrics(ctx.space, [arch]).items()}
        if arch.id not in cache and shared:  # another worker may have evaluated it meanwhile
            cache.update((r["arch_id"], r["accuracy"]) for r in controller.history())
        if arch.id not in cache:
            cache[arch.id] = _evaluate(ctx, supernet, table, arch)
        acc = cache[arch.id]
        controller.tell([arch], [Objectives(acc, latency, tuple(extra), network)])
        n = controller.n_finished()
        ctx.trackers.log(
            "search_trial", n, {"val_accuracy": acc, "latency_pred_ms": latency, "arch_id": arch.id}
        )
        bar.update(min(n, scfg.trials) - bar.n)
        bar.set_postfix(acc=f"{acc:.3f}", lat=f"{latency:.2f}ms")
    bar.close()
    rows = history(ctx, controller, limits)
    front = pareto_front(rows)
    write_outputs(ctx, controller, rows, front, limits)
    ctx.trackers.log_table(
        "pareto_front",
        ["trial", "arch_id", "val_accuracy", "latency_pred_ms"],
        [[r["trial"], r["arch_id"], r["accuracy"], r["latency_ms"]] for r in front],
    )
    return {
        "trials": len(rows),
        "rows": rows,
        "pareto": front,
        "search_seconds": time.perf_counter() - t0,
        "latency_budget_ms": scfg.latency_budget_ms,
        "limits": limits,
        "devices": list(scfg.devices),
    }


def _evaluate(ctx: RunContext, supernet: Supernet | None, table: BenchmarkTable | None, arch: Any) -> float:
    """The table's accuracy of ``arch``'s network, else the supernet's (inherited weights)."""
    if table is not None:
        return table.accuracy_of(arch)
    if supernet is None:
        raise ValueError("a search without a benchmark table evaluates on the supernet: pass one")
    return evaluate_arch(ctx, supernet, arch)


HISTORY_COLUMNS = ("trial", "arch_id", "val_accuracy")


def write_outputs(
    ctx: RunContext,
    controller: Controller,
    rows: list[TrialRow],
    front: list[TrialRow],
    limits: dict[str, Limit],
) -> None:
    """``search/history.csv`` (every trial, its metrics and feasibility now) and ``search/pareto.json`` (the
    feasible front and the limits it was judged by); the study records those limits as its latest."""
    devices, batch = list(ctx.cfg.search.devices), ctx.cfg.export.batch_size
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            *HISTORY_COLUMNS,
            *(f"latency_pred_ms_{d}" for d in devices),
            "params",
            "macs",
            f"memory_mb_batch{batch}",
            "feasible",
        ]
    )
    for r in rows:
        lats = [r["latency_ms"], *r.get("extra_latencies_ms", ())]
        metrics = row_metrics(r, devices, batch)
        w.writerow([
            r["trial"], r["arch_id"], f"{r['accuracy']:.6f}", *(f"{v:.6f}" for v in lats),
            _cell(metrics["params"], "{:.0f}"), _cell(metrics["macs"], "{:.0f}"),
            _cell(metrics["memory_mb"], "{:.6f}"),
            int(r["feasible"]),
        ])  # fmt: skip
    atomic_write_text(ctx.run_dir / "search" / "history.csv", buf.getvalue())
    atomic_write_json(
        ctx.run_dir / "search" / "pareto.json",
        {
            "latency_budget_ms": ctx.cfg.search.latency_budget_ms,
            "constraints": to_json(limits),
            "memory_batch": batch,
            "devices": devices,
            "front": front,
        },
    )
    controller.record_constraints(to_json(limits))


def _cell(v: float | None, fmt: str) -> str:
    return "" if v is None else fmt.format(v)


def format_front(front: list[TrialRow], limits: dict[str, Limit], devices: list[str] | None = None) -> str:
    """The Pareto front as a fixed-width text table (what the CLI prints)."""
    devices = devices or ["cpu"]
    lines = [f"Pareto front ({len(front)} architectures" + (f"; {describe(limits)}" if limits else "") + ")"]
    lines.append(
        f"{'trial':>5}  {'arch id':<12}  {'val acc':>7}"
        + "".join(f"  {('ms ' + d)[:16]:>16}" for d in devices)
        + f"  {'params':>10}  {'MMACs':>9}"
    )
    for r in front:
        lats = [r["latency_ms"], *r.get("extra_latencies_ms", ())]
        params = "" if r.get("params") is None else f"{r['params']:,.0f}"
        macs = "" if r.get("macs") is None else f"{r['macs'] / 1e6:.2f}"
        lines.append(
            f"{r['trial']:>5}  {r['arch_id']:<12}  {r['accuracy']:>7.4f}"
            + "".join(f"  {v:>16.3f}" for v in lats)
            + f"  {params:>10}  {macs:>9}"
        )
    return "\n".join(lines)
