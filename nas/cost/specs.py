"""Device profiles derived from published peak figures, for devices you cannot time.

APPROXIMATE AND SPEC-DERIVED, NOT MEASURED. A :class:`DeviceSpec` holds round,
datasheet-style numbers (peak MAC throughput, memory bandwidth, a per-op
dispatch cost); :func:`spec_profile` turns one into a :class:`DeviceProfile`
for a space, so the search can target a device class before (or without)
calibrating on it. Use these for relative what-if comparisons; calibrate on the
real device (``nas latency calibrate``) for numbers you can rely on.

The coefficients are one unit's cost at peak (ms per unit)::

    dense_macs     -> 1e3 / peak_macs_per_s
    depthwise_macs -> 1e3 / (peak_macs_per_s * depthwise_efficiency)
    memory_bytes   -> 1e3 / memory_bytes_per_s
    ops            -> per_op_overhead_ms

The cost model is linear, so the predicted latency is the *sum* of compute,
memory and overhead time. A roofline model would take the *max* of compute and
memory time (they overlap on real hardware), so these predictions are an
upper-bound-style approximation, at most about twice the roofline estimate
plus overhead. ``memory_bytes`` counts float32 traffic of every op, ignoring
caches, so the memory term is pessimistic too, the more so for small
resolutions and for fp16 devices (which move half the bytes).

The table ships as versioned JSON data, ``nas/profiles/specs.json``
(``format_version`` 1); :func:`load_specs` reads it or a file of your own.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from nas.cost.profile import DeviceProfile, space_signature
from search_spaces.base import SearchSpace
from search_spaces.errors import UserError

SPECS_FORMAT_VERSION = 1
SPECS_PATH = Path(__file__).resolve().parent.parent / "profiles" / "specs.json"
"""The shipped table (package data ``nas/profiles/*.json``)."""

SPEC_WARNING = (
    "spec-derived from approximate published peak figures, NOT measured on the device; a linear sum of"
    " compute, memory and per-op time (an upper-bound-style approximation of a roofline max); use for rough"
    " relative comparisons only and calibrate on the real device for reliable latency"
)


class SpecError(UserError, ValueError):
    """A device spec or spec table that cannot be used (the message names the file and field)."""


@dataclass(frozen=True)
class DeviceSpec:
    """Published-style peak figures of a device class (approximate, spec-derived, not measured)."""

    name: str
    description: str
    peak_macs_per_s: float
    depthwise_efficiency: float
    memory_bytes_per_s: float
    per_op_overhead_ms: float
    source: str

    def __post_init__(self) -> None:
        for f in ("name", "description", "source"):
            if not isinstance(getattr(self, f), str) or not getattr(self, f).strip():
                raise SpecError(
                    f"device spec {self.name!r}: {f} must be a non-empty string, got {getattr(self, f)!r}"
                )
        for f in ("peak_macs_per_s", "depthwise_efficiency", "memory_bytes_per_s", "per_op_overhead_ms"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SpecError(f"device spec {self.name!r}: {f} must be a finite number, got {v!r}")
            object.__setattr__(self, f, float(v))
        if self.peak_macs_per_s <= 0 or self.memory_bytes_per_s <= 0:
            raise SpecError(
                f"device spec {self.name!r}: peak_macs_per_s and memory_bytes_per_s must be > 0, got"
                f" {self.peak_macs_per_s}, {self.memory_bytes_per_s}"
            )
        if not 0 < self.depthwise_efficiency <= 1:
            raise SpecError(
                f"device spec {self.name!r}: depthwise_efficiency is a fraction of peak in (0, 1], got"
                f" {self.depthwise_efficiency}"
            )
        if self.per_op_overhead_ms < 0:
            raise SpecError(
                f"device spec {self.name!r}: per_op_overhead_ms must be >= 0, got {self.per_op_overhead_ms}"
            )

    def coefficients(self) -> dict[str, float]:
        """ms per unit of each cost feature (names of ``supernets.profiling.FEATURES``)."""
        return {
            "dense_macs": 1e3 / self.peak_macs_per_s,
            "depthwise_macs": 1e3 / (self.peak_macs_per_s * self.depthwise_efficiency),
            "memory_bytes": 1e3 / self.memory_bytes_per_s,
            "ops": self.per_op_overhead_ms,
        }


_SPEC_FIELDS = tuple(f.name for f in fields(DeviceSpec))


def load_specs(path: str | os.PathLike[str] | None = None) -> dict[str, DeviceSpec]:
    """Spec table from JSON (default: the shipped ``nas/profiles/specs.json``), name -> spec, in file order.

    The file is ``{"format_version": 1, "specs": [{<every DeviceSpec field>}, ...]}``
    (other top-level keys, e.g. notes, are ignored). Raises :class:`SpecError`
    naming the file, the entry and the field on malformed data.
    """
    path = Path(path) if path is not None else SPECS_PATH
    where = f"device spec table {path}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"no {where}") from None
    except json.JSONDecodeError as exc:
        raise SpecError(
            f"{where} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {where}: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(
            f"{where}: must be a JSON object with format_version and specs, got {type(data).__name__}"
        )
    if data.get("format_version") != SPECS_FORMAT_VERSION:
        raise SpecError(
            f"{where}: format_version is {data.get('format_version')!r}, this version of nas reads"
            f" {SPECS_FORMAT_VERSION}"
        )
    entries = data.get("specs")
    if not isinstance(entries, list):
        raise SpecError(
            f"{where}: field 'specs' must be a list of device specs, got {type(entries).__name__}"
        )
    specs: dict[str, DeviceSpec] = {}
    for i, entry in enumerate(entries):
        label = f"{where}: specs[{i}]"
        if not isinstance(entry, dict):
            raise SpecError(f"{label} must be an object, got {type(entry).__name__}")
        label += f" ({entry.get('name')!r})" if "name" in entry else ""
        missing = [f for f in _SPEC_FIELDS if f not in entry]
        if missing:
            raise SpecError(f"{label}: missing field {missing[0]!r}; a spec needs {list(_SPEC_FIELDS)}")
        unknown = sorted(set(entry) - set(_SPEC_FIELDS))
        if unknown:
            raise SpecError(f"{label}: unknown field {unknown[0]!r}; a spec has {list(_SPEC_FIELDS)}")
        try:
            spec = DeviceSpec(**{f: entry[f] for f in _SPEC_FIELDS})
        except SpecError as exc:
            raise SpecError(f"{label}: {exc}") from None
        if spec.name in specs:
            raise SpecError(f"{label}: field 'name' repeats {spec.name!r}; spec names must be unique")
        specs[spec.name] = spec
    return specs


SPECS: Mapping[str, DeviceSpec] = MappingProxyType(load_specs())
"""The shipped spec table, read-only (load your own file with :func:`load_specs`)."""


def list_specs() -> dict[str, str]:
    """Spec name -> description, for the shipped table."""
    return {name: spec.description for name, spec in SPECS.items()}


def get_spec(name: str) -> DeviceSpec:
    """A shipped spec by name; unknown names list the known ones."""
    if name not in SPECS:
        raise KeyError(f"unknown device spec {name!r}; available: {list(SPECS)}")
    return SPECS[name]


def spec_profile(spec: DeviceSpec | str, space: SearchSpace) -> DeviceProfile:
    """Device profile for ``space`` from a spec's peak figures (intercept 0), marked spec-derived in ``meta``.

    ``spec`` is a :class:`DeviceSpec` or the name of a shipped one. Raises
    ``ValueError`` if the space's cost table has a feature the spec cannot price.
    """

    if isinstance(spec, str):
        spec = get_spec(spec)
    if not isinstance(spec, DeviceSpec):
        raise TypeError(f"spec must be a DeviceSpec or a spec name, got {type(spec).__name__}")
    per_unit = spec.coefficients()
    names = tuple(space.cost_table().feature_names)
    unpriced = [n for n in names if n not in per_unit]
    if unpriced:
        raise ValueError(
            f"space {space.name!r} has cost feature {unpriced[0]!r}, which device spec {spec.name!r} cannot"
            f" price (it prices {list(per_unit)})"
        )
    meta: dict[str, Any] = {
        "kind": "spec-derived",
        "spec": asdict(spec),
        "warning": SPEC_WARNING,
        "input_shape": list(space.input_shape),
        "batch": 1,
    }
    return DeviceProfile(
        spec.name, names, tuple(per_unit[n] for n in names), 0.0, space_signature(space), meta
    )
