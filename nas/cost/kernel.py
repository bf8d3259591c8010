"""Numba kernel of the cost model: latency of many architectures at once.

Search controllers score many candidates, so prediction must cost a few
nanoseconds per architecture. A device's model is folded into one latency per
(slot, op) when the :class:`~nas.cost.model.CostModel` is built (measured where
measured, the linear fallback elsewhere), so each architecture is a gather-and-sum
of ``S`` table entries.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

PARALLEL_MIN_BATCH = 16_384
"""Smaller batches run single-threaded: waking the thread pool costs more than it saves
(measured: 1,000 archs take ~20 us on one thread, ~140 us on two; see scripts/bench_cost_model.py)."""


def check_op_ids(op_ids: np.ndarray, n_slots: int, n_ops: int) -> np.ndarray:
    """``op_ids`` as contiguous int32 ``[B, n_slots]``, its shape, dtype and range checked once per call.

    The kernel then indexes unchecked.

    The range test is a single vectorised pass: viewed as unsigned, a negative id
    becomes huge, so ``max() < O`` rejects both negative and too-large ids.
    """
    op_ids = np.asarray(op_ids)
    if op_ids.dtype.kind not in "iu":
        if op_ids.size:
            raise TypeError(f"op_ids must be integers, got dtype {op_ids.dtype}")
        op_ids = op_ids.astype(np.int32)
    if op_ids.ndim != 2 or op_ids.shape[1] != n_slots:
        raise ValueError(f"op_ids must have shape [B, {n_slots}] (one op id per slot), got {op_ids.shape}")
    # Checked before the cast to int32, which would wrap huge ids into range.
    if op_ids.size and int(op_ids.view(f"u{op_ids.dtype.itemsize}").max()) >= n_ops:
        bad = np.argwhere((op_ids < 0) | (op_ids >= n_ops))[0]
        raise ValueError(
            f"op id {int(op_ids[bad[0], bad[1]])} at architecture {int(bad[0])}, slot {int(bad[1])} "
            f"is out of range: the cost table has {n_ops} ops per slot (valid ids 0..{n_ops - 1})"
        )
    return np.ascontiguousarray(op_ids, dtype=np.int32)


@numba.njit(cache=True, fastmath=False)
def _gather_serial(
    op_ids: np.ndarray, table: np.ndarray, intercept: float
) -> np.ndarray:  # pragma: no cover - compiled
    n, s_count = op_ids.shape
    out = np.empty(n)
    for b in range(n):
        acc = intercept
        for s in range(s_count):
            acc += table[s, op_ids[b, s]]
        out[b] = acc
    return out


@numba.njit(parallel=True, cache=True, fastmath=False)
def _gather_parallel(
    op_ids: np.ndarray, table: np.ndarray, intercept: float
) -> np.ndarray:  # pragma: no cover - compiled
    n, s_count = op_ids.shape
    out = np.empty(n)
    for b in prange(n):
        acc = intercept
        for s in range(s_count):
            acc += table[s, op_ids[b, s]]
        out[b] = acc
    return out


def predict_table_numba(op_ids: np.ndarray, table: np.ndarray, intercept: float) -> np.ndarray:
    """``intercept + sum_s table[s, op_ids[b, s]]`` per architecture (the lookup-table form of the model)."""
    table = np.ascontiguousarray(table, dtype=np.float64)
    if table.ndim != 2 or not np.all(np.isfinite(table)):
        raise ValueError(f"latency table must be a finite [S, O] array, got shape {table.shape}")
    op_ids = check_op_ids(op_ids, table.shape[0], table.shape[1])
    if len(op_ids) >= PARALLEL_MIN_BATCH:
        return _gather_parallel(op_ids, table, float(intercept))
    return _gather_serial(op_ids, table, float(intercept))
