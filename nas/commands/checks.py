"""Every check a command makes before it writes anything.

A command that cannot finish must say so before it has touched the run
directory: :func:`validate_config` runs on the resolved settings (before the
directory is even created), :func:`preflight` on the opened context (data and
space built, nothing saved yet). What a check builds (the supernet, the cost
models, the trial to export) is handed to the command, so nothing is built twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nas.constraints import Limit, limits_for, requested
from nas.controllers import CONTROLLERS, controller_options, create_controller
from nas.controllers.optuna_controller import refuse_foreign_study
from nas.cost import CostModel
from nas.cost.metrics import arch_metrics
from nas.cost.runtimes import get_runtime
from nas.cost.store import run_device_models
from nas.data import DATASETS
from nas.export.exporter import ExportError, choose_trial
from nas.export.formats import EXPORT_FORMATS, resolve_formats
from nas.run.config import (
    ConfigError,
    Named,
    NASConfig,
    OneOf,
    check_domains,
    flatten,
    setting_fields,
    shown_key,
)
from nas.run.context import SINGLE, DistInfo, RunContext, resolve_device
from nas.run.tracking import TRACKERS
from nas.search import history, open_controller
from nas.tables import BenchmarkTable, load_table
from nas.training.augment import AUGMENTATIONS
from nas.training.checkpoint import checkpoint_path, load_checkpoint, load_supernet
from nas.training.plans import plan_class
from nas.training.sampling import SAMPLING_RULES, get_rule
from nas.training.trainer import supernet_trainer
from nas.trials import TrialRow
from search_spaces import SPACES, SUPERNET_KINDS, InvalidArchitectureError
from search_spaces.errors import UserError


def _named(family: str) -> Callable[[str, str], None]:
    """How a :class:`~nas.run.config.Named` setting of ``family`` is checked: against its registry."""
    if family == "augmentation":
        return lambda value, key: OneOf(values=AUGMENTATIONS).check(key, value)
    if family == "export format":
        return lambda value, key: (
            None if str(value).strip().lower() == "all" else EXPORT_FORMATS.get(value, setting=key)
        )
    registry = {
        "data set": DATASETS,
        "search space": SPACES,
        "supernet kind": SUPERNET_KINDS,
        "sampling rule": SAMPLING_RULES,
        "controller": CONTROLLERS,
        "tracker": TRACKERS,
    }[family]
    return lambda value, key: registry.get(value, setting=key)


def validate_config(cfg: NASConfig) -> None:
    """Every setting against its declared domain, registry names included, and the rules that tie settings
    together.

    Runs before anything is written (before the run directory is even created), for every command, whatever
    subset of the settings the command reads: a wrong value is wrong wherever it would surface later.
    """
    check_domains(cfg)
    flat = flatten(cfg)
    for key, f in setting_fields().items():
        domain, value = f.metadata["domain"], flat[key]
        if isinstance(domain, Named) and value is not None:
            check = _named(domain.family)
            for item in value if isinstance(value, list) else [value]:
                check(item, shown_key(key))
    if cfg.search.controller_options:
        own = controller_options(cfg.search.controller)
        unknown = sorted(set(cfg.search.controller_options) - set(own))
        if unknown:
            raise ConfigError(
                f"search.controller_options: controller {cfg.search.controller!r} has no option"
                f" {', '.join(map(repr, unknown))}; its options: {own or 'none'}"
            )
    requested(cfg)  # the constraints' metric names and values
    _check_evaluator(cfg)
    if cfg.search.storage is not None:
        _check_storage_url(cfg.search.storage)
    if plan_class(cfg.space.supernet).needs_latency_budget and cfg.search.latency_budget_ms is None:
        raise ConfigError(
            f"--supernet {cfg.space.supernet} trains towards a latency target: give --latency-budget-ms"
        )
    try:
        resolve_device(cfg.device)
    except ValueError as exc:
        raise ConfigError(f"{exc} (device)") from None


def _check_evaluator(cfg: NASConfig) -> None:
    """The table evaluator needs a table, and table settings mean nothing to the supernet evaluator."""
    s = cfg.search
    if s.evaluator == "table" and s.table is None:
        raise ConfigError(
            "search.evaluator=table needs search.table: nats:cifar10, nats:cifar100, nats:imagenet16 or a CSV"
            " file"
        )
    given = {
        "search.table": s.table,
        "search.table_column": s.table_column,
        "search.table_latency_column": s.table_latency_column,
    }
    stray = [k for k, v in given.items() if v is not None]
    if s.evaluator != "table" and stray:
        raise ConfigError(
            f"{stray[0]} is read only by the table evaluator: add --search.evaluator=table (or drop it)"
        )


def _check_storage_url(url: str) -> None:
    """A database URL SQLAlchemy can parse (reaching the server is the search's first step, not a check)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"search.storage={url!r} is not allowed: give a database URL such as postgresql://user@host/db"
            " or sqlite:////path/study.db"
        ) from None


