"""Constraints: limits on what every architecture costs, absolute or relative to a reference architecture.

A user states a budget the way their deployment does: predicted latency on a
device, parameters, multiply-accumulates, or peak activation memory, each as an
absolute number or as a share of a reference network (``"60%"`` of the space's
largest architecture, or of the model a space was converted from). Constraints
are a property of the *study*, not of its trials: every trial keeps its metrics,
and whether it is feasible is computed when it is read, from those metrics and
the constraints now in force, by :func:`violations` alone. The search front, the
report, ``nas export``'s choice and the samplers' own constraint handling all call
it, so a budget given after the search still decides what is exported.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nas.run.config import ConfigError, NASConfig

METRICS = ("latency_ms", "params", "macs", "memory_mb")
"""What can be limited: predicted latency (ms; ``latency_ms`` is the first device of ``search.devices``,
``latency_ms:<device>`` any of them), parameters, multiply-accumulates, peak activation memory (MB)."""

_PERCENT = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*%\s*")


@dataclass(frozen=True)
class Limit:
    """One constraint: ``metric <= value``; ``given`` is what the user wrote (a number or ``"60%"``)."""

    metric: str
    value: float
    given: float | str

    def describe(self) -> str:
        shown = f"{self.given} = {_fmt(self.value)}" if isinstance(self.given, str) else _fmt(self.value)
        return f"{self.metric} <= {shown}"


def requested(cfg: NASConfig) -> dict[str, float | str]:
    """The constraints a configuration asks for: ``search.constraints`` plus ``search.latency_budget_ms``.

    Checked here (metric names, numbers, percentages), each problem one :class:`ConfigError` naming the
    setting.
    """
    out: dict[str, float | str] = {}
    devices = list(cfg.search.devices)
    for metric, raw in (cfg.search.constraints or {}).items():
        key = f"search.constraints.{metric}"
        base, _, device = str(metric).partition(":")
        if base not in METRICS or (device and base != "latency_ms"):
            raise ConfigError(
                f"{key} is not a constraint: constrain one of {', '.join(METRICS)}, or latency_ms:<device>"
                f" for a device of search.devices ({', '.join(devices)})"
            )
        if device and device not in devices:
            raise ConfigError(
                f"{key}: {device!r} is not one of search.devices ({', '.join(devices)}); add it there first"
            )
        out[_canonical_metric(str(metric), devices)] = _check_value(key, raw)
    budget = cfg.search.latency_budget_ms
    if budget is not None:
        if "latency_ms" in out and out["latency_ms"] != budget:
            raise ConfigError(
                f"search.latency_budget_ms={budget:g} and search.constraints.latency_ms={out['latency_ms']}"
                " disagree; give the latency limit once"
            )
        out["latency_ms"] = float(budget)
    return out


def _canonical_metric(metric: str, devices: Sequence[str]) -> str:
    """``latency_ms:<first device>`` is ``latency_ms``."""
    return "latency_ms" if metric == f"latency_ms:{devices[0]}" else metric


def _check_value(key: str, raw: Any) -> float | str:
    if isinstance(raw, str):
        m = _PERCENT.fullmatch(raw)
        if m:
            share = float(m.group(1))
            if not 0 < share <= 1000:
                raise ConfigError(
                    f"{key}={raw!r} is not allowed: a share of the reference must be > 0% and <= 1000%"
                )
            return f"{_fmt(share)}%"
        try:
            raw = float(raw)
        except ValueError:
            raise ConfigError(
                f'{key}={raw!r} is not allowed: give a number or a share of the reference such as "60%"'
            ) from None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw <= 0:
        raise ConfigError(f'{key}={raw!r} is not allowed: give a finite number > 0 or a share such as "60%"')
    return float(raw)


def resolve(constraints: Mapping[str, float | str], reference: Mapping[str, float]) -> dict[str, Limit]:
    """Absolute limits: a share ``"p%"`` becomes ``p / 100`` times the reference architecture's metric."""
    out = {}
    for metric, given in constraints.items():
        if isinstance(given, str):
            value = float(given.rstrip("%")) / 100.0 * float(reference[metric])
        else:
            value = float(given)
        out[metric] = Limit(metric, value, given)
    return out


def violations(metrics: Mapping[str, float | None], limits: Mapping[str, Limit]) -> list[float]:
    """Per limit, ``(metric - limit) / limit``: <= 0 where met (Optuna's convention), NaN-free.

    Relative, so that limits on milliseconds and on millions of parameters weigh alike in a sampler's
    constrained domination. A metric the trial lacks (a study from before it was recorded) counts as violated.
    """
    out = []
    for metric, limit in limits.items():
        value = metrics.get(metric)
        out.append(1.0 if value is None else (float(value) - limit.value) / limit.value)
    return out


def is_feasible(metrics: Mapping[str, float | None], limits: Mapping[str, Limit]) -> bool:
    return all(v <= 0 for v in violations(metrics, limits))


def describe(limits: Mapping[str, Limit]) -> str:
    """``latency_ms <= 2.5, params <= 60% = 1.2e+06`` (``none`` without limits)."""
    return ", ".join(limit.describe() for limit in limits.values()) or "none"


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3g}"


# --------------------------------------------------------------------------- a run's limits and its rows


def limits_for(cfg: NASConfig, space: Any, costs: Sequence[Any]) -> dict[str, Limit]:
    """The run's constraints as absolute limits: shares resolved against the space's reference architecture
    (its largest, or the model it was converted from) on the run's devices, memory at
    ``export.batch_size``."""
    from nas.cost.metrics import arch_metrics

    wanted = requested(cfg)
    if not wanted:
        return {}
    ref = arch_metrics(
        space, costs, cfg.search.devices, [space.reference_arch()], batch=cfg.export.batch_size
    )
    return resolve(wanted, {k: float(v[0]) for k, v in ref.items()})


def annotate(
    rows: list[Any], space: Any, limits: Mapping[str, Limit], devices: Sequence[str], batch: int
) -> list[Any]:
    """``rows`` with their network size filled in where a study did not record it, and ``feasible`` set for
    ``limits`` (the constraints in force now). Returns the same row objects."""
    from nas.cost.metrics import network_metrics, row_metrics

    missing = [r for r in rows if r.get("params") is None and r.get("arch")]
    if missing:
        net = network_metrics(space, [space.arch(r["arch"]) for r in missing])
        for i, r in enumerate(missing):
            r.update({k: float(v[i]) for k, v in net.items()})
    for r in rows:
        r["feasible"] = is_feasible(row_metrics(r, devices, batch), limits)
    return rows


def to_json(limits: Mapping[str, Limit]) -> dict[str, dict[str, Any]]:
    """Limits as ``search/pareto.json`` records them (what the report applies)."""
    return {m: {"limit": lim.value, "given": lim.given} for m, lim in limits.items()}


def from_json(data: Mapping[str, Mapping[str, Any]]) -> dict[str, Limit]:
    return {m: Limit(m, float(d["limit"]), d["given"]) for m, d in data.items()}
