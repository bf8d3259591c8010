"""Where device profiles come from: the per-space cache, spec names, explicit files and a run's pinned
profile.

A profile is calibrated once per machine and space configuration and cached
under :func:`nas.run.files.cache_home`; a run directory *pins* the cpu profile
its search used (``cost_profile.json``), so a resumed search, its export and a
single-path training all predict the same numbers even after the cache is
recalibrated. Every command that needs a latency model asks here.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

from nas.cost.calibrate import calibrate
from nas.cost.machine import MachineStateWarning, warn_if_machine_changed
from nas.cost.model import CostModel
from nas.cost.profile import DeviceProfile, ProfileError, space_signature
from nas.cost.runtimes import DEFAULT_RUNTIME
from nas.cost.specs import SPECS, spec_profile
from nas.run.context import RunContext
from nas.run.files import cache_home
from search_spaces.base import SearchSpace

PROFILE_IN_RUN = "cost_profile.json"
"""The cpu profile a run's search uses, pinned in its run directory."""


def default_profile_path(device: str, signature: str) -> Path:
    """``<cache home>/profiles/<device>-<hash of signature>.json`` (``~/.cache/nas-engine`` by default)."""
    safe_device = re.sub(r"[^A-Za-z0-9_.-]+", "_", device).strip("._") or "device"
    digest = hashlib.sha256(signature.encode()).hexdigest()[:16]
    return cache_home() / "profiles" / f"{safe_device}-{digest}.json"


def profile_name(device: str, runtime: str = DEFAULT_RUNTIME) -> str:
    """The name a calibrated profile is cached and found under: ``cpu`` for torch, ``cpu-<runtime>`` for
    another runtime (so ``--search.devices=cpu,cpu-onnxruntime`` finds both)."""
    return device if runtime == DEFAULT_RUNTIME else f"{device}-{runtime}"


def checked(model: CostModel) -> CostModel:
    """``model``, after warning (once per process and profile) when this is the machine its profile was
    calibrated on and the machine's reference speed moved since (:mod:`nas.cost.machine`)."""
    p = model.profile
    warn_if_machine_changed(p.meta, p.name)
    return model


def load_or_calibrate(
    space: SearchSpace,
    device: str = "cpu",
    path: str | os.PathLike[str] | None = None,
    recalibrate: bool = False,
    **calib_kwargs: Any,
) -> CostModel:
    """Cost model from the cached profile when it is valid for ``space``; else calibrate and cache it.

    A cached profile measured with other ``threads``/``batch``/``runtime`` than
    requested is not what was asked for, so it is recalibrated too. A
    calibration the machine-state guard flags is kept (marked ``unstable`` in
    its ``machine_state``) with a :class:`MachineStateWarning`.
    """
    path = Path(path) if path is not None else default_profile_path(device, space_signature(space))
    if not recalibrate and path.exists():
        try:
            profile = DeviceProfile.load(path)
            model = CostModel(space, profile)
            stale = [
                k
                for k in ("threads", "batch", "runtime")
                if k in calib_kwargs
                and profile.meta.get(k, DEFAULT_RUNTIME if k == "runtime" else None) != calib_kwargs[k]
            ]
            if not stale:
                return checked(model)
            warnings.warn(
                f"cached profile {path} was measured with other {stale}; recalibrating", stacklevel=2
            )
        except ProfileError as exc:
            warnings.warn(f"ignoring cached profile: {exc}; recalibrating", stacklevel=2)
    profile, _ = calibrate(space, device_name=device, **calib_kwargs)
    state = profile.meta.get("machine_state", {})
    if state.get("unstable"):
        warnings.warn(
            f"profile {device!r} marked unstable: {state.get('why')}", MachineStateWarning, stacklevel=2
        )
    profile.save(path)
    return CostModel(space, profile)


def profile_for(
    space: SearchSpace,
    device: str,
    explicit: str | None = None,
    run_dir: Path | None = None,
    progress: bool = False,
    runtime: str | None = None,
) -> CostModel:
    """Lookup order: an explicit file, the run's pinned profile (cpu), a spec name, a JSON path, the cache
    (cpu calibrates).

    ``runtime``: the profile must have been measured in it (a profile of another
    runtime is a :class:`ProfileError` naming both); cpu's cache entry is then
    the runtime's (:func:`profile_name`).
    """
    model = checked(_profile_for(space, device, explicit, run_dir, progress, runtime))
    if runtime is not None:
        model.profile.check_runtime(runtime)
    return model


