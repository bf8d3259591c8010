"""Pareto fronts of accuracy vs. latency, and the hypervolume that scores them.

One module answers "which trials are not dominated" and "how much of the
objective space does a front cover", for the search's outputs, the export's
choice, the report's figures and the benchmarks alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from nas.trials import TrialRow

Row = Mapping[str, Any]


def _costs(row: Row) -> tuple[float, ...]:
    """What is minimised: minus accuracy, then latency on every device."""
    return (-row["accuracy"], row["latency_ms"], *row.get("extra_latencies_ms", ()))


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether cost vector ``a`` is at least as good as ``b`` everywhere and better somewhere (all
    minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_front(rows: Sequence[TrialRow]) -> list[TrialRow]:
    """Feasible rows not dominated in (accuracy up, latency on every device down), sorted by latency; one per
    architecture."""
    feas = [r for r in rows if r["feasible"]]
    front = [r for r in feas if not any(dominates(_costs(o), _costs(r)) for o in feas)]
    seen, unique = set(), []
    for r in sorted(front, key=lambda r: (r["latency_ms"], -r["accuracy"], r["trial"])):
        if r["arch_id"] not in seen:
            seen.add(r["arch_id"])
            unique.append(r)
    return unique


def _pct(x: float) -> float:
    return 100.0 * float(x)


def hypervolume(points: Sequence[tuple[float, float]], acc_ref: float, lat_ref: float) -> float:
    """Area dominated by (accuracy up, latency down) points inside the box [acc_ref, .] x [., lat_ref].

    Units are those of the inputs (the report passes accuracy in percent and
    latency in ms). Points at or outside the reference contribute nothing.
    """
    pts = sorted((lat, acc) for acc, lat in points if lat <= lat_ref and acc > acc_ref)
    area, best = 0.0, acc_ref
    for i, (lat, acc) in enumerate(pts):
        best = max(best, acc)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else lat_ref
        area += (nxt - lat) * (best - acc_ref)
    return area


def hypervolume_reference(rows: Sequence[Row], budget_ms: float | None) -> tuple[float, float]:
    """Reference point (accuracy %, latency ms): the lowest accuracy of any trial, and the budget (else the
    slowest trial)."""
    acc_ref = min(_pct(r["accuracy"]) for r in rows)
    lat_ref = float(budget_ms) if budget_ms is not None else max(float(r["latency_ms"]) for r in rows)
    return acc_ref, lat_ref


def anytime_curves(rows: Sequence[Row], budget_ms: float | None) -> dict[str, list[float]]:
    """Per completed trial (in trial-number order): best feasible accuracy so far (%, NaN before the first)
    and hypervolume."""
    ordered = sorted(rows, key=lambda r: r["trial"])
    acc_ref, lat_ref = hypervolume_reference(ordered, budget_ms)
    best: list[float] = []
    hv: list[float] = []
    feasible_pts: list[tuple[float, float]] = []
    current = math.nan
    for r in ordered:
        if r["feasible"]:
            feasible_pts.append((_pct(r["accuracy"]), float(r["latency_ms"])))
            current = _pct(r["accuracy"]) if math.isnan(current) else max(current, _pct(r["accuracy"]))
        best.append(current)
        hv.append(hypervolume(feasible_pts, acc_ref, lat_ref))
    return {
        "trial": [int(r["trial"]) for r in ordered],
        "best_feasible_accuracy_pct": best,
        "hypervolume": hv,
        "reference": [acc_ref, lat_ref],
    }