def check_sampler_options(ctx: RunContext) -> None:
    """Draw one step now so a wrong sampler option fails before training, naming the option."""
    t = ctx.cfg.train
    try:
        get_rule(t.sampler)(ctx.space, np.random.default_rng(0), 0, 1, t.num_random, **t.sampler_options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"train.sampler_options: {exc}") from None


def check_constraints_can_be_met(
    ctx: RunContext, costs: list[CostModel], table: BenchmarkTable | None = None
) -> None:
    """A limit below the smallest architecture's value can never be met: refuse it before any work.

    With a table's latency column, the latency floor is the table's fastest network."""
    limits = limits_for(ctx.cfg, ctx.space, costs)
    if not limits:
        return
    smallest = arch_metrics(
        ctx.space, costs, ctx.cfg.search.devices, [ctx.space.smallest()], ctx.cfg.export.batch_size
    )
    for metric, limit in limits.items():
        floor = float(smallest[metric][0])
        if metric == "latency_ms" and table is not None and table.latency is not None:
            floor = min(table.latency.values())
        if limit.value >= floor:
            continue
        if metric == "latency_ms" and ctx.cfg.search.latency_budget_ms is not None:
            raise ConfigError(
                f"latency budget {limit.value:g} ms (search.latency_budget_ms) is below the smallest"
                f" architecture's predicted latency of {floor:.3f} ms on {costs[0].profile.name}: no"
                f" architecture can meet it; give at least {floor:.3f} ms"
            )
        raise ConfigError(
            f"search.constraints.{metric}: {limit.describe()} is below the smallest architecture's {metric}"
            f" of {floor:.4g}: no architecture can meet it (`nas profile` shows what each metric ranges over)"
        )


def export_choice(
    ctx: RunContext, costs: list[CostModel]
) -> tuple[TrialRow, list[TrialRow], dict[str, Limit]]:
    """The trial ``nas export`` will write (its architecture checked against the space), every trial judged
    by the constraints in force, and those limits. No study: nothing to export."""
    scfg = ctx.cfg.search
    if scfg.storage is None and not (ctx.run_dir / "study.db").exists():
        raise ExportError("the search has no finished trials; run `nas search` first")
    controller, limits = open_controller(ctx, costs)
    try:
        rows = history(ctx, controller, limits)
    finally:
        controller.close()
    row = choose_trial(rows, ctx.cfg.export.trial, limits)
    try:
        ctx.space.arch(row["arch"])
    except InvalidArchitectureError as exc:
        raise InvalidArchitectureError(
            f"trial {row['trial']}'s architecture does not belong to space {ctx.space.name!r}: {exc}"
        ) from None
    return row, rows, limits


