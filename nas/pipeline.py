"""What each ``nas`` command does, on top of a :class:`nas.context.RunContext`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from nas.context import RunContext, build_space, open_run, resolve_config
from nas.controllers import create_controller
from nas.cost import CostModel, DeviceProfile, ProfileError, default_profile_path, load_or_calibrate, space_signature
from nas.distributed import cleanup, init_distributed
from nas.export import choose_trial, export_arch
from nas.rundir import default_run_dir
from nas.search import format_front, run_search
from nas.train import load_supernet, train_supernet

PROFILE_IN_RUN = "cost_profile.json"


def cost_model_for_run(ctx: RunContext) -> CostModel:
    """The run's latency predictor, pinned in the run directory so a resumed search predicts the same numbers."""
    pinned = ctx.run_dir / PROFILE_IN_RUN
    if ctx.cfg.search.profile:
        model = CostModel(ctx.space, DeviceProfile.load(ctx.cfg.search.profile))
    elif pinned.exists():
        model = CostModel(ctx.space, DeviceProfile.load(pinned))
    else:
        ctx.say("calibrating the cpu latency model on this machine (cached for later runs)...")
        model = load_or_calibrate(ctx.space, device="cpu", n_archs=ctx.cfg.search.calibration_archs, seed=ctx.cfg.seed, progress=ctx.progress)
    if not pinned.exists():
        model.profile.save(pinned)
    return model


def _search_history(ctx: RunContext) -> list[dict[str, Any]]:
    scfg = ctx.cfg.search
    controller = create_controller(scfg.controller, space=ctx.space, seed=ctx.cfg.seed, latency_budget_ms=scfg.latency_budget_ms, run_dir=ctx.run_dir, population=scfg.population)
    return controller.history()


def run_command(command: str, run_dir: Path | None, base: Mapping[str, Any] | None, overrides: Sequence[str], quiet: bool = False, table_stream: Any = None) -> dict[str, Any]:
    """Run ``train``, ``search``, ``export`` or ``run`` (all three) and return the summary."""
    dist = init_distributed()
    if dist.world_size > 1 and command != "train":
        raise ValueError(f"`nas {command}` runs in one process; only `nas train` is launched with torchrun (then search/export the run directory)")
    if dist.world_size > 1 and run_dir is None:
        raise ValueError("under torchrun give --run-dir: every rank must use the same run directory")
    run_dir = run_dir or default_run_dir(command)
    with open_run(run_dir, base, overrides, progress=not quiet, quiet=quiet, dist=dist) as ctx:
        ctx.say(f"run directory: {ctx.run_dir}")
        summary: dict[str, Any] = {"command": command, "run_dir": str(ctx.run_dir)}
        if command in ("train", "run"):
            if dist.world_size > 1 and ctx.cfg.data.batch_size % dist.world_size:
                raise ValueError(f"data.batch_size={ctx.cfg.data.batch_size} is the global batch; it must be divisible by the {dist.world_size} processes")
            summary["train"] = train_supernet(ctx, dist)
            summary["world_size"] = dist.world_size
        if command in ("search", "export", "run"):
            supernet = load_supernet(ctx)
            cost = cost_model_for_run(ctx)
            if command in ("search", "run"):
                result = run_search(ctx, supernet, cost)
                table = format_front(result["pareto"], result["latency_budget_ms"])
                if not quiet:
                    print(table, file=table_stream or sys.stdout, flush=True)
                summary["search"] = {"trials": result["trials"], "pareto_size": len(result["pareto"]), "search_seconds": round(result["search_seconds"], 2)}
            if command in ("export", "run"):
                row = choose_trial(_search_history(ctx), ctx.cfg.export.trial, ctx.cfg.search.latency_budget_ms)
                meta = export_arch(ctx, supernet, cost, row)
                ctx.trackers.summary({k: meta[k] for k in ("test_accuracy", "val_accuracy", "latency_pred_ms", "latency_measured_ms", "params", "macs")})
                ctx.say(
                    f"exported trial {meta['trial']} ({meta['arch_id']}) to {ctx.run_dir / 'export'}: test acc {meta['test_accuracy']:.4f}, "
                    f"latency predicted {meta['latency_pred_ms']:.3f} ms / measured {meta['latency_measured_ms']:.3f} ms, {meta['params']:,} params"
                )
                summary.update({k: meta[k] for k in ("arch_id", "test_accuracy", "val_accuracy", "latency_pred_ms", "latency_measured_ms", "params")})
                summary["export_dir"] = str(ctx.run_dir / "export")
        ctx.say(f"run directory: {ctx.run_dir}")
    cleanup(dist)
    summary["rank"] = dist.rank
    return summary


