"""Export a found architecture as a standalone network, verified against the supernet.

``<run>/export/`` receives ``arch.json`` and, per requested format
(``export.formats``, ``--format``; default: every format that applies to the
space), the files described in :mod:`nas.export.formats`: ``model.pt`` +
``space.json`` (plain torch, :func:`nas.load_subnet`), ``model.torchscript.pt``,
``model.pt2`` (torch.export), ``model.onnx`` and, for MBConv spaces, a timm
MobileNetV3 (``timm_model.json``, ``model.timm.pth``, ``load_timm.py``).
``meta.json`` (written last) holds accuracy, size, cost and every parity check,
one entry per format under ``formats``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nas.constraints import Limit, describe
from nas.cost import CostModel, predict_many
from nas.cost.calibrate import measure_latencies_ms, processor_name
from nas.cost.runtimes import get_runtime
from nas.evaluation import accuracy, recalibrate_bn
from nas.export.formats import ExportJob, format_files, resolve_formats, space_settings, write_formats
from nas.run.context import RunContext
from nas.run.files import atomic_write_json, atomic_write_text
from nas.timing_floor import min_timing_seconds
from nas.trials import TrialRow
from search_spaces import Arch
from search_spaces.errors import UserError
from supernets.profiling import forward_features

PARITY_TOLERANCE = 1e-5


class ExportError(UserError, RuntimeError):
    """Nothing suitable to export (no trials, unknown trial, nothing under the budget)."""


def choose_trial(history: list[TrialRow], trial: int | None, limits: Mapping[str, Limit]) -> TrialRow:
    """The named trial, else the most accurate one within ``limits`` (ties: lower latency, then earlier).

    ``history``'s ``feasible`` must have been judged for ``limits`` (:func:`nas.constraints.annotate`).
    """
    if not history:
        raise ExportError("the search has no finished trials; run `nas search` first")
    if trial is not None:
        for row in history:
            if row["trial"] == trial:
                return row
        raise ExportError(
            f"trial {trial} is not a finished trial of this search; finished:"
            f" {sorted(r['trial'] for r in history)}"
        )
    feasible = [r for r in history if r["feasible"]]
    if not feasible:
        raise ExportError(
            f"none of the {len(history)} searched architectures meets {describe(limits)}; relax the"
            " constraints or search longer (`nas search --trials=N`)"
        )
    return max(feasible, key=lambda r: (r["accuracy"], -r["latency_ms"], -r["trial"]))


def export_arch(
    ctx: RunContext,
    supernet: nn.Module,
    costs: list[CostModel],
    row: dict[str, Any],
    latency_threads: int = 1,
    formats: list[str] | None = None,
) -> dict[str, Any]:
    """Extract, verify, save and measure ``row``'s architecture; returns ``meta.json``'s content.

    ``formats`` defaults to ``export.formats`` (resolved against the space). A format
    that fails is recorded in ``meta["formats"][fmt]`` with ``ok: false`` and its
    reason; the caller decides what a failure means (``nas export`` exits non-zero).
    """
    formats = resolve_formats(ctx.cfg.export.formats if formats is None else formats, ctx.space)
    arch: Arch = ctx.space.arch(row["arch"])
    spec = ctx.space.to_spec(arch)
    out_dir = ctx.run_dir / "export"
    supernet.set_active(spec)
    recalibrate_bn(
        supernet, ctx.loader("train", shuffle=True, epoch=-1), ctx.cfg.train.bn_recal_batches, ctx.device
    )
    supernet.eval()
    static = supernet.extract().eval()

    x, y = next(iter(ctx.loader("val")))
    x = x.to(ctx.device)
    with torch.no_grad():
        parity = (supernet(x) - static(x)).abs().max().item()
    if parity > PARITY_TOLERANCE:
        raise ExportError(
            f"extracted network differs from the supernet by {parity:.3g} (> {PARITY_TOLERANCE}); refusing to"
            " export"
        )
    val_acc = accuracy(static, ctx.loader("val"), ctx.device)
    test_acc = accuracy(static, ctx.loader("test"), ctx.device)

    static_cpu = static.cpu()
    feats, _ = forward_features(static_cpu, ctx.space.input_shape)
    macs = int(feats[0] + feats[1])
    # measured before the formats are written: the timm check runs in a second process meanwhile
    runtime = get_runtime(ctx.cfg.export.runtime, setting="export.runtime")
    measured = float(
        measure_latencies_ms(
            [static_cpu],
            ctx.space.input_shape,
            batch=1,
            threads=latency_threads,
            repeats=ctx.cfg.export.latency_repeats,
            min_seconds=min_timing_seconds() / 2,
            runtime=runtime.name,
        )[0]
    )
    by_device = dict(zip(ctx.cfg.search.devices, (float(v) for v in predict_many(costs, [arch])[0])))
    primary = ctx.cfg.search.devices[0]
    predicted = by_device[primary]
    # comparable only for a profile of this machine measured in the same runtime
    comparable = primary == "cpu" and costs[0].profile.runtime == runtime.name

    (out_dir / "meta.json").unlink(
        missing_ok=True
    )  # its presence means a complete export; this one is not yet
    atomic_write_text(out_dir / "arch.json", arch.to_json() + "\n")
    x_cpu, y_cpu = x.cpu(), y.cpu()
    with torch.no_grad():
        logits = static_cpu(x_cpu)
    job = ExportJob(
        net=static_cpu,
        out_dir=out_dir,
        space=ctx.space,
        spec=spec,
        x=x_cpu,
        y=y_cpu,
        logits=logits,
        space_json=space_settings(
            ctx.space, ctx.cfg, ctx.data.num_classes, ctx.data.in_channels, ctx.data.resolution
        ),
    )
    t0 = time.perf_counter()
    results = write_formats(job, formats)
    formats_seconds = time.perf_counter() - t0

    verification: dict[str, Any] = {"supernet_vs_extracted_max_abs_diff": parity}
    if "max_abs_diff" in results.get("torchscript", {}):
        verification["torchscript_vs_eager_max_abs_diff"] = results["torchscript"]["max_abs_diff"]
    files = {"arch": "arch.json"}
    for fmt, res in results.items():
        if res["ok"]:
            files[{"torch": "state_dict"}.get(fmt, fmt)] = format_files(fmt)[0]
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
        "latency_error_pct": 100.0 * (predicted - measured) / measured if comparable else None,
        "latency_setup": {
            "batch": 1,
            "threads": latency_threads,
            "device": "cpu",
            "runtime": runtime.name,
            "runtime_version": runtime.version(),
            "profile_runtime": costs[0].profile.runtime,
            "processor": processor_name(),
            "repeats": ctx.cfg.export.latency_repeats,
        },
        "val_accuracy": val_acc,
        "test_accuracy": test_acc,
        "search_val_accuracy": row["accuracy"],
        "verification": verification,
        "formats": results,
        "formats_seconds": round(formats_seconds, 2),
        "verification_batch": {"split": "val", "size": int(x_cpu.shape[0])},
        "torch_version": torch.__version__,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": files,
    }
    atomic_write_json(out_dir / "meta.json", meta)  # last: its presence means the export is complete
    return meta


def failed_formats(meta: dict[str, Any]) -> dict[str, str]:
    """Format -> reason, for the formats of an export that failed."""
    return {
        fmt: res.get("error", "failed") for fmt, res in meta.get("formats", {}).items() if not res.get("ok")
    }
