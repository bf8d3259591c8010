"""Supernet overhead: forward+backward of a subnetwork run through the supernet vs. the same network
extracted.

    python scripts/bench_supernet_overhead.py [--space mbv3] [--width-mult 0.5] [--batch 64] [--out
    results/supernet_overhead.md]

Both are timed interleaved in rounds (fastest step over rounds spread across
time, as the latency benchmark does: this shared VM alternates speed phases),
for the smallest, median (by MACs) and largest architecture. The times go to
results/data/supernet_overhead.json and the report is rendered from that file
alone (`render`, also called by scripts/make_results.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import data_path, machine_block, provenance, save_raw, write_markdown

NAME = "supernet_overhead"
MARKDOWN = "supernet_overhead.md"


def step_times(models: list, x, y, rounds: int, min_seconds: float) -> np.ndarray:
    """Seconds of one training step of each model, ``[rounds, models]``: in every round each model runs once,
    in shuffled order, so the models of a round share the machine's speed phase."""
    import torch.nn.functional as F

    def one(m) -> float:
        t0 = time.perf_counter()
        F.cross_entropy(m(x), y).backward()
        return time.perf_counter() - t0

    for m in models:
        m.train()
        one(m)
    start, out = time.perf_counter(), []
    order = np.random.default_rng(0)
    while len(out) < rounds or time.perf_counter() - start < min_seconds:
        row = np.empty(len(models))
        for i in order.permutation(len(models)):
            for m in models:
                m.zero_grad(set_to_none=True)
            row[i] = one(models[i])
        out.append(row)
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mbv3")
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default="results/supernet_overhead.md")
    args = ap.parse_args()
    settings = {
        k: getattr(args, k) for k in ("space", "width_mult", "resolution", "batch", "threads", "rounds")
    }
    raw = {**provenance(NAME, settings), **measure(args)}
    save_raw(data_path(args.out, NAME), raw)
    out = Path(args.out)
    render(raw, out.parent, md_name=out.name)
    print(out.read_text())


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Fastest training step through the supernet and extracted, per architecture (milliseconds)."""
    import torch

    from nas.ranking import arch_macs, stratified_archs
    from search_spaces import create_space

    torch.set_num_threads(args.threads)
    space = create_space(
        args.space, num_classes=10, in_channels=1, resolution=args.resolution, width_mult=args.width_mult
    )
    torch.manual_seed(0)
    supernet = space.build_supernet()
    pool = stratified_archs(space, 101, seed=0, span="pool")
    median = pool[int(np.argsort(arch_macs(space, pool))[50])]
    x = torch.randn(args.batch, *space.input_shape)
    y = torch.randint(0, 10, (args.batch,))
    rows = []
    for label, arch in (("smallest", space.smallest()), ("median", median), ("largest", space.largest())):
        spec = space.to_spec(arch)
        supernet.set_active(spec)
        static = supernet.extract(spec)
        t = step_times([supernet, static], x, y, args.rounds, min_seconds=3.0)
        ratio = t[:, 0] / t[:, 1]  # within a round: the same speed phase for both
        rows.append(
            {
                "architecture": label,
                "arch_id": arch.id,
                "macs": int(arch_macs(space, [arch])[0]),
                "rounds": len(t),
                "supernet_ms": float(np.median(t[:, 0])) * 1e3,
                "extracted_ms": float(np.median(t[:, 1])) * 1e3,
                "ratio_median": float(np.median(ratio)),
                "ratio_p25": float(np.percentile(ratio, 25)),
                "ratio_p75": float(np.percentile(ratio, 75)),
            }
        )
        print(rows[-1])
    return {"input_shape": list(space.input_shape), "rows": rows}


def _how(raw: dict[str, Any]) -> str:
    if "ratio_median" in raw["rows"][0]:
        return (
            "each round runs both once in shuffled order; times are medians over rounds, the ratio is the"
            " median of the per-round ratios (25th - 75th percentile), so both sides of a ratio share a speed"
            " phase"
        )
    return "fastest of the interleaved rounds"


def _ratio(r: dict[str, Any]) -> str:
    if "ratio_median" in r:
        return f"**{r['ratio_median']:.3f}** ({r['ratio_p25']:.3f} - {r['ratio_p75']:.3f})"
    return f"**{r['supernet_ms'] / r['extracted_ms']:.3f}**"


def render(raw: dict[str, Any], out_dir: Path, md_name: str = MARKDOWN, figures: bool = True) -> list[Path]:
    """supernet_overhead.md from the data alone (no figure); the ratio is supernet / extracted time."""
    s = raw["settings"]
    lines = [
        "# Supernet overhead: subnetwork through the supernet vs. extracted",
        "",
        (
            f"Forward + backward of one training batch ({s['batch']} x {tuple(raw['input_shape'])}), space"
            f" `{s['space']}` width {s['width_mult']}, {s['threads']} threads, >= {s['rounds']} rounds over"
            f" >= 3 s, {_how(raw)}. Reproduce: `python scripts/bench_supernet_overhead.py --space"
            f" {s['space']} --width-mult {s['width_mult']} --batch {s['batch']} --threads {s['threads']}`."
        ),
        "",
        machine_block(raw["machine"]),
        "| architecture | arch id | MACs / image | supernet ms | extracted ms | ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *[
            f"| {r['architecture']} | `{r['arch_id']}` | {r['macs']:,} | {r['supernet_ms']:.2f} |"
            f" {r['extracted_ms']:.2f} | {_ratio(r)} |"
            for r in raw["rows"]
        ],
        "",
        "Target (issue 3): ratio <= 1.10 for the median architecture on CPU.",
        "",
    ]
    return [write_markdown(out_dir / md_name, lines)]


if __name__ == "__main__":
    main()
