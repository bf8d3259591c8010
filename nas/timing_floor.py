"""How long calibration, validation and the export's measured latency time their networks at the least.

3 s by default: long enough for the machine-state guard (:mod:`nas.cost.machine`) to take about ten
reference samples between rounds. ``NAS_MIN_TIMING_SECONDS`` lowers it for a quick, less precise look (the
test suite uses 0.6 s); the export times for half of it. A module of its own, without torch, so the command
line checks the variable before any command starts.
"""

from __future__ import annotations

import math
import os

ENV = "NAS_MIN_TIMING_SECONDS"
DEFAULT_SECONDS = 3.0


def min_timing_seconds() -> float:
    """The floor in seconds, read from the environment on each call (so a test can change it)."""
    text = os.environ.get(ENV)
    if text is None or not text.strip():
        return DEFAULT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        from search_spaces.errors import UserError

        raise UserError(f"{ENV}={text!r}: expected a number of seconds >= 0 (default {DEFAULT_SECONDS:g})")
    return value
