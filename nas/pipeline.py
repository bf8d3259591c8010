"""What each ``nas`` command does, on top of a :class:`nas.context.RunContext`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from typing import Any, Mapping, Sequence

from nas.config import ConfigError
from nas.context import RunContext, build_space, open_run, resolve_config
from nas.controllers import create_controller
from nas.cost import CostModel, DeviceProfile, ProfileError, default_profile_path, load_or_calibrate, predict_many, space_signature
from nas.distributed import cleanup, init_distributed
from nas.export import ExportError, choose_trial, export_arch, failed_formats
from nas.export_formats import resolve_formats
from nas.rundir import atomic_write_json, default_run_dir, read_json
from nas.search import format_front, run_search
from nas.train import checkpoint_path, load_checkpoint, load_supernet, train_supernet
from search_spaces import InvalidArchitectureError

PROFILE_IN_RUN = "cost_profile.json"


def cost_model_for_run(ctx: RunContext, pin: bool = True) -> CostModel:
    """The run's latency predictor, pinned in the run directory so a resumed search predicts the same numbers.

    ``pin=False`` only builds it (a command's checks run before anything is written).
    """
    pinned = ctx.run_dir / PROFILE_IN_RUN
    if ctx.cfg.search.profile:
        model = CostModel(ctx.space, DeviceProfile.load(ctx.cfg.search.profile))
    elif pinned.exists():
        model = CostModel(ctx.space, DeviceProfile.load(pinned))
    else:
        ctx.say("calibrating the cpu latency model on this machine (cached for later runs)...")
        model = load_or_calibrate(ctx.space, device="cpu", n_archs=ctx.cfg.search.calibration_archs, seed=ctx.cfg.seed, progress=ctx.progress)
    if pin and not pinned.exists():
        model.profile.save(pinned)
    return model


def _device_model(ctx: RunContext, device: str, primary: bool, pin: bool = True) -> CostModel:
    """The cpu profile pinned in the run (calibrated once, only when a search uses it), else the named profile."""
    if device == "cpu":
        return cost_model_for_run(ctx, pin=pin)
    return _profile_for(ctx.space, device, ctx.cfg.search.profile if primary else None, None, ctx.progress)


def check_budget(budget: float | None, cost: CostModel, space: Any) -> None:
    """A budget below the smallest architecture's predicted latency can never be met: refuse it before any work."""
    if budget is None:
        return
    floor = float(cost.predict([space.smallest()])[0])
    if budget < floor:
        raise ConfigError(
            f"latency budget {budget:g} ms (search.latency_budget_ms) is below the smallest architecture's predicted latency "
            f"of {floor:.3f} ms on {cost.profile.name}: no architecture can meet it; give at least {floor:.3f} ms"
        )


def _export_row(ctx: RunContext) -> dict[str, Any]:
    """The trial ``nas export`` will write, its architecture checked against the space (no study: nothing to export)."""
    scfg = ctx.cfg.search
    if scfg.storage is None and not (ctx.run_dir / "study.db").exists():
        raise ExportError("the search has no finished trials; run `nas search` first")
    row = choose_trial(_search_history(ctx), ctx.cfg.export.trial, scfg.latency_budget_ms)
    try:
        ctx.space.arch(row["arch"])
    except InvalidArchitectureError as exc:
        raise InvalidArchitectureError(f"trial {row['trial']}'s architecture does not belong to space {ctx.space.name!r}: {exc}") from None
    return row


def _preflight(command: str, ctx: RunContext) -> dict[str, Any]:
    """Every check a command can make before it writes anything: formats, checkpoint, devices, budget, trial.

    Runs inside :func:`open_run` before the config is saved, so a refused command
    leaves the run directory exactly as it was. Returns what it built, for reuse.
    """
    out: dict[str, Any] = {}
    if command in ("export", "run"):  # an unknown format, or one that cannot represent this space
        out["formats"] = resolve_formats(ctx.cfg.export.formats, ctx.space)
    ckpt = checkpoint_path(ctx.run_dir)
    if command in ("train", "run") and ckpt.exists():  # corrupt or foreign: refused, never overwritten
        out["resume_state"] = load_checkpoint(ckpt, ctx.fingerprint())
    if command in ("search", "export"):
        out["supernet"] = load_supernet(ctx)
    if command in ("search", "export", "run"):
        devices = ctx.cfg.search.devices
        out["costs"] = [_device_model(ctx, d, primary=i == 0, pin=False) for i, d in enumerate(devices)]
    if command in ("search", "run"):
        check_budget(ctx.cfg.search.latency_budget_ms, out["costs"][0], ctx.space)
    if command == "export":
        out["row"] = _export_row(ctx)
    return out


def _pin_profiles(ctx: RunContext, costs: list[CostModel]) -> None:
    """Pin the cpu profile the checks used into the run directory (once the command is accepted)."""
    pinned = ctx.run_dir / PROFILE_IN_RUN
    if "cpu" in ctx.cfg.search.devices and not pinned.exists():
        costs[ctx.cfg.search.devices.index("cpu")].profile.save(pinned)


def _search_history(ctx: RunContext) -> list[dict[str, Any]]:
    scfg = ctx.cfg.search
    controller = create_controller(
        scfg.controller, options=scfg.controller_options, space=ctx.space, seed=ctx.cfg.seed, latency_budget_ms=scfg.latency_budget_ms, run_dir=ctx.run_dir, population=scfg.population,
        n_devices=len(scfg.devices), storage=scfg.storage, study_name=scfg.study,  # a distributed search's shared study
    )
    return controller.history()


def run_command(command: str, run_dir: Path | None, base: Mapping[str, Any] | None, overrides: Sequence[str], quiet: bool = False, table_stream: Any = None) -> dict[str, Any]:
    """Run ``train``, ``search``, ``export`` or ``run`` (all three) and return the summary."""
    dist = init_distributed()
    if dist.world_size > 1 and command != "train":
        raise ValueError(f"`nas {command}` runs in one process; only `nas train` is launched with torchrun (then search/export the run directory)")
    if dist.world_size > 1 and run_dir is None:
        raise ValueError("under torchrun give --run-dir: every rank must use the same run directory")
    run_dir = run_dir or default_run_dir(command)
    checked: dict[str, Any] = {}
    with open_run(run_dir, base, overrides, progress=not quiet, quiet=quiet, dist=dist, search_only=command == "search",
                  preflight=lambda c: checked.update(_preflight(command, c))) as ctx:
        ctx.say(f"run directory: {ctx.run_dir}")
        formats = checked.get("formats", [])
        summary: dict[str, Any] = {"command": command, "run_dir": str(ctx.run_dir)}
        if command in ("train", "run"):
            if dist.world_size > 1 and ctx.cfg.data.batch_size % dist.world_size:
                raise ValueError(f"data.batch_size={ctx.cfg.data.batch_size} is the global batch; it must be divisible by the {dist.world_size} processes")
            summary["train"] = train_supernet(ctx, dist, resume_state=checked.pop("resume_state", None))
            summary["world_size"] = dist.world_size
        if command in ("search", "export", "run"):
            supernet = checked.pop("supernet", None)
            supernet = supernet if supernet is not None else load_supernet(ctx)
            devices = ctx.cfg.search.devices
            costs = checked["costs"]
            _pin_profiles(ctx, costs)
            if command in ("search", "run"):
                result = run_search(ctx, supernet, costs)
                table = format_front(result["pareto"], result["latency_budget_ms"], devices)
                if not quiet:
                    print(table, file=table_stream or sys.stdout, flush=True)
                summary["search"] = {"trials": result["trials"], "pareto_size": len(result["pareto"]), "search_seconds": round(result["search_seconds"], 2)}
            if command in ("export", "run"):
                row = checked["row"] if command == "export" else choose_trial(_search_history(ctx), ctx.cfg.export.trial, ctx.cfg.search.latency_budget_ms)
                meta = export_arch(ctx, supernet, costs, row, formats=formats)
                ctx.trackers.summary({k: meta[k] for k in ("test_accuracy", "val_accuracy", "latency_pred_ms", "latency_measured_ms", "params", "macs")})
                ctx.say(
                    f"exported trial {meta['trial']} ({meta['arch_id']}) to {ctx.run_dir / 'export'}: test acc {meta['test_accuracy']:.4f}, "
                    f"latency predicted {meta['latency_pred_ms']:.3f} ms / measured {meta['latency_measured_ms']:.3f} ms, {meta['params']:,} params"
                )
                summary.update({k: meta[k] for k in ("arch_id", "test_accuracy", "val_accuracy", "latency_pred_ms", "latency_measured_ms", "params")})
                summary["export_dir"] = str(ctx.run_dir / "export")
                summary["formats"] = {f: r["ok"] for f, r in meta["formats"].items()}
                ctx.say("formats: " + ", ".join(f"{f} {'ok' if r['ok'] else 'FAILED'}" + (f" (max diff {r['max_abs_diff']:.2g})" if "max_abs_diff" in r else "") for f, r in meta["formats"].items()))
                from nas.report import report_after_run

                report_after_run(ctx)  # figures + report.html in <run>/report/ and to the trackers (a failure only warns)
                failed = failed_formats(meta)
                if failed:
                    raise ExportError(f"export format(s) failed: {'; '.join(f'{f}: {e}' for f, e in failed.items())} (the other formats are in {ctx.run_dir / 'export'}; see meta.json)")
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
    from search_spaces import create_space, list_spaces, list_supernet_kinds

    rows = []
    for name, doc in list_spaces().items():
        space = create_space(name)
        rows.append({"name": name, "num_architectures": space.num_architectures(), "num_choices": len(space.keys), "description": doc})
    kinds = [{"supernet": k, "description": d} for k, d in list_supernet_kinds().items()]
    if as_json:
        print(json.dumps({"spaces": rows, "supernet_kinds": kinds}))
    else:
        print(f"{'space':<14} {'architectures':>14} {'choices':>8}  description")
        for r in rows:
            print(f"{r['name']:<14} {r['num_architectures']:>14.3g} {r['num_choices']:>8}  {r['description']}")
        print(f"\n{'supernet kind (--supernet)':<28} description")
        for k in kinds:
            print(f"{k['supernet']:<28} {k['description']}")
    return 0


def _profile_for(space: Any, device: str, explicit: str | None, run_dir: Path | None, progress: bool) -> CostModel:
    """Profile lookup order: an explicit file, the run's pinned profile, a spec name, the cached one (cpu calibrates)."""
    from nas.cost import SPECS, spec_profile

    if explicit:
        return CostModel(space, DeviceProfile.load(explicit))
    if run_dir is not None and (run_dir / PROFILE_IN_RUN).exists() and device == "cpu":
        return CostModel(space, DeviceProfile.load(run_dir / PROFILE_IN_RUN))
    if device in SPECS:
        return CostModel(space, spec_profile(device, space))
    if Path(device).suffix == ".json":
        return CostModel(space, DeviceProfile.load(device))
    if device == "cpu":
        return load_or_calibrate(space, device="cpu", progress=progress)
    path = default_profile_path(device, space_signature(space))
    if not path.exists():
        raise ProfileError(
            f"no {device!r} profile for this space (looked for {path}); run `nas latency calibrate` on that device and pass "
            f"its file with --profile, or use a spec-derived profile ({', '.join(SPECS)})"
        )
    return CostModel(space, DeviceProfile.load(path))


def _read_arch(space: Any, path: str) -> Any:
    """An architecture JSON file checked against ``space``; every problem is one line naming the file."""
    data = read_json(path)
    try:
        return space.arch(data)
    except InvalidArchitectureError as exc:
        raise InvalidArchitectureError(f"{path} is not an architecture of space {space.name!r}: {exc}") from None


def cmd_latency(args: argparse.Namespace, base: Mapping[str, Any] | None, overrides: Sequence[str]) -> int:
    """``nas latency calibrate|predict|validate|measure|specs``."""
    from nas.cost import list_specs

    if args.latency_command == "specs":
        for name, desc in list_specs().items():
            print(f"{name:<16} {desc}")
        return 0
    run_dir = Path(args.run_dir) if args.run_dir else None
    cfg = resolve_config(run_dir, base, overrides)
    space = build_space(cfg)
    progress = not args.quiet
    if args.latency_command in ("template", "import"):
        from nas.cost.table_io import import_table, write_template

        if args.latency_command == "template":
            print(f"wrote {write_template(space, args.out)}: fill in latency_ms (ms, batch 1), then `nas latency import --csv {args.out} --device NAME`")
            return 0
        profile = import_table(space, args.csv, args.device)
        saved = profile.save(args.profile or default_profile_path(args.device, space_signature(space)))
        print(f"saved profile {args.device!r} ({profile.meta['measured_ops']} measured ops) to {saved}; use it with --device {args.device} or --search.profile={saved}")
        return 0
    if args.latency_command == "calibrate":
        import torch

        if args.device not in ("cpu", "cuda"):
            raise ValueError(f"calibration measures this machine: --device cpu or cuda, not {args.device!r} (other devices: run it there, or use `nas latency import`)")
        if args.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA GPU is visible on this machine")
        t0 = time.perf_counter()
        model = load_or_calibrate(space, device=args.device, path=args.profile, recalibrate=True, n_archs=args.n, seed=cfg.seed, threads=args.threads, batch=args.batch, progress=progress, measure_on=args.device)
        out = {"device": args.device, "space": space.name, "fit": model.profile.meta.get("fit"), "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps(out) if args.json else json.dumps(out, indent=2))
        return 0
    if args.latency_command == "predict":
        arch = _read_arch(space, args.arch)
        devices = [args.device, *([d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else [])]
        models = [_profile_for(space, d, args.profile if i == 0 else None, run_dir, progress) for i, d in enumerate(devices)]
        ms = predict_many(models, [arch])[0]
        result = {"arch_id": arch.id, "latency_pred_ms": float(ms[0]), "device": devices[0], "by_device": {d: float(v) for d, v in zip(devices, ms)}}
        print(json.dumps(result) if args.json else "\n".join(f"{arch.id}: {v:.3f} ms predicted on {d}" for d, v in zip(devices, ms)))
        return 0
    from nas.cost.validate import measure_archs, plot_validation, refit, validate

    if args.device != "cpu":
        raise ValueError(f"measurements run on this machine's CPU; device {args.device!r} cannot be measured here")
    model = _profile_for(space, "cpu", args.profile, run_dir, progress)
    if args.latency_command == "validate":
        report = validate(model, n=args.n, threads=args.threads, batch=args.batch, progress=progress)
        out_dir = Path(args.out_dir) if args.out_dir else (run_dir or Path("."))
        atomic_write_json(out_dir / "latency_validation.json", report)
        plot_validation(report, out_dir / "latency_validation.png")
        summary = {k: v for k, v in report.items() if k != "rows"} | {"report": str(out_dir / "latency_validation.json")}
        print(json.dumps(summary) if args.json else json.dumps(summary, indent=2))
        return 0
    # measure: the search's Pareto front and the exported network of a run directory
    if run_dir is None:
        raise ValueError("nas latency measure needs --run-dir of a finished search")
    front = json.loads((run_dir / "search" / "pareto.json").read_text())["front"] if (run_dir / "search" / "pareto.json").exists() else []
    archs = [space.arch(r["arch"]) for r in front]
    if (run_dir / "export" / "arch.json").exists():
        exported = space.arch(json.loads((run_dir / "export" / "arch.json").read_text()))
        if exported.id not in {a.id for a in archs}:
            archs.append(exported)
    if not archs:
        raise ValueError(f"{run_dir} has no Pareto front or export to measure; run `nas search` first")
    measured = measure_archs(model, archs, args.threads, args.batch, progress=progress)
    predicted = model.predict(archs)
    rows = [{"arch_id": a.id, "predicted_ms": float(p), "measured_ms": float(m), "error_pct": float(100 * (p - m) / m)} for a, p, m in zip(archs, predicted, measured)]
    result: dict[str, Any] = {"device": model.profile.name, "threads": args.threads, "batch": args.batch, "rows": rows}
    if args.refit:
        new = refit(model, archs, measured)
        new.save(run_dir / "cost_profile_refit.json")
        after = CostModel(space, new).predict(archs)
        result["refit"] = {"profile": str(run_dir / "cost_profile_refit.json"), "mape_before": float(np.mean(np.abs(predicted - measured) / measured)), "mape_after": float(np.mean(np.abs(after - measured) / measured))}
    atomic_write_json(run_dir / "search" / "latency_measured.json", result)
    for r in rows:
        if (run_dir / "export" / "meta.json").exists() and r["arch_id"] == json.loads((run_dir / "export" / "meta.json").read_text())["arch_id"]:
            atomic_write_json(run_dir / "export" / "latency_check.json", {**r, "threads": args.threads, "batch": args.batch})
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "rows"} | {"n": len(rows), "mape": float(np.mean([abs(r["error_pct"]) for r in rows]) / 100)}))
    else:
        print(f"{'arch id':<12}  {'predicted ms':>12}  {'measured ms':>11}  {'error':>7}")
        for r in rows:
            print(f"{r['arch_id']:<12}  {r['predicted_ms']:>12.3f}  {r['measured_ms']:>11.3f}  {r['error_pct']:>+6.1f}%")
        if "refit" in result:
            print(f"refit: MAPE {100 * result['refit']['mape_before']:.1f}% -> {100 * result['refit']['mape_after']:.1f}%, saved {result['refit']['profile']}")
    return 0
