"""``nas latency ...``: calibrate this machine, validate and measure predictions, predict, and profiles for
other devices."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

READS = ("seed", "data", "space")  # the settings every sub-command but `specs` reads: their --help lists them
TABLE = (  # its row of the README's command table (what `nas --help` shows): command, what it does, example
    ("latency ...", "calibrate, import, fit, validate, predict device latency", "nas latency calibrate"),
)


def add_parsers(sub: Any) -> None:
    from nas.commands.args import add_common

    lat = sub.add_parser("latency", help="hardware cost model: calibrate a device profile or predict latency")
    lsub = lat.add_subparsers(dest="latency_command", required=True)
    cal = lsub.add_parser(
        "calibrate", help="time sampled architectures on this machine and fit the device profile", reads=READS
    )
    pred = lsub.add_parser(
        "predict", help="predict the latency of an architecture file, or of a file of many", reads=READS
    )
    for p in (cal, pred):
        add_common(p)
        p.add_argument(
            "--device", default="cpu", help="device profile name (calibration measures this machine's CPU)"
        )
        p.add_argument("--profile", help="profile JSON path (default: the per-space cache file)")
    cal.add_argument("--threads", type=int, default=1, help="threads while timing (default 1)")
    cal.add_argument("--batch", type=int, default=1, help="batch size while timing (default 1)")
    cal.add_argument("--n", type=int, default=40, help="number of architectures to time")
    cal.add_argument(
        "--fit",
        choices=("ops", "networks"),
        help=(
            "ops: time every op alone in the runtime (lookup table); networks: time whole networks only and"
            " fit the op table to them (default: what predicts better for the runtime, see README)"
        ),
    )
    cal.add_argument(
        "--strict",
        action="store_true",
        help="refuse to save a calibration whose reference op moved by more than 15%% (default: save it"
        " marked unstable)",
    )
    which = pred.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="architecture JSON (e.g. <run>/export/arch.json)")
    which.add_argument(
        "--archs",
        help="many architectures: a CSV with an arch column, or JSON lines; one prediction per architecture",
    )
    pred.add_argument("--out", help="with --archs: CSV file to write (default: stdout)")
    pred.add_argument(
        "--devices",
        help=(
            "comma-separated extra device profiles to predict at once (cpu, spec names from `nas latency"
            " specs`, or profile JSON paths)"
        ),
    )
    val = lsub.add_parser(
        "validate",
        help="sample N architectures, measure them on this machine, compare with the predictions",
        reads=READS,
    )
    meas = lsub.add_parser(
        "measure",
        help=(
            "measure a finished search's Pareto front and exported model on this machine (predicted vs."
            " measured)"
        ),
        reads=READS,
    )
    for p in (val, meas):
        add_common(p)
        p.add_argument(
            "--profile",
            help="profile JSON path (default: the run's pinned profile, else the cached cpu profile)",
        )
        p.add_argument("--threads", type=int, default=1, help="threads while timing (default 1)")
        p.add_argument("--batch", type=int, default=1, help="batch size while timing (default 1)")
        p.add_argument("--device", default="cpu", help="device the measurement runs on (this machine's cpu)")
    for p in (cal, val, meas):
        p.add_argument(
            "--runtime",
            default="torch",
            help="inference runtime to time in: torch (default), onnxruntime, openvino, executorch, litert",
        )
    val.add_argument("--n", type=int, default=100, help="number of architectures (default 100)")
    val.add_argument(
        "--sessions",
        type=int,
        default=1,
        help="repeat calibrate-then-validate this many times and report the mean and range (default 1:"
        " validate the existing profile)",
    )
    val.add_argument(
        "--calibration-n", type=int, default=40, help="with --sessions: architectures each calibration times"
    )
    val.add_argument(
        "--fit",
        choices=("ops", "networks"),
        help="with --sessions: how each calibration fits (see calibrate)",
    )
    val.add_argument(
        "--out-dir",
        help="where latency_validation.json/.png go (default: --run-dir, else the current directory)",
    )
    meas.add_argument(
        "--refit", action="store_true", help="also refit the profile's scale and offset to these measurements"
    )
    fit = lsub.add_parser(
        "fit",
        help="fit a device profile's op table to whole-network latencies measured on the device (a CSV)",
        reads=READS,
    )
    add_common(fit)
    fit.add_argument(
        "--csv",
        required=True,
        help="measured networks: columns arch (JSON or the space's string form), latency_ms",
    )
    fit.add_argument("--device", required=True, help="name of the device the latencies were measured on")
    fit.add_argument(
        "--profile",
        help="where to save the profile (default: the per-space cache, found again by --device NAME)",
    )
    fit.add_argument(
        "--prior",
        help="profile JSON whose op table is the prior (default: the analytical model fitted to the same"
        " file)",
    )
    fit.add_argument(
        "--runtime", default="unspecified", help="runtime the latencies were measured in (recorded)"
    )
    fit.add_argument("--threads", type=int, help="threads the latencies were measured with (recorded)")
    fit.add_argument(
        "--batch", type=int, default=1, help="batch size the latencies were measured at (recorded)"
    )
    fit.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    specs = lsub.add_parser(
        "specs", help="list the spec-derived device profiles (approximate, from published peak figures)"
    )
    tpl = lsub.add_parser(
        "template",
        help="write a CSV listing every op of the space, to fill in with latencies measured on your device",
        reads=READS,
    )
    imp = lsub.add_parser(
        "import",
        help="make a device profile from a filled-in latency CSV (see `nas latency template`)",
        reads=READS,
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
    for p in (cal, pred, val, meas, fit, specs, tpl, imp):
        p.set_defaults(handler=main)


def _read_arch(space: Any, path: str) -> Any:
    """An architecture file (JSON, or the space's own string form: a NAS-Bench-201 cell string) checked
    against ``space``; every problem is one line naming the file."""
    from nas.run.files import read_json
    from search_spaces import InvalidArchitectureError

    try:
        text: str | None = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = None  # read_json names the problem
    try:
        if text is None or text.lstrip()[:1] in ("{", "["):
            return space.arch(read_json(path))
        return space.parse_arch(text)
    except InvalidArchitectureError as exc:
        raise InvalidArchitectureError(
            f"{path} is not an architecture of space {space.name!r}: {exc}"
        ) from None


def main(args: argparse.Namespace, base: Mapping[str, Any] | None, overrides: Sequence[str]) -> int:
    """``nas latency calibrate|predict|validate|measure|fit|specs|template|import``.

    A machine-state warning (the machine runs at another speed than when the
    profile in use was calibrated) is printed as one ``nas: warning:`` line once
    the command has done its work.
    """
    from nas.cost.machine import MachineStateWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MachineStateWarning)
        rc = _main(args, base, overrides)
    for w in caught:
        if issubclass(w.category, MachineStateWarning):
            print(f"nas: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return rc


def _main(args: argparse.Namespace, base: Mapping[str, Any] | None, overrides: Sequence[str]) -> int:
    from nas.cost import list_specs
    from nas.cost.profile import space_signature
    from nas.cost.store import default_profile_path
    from nas.run.context import build_space, resolve_config

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
        return _calibrate(args, cfg, space, progress)
    if args.latency_command == "predict":
        return _predict(args, space, run_dir, progress)
    if args.latency_command == "fit":
        return _fit(args, cfg, space)
    if args.latency_command == "validate":
        return _validate(args, cfg, space, run_dir, progress)
    return _measure(args, space, run_dir, progress)


def _runtime(args: argparse.Namespace) -> Any:
    """The ``--runtime`` asked for, installed (else one line saying what to install)."""
    from nas.cost.runtimes import get_runtime

    rt = get_runtime(args.runtime)
    rt.require()
    return rt


def _check_count(name: str, value: int | None, lo: int = 1) -> None:
    from nas.run.config import ConfigError

    if value is not None and value < lo:
        raise ConfigError(f"--{name}={value} is not allowed: it takes a whole number >= {lo}")


def _calibrate(args: argparse.Namespace, cfg: Any, space: Any, progress: bool) -> int:
    import torch

    from nas.cost.calibrate import calibrate
    from nas.cost.machine import CalibrationUnstableError
    from nas.cost.profile import space_signature
    from nas.cost.store import default_profile_path, profile_name
    from nas.run.config import ConfigError

    if args.device not in ("cpu", "cuda"):
        raise ConfigError(
            f"calibration measures this machine: --device cpu or cuda, not {args.device!r} (other"
            " devices: run it there, or use `nas latency import` / `nas latency fit`)"
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible on this machine")
    for name in ("threads", "batch"):
        _check_count(name, getattr(args, name))
    _check_count("n", args.n, 3)
    rt = _runtime(args)
    if args.device == "cuda" and rt.name != "torch":
        raise ConfigError(f"--runtime {rt.name} runs on the CPU; --device cuda is timed in torch only")
    name = profile_name(args.device, rt.name)
    path = Path(args.profile) if args.profile else default_profile_path(name, space_signature(space))
    t0 = time.perf_counter()
    profile, _ = calibrate(
        space,
        n_archs=args.n,
        seed=cfg.seed,
        threads=args.threads,
        batch=args.batch,
        device_name=name,
        progress=progress,
        measure_on=args.device,
        runtime=rt.name,
        method=args.fit or rt.default_fit,
    )
    state = profile.meta["machine_state"]
    if state["unstable"]:
        if args.strict:
            raise CalibrationUnstableError(
                f"not saved: {state['why']}; calibrate again when the machine is idle (or without --strict"
                " to save it marked unstable)"
            )
        print(f"nas: warning: profile marked unstable: {state['why']}", file=sys.stderr)
    profile.save(path)
    out = {
        "device": name,
        "space": space.name,
        "runtime": rt.name,
        "runtime_version": profile.meta["runtime_version"],
        "profile": str(path),
        "fit": profile.meta.get("fit"),
        "machine_state": {k: state[k] for k in ("reference_ms", "drift", "unstable", "load_average_1min")},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


def _predict(args: argparse.Namespace, space: Any, run_dir: Path | None, progress: bool) -> int:
    from nas.cost import predict_many
    from nas.cost.store import profile_for

    devices = [
        args.device,
        *([d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else []),
    ]
    if args.archs:
        from nas.cost.fit import read_archs

        archs = read_archs(space, args.archs)
    else:
        archs = [_read_arch(space, args.arch)]
    models = [
        profile_for(space, d, args.profile if i == 0 else None, run_dir, progress)
        for i, d in enumerate(devices)
    ]
    ms = predict_many(models, archs)  # one lowering, one kernel call per device, whatever the number
    if args.archs:
        return _write_predictions(args, space, archs, devices, ms)
    arch = archs[0]
    result = {
        "arch_id": arch.id,
        "latency_pred_ms": float(ms[0, 0]),
        "device": devices[0],
        "by_device": {d: float(v) for d, v in zip(devices, ms[0])},
    }
    print(
        json.dumps(result)
        if args.json
        else "\n".join(f"{arch.id}: {v:.3f} ms predicted on {d}" for d, v in zip(devices, ms[0]))
    )
    return 0


def _write_predictions(args: argparse.Namespace, space: Any, archs: list, devices: list[str], ms: Any) -> int:
    """``arch_id, arch, latency_ms`` (the first device) and ``latency_ms_<device>`` for each other one."""
    import csv
    import io

    from nas.run.files import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arch_id", "arch", "latency_ms", *(f"latency_ms_{d}" for d in devices[1:])])
    for a, row in zip(archs, ms):
        w.writerow([a.id, space.format_arch(a), *(f"{v:.6g}" for v in row)])
    if args.out:
        atomic_write_text(args.out, buf.getvalue())
        summary = {"n": len(archs), "devices": devices, "out": args.out}
        print(
            json.dumps(summary) if args.json else f"wrote {len(archs)} predictions on {devices} to {args.out}"
        )
    else:
        sys.stdout.write(buf.getvalue())
    return 0


def _fit(args: argparse.Namespace, cfg: Any, space: Any) -> int:
    from nas.cost import CostModel
    from nas.cost.fit import fit_op_table, fitted_profile, profile_prior, read_latency_csv
    from nas.cost.profile import DeviceProfile, space_signature
    from nas.cost.store import default_profile_path

    _check_count("folds", args.folds, 2)
    _check_count("threads", args.threads)
    _check_count("batch", args.batch)
    archs, y = read_latency_csv(space, args.csv)
    prior = None
    if args.prior:
        model = CostModel(space, DeviceProfile.load(args.prior))
        prior = profile_prior(
            model.latency_table(),
            model.intercept,
            np.asarray(model.profile.coef) * model.profile.lut_scale,
            f"profile {model.profile.name!r} ({args.prior})",
        )
    fit, diag = fit_op_table(space, archs, y, prior=prior, folds=args.folds, seed=cfg.seed)
    meta = {
        "kind": "fitted from whole-network latencies",
        "source": str(args.csv),
        "runtime": args.runtime,
        "threads": args.threads,
        "batch": args.batch,
        "fit": diag,
    }
    profile = fitted_profile(space, fit, args.device, meta)
    saved = profile.save(args.profile or default_profile_path(args.device, space_signature(space)))
    summary = {
        "device": args.device,
        "profile": str(saved),
        **{
            k: diag[k]
            for k in ("n", "folds", "kendall_tau", "mape", "within_10pct", "ops_covered", "ops_total")
        },
        "prior_only": diag["prior_only"],
        "strength": diag["strength"],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"fitted {diag['ops_covered']} of {diag['ops_total']} ops from {diag['n']} networks"
            f" ({diag['folds']}-fold cross-validated: Kendall tau {diag['kendall_tau']:.3f}, MAPE"
            f" {100 * diag['mape']:.1f}%, within +/-10% {100 * diag['within_10pct']:.0f}%; the prior alone:"
            f" tau {diag['prior_only']['kendall_tau']:.3f}, MAPE {100 * diag['prior_only']['mape']:.1f}%)"
        )
        print(
            f"saved profile {args.device!r} to {saved}; use it with --search.devices={args.device}"
            f" (or --search.devices={saved}) and in constraints as latency_ms:{args.device}"
        )
    return 0


def _validate(args: argparse.Namespace, cfg: Any, space: Any, run_dir: Path | None, progress: bool) -> int:
    from nas.cost import CostModel
    from nas.cost.calibrate import calibrate
    from nas.cost.store import profile_for, profile_name
    from nas.cost.validate import plot_validation, session_summary, validate
    from nas.run.config import ConfigError
    from nas.run.files import atomic_write_json

    if args.device != "cpu":
        raise ConfigError(
            f"measurements run on this machine's CPU; device {args.device!r} cannot be measured here"
        )
    for name in ("threads", "batch", "sessions"):
        _check_count(name, getattr(args, name))
    _check_count("n", args.n, 2)
    _check_count("calibration-n", args.calibration_n, 3)
    rt = _runtime(args)
    out_dir = Path(args.out_dir) if args.out_dir else (run_dir or Path("."))
    if args.sessions == 1:
        model = profile_for(space, "cpu", args.profile, run_dir, progress, runtime=rt.name)
        report = validate(
            model, n=args.n, threads=args.threads, batch=args.batch, progress=progress, runtime=rt.name
        )
    else:
        sessions = []
        for s in range(args.sessions):
            profile, _ = calibrate(
                space,
                n_archs=args.calibration_n,
                seed=cfg.seed + s,
                threads=args.threads,
                batch=args.batch,
                device_name=profile_name("cpu", rt.name),
                progress=progress,
                runtime=rt.name,
                method=args.fit or rt.default_fit,
            )
            r = validate(
                CostModel(space, profile),
                n=args.n,
                seed=1234 + s,
                threads=args.threads,
                batch=args.batch,
                progress=progress,
                runtime=rt.name,
            )
            r["machine_unstable"] = profile.meta["machine_state"]["unstable"]
            sessions.append(r)
        report = {**sessions[-1], "sessions": session_summary(sessions), "per_session": sessions}
    atomic_write_json(out_dir / "latency_validation.json", report)
    plot_validation(report, out_dir / "latency_validation.png")
    summary = {k: v for k, v in report.items() if k not in ("rows", "per_session")} | {
        "report": str(out_dir / "latency_validation.json")
    }
    print(json.dumps(summary) if args.json else json.dumps(summary, indent=2))
    return 0


def _measure(args: argparse.Namespace, space: Any, run_dir: Path | None, progress: bool) -> int:
    """The search's Pareto front and the exported network of a run directory, measured in ``--runtime``."""
    from nas.cost import CostModel
    from nas.cost.store import profile_for
    from nas.cost.validate import measure_archs, refit
    from nas.run.config import ConfigError
    from nas.run.files import atomic_write_json

    if args.device != "cpu":
        raise ConfigError(
            f"measurements run on this machine's CPU; device {args.device!r} cannot be measured here"
        )
    for name in ("threads", "batch"):
        _check_count(name, getattr(args, name))
    if run_dir is None:
        raise ConfigError("nas latency measure needs --run-dir of a finished search")
    rt = _runtime(args)
    model = profile_for(space, "cpu", args.profile, run_dir, progress, runtime=rt.name)
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
    measured = measure_archs(model, archs, args.threads, args.batch, progress=progress, runtime=rt.name)
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
        "runtime": rt.name,
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
                run_dir / "export" / "latency_check.json",
                {**r, "threads": args.threads, "batch": args.batch, "runtime": rt.name},
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
