"""Latency tables as CSV: how a user brings measurements from a device we cannot run on.

Format (one row per op; ``nas latency template`` writes it with every row and
an empty ``latency_ms`` column to fill in)::

    slot,op,description,latency_ms
    s0.b0,1,kernel=3 expand=3,0.412
    s0.b0,2,kernel=3 expand=4,

``slot`` is a slot name of the space's cost table (``fixed``, ``s{i}.b{j}``),
``op`` the op id within the slot, ``latency_ms`` the measured time of that op
alone at batch 1 (empty = not measured: the analytical model fitted to the
measured rows fills it in). ``description`` is ignored on import.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import numpy as np

from nas.cost.calibrate import fit_nnls
from nas.cost.profile import DeviceProfile, ProfileError, space_signature
from nas.run.files import atomic_write_text
from search_spaces import SearchSpace

COLUMNS = ("slot", "op", "description", "latency_ms")


def write_template(space: SearchSpace, path: str | os.PathLike[str]) -> Path:
    table = space.cost_table()
    desc = space.op_descriptions()
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for s, slot in enumerate(table.slot_names):
        for o in range(table.features.shape[1]):
            if table.features[s, o].any() or (s > 0 and o == 0):
                w.writerow([slot, o, desc[s][o], "0" if (s > 0 and o == 0) else ""])
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def import_table(space: SearchSpace, path: str | os.PathLike[str], device: str) -> DeviceProfile:
    """A profile from a CSV of measured op latencies (errors name the file, line and field)."""
    table = space.cost_table()
    slots = {name: i for i, name in enumerate(table.slot_names)}
    lut = np.full(table.features.shape[:2], np.nan)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"cannot read latency table {path}: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("slot", "op", "latency_ms") if c not in (reader.fieldnames or [])]
    if missing:
        raise ProfileError(
            f"{path}: missing column(s) {missing}; expected header {','.join(COLUMNS)} (see `nas latency"
            " template`)"
        )
    for line, row in enumerate(reader, start=2):
        where = f"{path}, line {line}"
        if row["slot"] not in slots:
            raise ProfileError(f"{where}: unknown slot {row['slot']!r}; slots of this space: {list(slots)}")
        try:
            op = int(row["op"])
        except (TypeError, ValueError):
            raise ProfileError(f"{where}: op must be an integer op id, got {row['op']!r}") from None
        if not 0 <= op < lut.shape[1]:
            raise ProfileError(f"{where}: op {op} out of range 0..{lut.shape[1] - 1}")
        raw = (row["latency_ms"] or "").strip()
        if not raw:
            continue
        try:
            ms = float(raw)
        except ValueError:
            raise ProfileError(f"{where}: latency_ms must be a number of milliseconds, got {raw!r}") from None
        if not math.isfinite(ms) or ms < 0:
            raise ProfileError(f"{where}: latency_ms must be finite and >= 0, got {ms}")
        lut[slots[row["slot"]], op] = ms
    measured = ~np.isnan(lut) & table.features.any(axis=2)
    if measured.sum() < 2:
        raise ProfileError(
            f"{path}: needs at least 2 measured ops with non-zero cost, found {int(measured.sum())}"
        )
    coef, _ = fit_nnls(table.features[measured], lut[measured])
    meta = {"kind": "imported table", "source": str(path), "measured_ops": int(measured.sum())}
    return DeviceProfile(
        device,
        tuple(table.feature_names),
        tuple(coef),
        0.0,
        space_signature(space),
        meta,
        lut=tuple(map(tuple, lut)),
    )
