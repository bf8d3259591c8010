"""``nas finetune``: train the exported subnetwork alone, from its inherited weights or from scratch;
resumable."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.commands.help import GENERAL, ROLE_PREFIX

# what fine-tuning may set (nas.finetune: train.*, the recipe, where and how it runs): its --help lists them
READS = (GENERAL, "train", ROLE_PREFIX + "recipe", ROLE_PREFIX + "runtime")
TABLE = (  # its row of the README's command table (what `nas --help` shows): command, what it does, example
    (
        "finetune",
        "train the exported network alone (inherited weights or scratch)",
        "nas finetune --run-dir runs/demo --epochs 5",
    ),
)


def add_parsers(sub: Any) -> None:
    from nas.commands.args import add_common

    fin = sub.add_parser(
        "finetune",
        help="train the exported subnetwork standalone (inherited weights or from scratch); resumable",
        description=(
            "Train the run's exported subnetwork on its own, from the supernet's weights or from scratch."
            " Re-running resumes. Any train.* key can be set as --train.key=value."
        ),
        reads=READS,
    )
    add_common(fin)
    fin.add_argument(
        "--init",
        choices=("inherited", "scratch"),
        default="inherited",
        help=(
            "start from the exported weights and BN statistics (default) or re-initialise; output in"
            " <run>/finetune/<init>/"
        ),
    )
    fin.add_argument(
        "--epochs", type=int, default=None, help="training epochs (default: the run's train.epochs)"
    )
    fin.add_argument(
        "--format",
        default=None,
        help=(
            "formats to write besides torch (model.pt, always written), as for nas export: e.g."
            " onnx,torchscript or all"
        ),
    )
    fin.set_defaults(handler=main)


def _formats_arg(value: str | None) -> list[str]:
    if value is None:
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def main(args: argparse.Namespace, base: Mapping[str, Any] | None, overrides: Sequence[str]) -> int:
    """``nas finetune --run-dir DIR [--init inherited|scratch] [--epochs N] [--format ...] [--train.key=value
    ...]``."""
    from nas.commands.checks import validate_config
    from nas.finetune import run_finetune
    from nas.run.config import ConfigError

    if not args.run_dir:
        raise ConfigError("nas finetune needs --run-dir of a run with an export (`nas export --run-dir DIR`)")
    extra = [f"train.epochs={args.epochs}"] if args.epochs is not None else []
    t0 = time.perf_counter()
    result = run_finetune(
        Path(args.run_dir),
        args.init,
        base,
        [*overrides, *extra],
        formats=_formats_arg(args.format),
        progress=not args.quiet,
        quiet=args.quiet,
        validate=validate_config,
    )
    summary = {k: v for k, v in result.items() if k not in ("history", "recipe")}
    summary.update(
        command="finetune",
        run_dir=str(Path(args.run_dir).expanduser().resolve()),
        already_done=result.get("already_done", False),
        wall_seconds=round(time.perf_counter() - t0, 2),
    )
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(
            f"fine-tuned {result['arch_id']} ({result['init']}, {result['epochs']} epochs,"
            f" {result['seconds']:.1f}s): "
            f"val acc {result['val_accuracy_before']:.4f} -> {result['val_accuracy_after']:.4f}, "
            f"test acc {result['test_accuracy_before']:.4f} -> {result['test_accuracy_after']:.4f}\n"
            f'model: {result["model_dir"]}  (nas.load_subnet("{result["model_dir"]}"); result.json there)'
        )
    return 0
