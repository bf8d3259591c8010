"""Calibrate a device profile: time real networks of a space, fit the linear model.

The cost features are device-independent counts; one device differs from
another only in what each unit costs. So a few dozen timed networks suffice to
fit the handful of coefficients, with non-negative least squares so that every
coefficient stays a physical cost (more work is never predicted faster).
"""

from __future__ import annotations

import datetime as _dt
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy
import torch
from torch import nn

from nas.cost.fit import fit_diagnostics, fit_nnls, fit_op_table, summed_features
from nas.cost.machine import ReferenceTracker, processor_name
from nas.cost.profile import DeviceProfile, space_signature
from nas.cost.runtimes import DEFAULT_RUNTIME, get_runtime, runtime_meta
from nas.timing_floor import min_timing_seconds
from search_spaces.arch import Arch
from search_spaces.base import SearchSpace


def measure_latency_ms(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch: int = 1,
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    min_seconds: float = 1.5,
) -> float:
    """Steady-state forward time (ms) of one model in eval/inference mode; restores threads and mode."""
    return float(
        measure_latencies_ms([model], input_shape, batch, threads, warmup, repeats, min_seconds=min_seconds)[
            0
        ]
    )


def measure_latencies_ms(
    models: Sequence[nn.Module],
    input_shape: tuple[int, ...],
    batch: int = 1,
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    progress: bool = False,
    min_seconds: float = 0.0,
    burst: int = 3,
    shapes: Sequence[tuple[int, ...]] | None = None,
    device: str = "cpu",
    runtime: str = DEFAULT_RUNTIME,
    reference: ReferenceTracker | None = None,
) -> np.ndarray:
    """Steady-state forward time (ms) of each model, from runs spread over time (see ``_steady_state_ms``).

    Shared and throttled CPUs alternate between speed phases lasting hundreds of
    milliseconds (on the 2-core VM the results were measured on, one network ran at
    5.3 ms and 9 ms in alternate phases). A median of one burst lands in whichever
    phase it hit; the minimum over runs spread across several phases is stable, so
    timing goes on for at least ``repeats`` rounds and ``min_seconds``. Models are
    timed round-robin in shuffled order so every model sees every phase; in each
    round a model runs once untimed, then ``burst`` timed runs back to back (warm
    caches and predictors, as a deployed model runs in a loop). ``shapes`` gives
    each model its own input shape (e.g. single blocks of a lookup table).

    ``runtime`` (:mod:`nas.cost.runtimes`) is what runs them: each model is first
    compiled for it (exported and loaded), then timed in the same rounds.
    ``reference`` samples the machine-state reference op before, between and
    after the rounds (:mod:`nas.cost.machine`).
    """
    if batch < 1 or threads < 1 or warmup < 0 or repeats < 1:
        raise ValueError(
            f"need batch >= 1, threads >= 1, warmup >= 0, repeats >= 1; got {batch}, {threads}, {warmup},"
            f" {repeats}"
        )
    rt = get_runtime(runtime)
    prev_threads, modes = torch.get_num_threads(), [m.training for m in models]
    shapes = list(shapes) if shapes is not None else [tuple(input_shape)] * len(models)
    if len(shapes) != len(models):
        raise ValueError(f"got {len(shapes)} input shapes for {len(models)} models")
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if rt.name != DEFAULT_RUNTIME and dev.type != "cpu":
        raise ValueError(f"runtime {rt.name!r} runs on the CPU; device {device!r} is timed with torch only")
    try:
        if rt.name == DEFAULT_RUNTIME:
            inputs = {shape: torch.randn(batch, *shape, device=dev) for shape in set(shapes)}
            models = [m.to(dev).eval() for m in models]
            runners = [(lambda m=m, x=inputs[shape]: m(x)) for m, shape in zip(models, shapes)]
        else:
            rt.set_threads(
                threads
            )  # before loading: ExecuTorch's delegates keep the pool they were loaded with
            runners = rt.compile_all(models, shapes, batch, threads, progress)
        torch.set_num_threads(threads)
        rt.set_threads(threads)
        with torch.inference_mode():
            rounds_t = _time_rounds(runners, warmup, repeats, min_seconds, burst, progress, cuda, reference)
    finally:
        torch.set_num_threads(prev_threads)
        for m, was_training in zip(models, modes):
            m.train(was_training)
    return _steady_state_ms(rounds_t)


def measure_runners_ms(
    runners: Sequence[Callable[[], object]],
    runtime: str = DEFAULT_RUNTIME,
    threads: int = 1,
    warmup: int = 3,
    repeats: int = 20,
    min_seconds: float = 0.3,
) -> np.ndarray:
    """Steady-state time (ms) of already-loaded runners of ``runtime`` (an exported file in its runtime), in
    the rounds :func:`measure_latencies_ms` uses."""
    rt = get_runtime(runtime)
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        rt.set_threads(threads)
        with torch.inference_mode():
            t = _time_rounds(runners, warmup, repeats, min_seconds, 3, False, False, None)
    finally:
        torch.set_num_threads(prev)
    return _steady_state_ms(t)


