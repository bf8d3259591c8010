"""Numba kernel for the linear cost model: latency of many architectures at once.

Search controllers score millions of candidates, so prediction must cost a few
nanoseconds per architecture. The model is linear, so the per-(slot, op) latency
is precomputed once per call (``S * O * F`` multiply-adds, negligible) and each
architecture is then a gather-and-sum of ``S`` table entries.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

PARALLEL_MIN_BATCH = 16_384
"""Smaller batches run single-threaded: waking the thread pool costs more than it saves
(measured: 1,000 archs take ~20 us on one thread, ~140 us on two; see scripts/bench_cost_model.py)."""


@numba.njit(cache=True, fastmath=False)
def _latency_table(features: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``table[s, o] = coef . features[s, o]``: the linear model folded into one number per (slot, op)."""
    n_slots, n_ops, n_feats = features.shape
    table = np.empty((n_slots, n_ops))
    for s in range(n_slots):
        for o in range(n_ops):
            acc = 0.0
            for f in range(n_feats):
                acc += coef[f] * features[s, o, f]
            table[s, o] = acc
    return table


@numba.njit(parallel=True, cache=True, fastmath=False)
def _predict_kernel(op_ids: np.ndarray, features: np.ndarray, coef: np.ndarray, intercept: float, out: np.ndarray) -> None:
    """Fill ``out[b]`` with the latency of architecture ``b`` (threads over the batch); ids must be in range."""
    table = _latency_table(features, coef)
    n_slots = table.shape[0]
    for b in prange(op_ids.shape[0]):
        total = intercept
        for s in range(n_slots):
            total += table[s, op_ids[b, s]]
        out[b] = total


@numba.njit(cache=True, fastmath=False)
def _predict_kernel_serial(op_ids: np.ndarray, features: np.ndarray, coef: np.ndarray, intercept: float, out: np.ndarray) -> None:
    """Single-threaded twin of :func:`_predict_kernel` for small batches (same arithmetic, same order)."""
    table = _latency_table(features, coef)
    n_slots = table.shape[0]
    for b in range(op_ids.shape[0]):
        total = intercept
        for s in range(n_slots):
            total += table[s, op_ids[b, s]]
        out[b] = total


def check_inputs(op_ids: np.ndarray, features: np.ndarray, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shapes, dtypes and op-id range, checked once per call so the kernel can index unchecked.

    The range test is a single vectorised pass: viewed as unsigned, a negative id
    becomes huge, so ``max() < O`` rejects both negative and too-large ids.
    """
    op_ids = np.asarray(op_ids)
    features = np.ascontiguousarray(features, dtype=np.float64)
    coef = np.ascontiguousarray(coef, dtype=np.float64)
    if op_ids.dtype.kind not in "iu":
        if op_ids.size:
            raise TypeError(f"op_ids must be integers, got dtype {op_ids.dtype}")
        op_ids = op_ids.astype(np.int32)
    if features.ndim != 3:
        raise ValueError(f"features must have shape [S, O, F], got {features.shape}")
    n_slots, n_ops, n_feats = features.shape
    if op_ids.ndim != 2 or op_ids.shape[1] != n_slots:
        raise ValueError(f"op_ids must have shape [B, {n_slots}] (one op id per slot), got {op_ids.shape}")
    if coef.shape != (n_feats,):
        raise ValueError(f"coef must have shape ({n_feats},) (one coefficient per feature), got {coef.shape}")
    # Checked before the cast to int32, which would wrap huge ids into range.
    if op_ids.size and int(op_ids.view(f"u{op_ids.dtype.itemsize}").max()) >= n_ops:
        bad = np.argwhere((op_ids < 0) | (op_ids >= n_ops))[0]
        raise ValueError(
            f"op id {int(op_ids[bad[0], bad[1]])} at architecture {int(bad[0])}, slot {int(bad[1])} "
            f"is out of range: the cost table has {n_ops} ops per slot (valid ids 0..{n_ops - 1})"
        )
    op_ids = np.ascontiguousarray(op_ids, dtype=np.int32)
    return op_ids, features, coef


def predict_numba(op_ids: np.ndarray, features: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    """Latency (ms) per architecture, float64 ``[B]``: ``intercept + sum_s coef . features[s, op_ids[b, s]]``.

    Batches of at least ``PARALLEL_MIN_BATCH`` use all numba threads (``numba.set_num_threads``).
    """
    op_ids, features, coef = check_inputs(op_ids, features, coef)
    out = np.empty(op_ids.shape[0], dtype=np.float64)
    kernel = _predict_kernel if op_ids.shape[0] >= PARALLEL_MIN_BATCH else _predict_kernel_serial
    kernel(op_ids, features, coef, float(intercept), out)
    return out


@numba.njit(cache=True, fastmath=False)
def _gather_serial(op_ids: np.ndarray, table: np.ndarray, intercept: float) -> np.ndarray:  # pragma: no cover - compiled
    n, s_count = op_ids.shape
    out = np.empty(n)
    for b in range(n):
        acc = intercept
        for s in range(s_count):
            acc += table[s, op_ids[b, s]]
        out[b] = acc
    return out


@numba.njit(parallel=True, cache=True, fastmath=False)
def _gather_parallel(op_ids: np.ndarray, table: np.ndarray, intercept: float) -> np.ndarray:  # pragma: no cover - compiled
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
    op_ids, _, _ = check_inputs(op_ids, np.zeros((*table.shape, 1)), np.zeros(1))
    if len(op_ids) >= PARALLEL_MIN_BATCH:
        return _gather_parallel(op_ids, table, float(intercept))
    return _gather_serial(op_ids, table, float(intercept))
