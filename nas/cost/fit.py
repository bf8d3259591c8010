"""A device's op table fitted from whole-network latencies (``nas latency fit``).

Some devices can run a network but not time its ops one by one (a board
without Python, a runtime that fuses blocks, a vendor's benchmark tool that
only reports a model's latency). Every network of a space is the sum of one op
per slot (:meth:`SearchSpace.lower`), so whole-network latencies are linear in
the op table: ``latency_b = intercept + sum_s table[s, op_bs]``. The table is
fitted by non-negative least squares on relative errors (small and large
networks count alike), with a ridge pull towards a prior table: the analytical
model (compute, memory, overhead features) fitted to the same networks unless
another profile is given. The prior decides what the data cannot: ops no
network of the file uses keep the prior's latency, and the split between slots
that always run together (the stem and the first block of every stage). The
pull's strength is chosen by K-fold cross-validation, and the reported Kendall
tau, MAPE and share within +/-10% are cross-validated too (nested: each fold
chooses its own strength on its own training part).

File format (one measured network per row; other columns are ignored)::

    arch,latency_ms
    "{""s0.depth"": 2, ...}",4.12
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls
from scipy.stats import kendalltau

from nas.cost.profile import DeviceProfile, ProfileError, space_signature
from search_spaces.arch import Arch, InvalidArchitectureError
from search_spaces.base import SearchSpace

ARCH_COLUMNS = ("arch", "architecture")
LATENCY_COLUMN = "latency_ms"
STRENGTHS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # ridge strengths tried, relative to the data term
MIN_ROWS = 5


class LatencyFileError(ProfileError):
    """A file of measured networks that cannot be fitted (the message names the file and the row)."""


def read_latency_csv(space: SearchSpace, path: str | os.PathLike[str]) -> tuple[list[Arch], np.ndarray]:
    """The architectures and latencies (ms) of a CSV; the first problem found is one error naming its line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LatencyFileError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    arch_col = next((c for c in ARCH_COLUMNS if c in fields), None)
    missing = ([] if arch_col else [ARCH_COLUMNS[0]]) + ([] if LATENCY_COLUMN in fields else [LATENCY_COLUMN])
    if missing:
        raise LatencyFileError(
            f"{path}: missing column(s) {missing}; expected a header with arch (the architecture as a JSON"
            f" object, or the space's own string form) and {LATENCY_COLUMN} (the network's latency in ms),"
            f" found {fields}"
        )
    archs, ys = [], []
    for line, row in enumerate(reader, start=2):
        where = f"{path}, line {line}"
        archs.append(_parse(space, (row.get(arch_col) or "").strip(), where))
        ys.append(_latency(row.get(LATENCY_COLUMN), where))
    if len(archs) < MIN_ROWS:
        raise LatencyFileError(
            f"{path}: {len(archs)} measured network(s); a fit and its cross-validation need at least"
            f" {MIN_ROWS}"
        )
    return archs, np.asarray(ys, dtype=float)


def read_archs(space: SearchSpace, path: str | os.PathLike[str]) -> list[Arch]:
    """Architectures from a CSV with an ``arch`` column, or from JSON lines (one architecture per line: its
    object, an object with an ``arch`` field, or the space's string form); errors name the line."""
    import json

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LatencyFileError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    archs: list[Arch] = []
    if path.suffix.lower() == ".csv" or (first.strip() and not first.lstrip().startswith("{")):
        reader = csv.DictReader(io.StringIO(text))
        col = next((c for c in ARCH_COLUMNS if c in (reader.fieldnames or [])), None)
        if col is None:
            raise LatencyFileError(
                f"{path}: no arch column (found {reader.fieldnames}); give a CSV with an arch column (JSON or"
                " the space's string form) or JSON lines"
            )
        for line, row in enumerate(reader, start=2):
            archs.append(_parse(space, (row.get(col) or "").strip(), f"{path}, line {line}"))
    else:
        for line, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            where = f"{path}, line {line}"
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise LatencyFileError(f"{where}: not a JSON line ({exc.msg})") from None
            if isinstance(data, dict) and "arch" in data and isinstance(data["arch"], (dict, str)):
                data = data["arch"]
            archs.append(_parse(space, data if isinstance(data, str) else json.dumps(data), where))
    if not archs:
        raise LatencyFileError(f"{path}: no architectures")
    return archs


def _parse(space: SearchSpace, text: str, where: str) -> Arch:
    if not text:
        raise LatencyFileError(f"{where}: empty architecture")
    try:
        return space.parse_arch(text)
    except InvalidArchitectureError as exc:
        raise LatencyFileError(f"{where}: invalid architecture: {exc}") from None


def _latency(raw: str | None, where: str) -> float:
    text = (raw or "").strip()
    try:
        ms = float(text)
    except ValueError:
        raise LatencyFileError(
            f"{where}: {LATENCY_COLUMN} must be a number of milliseconds, got {text!r}"
        ) from None
    if not math.isfinite(ms) or ms <= 0:
        raise LatencyFileError(f"{where}: {LATENCY_COLUMN} must be a finite number > 0 ms, got {text!r}")
    return ms