def _time_rounds(
    runners: Sequence[Callable[[], object]],
    warmup: int,
    repeats: int,
    min_seconds: float,
    burst: int,
    progress: bool,
    cuda: bool,
    reference: ReferenceTracker | None,
) -> np.ndarray:
    """``t[round, model]`` seconds: each round times every runner in shuffled order (fastest of ``burst``)."""
    for run in runners:
        for _ in range(warmup):
            run()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=repeats, desc=f"timing {len(runners)} networks", unit="round", disable=None, leave=False
        )
    order_rng = np.random.default_rng(0)
    rounds_t: list[np.ndarray] = []  # per round: each model's fastest run of its burst
    try:
        if reference is not None:
            reference.sample()
        start, r = time.perf_counter(), 0
        while r < repeats or time.perf_counter() - start < min_seconds:
            row = np.full(len(runners), np.inf)
            for i in order_rng.permutation(len(runners)):
                runners[i]()  # untimed run first: warm caches
                for _ in range(burst):  # a short tight loop, as the model runs when deployed
                    row[i] = min(row[i], _time_once(runners[i], cuda))
            rounds_t.append(row)
            r += 1
            if reference is not None:
                reference.between_rounds()
            if bar is not None and r <= repeats:
                bar.update(1)
        if reference is not None:
            reference.sample()
    finally:
        if bar is not None:
            bar.close()
    return np.array(rounds_t)


def _steady_state_ms(t: np.ndarray) -> np.ndarray:
    """Per-model latency (ms) from ``t[round, model]`` seconds.

    Relative speeds come from each round divided by its own median (which cancels
    the machine's speed phase of that round), summarised by the 25th percentile
    over rounds; the absolute level is that of the fastest phase (per-model minimum).
    Measuring 100 networks twice, this agreed with itself to Kendall tau 0.956
    (0.8% mean difference) against 0.924 (3.0%) for the plain minimum.
    """
    relative = np.percentile(t / np.median(t, axis=1, keepdims=True), 25, axis=0)
    scale = np.median(t.min(axis=0) / relative)
    return relative * scale * 1e3


def _time_once(run: Callable[[], object], cuda: bool) -> float:
    """Seconds for one forward pass (CUDA events on a GPU, wall clock on a CPU)."""
    if not cuda:
        t0 = time.perf_counter()
        run()
        return time.perf_counter() - t0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def distinct_samples(space: SearchSpace, n: int, seed: int, first: Sequence[Arch] = ()) -> list[Arch]:
    """``first``, then distinct uniform draws until ``n`` architectures (the same list for the same seed)."""
    rng = np.random.default_rng(seed)
    archs = {a.id: a for a in first}
    for _ in range(50 * n):
        if len(archs) >= n:
            break
        a = space.sample(rng)
        archs.setdefault(a.id, a)
    return list(archs.values())


def sample_archs(space: SearchSpace, n_archs: int, seed: int) -> list[Arch]:
    """Smallest and largest (they bound the fitted range) plus distinct random architectures."""
    return distinct_samples(space, n_archs, seed, first=(space.smallest(), space.largest()))


FIT_METHODS = ("ops", "networks")
"""How a profile's op table is obtained: ``ops`` times every op alone in the runtime (a lookup table, scaled
and offset on whole networks); ``networks`` times whole networks only and fits the table to them
(:mod:`nas.cost.fit`, what ``nas latency fit`` does with a user's file)."""


