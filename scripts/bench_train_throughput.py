"""Supernet training throughput (images/s) on CIFAR-10-sized input, per speed option.

    python scripts/bench_train_throughput.py [--device auto] [--batch 256] [--steps 20] [--out
    results/train_throughput.md]

Runs the real training step (`nas.training.trainer.Trainer.train_step`, sandwich rule) on
synthetic 3x32x32 batches already on the device, so it measures the model and
the step, not the disk. On a GPU it compares fp32, bf16 autocast, channels-last
and torch.compile; on a CPU only the options that apply there. The figures go to
results/data/train_throughput.json and the report is rendered from that file
alone (`render`, also called by scripts/make_results.py).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _results import data_path, machine_block, provenance, save_raw, write_markdown

NAME = "train_throughput"
MARKDOWN = "train_throughput.md"


def measure(settings: list[str], device: str, batch: int, steps: int, warmup: int) -> float:
    """Images per second of the training step under ``settings`` (one image counted once per step)."""
    import torch

    from nas.run.context import open_run
    from nas.training.plans import SupernetPlan
    from nas.training.trainer import Trainer
    from search_spaces import create_space

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            "space.name=mbv3",
            "data.name=digits",
            "data.resolution=32",
            f"device={device}",
            "trackers=jsonl",
            f"data.batch_size={batch}",
            *settings,
        ]
        with open_run(tmp, overrides=overrides, progress=False, quiet=True) as ctx:
            # CIFAR-sized supernet (3 channels, 10 classes) on synthetic device-resident batches
            ctx.space = create_space(
                "mbv3", num_classes=10, in_channels=3, resolution=32, width_mult=ctx.cfg.space.width_mult
            )
            trainer = Trainer(ctx, ctx.space.build_supernet(), SupernetPlan(ctx), None, seed=0)
            x = torch.randn(batch, 3, 32, 32, device=ctx.device)
            y = torch.randint(0, 10, (batch,), device=ctx.device)
            for s in range(warmup):
                trainer.train_step([(x, y)], s)
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for s in range(steps):
                trainer.train_step([(x, y)], warmup + s)
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()
            return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default="results/train_throughput.md")
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and args.device != "cpu"
    device = "cuda" if cuda else "cpu"
    batch = args.batch or (256 if cuda else 64)
    steps = args.steps or (30 if cuda else 5)
    variants = {"fp32": []}
    if cuda:
        variants |= {
            "bf16": ["train.amp=bf16"],
            "bf16 + channels-last": ["train.amp=bf16", "train.channels_last=true"],
            "bf16 + channels-last + compile": [
                "train.amp=bf16",
                "train.channels_last=true",
                "train.compile=true",
            ],
        }
    else:
        variants |= {"bf16 autocast": ["train.amp=bf16"]}
    rows = []
    for name, settings in variants.items():
        ips = measure(settings, device, batch, steps, warmup=3 if not cuda else 10)
        rows.append({"variant": name, "images_per_second": ips})
        print(name, f"{ips:.0f} images/s", flush=True)
    raw = {
        **provenance(NAME, {"device": device, "batch": batch, "steps": steps}),
        "cuda": cuda,
        "device_name": torch.cuda.get_device_name() if cuda else "CPU",
        "rows": rows,
    }
    save_raw(data_path(args.out, NAME), raw)
    out = Path(args.out)
    render(raw, out.parent, md_name=out.name)
    print(out.read_text())


def render(raw: dict[str, Any], out_dir: Path, md_name: str = MARKDOWN, figures: bool = True) -> list[Path]:
    """train_throughput.md from the data alone (no figure)."""
    s = raw["settings"]
    lines = [
        "# Supernet training throughput (CIFAR-10-sized input)",
        "",
        (
            "`mbv3` width 0.5 supernet, 3x32x32 input, sandwich rule (4 subnetworks per step), batch"
            f" {s['batch']}, {s['steps']} timed steps, device: **{raw['device_name']}**. An image counts once"
            " per step (the 4 subnetworks per step are included in its cost). Reproduce: `python"
            f" scripts/bench_train_throughput.py --device {s['device']}`."
        ),
        "",
        machine_block(raw["machine"]),
        "| variant | images/s |",
        "| --- | ---: |",
        *[f"| {r['variant']} | {r['images_per_second']:,.0f} |" for r in raw["rows"]],
        "",
    ]
    if not raw["cuda"]:
        lines += [
            (
                "No GPU was available for this measurement; on a CUDA machine the same command also measures"
                " bf16, channels-last and torch.compile."
            ),
            "",
        ]
    return [write_markdown(out_dir / md_name, lines)]


if __name__ == "__main__":
    main()