def check_controller(ctx: RunContext) -> bool:
    """Build the configured controller on a throw-away in-memory study: its own checks of its options run
    now. Returns whether it learns on the supernet before asking (``needs_supernet``)."""
    import optuna

    scfg = ctx.cfg.search
    refuse_foreign_study(scfg.controller, ctx.run_dir, scfg.storage, scfg.study, n_devices=len(scfg.devices))
    try:
        controller = create_controller(
            scfg.controller,
            options=scfg.controller_options,
            space=ctx.space,
            seed=ctx.cfg.seed,
            latency_budget_ms=scfg.latency_budget_ms,
            run_dir=ctx.run_dir,
            population=scfg.population,
            n_devices=len(scfg.devices),
            storage=optuna.storages.InMemoryStorage(),
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, UserError):
            raise
        raise ConfigError(
            f"search.controller={scfg.controller!r} with"
            f" search.controller_options={dict(scfg.controller_options)}: {exc}"
        ) from None
    controller.close()
    return controller.needs_supernet


def check_table(ctx: RunContext, needs_supernet: bool) -> BenchmarkTable:
    """The benchmark table a tabular search reads, checked (columns, rows, every network covered); a
    controller that learns on the supernet has none to learn on."""
    scfg = ctx.cfg.search
    if needs_supernet:
        raise ConfigError(
            f"search.controller={scfg.controller!r} learns on the supernet, and search.evaluator=table has"
            " none: use another controller (e.g. evolution, reinforce, tpe, random)"
        )
    if scfg.table_latency_column is not None and isinstance(requested(ctx.cfg).get("latency_ms"), str):
        raise ConfigError(
            "search.constraints.latency_ms: a share of the reference architecture's latency is not known with"
            " search.table_latency_column (the table has its own latencies); give the budget in ms"
        )
    return load_table(ctx.space, scfg.table or "", scfg.table_column, scfg.table_latency_column)


def preflight(command: str, ctx: RunContext, dist: DistInfo = SINGLE) -> dict[str, Any]:
    """What ``train``, ``search``, ``export`` or ``run`` can check once data and space exist, before anything
    is saved, and what it builds on the way (handed to the command, so nothing is built twice).

    Formats, the checkpoint (corrupt or foreign: refused, never overwritten), every device's cost model (not
    pinned yet), the supernet and its trainer (options, step plan, accumulation, precision), the controller
    and its options, the constraints, the benchmark table of a tabular search, and the trial to export.
    """
    check_sampler_options(ctx)
    out: dict[str, Any] = {}
    if command in ("export", "run"):  # an unknown format, or one that cannot represent this space
        out["formats"] = resolve_formats(ctx.cfg.export.formats, ctx.space)
        get_runtime(ctx.cfg.export.runtime, setting="export.runtime").require()  # the measured latency's
    ckpt = checkpoint_path(ctx.run_dir)
    if command in ("train", "run") and ckpt.exists():
        out["resume_state"] = load_checkpoint(ckpt, ctx.fingerprint())
    needs_costs = command != "train" or plan_class(ctx.cfg.space.supernet).needs_latency_budget
    if needs_costs:
        out["costs"] = run_device_models(ctx, pin=False)
    if command in ("train", "run"):
        if dist.world_size > 1 and ctx.cfg.data.batch_size % dist.world_size:
            raise ConfigError(
                f"data.batch_size={ctx.cfg.data.batch_size} is not allowed under torchrun with"
                f" {dist.world_size} processes: it is the global batch and must divide by {dist.world_size}"
            )
        out["trainer"] = supernet_trainer(ctx, dist, out.get("costs", ()))
    tabular = ctx.cfg.search.evaluator == "table"
    if command == "export" or (command == "search" and not tabular):  # a tabular search needs no supernet
        out["supernet"] = load_supernet(ctx)
    if command in ("search", "run"):
        needs_supernet = check_controller(ctx)
        if tabular:
            out["table"] = check_table(ctx, needs_supernet)
        check_constraints_can_be_met(ctx, out["costs"], out.get("table"))
    if command == "export":
        out["row"], out["rows"], out["limits"] = export_choice(ctx, out["costs"])
    return out
