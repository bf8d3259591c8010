"""Predicted vs. measured latency: the check a user runs before trusting a device profile.

``validate`` samples architectures, builds each as the standalone network an
export would produce, measures it the way calibration measures (interleaved
rounds, fastest run over time, warm caches), and reports ranking and error
figures. ``refit`` closes the loop: measurements of real exported networks
refit the profile's scale and offset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from nas.cost.calibrate import distinct_samples, fit_diagnostics, fit_nnls, measure_latencies_ms
from nas.cost.model import CostModel
from nas.cost.profile import DeviceProfile
from nas.cost.runtimes import DEFAULT_RUNTIME
from nas.timing_floor import min_timing_seconds


def measure_archs(
    model: CostModel,
    archs: Sequence[Mapping[str, Any]],
    threads: int = 1,
    batch: int = 1,
    repeats: int = 40,
    progress: bool = False,
    runtime: str = DEFAULT_RUNTIME,
) -> np.ndarray:
    """Measured latency (ms) of each architecture's standalone network in ``runtime``, all timed in the same
    rounds."""
    space = model.space
    supernet = space.build_supernet()
    nets = [supernet.extract(space.to_spec(space.arch(a))) for a in archs]
    return measure_latencies_ms(
        nets,
        space.input_shape,
        batch,
        threads,
        warmup=5,
        repeats=repeats,
        progress=progress,
        min_seconds=min_timing_seconds(),
        runtime=runtime,
    )


def validate(
    model: CostModel,
    n: int = 100,
    seed: int = 1234,
    threads: int = 1,
    batch: int = 1,
    repeats: int = 40,
    progress: bool = False,
    runtime: str = DEFAULT_RUNTIME,
) -> dict[str, Any]:
    """Sample ``n`` distinct architectures (seed differs from calibration's), predict and measure them in
    ``runtime`` (the profile must have been measured in it)."""
    model.profile.check_runtime(runtime)
    space = model.space
    chosen = distinct_samples(space, n, seed)
    measured = measure_archs(model, chosen, threads, batch, repeats, progress, runtime)
    predicted = model.predict(chosen)
    report = fit_diagnostics(predicted, measured)
    report.update(
        {
            "n": len(chosen),
            "threads": threads,
            "batch": batch,
            "runtime": runtime,
            "device": model.profile.name,
            "rows": [
                {"arch_id": a.id, "predicted_ms": float(p), "measured_ms": float(m)}
                for a, p, m in zip(chosen, predicted, measured)
            ],
        }
    )
    return report


def refit(
    model: CostModel, archs: Sequence[Mapping[str, Any]], measured_ms: Sequence[float]
) -> DeviceProfile:
    """A copy of the profile whose scale and offset are refitted to these measurements (table shape kept)."""
    base = np.asarray(model.predict(archs)) - model.intercept  # the table sum (already scaled)
    (scale,), intercept = fit_nnls(base[:, None], np.asarray(measured_ms, dtype=float))
    scale = scale if scale > 0 else 1.0
    meta = {
        **model.profile.meta,
        "refit": {"n": len(base), "scale_factor": float(scale), "intercept": float(intercept)},
    }
    return (
        replace(model.profile, lut_scale=model.profile.lut_scale * scale, intercept=intercept, meta=meta)
        if model.profile.lut is not None
        else replace(
            model.profile, coef=tuple(c * scale for c in model.profile.coef), intercept=intercept, meta=meta
        )
    )


def session_summary(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and range over repeated calibrate-then-validate sessions of each figure of :func:`validate`."""
    out: dict[str, Any] = {"sessions": len(reports)}
    for key in ("kendall_tau", "mape", "within_10pct"):
        values = np.array([float(r[key]) for r in reports])
        out[key] = {
            "mean": float(values.mean()),
            "min": float(values.min()),
            "max": float(values.max()),
            "per_session": values.tolist(),
        }
    return out


def plot_validation(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = np.array([r["predicted_ms"] for r in report["rows"]])
    meas = np.array([r["measured_ms"] for r in report["rows"]])
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=120)
    lo, hi = float(min(pred.min(), meas.min())) * 0.95, float(max(pred.max(), meas.max())) * 1.05
    ax.plot([lo, hi], [lo, hi], color="gray", lw=1, label="predicted = measured")
    ax.fill_between(
        [lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="gray", alpha=0.15, label="+/-10%"
    )
    ax.scatter(meas, pred, s=12, label=f"{report['n']} architectures")
    ax.set_xlabel("measured latency [ms]")
    ax.set_ylabel("predicted latency [ms]")
    ax.set_title(
        f"{report['device']}: tau {report['kendall_tau']:.2f}, MAPE {100 * report['mape']:.1f}%, within 10%"
        f" {100 * report['within_10pct']:.0f}%",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
