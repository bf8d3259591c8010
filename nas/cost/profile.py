"""Device profiles: the fitted coefficients of the cost model for one device and space.

A profile is plain JSON so it can be shipped, diffed and reviewed. Its
coefficients are in ms per feature unit, and feature scales depend on the space
configuration (input size, widths), so a profile records the ``space_signature``
it was calibrated on and is refused elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nas.run.files import atomic_write_text
from search_spaces.base import SearchSpace
from search_spaces.errors import UserError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: analytical coefficients only (no lookup table)
_FIELDS = ("name", "feature_names", "coef", "intercept", "space_signature", "meta")
RECALIBRATE_HINT = "re-run `nas latency calibrate` for this space"


class ProfileError(UserError, ValueError):
    """A device profile that cannot be used: missing, malformed, or made for another space."""


@dataclass(frozen=True)
class DeviceProfile:
    """Cost model of one device: ``latency_ms = intercept + sum over slots of table[slot, op]``.

    ``table = lut_scale * lut[slot, op]`` where the op's latency was measured
    (``lut``, ms; ``None``/NaN where not), else ``lut_scale * dot(coef, features)``,
    the analytical fallback fitted to the measured ops. Profiles without a lookup
    table (``lut=None``) use the analytical model everywhere with ``lut_scale=1``.
    """

    name: str
    feature_names: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float
    space_signature: str
    meta: dict[str, Any] = field(default_factory=dict)
    lut: tuple[tuple[float, ...], ...] | None = None
    lut_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.lut is not None:
            try:
                lut = tuple(tuple(math.nan if v is None else float(v) for v in row) for row in self.lut)
            except (TypeError, ValueError) as exc:
                raise ProfileError(
                    f"profile {self.name!r}: lut entries must be numbers or null ({exc})"
                ) from None
            if any(v < 0 for row in lut for v in row if not math.isnan(v)):
                raise ProfileError(f"profile {self.name!r}: lut latencies must be >= 0 ms")
            object.__setattr__(self, "lut", lut)
        if not math.isfinite(float(self.lut_scale)) or float(self.lut_scale) <= 0:
            raise ProfileError(
                f"profile {self.name!r}: lut_scale must be a finite number > 0, got {self.lut_scale}"
            )
        object.__setattr__(self, "lut_scale", float(self.lut_scale))
        object.__setattr__(self, "feature_names", tuple(str(n) for n in self.feature_names))
        try:
            object.__setattr__(self, "coef", tuple(float(c) for c in self.coef))
            object.__setattr__(self, "intercept", float(self.intercept))
        except (TypeError, ValueError) as exc:
            raise ProfileError(
                f"profile {self.name!r}: coefficients and intercept must be numbers ({exc})"
            ) from None
        if len(self.coef) != len(self.feature_names):
            raise ProfileError(
                f"profile {self.name!r} has {len(self.coef)} coefficients for {len(self.feature_names)}"
                f" feature names {list(self.feature_names)}"
            )
        for n, c in zip(self.feature_names, self.coef):
            if not math.isfinite(c) or c < 0:
                raise ProfileError(
                    f"profile {self.name!r}: coefficient of {n!r} is {c}; coefficients must be finite and >="
                    f" 0 ({RECALIBRATE_HINT})"
                )
        if not math.isfinite(self.intercept) or self.intercept < 0:
            raise ProfileError(
                f"profile {self.name!r}: intercept is {self.intercept}; it must be finite and >= 0"
                f" ({RECALIBRATE_HINT})"
            )

    def check_compatible(self, signature: str, feature_names: Sequence[str]) -> None:
        """Raise :class:`ProfileError` unless this profile was calibrated for this space configuration."""
        if tuple(feature_names) != self.feature_names:
            raise ProfileError(
                f"profile {self.name!r} has features {list(self.feature_names)} but the space's cost table"
                f" has {list(feature_names)}; {RECALIBRATE_HINT}"
            )
        if signature != self.space_signature:
            raise ProfileError(
                f"profile {self.name!r} was calibrated for space {self.space_signature!r}, not {signature!r} "
                f"(feature scales differ between space configurations); {RECALIBRATE_HINT}"
            )

    @property
    def runtime(self) -> str:
        """The inference runtime the profile's latencies were measured in (profiles from before runtimes
        were recorded: torch)."""
        return str(self.meta.get("runtime", "torch"))

    def check_runtime(self, runtime: str) -> None:
        """Raise :class:`ProfileError` unless this profile was measured in ``runtime``: latencies of one
        runtime say little about another's (they even order networks differently)."""
        if self.runtime != runtime:
            raise ProfileError(
                f"profile {self.name!r} was measured in runtime {self.runtime!r}"
                f" {self.meta.get('runtime_version', '')}".rstrip()
                + f", not {runtime!r}: calibrate one for {runtime} (`nas latency calibrate --runtime"
                f" {runtime}`) or pass --runtime {self.runtime}"
            )

    # --- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "feature_names": list(self.feature_names),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "space_signature": self.space_signature,
            "meta": _json_safe(self.meta),
            "lut": (
                None
                if self.lut is None
                else [[None if math.isnan(v) else v for v in row] for row in self.lut]
            ),
            "lut_scale": self.lut_scale,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "profile") -> "DeviceProfile":
        if not isinstance(data, dict):
            raise ProfileError(f"{source}: a device profile must be a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise ProfileError(
                f"{source}: format_version is {version!r}, this version of nas reads format_version"
                f" {list(READABLE_VERSIONS)}; {RECALIBRATE_HINT}"
            )
        missing = [k for k in _FIELDS if k not in data]
        if missing:
            raise ProfileError(f"{source}: missing field(s) {missing}; a profile needs {list(_FIELDS)}")
        if not isinstance(data["feature_names"], list) or not isinstance(data["coef"], list):
            raise ProfileError(f"{source}: feature_names and coef must be lists")
        numbers = [data["intercept"], *data["coef"]]
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in numbers):
            raise ProfileError(
                f"{source}: coef and intercept must be JSON numbers, got coef={data['coef']!r},"
                f" intercept={data['intercept']!r}"
            )
        if not isinstance(data["meta"], dict):
            raise ProfileError(f"{source}: meta must be an object, got {type(data['meta']).__name__}")
        try:
            lut = data.get("lut")
            if lut is not None and (not isinstance(lut, list) or not all(isinstance(r, list) for r in lut)):
                raise ProfileError("lut must be a list of rows (one per slot) of op latencies in ms or null")
            return cls(
                str(data["name"]),
                tuple(data["feature_names"]),
                tuple(data["coef"]),
                data["intercept"],
                str(data["space_signature"]),
                dict(data["meta"]),
                lut=None if lut is None else tuple(tuple(r) for r in lut),
                lut_scale=data.get("lut_scale", 1.0),
            )
        except ProfileError as exc:
            raise ProfileError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "profile") -> "DeviceProfile":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(
                f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno});"
                f" {RECALIBRATE_HINT}"
            ) from None
        return cls.from_dict(data, source)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file in the same folder, then ``os.replace``): readers never see half a
        file."""
        atomic_write_text(path, self.to_json())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "DeviceProfile":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ProfileError(
                f"no device profile at {path}; run `nas latency calibrate` to create one"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(f"cannot read device profile {path}: {exc}") from None
        return cls.from_json(text, source=f"device profile {path}")


def space_signature(space: SearchSpace) -> str:
    """``<name>-<C>x<H>x<W>-<hash>``: identifies the configuration a profile's coefficients apply to.

    The hash covers the choices, the network config (widths, activations, ...)
    and the cost table itself, so any change that rescales features or changes
    what runs gives a different signature.
    """
    ct = space.cost_table()
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"choices": {k: list(v) for k, v in space.choices.items()}, "config": repr(space.cfg)},
            sort_keys=True,
        ).encode()
    )
    h.update(json.dumps([list(ct.feature_names), list(ct.slot_names), list(ct.features.shape)]).encode())
    h.update(np.ascontiguousarray(ct.features, dtype="<f8").tobytes())
    shape = "x".join(str(d) for d in space.input_shape)
    return f"{space.name}-{shape}-{h.hexdigest()[:16]}"


def _json_safe(value: Any) -> Any:
    """Meta as strict JSON: NaN/inf become null, tuples lists, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
