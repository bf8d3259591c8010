"""Export a found architecture as a standalone network, verified against the supernet.

``<run>/export/`` receives ``arch.json``, ``model.pt`` (state dict of the plain
torch network), ``model.torchscript.pt`` (loads with ``torch.jit.load`` alone)
and ``meta.json`` with accuracy, size, cost and the parity checks that were run.
"""

from __future__ import annotations

import io
import time
import warnings
from typing import Any

import torch
from torch import nn

from nas.context import RunContext
from nas.cost import CostModel, measure_latency_ms, predict_many
from nas.cost.calibrate import processor_name
from nas.evaluation import accuracy, recalibrate_bn
from nas.rundir import atomic_write_bytes, atomic_write_json, atomic_write_text
from search_spaces import Arch
from supernets.profiling import forward_features

PARITY_TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """Nothing suitable to export (no trials, unknown trial, nothing under the budget)."""


def choose_trial(history: list[dict[str, Any]], trial: int | None, budget: float | None) -> dict[str, Any]:
    """The named trial, else the most accurate feasible one (ties: lower latency)."""
    if not history:
        raise ExportError("the search has no finished trials; run `nas search` first")
    if trial is not None:
        for row in history:
            if row["trial"] == trial:
                return row
        raise ExportError(f"trial {trial} is not a finished trial of this search; finished: {sorted(r['trial'] for r in history)}")
    feasible = [r for r in history if r["feasible"]]
    if not feasible:
        raise ExportError(f"no searched architecture meets the latency budget of {budget} ms; raise the budget or search longer")
    return max(feasible, key=lambda r: (r["accuracy"], -r["latency_ms"], -r["trial"]))


def export_arch(ctx: RunContext, supernet: nn.Module, costs: list[CostModel], row: dict[str, Any], latency_threads: int = 1) -> dict[str, Any]:
    """Extract, verify, save and measure ``row``'s architecture; returns ``meta.json``'s content."""
    arch: Arch = ctx.space.arch(row["arch"])
    out_dir = ctx.run_dir / "export"
    supernet.set_active(ctx.space.to_spec(arch))
    recalibrate_bn(supernet, ctx.loader("train", shuffle=True, epoch=-1), ctx.cfg.train.bn_recal_batches, ctx.device)
    supernet.eval()
    static = supernet.extract().eval()

    x, _ = next(iter(ctx.loader("val")))
    x = x.to(ctx.device)
    with torch.no_grad():
        parity = (supernet(x) - static(x)).abs().max().item()
    if parity > PARITY_TOLERANCE:
        raise ExportError(f"extracted network differs from the supernet by {parity:.3g} (> {PARITY_TOLERANCE}); refusing to export")
    val_acc = accuracy(static, ctx.loader("val"), ctx.device)
    test_acc = accuracy(static, ctx.loader("test"), ctx.device)

    static_cpu = static.cpu()
    example = torch.zeros(1, *ctx.space.input_shape)
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but it is still the format that loads
        # anywhere with plain `torch.jit.load`; the .pt2 export arrives with the export formats issue.
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.trace(static_cpu, example)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        with torch.no_grad():
            reloaded = torch.jit.load(io.BytesIO(buf.getvalue()))
            ts_parity = (reloaded(x.cpu()) - static_cpu(x.cpu())).abs().max().item()
    feats, _ = forward_features(static_cpu, ctx.space.input_shape)
    macs = int(feats[0] + feats[1])
    measured = measure_latency_ms(static_cpu, ctx.space.input_shape, batch=1, threads=latency_threads, repeats=ctx.cfg.export.latency_repeats)
    by_device = dict(zip(ctx.cfg.search.devices, (float(v) for v in predict_many(costs, [arch])[0])))
    primary = ctx.cfg.search.devices[0]
    predicted = by_device[primary]

    meta = {
        "arch": arch.to_dict(),
        "arch_id": arch.id,
        "trial": row["trial"],
        "space": ctx.space.name,
        "input_shape": list(ctx.space.input_shape),
        "num_classes": ctx.data.num_classes,
        "data": ctx.data.name,
        "params": sum(p.numel() for p in static_cpu.parameters()),
        "macs": macs,
        "flops": 2 * macs,
        "latency_pred_ms": predicted,
        "latency_measured_ms": measured,
        "latency_pred_ms_by_device": by_device,
        # the measurement runs on this machine's CPU: comparable with the prediction only for the cpu profile
        "latency_error_pct": 100.0 * (predicted - measured) / measured if primary == "cpu" else None,
        "latency_setup": {"batch": 1, "threads": latency_threads, "device": "cpu", "processor": processor_name(), "repeats": ctx.cfg.export.latency_repeats},
        "val_accuracy": val_acc,
        "test_accuracy": test_acc,
        "search_val_accuracy": row["accuracy"],
        "verification": {"supernet_vs_extracted_max_abs_diff": parity, "torchscript_vs_eager_max_abs_diff": ts_parity},
        "torch_version": torch.__version__,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": {"arch": "arch.json", "state_dict": "model.pt", "torchscript": "model.torchscript.pt"},
    }
    atomic_write_text(out_dir / "arch.json", arch.to_json() + "\n")
    sd = io.BytesIO()
    torch.save(static_cpu.state_dict(), sd)
    atomic_write_bytes(out_dir / "model.pt", sd.getvalue())
    atomic_write_bytes(out_dir / "model.torchscript.pt", buf.getvalue())
    atomic_write_json(out_dir / "meta.json", meta)  # last: its presence means the export is complete
    return meta
