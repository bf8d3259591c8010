"""``nas report DIR``: figures and a self-contained HTML/Markdown report of a run directory, sent to its
trackers."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

READS = ("trackers", "wandb_project", "wandb_mode")  # the settings it reads: its --help lists them
TABLE = (  # its row of the README's command table (what `nas --help` shows): command, what it does, example
    (
        "report",
        "figures + self-contained HTML/Markdown report (also written by `nas run`)",
        "nas report runs/demo",
    ),
)


def add_parsers(sub: Any) -> None:
    from nas.commands.args import add_common

    rep = sub.add_parser(
        "report",
        help="figures and a self-contained HTML/Markdown report of a run directory",
        description=(
            "Pareto front, supernet training curves, ranking scatter and controller any-time curve as PNG"
            " files plus report.html / report.md; the same figures and the Pareto table go to the run's"
            " trackers. Set --trackers=... to choose them."
        ),
        reads=READS,
    )
    rep.add_argument("dir", nargs="?", metavar="DIR", help="run directory (or use --run-dir)")
    add_common(rep)
    rep.add_argument("--out", default=None, help="output directory (default: DIR/report)")
    rep.add_argument(
        "--no-trackers",
        action="store_true",
        help=(
            "only write the files: send nothing to the run's trackers and take no lock (works while a run is"
            " in progress)"
        ),
    )
    rep.add_argument(
        "--resend",
        action="store_true",
        help="send to the trackers even if they already received a report of the same content",
    )
    rep.set_defaults(handler=main)


def main(args: argparse.Namespace, base: Mapping[str, Any] | None, overrides: Sequence[str]) -> int:
    """``nas report DIR [--out OUT] [--no-trackers] [--resend] [--trackers=...]``."""
    from nas.report.builder import (
        already_tracked,
        configured_tracker_names,
        track_report,
        tracker_names,
        write_report,
    )
    from nas.run.config import ConfigError
    from nas.run.context import CONFIG_FILE, resolve_config
    from nas.run.files import RunDirError, RunLock
    from nas.run.tracking import make_trackers

    given = [p for p in (args.dir, args.run_dir) if p]
    if not given:
        raise ConfigError("nas report needs a run directory: nas report DIR")
    if len(given) == 2 and Path(given[0]).resolve() != Path(given[1]).resolve():
        raise ConfigError(f"two run directories given ({given[0]} and --run-dir {given[1]}); give one")
    run_dir = Path(given[0]).expanduser().resolve()
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    cfg = resolve_config(
        run_dir, base, overrides
    )  # e.g. --trackers=jsonl,tensorboard; settings of the trained supernet cannot change
    track = not args.no_trackers
    sent = False
    try:
        lock = RunLock(run_dir) if track else nullcontext()  # the trackers append to the run's event log
        with lock:
            result = write_report(run_dir, args.out, cfg)
            if track and (args.resend or not already_tracked(result, configured_tracker_names(cfg.trackers))):
                with make_trackers(
                    run_dir,
                    cfg.trackers,
                    config=cfg.to_dict(),
                    wandb_mode=cfg.wandb_mode,
                    project=cfg.wandb_project,
                ) as trackers:  # wandb starts only when needed
                    sent = track_report(result, trackers, tracker_names(trackers), resend=True)
    except RunDirError as e:
        if track and "another process" in str(e):
            raise RunDirError(
                f"{e} (`nas report DIR --no-trackers` writes the report files without touching the run's"
                " trackers)"
            ) from None
        raise
    figures = {n: str(f) if isinstance(f, Path) else f"not available: {f}" for n, f in result.figures.items()}
    if args.json:
        print(
            json.dumps(
                {
                    "command": "report",
                    "run_dir": str(run_dir),
                    "out_dir": str(result.out_dir),
                    "html": str(result.html),
                    "markdown": str(result.markdown),
                    "figures": figures,
                    "pareto_size": len(result.record.front),
                    "sent_to_trackers": sent,
                    "seconds": round(result.seconds, 2),
                },
                sort_keys=True,
            )
        )
    elif not args.quiet:
        for n, f in figures.items():
            print(f"{n:>9}: {f}")
        print(f"   report: {result.html} (self-contained) and {result.markdown}")
        print(
            "trackers: "
            + (
                "sent"
                if sent
                else (
                    "skipped (--no-trackers)"
                    if not track
                    else "already have this report (--resend sends it again)"
                )
            ),
            file=sys.stderr,
        )
    return 0
