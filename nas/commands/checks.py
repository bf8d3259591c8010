"""Every check a command makes before it writes anything.

A command that cannot finish must say so before it has touched the run
directory: :func:`validate_config` runs on the resolved settings (before the
directory is even created), :func:`preflight` on the opened context (data and
space built, nothing saved yet). What a check builds (the supernet, the cost
models, the trial to export) is handed to the command, so nothing is built twice.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nas.controllers import CONTROLLERS, controller_options, create_controller
from nas.cost import CostModel
from nas.cost.store import run_device_models
from nas.data import DATASETS
from nas.export.exporter import ExportError, choose_trial
from nas.export.formats import EXPORT_FORMATS, resolve_formats
from nas.run.config import ConfigError, NASConfig
from nas.run.context import RunContext, resolve_device
from nas.training.checkpoint import checkpoint_path, load_checkpoint, load_supernet
from nas.training.plans import plan_class
from nas.training.sampling import SAMPLING_RULES, get_rule
from nas.trials import TrialRow
from search_spaces import SPACES, SUPERNET_KINDS, InvalidArchitectureError

OPTIMIZERS = ("adamw", "sgd")


def validate_config(cfg: NASConfig) -> None:
    """Reject unknown names and impossible values before any work starts, not after an hour of training."""
    for registry, key, value in (
        (SPACES, "space.name", cfg.space.name),
        (SUPERNET_KINDS, "space.supernet", cfg.space.supernet),
        (DATASETS, "data.name", cfg.data.name),
        (CONTROLLERS, "search.controller", cfg.search.controller),
        (SAMPLING_RULES, "train.sampler", cfg.train.sampler),
    ):
        registry.get(value, setting=key)
    if cfg.train.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown train.optimizer {cfg.train.optimizer!r}; available: {list(OPTIMIZERS)}")
    positive = {
        "train.epochs": cfg.train.epochs,
        "search.trials": cfg.search.trials,
        "data.batch_size": cfg.data.batch_size,
        "train.lr": cfg.train.lr,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    if cfg.search.latency_budget_ms is not None and cfg.search.latency_budget_ms <= 0:
        raise ConfigError(f"search.latency_budget_ms must be > 0 ms, got {cfg.search.latency_budget_ms}")
    if cfg.search.controller_options:
        own = controller_options(cfg.search.controller)
        unknown = sorted(set(cfg.search.controller_options) - set(own))
        if unknown:
            raise ConfigError(
                f"search.controller_options: controller {cfg.search.controller!r} has no option"
                f" {', '.join(map(repr, unknown))}; its options: {own or 'none'}"
            )
    if plan_class(cfg.space.supernet).needs_latency_budget and cfg.search.latency_budget_ms is None:
        raise ConfigError(
            f"--supernet {cfg.space.supernet} trains towards a latency target: give --latency-budget-ms"
        )
    try:
        resolve_device(cfg.device)
    except ValueError as exc:
        raise ConfigError(f"{exc} (device)") from None
    for fmt in cfg.export.formats or ():
        if str(fmt).strip().lower() != "all":
            EXPORT_FORMATS.get(str(fmt), setting="export.formats / --format")


def check_sampler_options(ctx: RunContext) -> None:
    """Draw one step now so a wrong sampler option fails before training, naming the option."""
    t = ctx.cfg.train
    try:
        get_rule(t.sampler)(ctx.space, np.random.default_rng(0), 0, 1, t.num_random, **t.sampler_options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"train.sampler_options: {exc}") from None


def check_budget(budget: float | None, cost: CostModel, space: Any) -> None:
    """A budget below the smallest architecture's predicted latency can never be met: refuse it before any
    work."""
    if budget is None:
        return
    floor = float(cost.predict([space.smallest()])[0])
    if budget < floor:
        raise ConfigError(
            f"latency budget {budget:g} ms (search.latency_budget_ms) is below the smallest architecture's"
            f" predicted latency of {floor:.3f} ms on {cost.profile.name}: no architecture can meet it; give"
            f" at least {floor:.3f} ms"
        )


def search_history(ctx: RunContext) -> list[TrialRow]:
    """The finished trials of the run's study (private SQLite file or the shared storage)."""
    scfg = ctx.cfg.search
    controller = create_controller(
        scfg.controller,
        options=scfg.controller_options,
        space=ctx.space,
        seed=ctx.cfg.seed,
        latency_budget_ms=scfg.latency_budget_ms,
        run_dir=ctx.run_dir,
        population=scfg.population,
        n_devices=len(scfg.devices),
        storage=scfg.storage,
        study_name=scfg.study,
    )
    try:
        return controller.history()
    finally:
        controller.close()


def export_row(ctx: RunContext) -> TrialRow:
    """The trial ``nas export`` will write, its architecture checked against the space (no study: nothing to
    export)."""
    scfg = ctx.cfg.search
    if scfg.storage is None and not (ctx.run_dir / "study.db").exists():
        raise ExportError("the search has no finished trials; run `nas search` first")
    row = choose_trial(search_history(ctx), ctx.cfg.export.trial, scfg.latency_budget_ms)
    try:
        ctx.space.arch(row["arch"])
    except InvalidArchitectureError as exc:
        raise InvalidArchitectureError(
            f"trial {row['trial']}'s architecture does not belong to space {ctx.space.name!r}: {exc}"
        ) from None
    return row


def preflight(command: str, ctx: RunContext) -> dict[str, Any]:
    """What ``train``, ``search``, ``export`` or ``run`` can check once data and space exist, before anything
    is saved.

    Formats, the checkpoint (corrupt or foreign: refused, never overwritten), the
    supernet, every device's cost model (without pinning it), the budget and the
    trial to export. Returns what it built, for the command to reuse.
    """
    check_sampler_options(ctx)
    out: dict[str, Any] = {}
    if command in ("export", "run"):  # an unknown format, or one that cannot represent this space
        out["formats"] = resolve_formats(ctx.cfg.export.formats, ctx.space)
    ckpt = checkpoint_path(ctx.run_dir)
    if command in ("train", "run") and ckpt.exists():
        out["resume_state"] = load_checkpoint(ckpt, ctx.fingerprint())
    if command in ("search", "export"):
        out["supernet"] = load_supernet(ctx)
    if command in ("search", "export", "run"):
        out["costs"] = run_device_models(ctx, pin=False)
    if command in ("search", "run"):
        check_budget(ctx.cfg.search.latency_budget_ms, out["costs"][0], ctx.space)
    if command == "export":
        out["row"] = export_row(ctx)
    return out
