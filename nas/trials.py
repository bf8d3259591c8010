"""One trial row: what a finished search trial is, wherever it travels (controllers, search, export, report).

Rows are plain mappings so they serialise to ``search/pareto.json`` and the
report unchanged; :class:`TrialRow` gives them one type and :func:`trial_row` /
:func:`row_from_study_trial` are the only places they are built.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict


class TrialRow(TypedDict):
    """A finished trial: its number, architecture, validation accuracy and predicted latency per device."""

    trial: int
    arch: dict[
        str, Any
    ]  # the architecture's choices ({} when only its id is known, e.g. read back from history.csv)
    arch_id: str
    accuracy: float
    latency_ms: float  # on the first device of search.devices (the one the budget applies to)
    extra_latencies_ms: list[float]  # on each further device
    feasible: bool  # within the latency budget


def trial_row(
    trial: int,
    arch: Mapping[str, Any],
    arch_id: str,
    accuracy: float,
    latency_ms: float,
    extra_latencies_ms: Sequence[float] = (),
    feasible: bool = True,
) -> TrialRow:
    """A :class:`TrialRow` with plain Python numbers (JSON-ready)."""
    return TrialRow(
        trial=int(trial),
        arch=dict(arch),
        arch_id=str(arch_id),
        accuracy=float(accuracy),
        latency_ms=float(latency_ms),
        extra_latencies_ms=[float(v) for v in extra_latencies_ms],
        feasible=bool(feasible),
    )


def row_from_study_trial(t: Any) -> TrialRow:
    """The row of a COMPLETE Optuna trial written by
    :class:`nas.controllers.optuna_controller.OptunaController`.

    Values are (accuracy, latency on each device); the architecture, its id and the
    constraint (<= 0: within the budget, Optuna's convention) are user attributes.
    """
    return trial_row(
        t.number,
        json.loads(t.user_attrs["arch"]),
        t.user_attrs["arch_id"],
        t.values[0],
        t.values[1],
        t.values[2:],
        t.user_attrs.get("constraint", 0.0) <= 0,
    )
