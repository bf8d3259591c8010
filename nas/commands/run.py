"""``nas train``, ``nas search``, ``nas export`` and ``nas run`` (all three): the stages of one run directory.

Each verb opens the run directory through :func:`nas.run.context.open_run` with
the checks of :mod:`nas.commands.checks`, so a refused command writes nothing,
then runs its stages in order: train the supernet, search it, export the chosen
trial (with its report).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.commands.help import GENERAL

VERBS = {
    "train": "train the supernet (resumes from the run directory's last checkpoint)",
    "search": "search the trained supernet (resumes the run directory's study)",
    "export": "export the best architecture under the budget (or --trial N)",
    "run": "train, search and export in one go (the quick start)",
}
_LATENCY_MODEL = ("search.latency_budget_ms", "search.devices", "search.profile", "search.calibration_archs")
READS = {  # the settings each verb reads: its --help lists them (train: the cost model for single_path only)
    "train": (GENERAL, "data", "space", "train", *_LATENCY_MODEL),
    "search": (GENERAL, "data", "space", "train.bn_recal_batches", "search", "export.batch_size"),
    "export": (GENERAL, "data", "space", "train.bn_recal_batches", "search", "export"),
    "run": (GENERAL, "data", "space", "train", "search", "export"),
}
TABLE = (  # rows of the README's command table (what `nas --help` shows): command, what it does, example
    ("run", "train + search + export in one go", "nas run --run-dir runs/demo --data=fashion_mnist"),
    ("train", "supernet training, resumable", "nas train --run-dir runs/demo --epochs=8"),
    (
        "search",
        "search accuracy vs. latency on the trained supernet",
        "nas search --run-dir runs/demo --trials=40 --latency-budget-ms=4",
    ),
    (
        "export",
        "write and verify the chosen network in every format",
        "nas export --run-dir runs/demo --format=onnx,timm",
    ),
)


def add_parsers(sub: Any) -> None:
    from nas.commands.args import add_common

    for name, help_ in VERBS.items():
        p = sub.add_parser(
            name,
            help=help_,
            description=help_ + ". Any config key can be set as --section.key=value.",
            reads=READS[name],
        )
        add_common(p)
        p.set_defaults(handler=main)


def main(args: argparse.Namespace, base: Mapping[str, Any] | None, overrides: Sequence[str]) -> int:
    t0 = time.perf_counter()
    summary = run_command(
        args.command, Path(args.run_dir) if args.run_dir else None, base, overrides, quiet=args.quiet
    )
    summary["wall_seconds"] = round(time.perf_counter() - t0, 2)
    if args.json and summary.pop("rank", 0) == 0:  # under torchrun only rank 0 answers
        print(json.dumps(summary, sort_keys=True, default=str))
    return 0


def run_command(
    command: str,
    run_dir: Path | None,
    base: Mapping[str, Any] | None,
    overrides: Sequence[str],
    quiet: bool = False,
    table_stream: Any = None,
) -> dict[str, Any]:
    """Run ``train``, ``search``, ``export`` or ``run`` (all three) and return the summary."""
    from nas.commands.checks import preflight, validate_config
    from nas.cost.store import pin_profiles
    from nas.export.exporter import ExportError, choose_trial, export_arch, failed_formats
    from nas.pareto import pareto_front
    from nas.report.builder import report_after_run
    from nas.run.config import ConfigError
    from nas.run.context import open_run
    from nas.run.files import default_run_dir
    from nas.search import format_front, open_controller, run_search, write_outputs
    from nas.training.checkpoint import load_supernet
    from nas.training.distributed import cleanup, init_distributed
    from nas.training.trainer import train_supernet

    dist = init_distributed()
    if dist.world_size > 1 and command != "train":
        raise ConfigError(
            f"`nas {command}` runs in one process; only `nas train` is launched with torchrun (then"
            " search/export the run directory)"
        )
    if dist.world_size > 1 and run_dir is None:
        raise ConfigError("under torchrun give --run-dir: every rank must use the same run directory")
    run_dir = run_dir or default_run_dir(command)
    checked: dict[str, Any] = {}
    with open_run(
        run_dir,
        base,
        overrides,
        progress=not quiet,
        quiet=quiet,
        dist=dist,
        search_only=command == "search",
        validate=validate_config,
        preflight=lambda c: checked.update(preflight(command, c, dist)),
    ) as ctx:
        ctx.say(f"run directory: {ctx.run_dir}")
        formats = checked.get("formats", [])
        summary: dict[str, Any] = {"command": command, "run_dir": str(ctx.run_dir)}
        if "costs" in checked:
            pin_profiles(
                ctx, checked["costs"]
            )  # the command is accepted: a resumed run predicts the same numbers
        if command in ("train", "run"):
            summary["train"] = train_supernet(
                ctx, dist, checked.pop("resume_state", None), checked.pop("trainer")
            )
            summary["world_size"] = dist.world_size
        if command in ("search", "export", "run"):
            supernet = checked.pop("supernet", None)
            if supernet is None and not (command == "search" and "table" in checked):  # tabular: none needed
                supernet = load_supernet(ctx)
            devices = ctx.cfg.search.devices
            costs = checked["costs"]
            if command in ("search", "run"):
                result = run_search(ctx, supernet, costs, checked.get("table"))
                table = format_front(result["pareto"], result["limits"], devices)
                if not quiet:
                    print(table, file=table_stream or sys.stdout, flush=True)
                summary["search"] = {
                    "trials": result["trials"],
                    "pareto_size": len(result["pareto"]),
                    "search_seconds": round(result["search_seconds"], 2),
                }
                if "table" in result:  # a tabular search: what it found against the table's optimum
                    summary["search"]["table"] = result["table"]
            if command in ("export", "run"):
                if command == "export":
                    row, rows, limits = checked["row"], checked["rows"], checked["limits"]
                else:
                    rows, limits = result["rows"], result["limits"]
                    row = choose_trial(rows, ctx.cfg.export.trial, limits)
                meta = export_arch(ctx, supernet, costs, row, formats=formats)
                ctx.trackers.summary(
                    {
                        k: meta[k]
                        for k in (
                            "test_accuracy",
                            "val_accuracy",
                            "latency_pred_ms",
                            "latency_measured_ms",
                            "params",
                            "macs",
                        )
                    }
                )
                ctx.say(
                    f"exported trial {meta['trial']} ({meta['arch_id']}) to {ctx.run_dir / 'export'}: test"
                    f" acc {meta['test_accuracy']:.4f}, latency predicted {meta['latency_pred_ms']:.3f} ms /"
                    f" measured {meta['latency_measured_ms']:.3f} ms, {meta['params']:,} params"
                )
                summary.update(
                    {
                        k: meta[k]
                        for k in (
                            "arch_id",
                            "test_accuracy",
                            "val_accuracy",
                            "latency_pred_ms",
                            "latency_measured_ms",
                            "params",
                        )
                    }
                )
                summary["export_dir"] = str(ctx.run_dir / "export")
                summary["formats"] = {f: r["ok"] for f, r in meta["formats"].items()}
                ctx.say(
                    "formats: "
                    + ", ".join(
                        f"{f} {'ok' if r['ok'] else 'FAILED'}"
                        + (f" (max diff {r['max_abs_diff']:.2g})" if "max_abs_diff" in r else "")
                        for f, r in meta["formats"].items()
                    )
                )
                if (
                    command == "export"
                ):  # the search's outputs now judge every trial by the constraints just used
                    controller, _ = open_controller(ctx, costs, announce=False)  # the checks said it
                    write_outputs(ctx, controller, rows, pareto_front(rows), limits)
                    controller.close()
                report_after_run(
                    ctx
                )  # figures + report.html in <run>/report/ and to the trackers (a failure only warns)
                failed = failed_formats(meta)
                if failed:
                    raise ExportError(
                        f"export format(s) failed: {'; '.join(f'{f}: {e}' for f, e in failed.items())} (the"
                        f" other formats are in {ctx.run_dir / 'export'}; see meta.json)"
                    )
        ctx.say(f"run directory: {ctx.run_dir}")
    cleanup(dist)
    summary["rank"] = dist.rank
    return summary
