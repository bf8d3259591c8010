"""Supernet overhead: forward+backward of a subnetwork run through the supernet vs. the same network extracted.

    python scripts/bench_supernet_overhead.py [--space mbv3] [--width-mult 0.5] [--batch 64] [--out results/supernet_overhead.md]

Both are timed interleaved in rounds (fastest step over rounds spread across
time, as the latency benchmark does: this shared VM alternates speed phases),
for the smallest, median (by MACs) and largest architecture.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from nas.machine import machine_markdown
from nas.ranking import arch_macs, stratified_archs
from nas.rundir import atomic_write_text
from search_spaces import create_space


def step_time(models: list, x: torch.Tensor, y: torch.Tensor, rounds: int, min_seconds: float) -> list[float]:
    def one(m) -> float:
        t0 = time.perf_counter()
        F.cross_entropy(m(x), y).backward()
        return time.perf_counter() - t0

    best = [float("inf")] * len(models)
    for m in models:
        m.train()
        one(m)
    start, r = time.perf_counter(), 0
    order = np.random.default_rng(0)
    while r < rounds or time.perf_counter() - start < min_seconds:
        for i in order.permutation(len(models)):
            for m in models:
                m.zero_grad(set_to_none=True)
            best[i] = min(best[i], one(models[i]))
        r += 1
    return best


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
    torch.set_num_threads(args.threads)
    space = create_space(args.space, num_classes=10, in_channels=1, resolution=args.resolution, width_mult=args.width_mult)
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
        t_super, t_static = step_time([supernet, static], x, y, args.rounds, min_seconds=3.0)
        rows.append((label, arch.id, int(arch_macs(space, [arch])[0]), t_super * 1e3, t_static * 1e3, t_super / t_static))
        print(rows[-1])
    lines = [
        "# Supernet overhead: subnetwork through the supernet vs. extracted",
        "",
        f"Forward + backward of one training batch ({args.batch} x {tuple(space.input_shape)}), space `{args.space}` width {args.width_mult}, "
        f"{args.threads} threads, fastest of >= {args.rounds} interleaved rounds over >= 3 s. "
        f"Reproduce: `python scripts/bench_supernet_overhead.py --space {args.space} --width-mult {args.width_mult} --batch {args.batch} --threads {args.threads}`.",
        "",
        machine_markdown(),
        "| architecture | arch id | MACs / image | supernet ms | extracted ms | ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *[f"| {r[0]} | `{r[1]}` | {r[2]:,} | {r[3]:.2f} | {r[4]:.2f} | **{r[5]:.3f}** |" for r in rows],
        "",
        "Target (issue 3): ratio <= 1.10 for the median architecture on CPU.",
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
