"""``nas latency ...``: calibrate this machine, validate and measure predictions, predict, and profiles for
other devices."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.run.config import ConfigError


def add_parsers(sub: Any) -> None:
    from nas.commands.args import add_common

    lat = sub.add_parser("latency", help="hardware cost model: calibrate a device profile or predict latency")
    lsub = lat.add_subparsers(dest="latency_command", required=True)
    cal = lsub.add_parser(
        "calibrate", help="time sampled architectures on this machine and fit the device profile"
    )
    pred = lsub.add_parser("predict", help="predict the latency of an architecture JSON file")
    for p in (cal, pred):
        add_common(p)
        p.add_argument(
            "--device", default="cpu", help="device profile name (calibration measures this machine's CPU)"
        )
        p.add_argument("--profile", help="profile JSON path (default: the per-space cache file)")
    cal.add_argument("--threads", type=int, default=1, help="torch threads while timing (default 1)")
    cal.add_argument("--batch", type=int, default=1, help="batch size while timing (default 1)")
    cal.add_argument("--n", type=int, default=40, help="number of architectures to time")
    pred.add_argument("--arch", required=True, help="architecture JSON (e.g. <run>/export/arch.json)")
    pred.add_argument(
        "--devices",
        help=(
            "comma-separated extra device profiles to predict at once (cpu, spec names from `nas latency"
            " specs`, or profile JSON paths)"
        ),
    )
    val = lsub.add_parser(
        "validate", help="sample N architectures, measure them on this machine, compare with the predictions"
    )
    meas = lsub.add_parser(
        "measure",
        help=(
            "measure a finished search's Pareto front and exported model on this machine (predicted vs."
            " measured)"
        ),
    )
    for p in (val, meas):
        add_common(p)
        p.add_argument(
            "--profile",
            help="profile JSON path (default: the run's pinned profile, else the cached cpu profile)",
        )
        p.add_argument("--threads", type=int, default=1, help="torch threads while timing (default 1)")
        p.add_argument("--batch", type=int, default=1, help="batch size while timing (default 1)")
        p.add_argument("--device", default="cpu", help="device the measurement runs on (this machine's cpu)")
    val.add_argument("--n", type=int, default=100, help="number of architectures (default 100)")
    val.add_argument(
        "--out-dir",
        help="where latency_validation.json/.png go (default: --run-dir, else the current directory)",
    )
    meas.add_argument(
        "--refit", action="store_true", help="also refit the profile's scale and offset to these measurements"
    )
    specs = lsub.add_parser(
        "specs", help="list the spec-derived device profiles (approximate, from published peak figures)"
    )
    tpl = lsub.add_parser(
        "template",
        help="write a CSV listing every op of the space, to fill in with latencies measured on your device",
    )
    imp = lsub.add_parser(
        "import", help="make a device profile from a filled-in latency CSV (see `nas latency template`)"
    )
    for p in (tpl, imp):
        add_common(p)
    tpl.add_argument("--out", required=True, help="CSV file to write")
    imp.add_argument("--csv", required=True, help="the filled-in latency table")
    imp.add_argument("--device", required=True, help="name of the device the latencies were measured on")
    imp.add_argument(
        "--profile",
        help="where to save the profile (default: the per-space cache, found again by --device NAME)",
    )
    for p in (cal, pred, val, meas, specs, tpl, imp):
        p.set_defaults(handler=main)


def _read_arch(space: Any, path: str) -> Any:
    """An architecture JSON file checked against ``space``; every problem is one line naming the file."""
    from nas.run.files import read_json
    from search_spaces import InvalidArchitectureError

    data = read_json(path)
    try:
        return space.arch(data)
    except InvalidArchitectureError as exc:
        raise InvalidArchitectureError(
            f"{path} is not an architecture of space {space.name!r}: {exc}"
        ) from None


def main(args: argparse.Namespace, base: Mapping[str, Any] | None, overrides: Sequence[str]) -> int:
    """``nas latency calibrate|predict|validate|measure|specs|template|import``."""
    from nas.cost import CostModel, list_specs, predict_many
    from nas.cost.profile import space_signature
    from nas.cost.store import default_profile_path, load_or_calibrate, profile_for
    from nas.run.context import build_space, resolve_config
    from nas.run.files import atomic_write_json

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
            print(
                f"wrote {write_template(space, args.out)}: fill in latency_ms (ms, batch 1), then `nas"
                f" latency import --csv {args.out} --device NAME`"
            )
            return 0
        profile = import_table(space, args.csv, args.device)
        saved = profile.save(args.profile or default_profile_path(args.device, space_signature(space)))
        print(
            f"saved profile {args.device!r} ({profile.meta['measured_ops']} measured ops) to {saved}; use it"
            f" with --device {args.device} or --search.profile={saved}"
        )
        return 0
    if args.latency_command == "calibrate":
        import torch

        if args.device not in ("cpu", "cuda"):
            raise ConfigError(
                f"calibration measures this machine: --device cpu or cuda, not {args.device!r} (other"
                " devices: run it there, or use `nas latency import`)"
            )
        if args.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is visible on this machine")
        t0 = time.perf_counter()
        model = load_or_calibrate(
            space,
            device=args.device,
            path=args.profile,
            recalibrate=True,
            n_archs=args.n,
            seed=cfg.seed,
            threads=args.threads,
            batch=args.batch,
            progress=progress,
            measure_on=args.device,
        )
        out = {
            "device": args.device,
            "space": space.name,
            "fit": model.profile.meta.get("fit"),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(json.dumps(out) if args.json else json.dumps(out, indent=2))
        return 0
    if args.latency_command == "predict":
        arch = _read_arch(space, args.arch)
        devices = [
            args.device,
            *([d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else []),
        ]
        models = [
            profile_for(space, d, args.profile if i == 0 else None, run_dir, progress)
            for i, d in enumerate(devices)
        ]
        ms = predict_many(models, [arch])[0]
        result = {
            "arch_id": arch.id,
            "latency_pred_ms": float(ms[0]),
            "device": devices[0],
            "by_device": {d: float(v) for d, v in zip(devices, ms)},
        }
        print(
            json.dumps(result)
            if args.json
            else "\n".join(f"{arch.id}: {v:.3f} ms predicted on {d}" for d, v in zip(devices, ms))
        )
        return 0
    from nas.cost.validate import measure_archs, plot_validation, refit, validate

    if args.device != "cpu":
        raise ConfigError(
            f"measurements run on this machine's CPU; device {args.device!r} cannot be measured here"
        )
    model = profile_for(space, "cpu", args.profile, run_dir, progress)
    if args.latency_command == "validate":
        report = validate(model, n=args.n, threads=args.threads, batch=args.batch, progress=progress)
        out_dir = Path(args.out_dir) if args.out_dir else (run_dir or Path("."))
        atomic_write_json(out_dir / "latency_validation.json", report)
        plot_validation(report, out_dir / "latency_validation.png")
        summary = {k: v for k, v in report.items() if k != "rows"} | {
            "report": str(out_dir / "latency_validation.json")
        }
        print(json.dumps(summary) if args.json else json.dumps(summary, indent=2))
        return 0
    # measure: the search's Pareto front and the exported network of a run directory
    if run_dir is None:
        raise ConfigError("nas latency measure needs --run-dir of a finished search")
    front = (
        json.loads((run_dir / "search" / "pareto.json").read_text())["front"]
        if (run_dir / "search" / "pareto.json").exists()
        else []
    )
    archs = [space.arch(r["arch"]) for r in front]
    if (run_dir / "export" / "arch.json").exists():
        exported = space.arch(json.loads((run_dir / "export" / "arch.json").read_text()))
        if exported.id not in {a.id for a in archs}:
            archs.append(exported)
    if not archs:
        raise ConfigError(f"{run_dir} has no Pareto front or export to measure; run `nas search` first")
    measured = measure_archs(model, archs, args.threads, args.batch, progress=progress)
    predicted = model.predict(archs)
    rows = [
        {
            "arch_id": a.id,
            "predicted_ms": float(p),
            "measured_ms": float(m),
            "error_pct": float(100 * (p - m) / m),
        }
        for a, p, m in zip(archs, predicted, measured)
    ]
    result: dict[str, Any] = {
        "device": model.profile.name,
        "threads": args.threads,
        "batch": args.batch,
        "rows": rows,
    }
    if args.refit:
        new = refit(model, archs, measured)
        new.save(run_dir / "cost_profile_refit.json")
        after = CostModel(space, new).predict(archs)
        result["refit"] = {
            "profile": str(run_dir / "cost_profile_refit.json"),
            "mape_before": float(np.mean(np.abs(predicted - measured) / measured)),
            "mape_after": float(np.mean(np.abs(after - measured) / measured)),
        }
    atomic_write_json(run_dir / "search" / "latency_measured.json", result)
    for r in rows:
        if (run_dir / "export" / "meta.json").exists() and r["arch_id"] == json.loads(
            (run_dir / "export" / "meta.json").read_text()
        )["arch_id"]:
            atomic_write_json(
                run_dir / "export" / "latency_check.json", {**r, "threads": args.threads, "batch": args.batch}
            )
    if args.json:
        print(
            json.dumps(
                {k: v for k, v in result.items() if k != "rows"}
                | {"n": len(rows), "mape": float(np.mean([abs(r["error_pct"]) for r in rows]) / 100)}
            )
        )
    else:
        print(f"{'arch id':<12}  {'predicted ms':>12}  {'measured ms':>11}  {'error':>7}")
        for r in rows:
            print(
                f"{r['arch_id']:<12}  {r['predicted_ms']:>12.3f}  {r['measured_ms']:>11.3f} "
                f" {r['error_pct']:>+6.1f}%"
            )
        if "refit" in result:
            print(
                f"refit: MAPE {100 * result['refit']['mape_before']:.1f}% ->"
                f" {100 * result['refit']['mape_after']:.1f}%, saved {result['refit']['profile']}"
            )
    return 0
