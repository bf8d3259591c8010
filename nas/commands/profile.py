"""``nas profile``: what the configured space's networks cost, and whether a budget can be met, before any
training.

For the space as configured (data set, width, options): the smallest, median and largest value of every metric
a constraint can limit (predicted latency on each device, parameters, MACs, peak activation memory) over a
seeded sample of architectures, the number of distinct networks, the reference architecture a ``"60%"`` budget
is
a share of, and for each constraint given the share of the sample that meets it, or why none can.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SAMPLES = 10_000
READS = (  # the settings it reads: its --help lists them
    "seed",
    "data",
    "space",
    "search.latency_budget_ms",
    "search.constraints",
    "search.devices",
    "search.profile",
    "search.calibration_archs",
    "export.batch_size",
)
TABLE = (  # its row of the README's command table (what `nas --help` shows): command, what it does, example
    (
        "profile",
        "before any training: what the space's networks cost (latency, params, MACs, memory) and which share"
        " meets each constraint",
        "nas profile --max-params=60% --latency-budget-ms=3",
    ),
)


def add_parsers(sub: Any) -> None:
    from nas.commands.args import add_common

    p = sub.add_parser(
        "profile",
        help=(
            "the space's smallest/median/largest latency, params, MACs and memory, and whether the"
            " constraints can be met"
        ),
        description=(
            "No training: samples the configured space, predicts every metric a constraint can limit, and"
            " says which share of the sample meets each constraint (--latency-budget-ms, --max-params,"
            ' --max-macs, --max-memory-mb, --search.constraints="{macs: 50%}").'
        ),
        reads=READS,
    )
    add_common(p)
    p.add_argument(
        "--samples", type=int, default=SAMPLES, help=f"architectures sampled (default {SAMPLES:,})"
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace, base: Mapping[str, Any] | None, overrides: Sequence[str]) -> int:
    from nas.commands.checks import validate_config
    from nas.run.config import ConfigError
    from nas.run.context import resolve_config

    if args.samples < 1:
        raise ConfigError(f"--samples={args.samples} is not allowed: sample at least one architecture")
    run_dir = Path(args.run_dir) if args.run_dir else None
    cfg = resolve_config(run_dir, base, overrides)
    validate_config(cfg)
    report = profile(cfg, run_dir, args.samples, progress=not args.quiet)
    print(json.dumps(report, sort_keys=True) if args.json else format_profile(report))
    return 0


def profile(cfg: Any, run_dir: Path | None, samples: int, progress: bool = False) -> dict[str, Any]:
    """The profile as data (what ``--json`` prints)."""
    import numpy as np

    from nas.constraints import describe, requested, resolve, violations
    from nas.cost.metrics import arch_metrics
    from nas.cost.store import profile_for
    from nas.run.context import build_space

    space = build_space(cfg)
    devices = list(cfg.search.devices)
    costs = [
        profile_for(space, d, cfg.search.profile if i == 0 else None, run_dir, progress)
        for i, d in enumerate(devices)
    ]
    rng = np.random.default_rng(cfg.seed)
    reference = space.reference_arch()
    archs = [space.smallest(), space.largest(), reference, *(space.sample(rng) for _ in range(samples))]
    metrics = arch_metrics(space, costs, devices, archs, batch=cfg.export.batch_size)
    sample = {k: v[3:] for k, v in metrics.items()}
    table = {
        k: {
            "smallest": float(v.min()),
            "median": float(np.median(sample[k])),
            "largest": float(v.max()),
            "reference": float(v[2]),
        }
        for k, v in metrics.items()
    }
    limits = resolve(requested(cfg), {k: float(v[2]) for k, v in metrics.items()})
    checks = []
    rows = [{k: float(v[i]) for k, v in sample.items()} for i in range(samples)]
    met_all = np.array([max(violations(r, limits), default=0.0) <= 0 for r in rows])
    for metric, limit in limits.items():
        share = float(np.mean(sample[metric] <= limit.value))
        floor = table[metric]["smallest"]
        checks.append({
            "constraint": limit.describe(),
            "share_meeting": share,
            "can_be_met": floor <= limit.value,
            "smallest": floor,
        })  # fmt: skip
    return {
        "space": space.name,
        "data": cfg.data.name,
        "distinct_networks": float(space.num_architectures()),
        "samples": samples,
        "seed": cfg.seed,
        "devices": devices,
        "memory_batch": cfg.export.batch_size,
        "reference_arch_id": reference.id,
        "reference_is_largest": reference == space.largest(),
        "metrics": table,
        "constraints": checks,
        "constraints_text": describe(limits),
        "share_meeting_all": float(met_all.mean()) if limits else None,
    }


def format_profile(r: Mapping[str, Any]) -> str:
    """The profile as the table ``nas profile`` prints."""
    ref = (
        "the largest architecture" if r["reference_is_largest"] else f"architecture {r['reference_arch_id']}"
    )
    lines = [
        f"space {r['space']} on {r['data']}: {r['distinct_networks']:.3g} distinct networks; "
        f"{r['samples']:,} sampled (seed {r['seed']}); latency predicted on {', '.join(r['devices'])}; "
        f'memory at batch {r["memory_batch"]}; a share ("60%") is of the reference, {ref}',
        f"{'metric':<22} {'smallest':>12} {'median':>12} {'largest':>12} {'reference':>12}",
    ]
    for metric, v in r["metrics"].items():
        lines.append(
            f"{metric:<22} {_num(v['smallest']):>12} {_num(v['median']):>12} {_num(v['largest']):>12}"
            f" {_num(v['reference']):>12}"
        )
    if not r["constraints"]:
        lines.append(
            "no constraints given (--latency-budget-ms, --max-params, --max-macs, --max-memory-mb,"
            " --search.constraints)"
        )
    for c in r["constraints"]:
        verdict = (
            f"met by {100 * c['share_meeting']:.1f}% of the sample"
            if c["can_be_met"]
            else f"cannot be met: smallest is {_num(c['smallest'])}"
        )
        lines.append(f"{c['constraint']}: {verdict}")
    if r["share_meeting_all"] is not None and len(r["constraints"]) > 1:
        lines.append(f"all constraints together: met by {100 * r['share_meeting_all']:.1f}% of the sample")
    return "\n".join(lines)


def _num(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"