def _profile_for(
    space: SearchSpace,
    device: str,
    explicit: str | None,
    run_dir: Path | None,
    progress: bool,
    runtime: str | None,
) -> CostModel:
    if explicit:
        return CostModel(space, DeviceProfile.load(explicit))
    if run_dir is not None and (run_dir / PROFILE_IN_RUN).exists() and device == "cpu":
        pinned = CostModel(space, DeviceProfile.load(run_dir / PROFILE_IN_RUN))
        if runtime is None or pinned.profile.runtime == runtime:
            return pinned
    if device in SPECS:
        return CostModel(space, spec_profile(device, space))
    if Path(device).suffix == ".json":
        return CostModel(space, DeviceProfile.load(device))
    if device == "cpu" and runtime not in (None, DEFAULT_RUNTIME):
        name = profile_name(device, runtime)
        path = default_profile_path(name, space_signature(space))
        if not path.exists():
            raise ProfileError(
                f"no {runtime} profile of this machine for this space (looked for {path}); run `nas latency"
                f" calibrate --runtime {runtime}` first"
            )
        return CostModel(space, DeviceProfile.load(path))
    if device == "cpu":
        return load_or_calibrate(space, device="cpu", progress=progress)
    path = default_profile_path(device, space_signature(space))
    if not path.exists():
        raise ProfileError(
            f"no {device!r} profile for this space (looked for {path}); run `nas latency calibrate` on that"
            f" device and pass its file with --profile, or use a spec-derived profile ({', '.join(SPECS)})"
        )
    return CostModel(space, DeviceProfile.load(path))


def run_cost_model(ctx: RunContext, pin: bool = True) -> CostModel:
    """The run's cpu latency predictor, pinned in the run directory so a resumed search predicts the same
    numbers.

    ``pin=False`` only builds it (a command's checks run before anything is written).
    """
    pinned = ctx.run_dir / PROFILE_IN_RUN
    if ctx.cfg.search.profile:
        model = checked(_explicit(ctx.space, ctx.cfg.search.profile))
    elif pinned.exists():
        model = checked(CostModel(ctx.space, DeviceProfile.load(pinned)))
    else:
        ctx.say("calibrating the cpu latency model on this machine (cached for later runs)...")
        model = load_or_calibrate(
            ctx.space,
            device="cpu",
            n_archs=ctx.cfg.search.calibration_archs,
            seed=ctx.cfg.seed,
            progress=ctx.progress,
        )
    if pin and not pinned.exists():
        model.profile.save(pinned)
    return model


def device_model(ctx: RunContext, device: str, primary: bool, pin: bool = True) -> CostModel:
    """The model of one entry of ``search.devices``: cpu is the run's pinned profile; ``search.profile``
    applies to the first."""
    if device == "cpu":
        return run_cost_model(ctx, pin=pin)
    if primary and ctx.cfg.search.profile:
        return checked(_explicit(ctx.space, ctx.cfg.search.profile))
    return profile_for(ctx.space, device, None, None, ctx.progress)


def run_device_models(ctx: RunContext, pin: bool = True) -> list[CostModel]:
    """One model per ``search.devices`` entry, in order (the budget applies to the first); a device without a
    usable profile is a :class:`ProfileError` naming ``search.devices``."""
    models = []
    for i, device in enumerate(ctx.cfg.search.devices):
        try:
            models.append(device_model(ctx, device, primary=i == 0, pin=pin))
        except ProfileError as exc:
            if ctx.cfg.search.profile and i == 0:
                raise
            raise ProfileError(f"search.devices entry {device!r}: {exc}") from None
    return models


def _explicit(space: SearchSpace, path: str) -> CostModel:
    """The profile ``search.profile`` names, for ``space``; its problems name the setting."""
    try:
        return CostModel(space, DeviceProfile.load(path))
    except ProfileError as exc:
        raise ProfileError(f"search.profile={path!r}: {exc}") from None


def pin_profiles(ctx: RunContext, costs: list[CostModel]) -> None:
    """Pin the cpu profile a command's checks built into the run directory (once the command is accepted)."""
    pinned = ctx.run_dir / PROFILE_IN_RUN
    if "cpu" in ctx.cfg.search.devices and not pinned.exists():
        costs[ctx.cfg.search.devices.index("cpu")].profile.save(pinned)
