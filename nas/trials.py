"""One trial row: what a finished search trial is, wherever it travels (controllers, search, export, report).

Rows are plain mappings so they serialise to ``search/pareto.json`` and the
report unchanged; :class:`TrialRow` gives them one type and :func:`trial_row` /
:func:`row_from_study_trial` are the only places they are built. A row's
``feasible`` is never read from the study: it is computed for the constraints in
force when the row is read (:func:`nas.constraints.annotate`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

NETWORK_METRICS = ("params", "macs", "memory_mb_per_sample")
"""What a study records of every trial's network besides accuracy and latency (user attributes)."""


class TrialRow(TypedDict):
    """A finished trial: its number, architecture, accuracy, predicted latency per device and network size."""

    trial: int
    arch: dict[
        str, Any
    ]  # the architecture's choices ({} when only its id is known, e.g. read from history.csv)
    arch_id: str
    accuracy: float
    latency_ms: float  # on the first device of search.devices
    extra_latencies_ms: list[float]  # on each further device
    params: float | None  # None: a study from before networks were measured, not annotated yet
    macs: float | None
    memory_mb_per_sample: float | None  # peak activation memory of one sample (MB); memory_mb = this * batch
    feasible: bool  # within the constraints in force when the row was read


def trial_row(
    trial: int,
    arch: Mapping[str, Any],
    arch_id: str,
    accuracy: float,
    latency_ms: float,
    extra_latencies_ms: Sequence[float] = (),
    feasible: bool = True,
    params: float | None = None,
    macs: float | None = None,
    memory_mb_per_sample: float | None = None,
) -> TrialRow:
    """A :class:`TrialRow` with plain Python numbers (JSON-ready)."""
    return TrialRow(
        trial=int(trial),
        arch=dict(arch),
        arch_id=str(arch_id),
        accuracy=float(accuracy),
        latency_ms=float(latency_ms),
        extra_latencies_ms=[float(v) for v in extra_latencies_ms],
        params=_number(params),
        macs=_number(macs),
        memory_mb_per_sample=_number(memory_mb_per_sample),
        feasible=bool(feasible),
    )


def row_from_study_trial(t: Any) -> TrialRow:
    """The row of a COMPLETE Optuna trial written by
    :class:`nas.controllers.optuna_controller.OptunaController`.

    Values are (accuracy, latency on each device); the architecture, its id and its network's size are user
    attributes. ``feasible`` is left True: whoever reads rows applies the constraints in force.
    """
    return trial_row(
        t.number,
        json.loads(t.user_attrs["arch"]),
        t.user_attrs["arch_id"],
        t.values[0],
        t.values[1],
        t.values[2:],
        True,
        **{k: t.user_attrs.get(k) for k in NETWORK_METRICS},
    )


def _number(v: Any) -> float | None:
    return None if v is None else float(v)
