"""``nas`` command line: train, search, export, run (all three), finetune, report, rank, spaces, latency.

Any setting of :class:`nas.config.NASConfig` can be given as ``--section.key=value``
(e.g. ``--train.epochs=3``); common ones have short aliases (``--epochs``,
``--trials``, ``--latency-budget-ms``, ``--space``, ``--data``, ``--data-dir``).
Errors a user can fix print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

def _user_errors() -> tuple[type[BaseException], ...]:
    from nas.config import ConfigError
    from nas.cost import ProfileError
    from nas.data import DataError
    from nas.export import ExportError
    from nas.rundir import RunDirError
    from nas.train import CheckpointError
    from search_spaces import InvalidArchitectureError

    return (ConfigError, DataError, RunDirError, CheckpointError, ExportError, ProfileError, InvalidArchitectureError, KeyError, ValueError, FloatingPointError, OSError)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with settings (sections: data, space, train, search, export)")
    p.add_argument("--run-dir", help="run directory (created if missing; an existing one is resumed)")
    p.add_argument("--json", action="store_true", help="end by printing a one-line JSON summary on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas",
        description="Weight-sharing NAS: train a supernet, search it for accuracy vs. latency, export the winner.",
        epilog="Settings: --section.key=value for any config key (see `nas <command> --help`), e.g. --train.epochs=3 --search.trials=20.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("train", "train the supernet (resumes from the run directory's last checkpoint)"),
        ("search", "search the trained supernet (resumes the run directory's study)"),
        ("export", "export the best architecture under the budget (or --trial N)"),
        ("run", "train, search and export in one go (the quick start)"),
    ):
        p = sub.add_parser(name, help=help_, description=help_ + ". Any config key can be set as --section.key=value.")
        _common(p)
    # --- finetune (nas/finetune.py owns its options) ---
    fin = sub.add_parser("finetune", help="train the exported subnetwork standalone (inherited weights or from scratch); resumable",
                         description="Train the run's exported subnetwork on its own, from the supernet's weights or from scratch. Re-running resumes. Any train.* key can be set as --train.key=value.")
    _common(fin)
    fin.add_argument("--init", choices=("inherited", "scratch"), default="inherited",
                     help="start from the exported weights and BN statistics (default) or re-initialise; output in <run>/finetune/<init>/")
    fin.add_argument("--epochs", type=int, default=None, help="training epochs (default: the run's train.epochs)")
    fin.add_argument("--format", default=None,
                     help="formats to write besides torch (model.pt, always written), as for nas export: e.g. onnx,torchscript or all")
    # --- report (nas/report.py owns its options) ---
    rep = sub.add_parser("report", help="figures and a self-contained HTML/Markdown report of a run directory",
                         description="Pareto front, supernet training curves, ranking scatter and controller any-time curve as PNG files plus report.html / report.md; "
                                     "the same figures and the Pareto table go to the run's trackers. Set --trackers=... to choose them.")
    rep.add_argument("dir", nargs="?", metavar="DIR", help="run directory (or use --run-dir)")
    _common(rep)
    rep.add_argument("--out", default=None, help="output directory (default: DIR/report)")
    rep.add_argument("--no-trackers", action="store_true",
                     help="only write the files: send nothing to the run's trackers and take no lock (works while a run is in progress)")
    rep.add_argument("--resend", action="store_true", help="send to the trackers even if they already received a report of the same content")
    rank = sub.add_parser("rank", help="ranking report: supernet accuracy vs. standalone training of K architectures")
    _common(rank)
    rank.add_argument("--archs", type=int, default=20, help="number of architectures, stratified by size (default 20)")
    rank.add_argument("--epochs", type=int, default=None, help="standalone training epochs (default: the supernet's train.epochs)")
    rank.add_argument("--seeds", type=int, default=2, help="standalone seeds per architecture (>= 2 reports the ground truth's reliability)")
    rank.add_argument("--workers", type=int, default=None, help="parallel standalone trainings (default: one per core)")
    rank.add_argument("--standalone-dir", help="share standalone results between run directories (same data and recipe)")
    sp = sub.add_parser("spaces", help="list the search spaces and their sizes")
    sp.add_argument("--json", action="store_true")
    lat = sub.add_parser("latency", help="hardware cost model: calibrate a device profile or predict latency")
    lsub = lat.add_subparsers(dest="latency_command", required=True)
    cal = lsub.add_parser("calibrate", help="time sampled architectures on this machine and fit the device profile")
    pred = lsub.add_parser("predict", help="predict the latency of an architecture JSON file")
    for p in (cal, pred):
        _common(p)
        p.add_argument("--device", default="cpu", help="device profile name (calibration measures this machine's CPU)")
        p.add_argument("--profile", help="profile JSON path (default: the per-space cache file)")
    cal.add_argument("--threads", type=int, default=1, help="torch threads while timing (default 1)")
    cal.add_argument("--batch", type=int, default=1, help="batch size while timing (default 1)")
    cal.add_argument("--n", type=int, default=40, help="number of architectures to time")
    pred.add_argument("--arch", required=True, help="architecture JSON (e.g. <run>/export/arch.json)")
    pred.add_argument("--devices", help="comma-separated extra device profiles to predict at once (cpu, spec names from `nas latency specs`, or profile JSON paths)")
    val = lsub.add_parser("validate", help="sample N architectures, measure them on this machine, compare with the predictions")
    meas = lsub.add_parser("measure", help="measure a finished search's Pareto front and exported model on this machine (predicted vs. measured)")
    for p in (val, meas):
        _common(p)
        p.add_argument("--profile", help="profile JSON path (default: the run's pinned profile, else the cached cpu profile)")
        p.add_argument("--threads", type=int, default=1, help="torch threads while timing (default 1)")
        p.add_argument("--batch", type=int, default=1, help="batch size while timing (default 1)")
        p.add_argument("--device", default="cpu", help="device the measurement runs on (this machine's cpu)")
    val.add_argument("--n", type=int, default=100, help="number of architectures (default 100)")
    val.add_argument("--out-dir", help="where latency_validation.json/.png go (default: --run-dir, else the current directory)")
    meas.add_argument("--refit", action="store_true", help="also refit the profile's scale and offset to these measurements")
    lsub.add_parser("specs", help="list the spec-derived device profiles (approximate, from published peak figures)")
    tpl = lsub.add_parser("template", help="write a CSV listing every op of the space, to fill in with latencies measured on your device")
    imp = lsub.add_parser("import", help="make a device profile from a filled-in latency CSV (see `nas latency template`)")
    for p in (tpl, imp):
        _common(p)
    tpl.add_argument("--out", required=True, help="CSV file to write")
    imp.add_argument("--csv", required=True, help="the filled-in latency table")
    imp.add_argument("--device", required=True, help="name of the device the latencies were measured on")
    imp.add_argument("--profile", help="where to save the profile (default: the per-space cache, found again by --device NAME)")
    return parser


def _split_overrides(extra: Sequence[str]) -> list[str]:
    """``--a.b=1`` / ``--a.b 1`` / ``a.b=1`` -> ``["a.b=1"]``."""
    out, i = [], 0
    extra = list(extra)
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") and "=" not in item:
            raise SystemExit(f"nas: error: unexpected argument {item!r} (settings look like --section.key=value)")
        key = item[2:] if item.startswith("--") else item
        if "=" not in key:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise SystemExit(f"nas: error: setting --{key} needs a value (--{key}=VALUE)")
            key, i = f"{key}={extra[i + 1]}", i + 1
        out.append(key)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        overrides = _split_overrides(extra)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        errors = _user_errors()
    except ImportError as exc:  # a broken install should say so plainly
        print(f"nas: error: installation is incomplete ({exc})", file=sys.stderr)
        return 2
    try:
        return _dispatch(args, overrides)
    except KeyboardInterrupt:
        print("nas: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except errors as exc:
        if os.environ.get("NAS_DEBUG"):
            raise
        msg = " ".join(str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).split())  # always one line
        print(f"nas: error: {msg}  (NAS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace, overrides: list[str]) -> int:
    from nas import pipeline

    if args.command == "spaces":
        return pipeline.cmd_spaces(as_json=args.json)
    base = _load_base(args)
    if args.command == "latency":
        return pipeline.cmd_latency(args, base, overrides)
    if args.command == "rank":
        return pipeline.cmd_rank(args, base, overrides)
    if args.command == "finetune":
        from nas.finetune import cmd_finetune

        return cmd_finetune(args, base, overrides)
    if args.command == "report":
        from nas.report import cmd_report

        return cmd_report(args, overrides)
    run_dir = Path(args.run_dir) if args.run_dir else None
    t0 = time.perf_counter()
    summary: dict[str, Any] = pipeline.run_command(args.command, run_dir, base, overrides, quiet=args.quiet)
    summary["wall_seconds"] = round(time.perf_counter() - t0, 2)
    if args.json and summary.pop("rank", 0) == 0:  # under torchrun only rank 0 answers
        print(json.dumps(summary, sort_keys=True, default=str))
    return 0


def _load_base(args: argparse.Namespace) -> dict[str, Any] | None:
    from nas.config import load_yaml

    return load_yaml(args.config) if getattr(args, "config", None) else None


if __name__ == "__main__":
    sys.exit(main())
