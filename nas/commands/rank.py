"""``nas rank``: does the supernet rank architectures the way training them alone does?"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.commands.help import GENERAL

READS = (GENERAL, "data", "space", "train")  # the settings it reads: its --help lists them
TABLE = (  # its row of the README's command table (what `nas --help` shows): command, what it does, example
    ("rank", "does the supernet rank like standalone training?", "nas rank --run-dir runs/demo --archs 20"),
)


def add_parsers(sub: Any) -> None:
    from nas.commands.args import add_common

    rank = sub.add_parser(
        "rank",
        help="ranking report: supernet accuracy vs. standalone training of K architectures",
        reads=READS,
    )
    add_common(rank)
    rank.add_argument(
        "--archs", type=int, default=20, help="number of architectures, stratified by size (default 20)"
    )
    rank.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="standalone training epochs (default: the supernet's train.epochs)",
    )
    rank.add_argument(
        "--seeds",
        type=int,
        default=2,
        help="standalone seeds per architecture (>= 2 reports the ground truth's reliability)",
    )
    rank.add_argument(
        "--workers", type=int, default=None, help="parallel standalone trainings (default: one per core)"
    )
    rank.add_argument(
        "--standalone-dir", help="share standalone results between run directories (same data and recipe)"
    )
    rank.set_defaults(handler=main)


def main(args: argparse.Namespace, base: Mapping[str, Any] | None, overrides: Sequence[str]) -> int:
    from nas.commands.checks import check_sampler_options, validate_config
    from nas.ranking import run_ranking
    from nas.run.config import ConfigError
    from nas.run.context import open_run

    if not args.run_dir:
        raise ConfigError("nas rank needs --run-dir of a run with a trained supernet")
    with open_run(
        Path(args.run_dir),
        base,
        overrides,
        progress=not args.quiet,
        quiet=args.quiet,
        validate=validate_config,
        preflight=check_sampler_options,
    ) as ctx:
        epochs = args.epochs or ctx.cfg.train.epochs
        report = run_ranking(
            ctx,
            args.archs,
            epochs,
            seeds=args.seeds,
            workers=args.workers,
            standalone_dir=Path(args.standalone_dir) if args.standalone_dir else None,
        )
    keys = [k for k in report if k != "rows"]
    summary = {k: report[k] for k in keys}
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        for k in keys:
            if k != "ground_truth_warning":
                print(f"{k:>26}: {report[k]}")
        print(f"{'report':>26}: {Path(args.run_dir) / 'ranking.json'} and ranking.png")
        if "ground_truth_warning" in report:
            print(f"warning: {report['ground_truth_warning']}")
    return 0
