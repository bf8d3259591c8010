"""What an architecture costs besides time: parameters, multiply-accumulates and peak activation memory.

All three are read off the space's :meth:`~search_spaces.SearchSpace.metric_table` through the same lowering
to one op per slot as latency, so thousands of architectures cost one vectorised gather: parameters and MACs
add up over the slots, peak activation memory is the largest over them (the live activations of the layer that
holds the most, float32, at the deployment batch size). With the predicted latency on each device they are the
metrics constraints limit (:mod:`nas.constraints`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nas.cost.model import CostModel, predict_many
from search_spaces import SearchSpace

BYTES_PER_ELEMENT = 4  # float32 activations
MB = 2**20


def network_metrics(space: SearchSpace, archs: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """``params``, ``macs`` and ``memory_mb_per_sample`` (peak activation memory of one sample) per
    architecture, float64 ``[B]`` each."""
    table = space.metric_table()
    op_ids = space.lower(space.encode_batch(list(archs)))
    slots = np.arange(op_ids.shape[1])[None, :]
    return {
        "params": table.params[slots, op_ids].sum(axis=1),
        "macs": table.macs[slots, op_ids].sum(axis=1),
        "memory_mb_per_sample": table.activations[slots, op_ids].max(axis=1) * BYTES_PER_ELEMENT / MB,
    }


def latency_keys(devices: Sequence[str]) -> list[str]:
    """Metric name of each device's predicted latency: ``latency_ms`` for the first, ``latency_ms:<device>``
    after."""
    return ["latency_ms", *(f"latency_ms:{d}" for d in devices[1:])]


def arch_metrics(
    space: SearchSpace,
    costs: Sequence[CostModel],
    devices: Sequence[str],
    archs: Sequence[Mapping[str, Any]],
    batch: int = 1,
) -> dict[str, np.ndarray]:
    """Every metric a constraint can limit, per architecture: predicted latency on each device, parameters,
    MACs and peak activation memory at ``batch``."""
    latency = predict_many(costs, archs)
    out = {key: latency[:, d] for d, key in enumerate(latency_keys(devices))}
    net = network_metrics(space, archs)
    out.update(params=net["params"], macs=net["macs"], memory_mb=net["memory_mb_per_sample"] * batch)
    return out


def row_metrics(row: Mapping[str, Any], devices: Sequence[str], batch: int = 1) -> dict[str, float | None]:
    """A trial row's metrics under the names constraints use (``None`` for what the row does not know)."""
    latencies = [row["latency_ms"], *row.get("extra_latencies_ms", ())]
    out: dict[str, float | None] = dict(zip(latency_keys(devices), latencies))
    per_sample = row.get("memory_mb_per_sample")
    out.update(
        params=row.get("params"),
        macs=row.get("macs"),
        memory_mb=None if per_sample is None else per_sample * batch,
    )
    return out