def calibrate(
    space: SearchSpace,
    n_archs: int = 40,
    seed: int = 0,
    threads: int = 1,
    batch: int = 1,
    device_name: str = "cpu",
    progress: bool = False,
    warmup: int = 5,
    repeats: int = 20,
    holdout: float = 0.25,
    lut: bool = True,
    measure_on: str = "cpu",
    runtime: str = DEFAULT_RUNTIME,
    method: str = "ops",
) -> tuple[DeviceProfile, dict[str, Any]]:
    """Time ``n_archs`` networks (and, with ``lut``, every op of the space) in ``runtime`` and fit a profile.

    With ``lut`` and a space that lists its ops (:meth:`SearchSpace.op_modules`),
    every block position and choice is timed alone into a lookup table (as
    Once-for-All's latency tables, but measured in the same interleaved rounds as
    whole networks, so both see the same machine state); the analytical model is
    fitted to those op latencies as the fallback for unmeasured ops, and a scale
    and offset fitted on whole networks absorb per-network framework overhead.
    ``method="networks"`` times whole networks only and fits the op table to
    them (:func:`nas.cost.fit.fit_op_table`). Diagnostics are on a held-out part
    of the networks.

    The returned profile is fitted on the training part only, so the held-out
    diagnostics describe exactly that profile. Smallest and largest are always
    in the training part. Predictions are for one forward pass at ``batch``.
    ``meta["machine_state"]`` records the reference op's speed over the run and
    whether it moved more than the guard allows (``unstable``).
    """

    if n_archs < 3:
        raise ValueError(f"n_archs must be >= 3 to fit and check a profile, got {n_archs}")
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    if method not in FIT_METHODS:
        raise ValueError(f"method must be one of {FIT_METHODS}, got {method!r}")
    rt = get_runtime(runtime)
    rt.require()
    t_start = time.perf_counter()
    archs = sample_archs(space, n_archs, seed)
    supernet = (
        space.build_supernet()
    )  # one supernet, many extractions: far cheaper than build_static each time
    iterator: Any = archs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(
            archs, desc=f"building {len(archs)} {space.name} networks", unit="arch", disable=None, leave=False
        )
    models = [supernet.extract(space.to_spec(a)) for a in iterator]
    ops = (
        space.op_modules() if lut and method == "ops" else []
    )  # (slot, op, module, input shape) of every block position and choice
    shapes = [tuple(space.input_shape)] * len(models) + [tuple(shape) for _, _, _, shape in ops]
    reference = ReferenceTracker()
    times = measure_latencies_ms(
        [*models, *(m for _, _, m, _ in ops)],
        space.input_shape,
        batch,
        threads,
        warmup,
        repeats,
        progress,
        min_seconds=min_timing_seconds(),
        shapes=shapes,
        device=measure_on,
        runtime=rt.name,
        reference=reference,
    )
    y = times[: len(models)]
    table = space.cost_table()
    lut_table = np.full(table.features.shape[:2], np.nan)
    for (slot, op, _, _), ms in zip(ops, times[len(models) :]):
        lut_table[slot, op] = ms
    X = summed_features(space, archs)

    rng = np.random.default_rng(seed + 1)
    n_fixed = len({space.smallest().id, space.largest().id})  # sample_archs puts them first
    n_hold = min(int(round(holdout * len(archs))), len(archs) - n_fixed)
    held = n_fixed + rng.permutation(len(archs) - n_fixed)[:n_hold] if n_hold >= 2 else np.zeros(0, dtype=int)
    train = np.setdiff1d(np.arange(len(archs)), held)
    analytic_coef, analytic_intercept = fit_nnls(X[train], y[train])
    analytic_pred = X @ analytic_coef + analytic_intercept
    lut_scale, stored_lut, fit_info = 1.0, None, None
    if method == "networks":
        fitted, fit_info = fit_op_table(
            space, [archs[i] for i in train], y[train], seed=seed, cross_validate=False
        )
        coef, intercept = fitted.prior.coef, fitted.intercept
        stored_lut = np.where(table.features.any(axis=2), fitted.table, np.nan)
        pred = fitted.predict(space, archs)
        model_name = "whole networks, op table fitted to them (nas latency fit)"
    elif ops:
        # Per-op analytical fallback fitted to the measured ops; the network is then the sum of its
        # ops' table entries, scaled and offset by a fit on whole networks (framework overhead, fusion).
        measured = ~np.isnan(lut_table)
        coef, _ = fit_nnls(table.features[measured], lut_table[measured])
        filled = np.where(measured, lut_table, table.features @ coef)
        op_ids = space.lower(space.encode_batch(archs))
        lut_sums = filled[np.arange(filled.shape[0]), op_ids].sum(axis=1)
        (lut_scale,), intercept = fit_nnls(lut_sums[train, None], y[train])
        lut_scale = lut_scale if lut_scale > 0 else 1.0
        pred = lut_scale * lut_sums + intercept
        stored_lut = lut_table
        model_name = "lookup table + analytical fallback"
    else:
        coef, intercept = analytic_coef, analytic_intercept
        pred = analytic_pred
        model_name = "analytical"

    state = reference.summary()
    diag: dict[str, Any] = {
        **fit_diagnostics(pred[held] if len(held) else pred[train], y[held] if len(held) else y[train]),
        "evaluated_on": "holdout" if len(held) else "train (too few architectures to hold any out)",
        "train": fit_diagnostics(pred[train], y[train]),
        "n_archs": len(archs),
        "n_train": int(len(train)),
        "n_holdout": int(len(held)),
        "measured_ms": {"min": float(y.min()), "median": float(np.median(y)), "max": float(y.max())},
        "model": model_name,
        "method": method if (ops or method == "networks") else "analytical",
        "runtime": rt.name,
        "analytical_only": fit_diagnostics(
            analytic_pred[held] if len(held) else analytic_pred[train], y[held] if len(held) else y[train]
        ),
        "lut_ops_measured": int(len(ops)),
        "machine_unstable": state["unstable"],
        "seconds": time.perf_counter() - t_start,
    }
    if fit_info is not None:
        diag["network_fit"] = {k: v for k, v in fit_info.items() if k != "train"}
    meta = {
        "threads": threads,
        "batch": batch,
        **runtime_meta(rt),
        "measured_on": (
            measure_on if measure_on == "cpu" else torch.cuda.get_device_name(torch.device(measure_on))
        ),
        "warmup": warmup,
        "repeats": repeats,
        "seed": seed,
        "input_shape": list(space.input_shape),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": processor_name(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine_state": state,
        "fit": diag,
    }
    profile = DeviceProfile(
        device_name,
        tuple(table.feature_names),
        tuple(float(c) for c in coef),
        intercept,
        space_signature(space),
        meta,
        lut=tuple(map(tuple, stored_lut)) if stored_lut is not None else None,
        lut_scale=lut_scale,
    )
    return profile, diag