def cmd_rank(args: argparse.Namespace, base: Mapping[str, Any] | None, overrides: Sequence[str]) -> int:
    from nas.ranking import run_ranking

    if not args.run_dir:
        raise ValueError("nas rank needs --run-dir of a run with a trained supernet")
    with open_run(Path(args.run_dir), base, overrides, progress=not args.quiet, quiet=args.quiet) as ctx:
        epochs = args.epochs or ctx.cfg.train.epochs
        report = run_ranking(ctx, args.archs, epochs, seeds=args.seeds, workers=args.workers, standalone_dir=Path(args.standalone_dir) if args.standalone_dir else None)
    keys = [k for k in report if k != "rows"]
    summary = {k: report[k] for k in keys}
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        for k in keys:
            print(f"{k:>26}: {report[k]}")
        print(f"{'report':>26}: {Path(args.run_dir) / 'ranking.json'} and ranking.png")
    return 0


def cmd_spaces(as_json: bool = False) -> int:
    from search_spaces import create_space, list_spaces

    rows = []
    for name, doc in list_spaces().items():
        space = create_space(name)
        rows.append({"name": name, "num_architectures": space.num_architectures(), "num_choices": len(space.keys), "description": doc})
    if as_json:
        print(json.dumps(rows))
    else:
        print(f"{'space':<8} {'architectures':>14} {'choices':>8}  description")
        for r in rows:
            print(f"{r['name']:<8} {r['num_architectures']:>14.3g} {r['num_choices']:>8}  {r['description']}")
    return 0


def cmd_latency(args: argparse.Namespace, base: Mapping[str, Any] | None, overrides: Sequence[str]) -> int:
    """``nas latency calibrate|predict``: the space comes from --run-dir's config or from the settings given."""
    cfg = resolve_config(Path(args.run_dir) if args.run_dir else None, base, overrides)
    space = build_space(cfg)
    if args.latency_command == "calibrate":
        if args.device != "cpu":
            raise ValueError(f"calibration measures this machine's CPU; device {args.device!r} cannot be measured here (use --device cpu)")
        t0 = time.perf_counter()
        model = load_or_calibrate(space, device="cpu", path=args.profile, recalibrate=True, n_archs=args.n, seed=cfg.seed, threads=args.threads, batch=args.batch, progress=not args.quiet)
        out = {"device": "cpu", "space": space.name, "profile": model.profile.to_dict(), "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps(out) if args.json else json.dumps(out, indent=2))
        return 0
    arch = space.arch(json.loads(Path(args.arch).read_text()))
    if args.profile:
        model = CostModel(space, DeviceProfile.load(args.profile))
    elif args.device == "cpu":
        model = load_or_calibrate(space, device="cpu", progress=not args.quiet)
    else:
        path = default_profile_path(args.device, space_signature(space))
        if not path.exists():
            raise ProfileError(f"no {args.device!r} profile for this space (looked for {path}); run `nas latency calibrate` on that device and pass its file with --profile")
        model = CostModel(space, DeviceProfile.load(path))
    ms = float(model.predict([arch])[0])
    print(json.dumps({"arch_id": arch.id, "device": args.device, "latency_pred_ms": ms}) if args.json else f"{arch.id}: {ms:.3f} ms predicted on {args.device}")
    return 0
