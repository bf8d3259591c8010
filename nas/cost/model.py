"""Cost model: a space's cost table combined with a device profile, predicting latency fast.

Everything device-specific lives in the profile; everything space-specific in
the cost table. The model only checks that the two belong together and runs the
kernel on the space's lowering of architectures to op ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nas.cost.kernel import predict_table_numba
from nas.cost.profile import RECALIBRATE_HINT, DeviceProfile, ProfileError, space_signature
from search_spaces.base import SearchSpace


class CostModel:
    """Predicted latency (ms) of architectures of ``space`` on the device ``profile`` was calibrated on."""

    def __init__(self, space: SearchSpace, profile: DeviceProfile):
        ct = space.cost_table()
        profile.check_compatible(space_signature(space), ct.feature_names)
        self.space, self.profile = space, profile
        features = np.ascontiguousarray(ct.features, dtype=np.float64)
        analytic = features @ np.asarray(profile.coef, dtype=np.float64)
        if profile.lut is not None:
            lut = np.asarray(profile.lut, dtype=np.float64)
            if lut.shape != analytic.shape:
                raise ProfileError(
                    f"profile {profile.name!r}: lookup table has shape {lut.shape}, the space has [slots,"
                    f" ops] = {analytic.shape}; {RECALIBRATE_HINT}"
                )
            analytic = np.where(np.isnan(lut), analytic, lut)  # measured where measured, fitted elsewhere
        # One [S, O] table per device: prediction is a gather-and-sum, whatever the model behind it.
        self._table = np.ascontiguousarray(profile.lut_scale * analytic)
        self.intercept = float(profile.intercept)

    def predict_codes(self, codes: np.ndarray) -> np.ndarray:
        """Latency per encoded architecture (``space.encode_batch`` rows), float64 ``[B]``."""
        return self.predict_op_ids(self.space.lower(codes))

    def predict(self, archs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Latency per architecture, float64 ``[B]`` (validates and encodes each one first)."""
        return self.predict_codes(self.space.encode_batch(list(archs)))

    def predict_op_ids(self, op_ids: np.ndarray) -> np.ndarray:
        """Latency per already-lowered architecture (``space.lower`` rows, int ``[B, S]``), float64 ``[B]``.

        The step of :meth:`predict_codes` after lowering; :func:`predict_many` uses it
        to lower once for several devices, so it must stay the same computation.
        """
        return predict_table_numba(op_ids, self._table, self.intercept)

    def latency_table(self) -> np.ndarray:
        """Latency (ms) of op ``o`` at slot ``s``, ``[S, O]``, without the intercept; padded ops are 0."""
        return self._table.copy()


def predict_many(models: Sequence[CostModel], archs: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Latency of each architecture on each device, float64 ``[B, D]`` (column ``d`` is
    ``models[d].predict``).

    Architectures are validated, encoded and lowered once, then every model runs
    the kernel on the same op ids. All models must be for the same space: the
    same space object, or spaces with equal :func:`space_signature` (each model's
    profile was checked against its space's signature when it was built).
    """
    models = list(models)
    if not models:
        raise ValueError("predict_many needs at least one cost model")
    bad = [m for m in models if not isinstance(m, CostModel)]
    if bad:
        raise ValueError(f"predict_many takes CostModel instances, got {type(bad[0]).__name__}")
    space, signature = models[0].space, models[0].profile.space_signature
    for d, m in enumerate(models[1:], start=1):
        if m.space is not space and m.profile.space_signature != signature:
            raise ValueError(
                f"predict_many needs models of one space: model {d} ({m.profile.name!r}) is for"
                f" {m.profile.space_signature!r}, model 0 ({models[0].profile.name!r}) for {signature!r}"
            )
    op_ids = space.lower(space.encode_batch(list(archs)))
    out = np.empty((op_ids.shape[0], len(models)), dtype=np.float64)
    for d, m in enumerate(models):
        out[:, d] = m.predict_op_ids(op_ids)
    return out
