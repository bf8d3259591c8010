"""Machine-state guard: a fixed reference op timed during calibration and again before predicting.

A profile is a snapshot of one machine in one state. A second CPU-bound
process, a thermal or power limit, or a noisy neighbour on a shared VM changes
every op's latency at once, and nothing in the profile's own numbers shows it.
So calibration times one fixed op (a 3x3 convolution, one thread) before,
between and after its rounds and records its speed and the load average; a
calibration whose reference moved by more than :data:`DRIFT_LIMIT` was measured
on a changing machine and is flagged. Later, a command predicting with the
profile on the machine it was calibrated on times the reference again and
warns when the machine is no longer in the state the profile describes.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from search_spaces.errors import UserError

DRIFT_LIMIT = 0.15  # relative change of the reference op's speed that flags a calibration or warns a user
_CHUNK = 60  # reference op runs per timed chunk (about 8 ms on a 2020s server core): long enough that a
# competing process's time slices show, short enough to sample between rounds
_SAMPLE_EVERY_S = 0.3  # during calibration: at most one reference sample per this many seconds of rounds
REMEDY = (
    "calibrate again (`nas latency calibrate`) or refit on fresh measurements (`nas latency measure --refit`)"
)


class MachineStateWarning(UserWarning):
    """The machine runs at another speed than when the profile in use was calibrated."""


_X = None  # the reference op's tensors, made once (their values do not matter, their shapes fix the work)


def _tensors() -> tuple[torch.Tensor, torch.Tensor]:
    global _X
    if _X is None:
        g = torch.Generator().manual_seed(0)
        _X = (torch.randn(1, 32, 28, 28, generator=g), torch.randn(32, 32, 3, 3, generator=g))
    return _X


def reference_sample_ms() -> float:
    """One sample of the reference op (ms per run): the fastest of 3 chunks of :data:`_CHUNK` runs, 1 thread.

    The fastest chunk ignores a single interruption; a competing process that
    takes a share of the core for the whole sample still slows every chunk.
    """
    x, w = _tensors()
    prev = torch.get_num_threads()
    best = float("inf")
    try:
        torch.set_num_threads(1)
        with torch.inference_mode():
            torch.nn.functional.conv2d(x, w, padding=1)  # warm
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(_CHUNK):
                    torch.nn.functional.conv2d(x, w, padding=1)
                best = min(best, (time.perf_counter() - t0) / _CHUNK)
    finally:
        torch.set_num_threads(prev)
    return best * 1e3


def processor_name() -> str:
    """CPU model: ``platform.processor()`` is often empty on Linux, so fall back to /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_id() -> dict[str, str]:
    """What identifies the machine a profile was calibrated on (host name and processor)."""
    return {"host": platform.node(), "processor": processor_name()}


def _load_average() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except OSError:  # not available on every platform
        return None


@dataclass
class ReferenceTracker:
    """Reference samples taken before, between (at most every :data:`_SAMPLE_EVERY_S`) and after timing
    rounds."""

    samples_ms: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    _last: float = 0.0

    def sample(self) -> None:
        self.samples_ms.append(reference_sample_ms())
        load = _load_average()
        if load is not None:
            self.load.append(load)
        self._last = time.perf_counter()

    def between_rounds(self) -> None:
        if time.perf_counter() - self._last >= _SAMPLE_EVERY_S:
            self.sample()

    def drift(self) -> float:
        """Largest relative difference between the median reference time of the run's first, middle and
        last thirds (0 with fewer than 2 samples)."""
        s = np.asarray(self.samples_ms, dtype=float)
        if len(s) < 2:
            return 0.0
        parts = [np.median(p) for p in np.array_split(s, min(3, len(s)))]
        return float(max(parts) / min(parts) - 1)

    def summary(self) -> dict[str, Any]:
        """What a profile records in ``meta["machine_state"]``."""
        drift = self.drift()
        out: dict[str, Any] = {
            **machine_id(),
            "reference_op": f"conv2d 32->32 3x3 on 1x32x28x28, 1 thread, fastest of 3 x {_CHUNK} runs",
            "reference_ms": float(np.median(self.samples_ms)) if self.samples_ms else None,
            "reference_samples_ms": [round(v, 5) for v in self.samples_ms],
            "drift": drift,
            "drift_limit": DRIFT_LIMIT,
            "unstable": drift > DRIFT_LIMIT,
            "load_average_1min": {"start": self.load[0], "end": self.load[-1]} if self.load else None,
            "cpu_count": os.cpu_count(),
        }
        if out["unstable"]:
            s = self.samples_ms
            out["why"] = (
                f"the reference op's speed moved by {100 * drift:.0f}% during calibration (from"
                f" {min(s):.3f} to {max(s):.3f} ms per run; load average"
                f" {self._load_text()}): the machine was busy or changed speed"
            )
        return out

    def _load_text(self) -> str:
        if not self.load:
            return "unknown"
        return f"{self.load[0]:.2f} at start, {self.load[-1]:.2f} at end, {os.cpu_count()} cores"


def machine_state_warning(meta: dict[str, Any], name: str, reference_ms: float | None = None) -> str | None:
    """One line when the machine profile ``name`` was calibrated on now runs the reference op at another
    speed.

    ``meta`` is the profile's ``meta``; profiles from another machine (or
    without a recorded reference) are not checked. ``reference_ms`` is the
    speed now (timed when not given).
    """
    state = meta.get("machine_state")
    if not isinstance(state, dict) or not isinstance(state.get("reference_ms"), (int, float)):
        return None
    here = machine_id()
    if state.get("host") != here["host"] or state.get("processor") != here["processor"]:
        return None
    then = float(state["reference_ms"])
    if reference_ms is None:
        reference_ms = float(np.median([reference_sample_ms() for _ in range(5)]))
    change = reference_ms / then - 1
    if abs(change) <= DRIFT_LIMIT:
        return None
    load = _load_average()
    how = "slower" if change > 0 else "faster"
    return (
        f"machine state changed: the reference op takes {reference_ms:.3f} ms now and took {then:.3f} ms"
        f" when profile {name!r} was calibrated ({abs(100 * change):.0f}% {how};"
        f" load average now {'unknown' if load is None else f'{load:.2f}'}), so its predictions describe the"
        f" machine as it was; {REMEDY}"
    )


_checked: dict[tuple[str, str], str | None] = {}


def warn_if_machine_changed(meta: dict[str, Any], name: str) -> str | None:
    """:func:`machine_state_warning` once per process and profile, issued as a :class:`MachineStateWarning`.

    A profile is known by its name and the machine state it recorded (what the warning depends on), so two
    calibrations of one name in a day are checked apart.
    """
    key = (name, json.dumps(meta.get("machine_state"), sort_keys=True, default=str))
    if key not in _checked:
        _checked[key] = machine_state_warning(meta, name)
        if _checked[key]:
            warnings.warn(_checked[key], MachineStateWarning, stacklevel=3)
    return _checked[key]


class CalibrationUnstableError(UserError, RuntimeError):
    """A calibration the guard flagged, refused on request (``nas latency calibrate --strict``)."""