# --------------------------------------------------------------------------- the fit


def summed_features(space: SearchSpace, archs: list[Arch]) -> np.ndarray:
    """Per-architecture feature totals ``[B, F]``: the design matrix of the fit."""
    feats = space.cost_table().features
    op_ids = space.lower(space.encode_batch(archs))
    return feats[np.arange(feats.shape[0]), op_ids].sum(axis=1)


def fit_nnls(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """``coef >= 0, intercept >= 0`` minimising the *relative* squared error.

    Rows are divided by the measured latency so small and large networks count
    alike (what MAPE and ranking care about); columns are scaled to unit maximum
    because raw features span ~1 (ops) to ~1e8 (bytes), which NNLS handles badly.
    """
    A = np.column_stack([X, np.ones(len(X))]) / y[:, None]
    scale = np.abs(A).max(axis=0)
    scale[scale == 0] = 1.0
    sol, _ = nnls(A / scale, np.ones(len(y)))
    sol = sol / scale
    return sol[:-1], float(sol[-1])


def fit_diagnostics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Ranking and accuracy of predictions: kendall_tau, mape (fraction), within_10pct (fraction)."""
    rel = np.abs(pred - y) / y
    tau = float(kendalltau(pred, y).statistic) if len(y) >= 2 else float("nan")
    return {"kendall_tau": tau, "mape": float(rel.mean()), "within_10pct": float((rel <= 0.10).mean())}


@dataclass(frozen=True)
class Prior:
    """What the fit is pulled towards: a table ``[S, O]`` (ms), an intercept, and the analytical
    coefficients that fill ops outside the table."""

    table: np.ndarray
    intercept: float
    coef: np.ndarray
    source: str


def analytic_prior(space: SearchSpace, archs: Sequence[Arch], y: np.ndarray) -> Prior:
    """The analytical model (compute, memory, per-op overhead) fitted to these networks."""
    features = space.cost_table().features
    coef, intercept = fit_nnls(summed_features(space, list(archs)), y)
    return Prior(features @ coef, intercept, coef, "analytical model fitted to the same networks")


def profile_prior(table: np.ndarray, intercept: float, coef: Sequence[float], name: str) -> Prior:
    return Prior(np.asarray(table, dtype=float), float(intercept), np.asarray(coef, dtype=float), name)


def _variables(space: SearchSpace) -> np.ndarray:
    """``(slot, op)`` pairs that cost something (padded and skipped ops are 0 by definition), ``[V, 2]``."""
    return np.argwhere(space.cost_table().features.any(axis=2))


def usage_matrix(space: SearchSpace, archs: Sequence[Arch]) -> np.ndarray:
    """``U[b, v] = 1`` when network ``b`` runs op ``v`` of :func:`_variables`: its op count per (slot, op)."""
    var = _variables(space)
    op_ids = space.lower(space.encode_batch(list(archs)))
    return (op_ids[:, var[:, 0]] == var[None, :, 1]).astype(float)


def solve(
    U: np.ndarray, y: np.ndarray, t0: np.ndarray, c0: float, strength: float
) -> tuple[np.ndarray, float]:
    """Non-negative ``(t, c)`` minimising ``sum_b ((U t + c)_b / y_b - 1)^2 + strength * B * sum_v ((t_v -
    t0_v) / w_v)^2`` (and the intercept's own term), ``w`` the prior itself with a floor.

    The prior term is relative (a 10% change of a large op costs what 10% of a
    small one does) and scaled by the number of networks, so one strength means
    the same with 20 or 2,000 rows.
    """
    n_rows, n_vars = U.shape
    floor = 0.01 * float(np.median(y)) / max(1, n_vars)
    w = np.maximum(t0, floor)
    wc = max(c0, 0.05 * float(np.median(y)))
    data = np.column_stack([U, np.ones(n_rows)]) / y[:, None]
    k = math.sqrt(strength * n_rows)
    penalty = np.diag(np.concatenate([k / w, [k / wc]]))
    A = np.vstack([data, penalty])
    b = np.concatenate([np.ones(n_rows), k * t0 / w, [k * c0 / wc]])
    scale = np.abs(A).max(axis=0)
    scale[scale == 0] = 1.0
    sol, _ = nnls(A / scale, b, maxiter=50 * A.shape[1])
    sol = sol / scale
    return sol[:-1], float(sol[-1])


@dataclass(frozen=True)
class OpTableFit:
    """A fitted op table: ``table[s, o]`` ms (0 where an op costs nothing), the intercept, the ridge
    strength chosen, which ops the data covered, and the prior."""

    table: np.ndarray
    intercept: float
    strength: float
    covered: np.ndarray  # bool [S, O]: some network of the data runs this op
    prior: Prior

    def predict(self, space: SearchSpace, archs: Sequence[Arch]) -> np.ndarray:
        op_ids = space.lower(space.encode_batch(list(archs)))
        return self.table[np.arange(self.table.shape[0]), op_ids].sum(axis=1) + self.intercept


def _fit_at(
    space: SearchSpace, archs: Sequence[Arch], y: np.ndarray, prior: Prior, strength: float
) -> OpTableFit:
    var = _variables(space)
    U = usage_matrix(space, archs)
    t, c = solve(U, y, prior.table[var[:, 0], var[:, 1]], prior.intercept, strength)
    table = np.zeros(prior.table.shape)
    table[var[:, 0], var[:, 1]] = t
    covered = np.zeros(prior.table.shape, dtype=bool)
    covered[var[:, 0], var[:, 1]] = U.any(axis=0)
    return OpTableFit(table, c, strength, covered, prior)


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    return [f for f in np.array_split(np.random.default_rng(seed).permutation(n), min(k, n)) if len(f)]


def _cv_predictions(
    space: SearchSpace,
    archs: Sequence[Arch],
    y: np.ndarray,
    make_prior: Any,
    strength: float | None,
    k: int,
    seed: int,
) -> np.ndarray:
    """Out-of-fold predictions; ``strength=None`` chooses one per fold by an inner cross-validation."""
    pred = np.empty(len(y))
    for fold in _folds(len(y), k, seed):
        train = np.setdiff1d(np.arange(len(y)), fold)
        tr_archs = [archs[i] for i in train]
        s = (
            strength
            if strength is not None
            else choose_strength(space, tr_archs, y[train], make_prior, k, seed + 1)
        )
        fit = _fit_at(space, tr_archs, y[train], make_prior(tr_archs, y[train]), s)
        pred[fold] = fit.predict(space, [archs[i] for i in fold])
    return pred


def choose_strength(
    space: SearchSpace, archs: Sequence[Arch], y: np.ndarray, make_prior: Any, k: int, seed: int
) -> float:
    """The ridge strength of :data:`STRENGTHS` with the lowest cross-validated MAPE on these networks."""
    if len(y) < 2 * 2:
        return STRENGTHS[len(STRENGTHS) // 2]
    scores = []
    for s in STRENGTHS:
        pred = _cv_predictions(space, archs, y, make_prior, s, min(k, 3), seed)
        scores.append(float(np.mean(np.abs(pred - y) / y)))
    return STRENGTHS[int(np.argmin(scores))]


def fit_op_table(
    space: SearchSpace,
    archs: Sequence[Arch],
    y: np.ndarray,
    prior: Prior | None = None,
    folds: int = 5,
    seed: int = 0,
    cross_validate: bool = True,
) -> tuple[OpTableFit, dict[str, Any]]:
    """Fit the op table to whole-network latencies ``y`` (ms); returns the fit and its diagnostics.

    ``prior=None`` uses :func:`analytic_prior`, refitted inside every fold so the
    cross-validated figures never see their test networks. The diagnostics
    (``kendall_tau``, ``mape``, ``within_10pct``) are out-of-fold predictions of
    a nested cross-validation; ``train`` is the final fit on all rows.
    """
    y = np.asarray(y, dtype=float)
    archs = list(archs)

    def make_prior(a: Sequence[Arch], t: np.ndarray) -> Prior:
        return prior if prior is not None else analytic_prior(space, a, t)

    strength = choose_strength(space, archs, y, make_prior, folds, seed)
    fit = _fit_at(space, archs, y, make_prior(archs, y), strength)
    diag: dict[str, Any] = {
        "n": len(y),
        "folds": min(folds, len(y)),
        "strength": strength,
        "ops_covered": int(fit.covered.sum()),
        "ops_total": int(space.cost_table().features.any(axis=2).sum()),
        "prior": fit.prior.source,
        "train": fit_diagnostics(fit.predict(space, archs), y),
    }
    if cross_validate:
        cv = fit_diagnostics(_cv_predictions(space, archs, y, make_prior, None, folds, seed), y)
        diag.update(cv)
        prior_cv = _cv_prior_only(space, archs, y, make_prior, folds, seed)
        diag["prior_only"] = prior_cv
    return fit, diag


def _cv_prior_only(
    space: SearchSpace, archs: Sequence[Arch], y: np.ndarray, make_prior: Any, k: int, seed: int
) -> dict[str, float]:
    """The prior alone, cross-validated the same way: what the op table adds over it."""
    table = space.cost_table()
    pred = np.empty(len(y))
    for fold in _folds(len(y), k, seed):
        train = np.setdiff1d(np.arange(len(y)), fold)
        p = make_prior([archs[i] for i in train], y[train])
        op_ids = space.lower(space.encode_batch([archs[i] for i in fold]))
        pred[fold] = p.table[np.arange(table.features.shape[0]), op_ids].sum(axis=1) + p.intercept
    return fit_diagnostics(pred, y)


def fitted_profile(space: SearchSpace, fit: OpTableFit, device: str, meta: dict[str, Any]) -> DeviceProfile:
    """A device profile predicting ``fit``'s table exactly (every costing op in the lookup table)."""
    table = space.cost_table()
    lut = np.where(table.features.any(axis=2), fit.table, np.nan)
    return DeviceProfile(
        device,
        tuple(table.feature_names),
        tuple(float(c) for c in fit.prior.coef),
        fit.intercept,
        space_signature(space),
        meta,
        lut=tuple(map(tuple, lut)),
        lut_scale=1.0,
    )
