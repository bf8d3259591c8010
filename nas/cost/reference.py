"""Plain-Python version of the cost model, the yardstick for the numba kernel.

It follows the formula literally (no latency table, no numpy vectorisation) so
tests compare the kernel against an independent implementation and the
benchmark can report what the kernel buys over straightforward Python.
"""

from __future__ import annotations

import numpy as np


def predict_reference(
    op_ids: np.ndarray, features: np.ndarray, coef: np.ndarray, intercept: float
) -> np.ndarray:
    """Latency (ms) per architecture, float64 ``[B]``, computed one arch, slot and feature at a time."""
    ids = np.asarray(op_ids).tolist()
    feats = np.asarray(features, dtype=np.float64).tolist()
    weights = np.asarray(coef, dtype=np.float64).tolist()
    n_ops = len(feats[0]) if feats else 0
    out = []
    for row in ids:
        if len(row) != len(feats):
            raise ValueError(f"each architecture needs {len(feats)} op ids (one per slot), got {len(row)}")
        total = float(intercept)
        for s, op in enumerate(row):
            if not 0 <= op < n_ops:
                raise ValueError(f"op id {op} at slot {s} is out of range (valid ids 0..{n_ops - 1})")
            dot = 0.0
            for w, x in zip(weights, feats[s][op]):
                dot += w * x
            total += dot
        out.append(total)
    return np.array(out, dtype=np.float64)
