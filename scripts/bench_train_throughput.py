"""Supernet training throughput (images/s) on CIFAR-10-sized input, per speed option.

    python scripts/bench_train_throughput.py [--device auto] [--batch 256] [--steps 20] [--no-compile] [--out
    results/train_throughput.md]

Runs the real training step (`nas.training.trainer.Trainer.train_step`, sandwich rule) on
synthetic 3x32x32 batches already on the device, so it measures the model and
the step, not the disk. On a GPU it compares fp32, bf16 autocast, channels-last
and torch.compile; on a CPU only the options that apply there. The figures go to
results/data/<name of --out>.json (``--out results/train_throughput_gpu.md``:
results/data/train_throughput_gpu.json, so a GPU measurement never overwrites the
CPU one) and the report is rendered from that file alone (`render`, also called
by scripts/make_results.py).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import data_path, machine_block, provenance, save_raw, write_markdown

NAME = "train_throughput"
MARKDOWN = "train_throughput.md"


def trainer_for(settings: list[str], device: str, batch: int, stack: Any) -> tuple[Any, Any, Any]:
    """A trainer of the CIFAR-sized supernet under ``settings`` and one device-resident batch."""
    import torch

    from nas.run.context import open_run
    from nas.training.plans import SupernetPlan
    from nas.training.trainer import Trainer
    from search_spaces import create_space

    tmp = stack.enter_context(tempfile.TemporaryDirectory())
    overrides = [
        "space.name=mbv3", "data.name=digits", "data.resolution=32", f"device={device}", "trackers=jsonl",
        f"data.batch_size={batch}", *settings,
    ]  # fmt: skip
    ctx = stack.enter_context(open_run(tmp, overrides=overrides, progress=False, quiet=True))
    # CIFAR-sized supernet (3 channels, 10 classes) on synthetic device-resident batches
    ctx.space = create_space(
        "mbv3", num_classes=10, in_channels=3, resolution=32, width_mult=ctx.cfg.space.width_mult
    )
    trainer = Trainer(ctx, ctx.space.build_supernet(), SupernetPlan(ctx), None, seed=0)
    x = torch.randn(batch, 3, 32, 32, device=ctx.device)
    y = torch.randint(0, 10, (batch,), device=ctx.device)
    return trainer, x, y


def measure(
    variants: dict[str, list[str]], device: str, batch: int, steps: int, warmup: int, rounds: int
) -> dict[str, list[float]]:
    """Images per second of each variant's training step, per round; variants alternate within a round, so a
    shared machine's speed phases fall on all of them alike."""
    import contextlib

    import torch

    out: dict[str, list[float]] = {name: [] for name in variants}
    with contextlib.ExitStack() as stack:
        built = {name: trainer_for(settings, device, batch, stack) for name, settings in variants.items()}
        for trainer, x, y in built.values():
            for s in range(warmup):
                trainer.train_step([(x, y)], s)
        for r in range(rounds):
            for name, (trainer, x, y) in built.items():
                if x.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for s in range(steps):
                    trainer.train_step([(x, y)], warmup + r * steps + s)
                if x.device.type == "cuda":
                    torch.cuda.synchronize()
                out[name].append(batch * steps / (time.perf_counter() - t0))
    return out


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument(
        "--rounds", type=int, default=5, help="rounds; every variant runs --steps steps per round"
    )
    ap.add_argument(
        "--no-compile",
        action="store_true",
        help="GPU: leave out the torch.compile variant (compiling takes minutes of a short device lease)",
    )
    ap.add_argument(
        "--out",
        default=f"results/{MARKDOWN}",
        help="the report; its data goes to data/<its name>.json beside",
    )
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
        }
        if not args.no_compile:
            variants["bf16 + channels-last + compile"] = [
                "train.amp=bf16",
                "train.channels_last=true",
                "train.compile=true",
            ]
    else:
        variants |= {"bf16 autocast": ["train.amp=bf16"], "channels-last": ["train.channels_last=true"]}
    per_round = measure(variants, device, batch, steps, warmup=3 if not cuda else 10, rounds=args.rounds)
    rows = []
    for name, values in per_round.items():
        rows.append({
            "variant": name, "images_per_second": float(np.median(values)),
            "min": float(min(values)), "max": float(max(values)), "rounds": values,
        })  # fmt: skip
        print(name, f"{rows[-1]['images_per_second']:.0f} images/s", flush=True)
    settings = {"device": device, "batch": batch, "steps": steps, "rounds": args.rounds}
    if cuda:
        settings["compile"] = not args.no_compile
    raw = {
        **provenance(NAME, settings),
        "cuda": cuda,
        "device_name": torch.cuda.get_device_name() if cuda else "CPU",
        "rows": rows,
    }
    save_raw(data_path(args.out, Path(args.out).stem), raw)
    out = Path(args.out)
    render(raw, out.parent, md_name=out.name)
    print(out.read_text())


def _rounds(s: dict[str, Any]) -> str:
    if "rounds" not in s:
        return ""
    return f" per round, {s['rounds']} rounds with the variants alternating (median over rounds, min - max)"


def _ips(r: dict[str, Any]) -> str:
    """Median images/s, and the range over rounds where the data has rounds."""
    if "min" in r:
        return f"{r['images_per_second']:,.0f} ({r['min']:,.0f} - {r['max']:,.0f})"
    return f"{r['images_per_second']:,.0f}"


def _reproduce(s: dict[str, Any], md_name: str) -> str:
    """The command that measures this report again (``--out`` only for a report other than the default)."""
    flags = [f"--device {s['device']}"]
    flags += ["--no-compile"] if s.get("compile") is False else []
    flags += [f"--out results/{md_name}"] if md_name != MARKDOWN else []
    return f"`python scripts/bench_train_throughput.py {' '.join(flags)}`"


def render(raw: dict[str, Any], out_dir: Path, md_name: str = MARKDOWN, figures: bool = True) -> list[Path]:
    """train_throughput.md (or ``md_name``, e.g. the GPU report) from the data alone (no figure)."""
    s = raw["settings"]
    lines = [
        "# Supernet training throughput (CIFAR-10-sized input)",
        "",
        (
            "`mbv3` width 0.5 supernet, 3x32x32 input, sandwich rule (4 subnetworks per step), batch"
            f" {s['batch']}, {s['steps']} timed steps{_rounds(s)}, device: **{raw['device_name']}**. An image"
            " counts once per step (the 4 subnetworks per step are included in its cost). Reproduce:"
            f" {_reproduce(s, md_name)}."
        ),
        "",
        machine_block(raw["machine"]),
        "| variant | images/s | vs. fp32 |",
        "| --- | ---: | ---: |",
        *[
            f"| {r['variant']} | {_ips(r)} |"
            f" {r['images_per_second'] / raw['rows'][0]['images_per_second']:.2f}x |"
            for r in raw["rows"]
        ],
        "",
    ]
    if raw["cuda"] and s.get("compile") is False:
        lines += ["torch.compile was not measured in this run (`--no-compile`).", ""]
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
