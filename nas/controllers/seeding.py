"""Per-trial seeding for Optuna's own samplers, so a resumed search continues exactly as an uninterrupted one.

Optuna's samplers draw from one random state seeded once at construction. A
search that is killed and restarted builds a new sampler, whose state is back at
the seed, so it asks different architectures than the uninterrupted run would.
Re-seeding every random state the sampler holds from ``(seed, trial number)``
just before each trial makes every ask a function of the finished trials alone,
like our own samplers (:class:`~nas.controllers.space_sampler.SpaceSampler`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna

_WARM_START_CACHES = ("_gprs_cache_list", "_constraints_gprs_cache_list")


def _random_states(sampler: Any, seen: set[int] | None = None) -> list[np.random.RandomState]:
    """Every numpy random state reachable from ``sampler`` (its own and its fallback samplers')."""
    seen = set() if seen is None else seen
    if id(sampler) in seen:
        return []
    seen.add(id(sampler))
    states = []
    for value in vars(sampler).values():
        rng = getattr(value, "rng", None)  # Optuna's LazyRandomState
        if isinstance(rng, np.random.RandomState):
            states.append(rng)
        elif isinstance(value, np.random.RandomState):
            states.append(value)
        elif isinstance(value, optuna.samplers.BaseSampler):
            states.extend(_random_states(value, seen))
    return states


def seed_per_trial(sampler: optuna.samplers.BaseSampler, seed: int) -> optuna.samplers.BaseSampler:
    """Make ``sampler`` re-seed all its random states from ``(seed, trial number)`` before each trial."""
    states = _random_states(sampler)
    if not states:
        raise TypeError(
            f"{type(sampler).__name__} holds no random state this Optuna version exposes; cannot seed it per"
            " trial"
        )
    original = sampler.before_trial

    def before_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        for n, rng in enumerate(states):
            rng.seed([seed % 2**32, trial.number, n])
        for name in (
            _WARM_START_CACHES
        ):  # GPSampler warm-starts each fit from the previous one: history a restart lacks
            if getattr(sampler, name, None) is not None:
                setattr(sampler, name, None)
        original(study, trial)

    sampler.before_trial = before_trial  # type: ignore[method-assign]
    return sampler
