"""Quasi-Monte Carlo search: a scrambled Sobol' sequence over the space's choices.

Optuna's ``QMCSampler`` covers numeric parameters only and falls back to plain
random sampling for categorical ones, which is every choice of a search space.
Here each choice key is one Sobol' dimension and the point's coordinate picks
the value (``floor(u * n_values)``), so the first trials cover every value of
every key evenly: a better-spread baseline than uniform random at small budgets.
Trial ``n`` takes point ``n`` of the sequence, so resume and several workers ask
exactly what one uninterrupted search would. A point whose network the study
already holds (choices the network does not use differ, or a coincidence) costs
no trial: :class:`~nas.controllers.optuna_controller.OptunaController` prunes it
as a duplicate and the next trial number takes the next point, so the points the
search evaluates are the sequence with its repeats left out.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial
from scipy.stats import qmc

from nas.controllers.base import register_controller
from nas.controllers.optuna_controller import OptunaController, _storage_and_name
from nas.controllers.space_sampler import SpaceSampler
from search_spaces import SearchSpace


class SobolSampler(SpaceSampler):
    def point(self, number: int) -> np.ndarray:
        """Point ``number`` of the scrambled sequence (seeded: the same for every process)."""
        engine = qmc.Sobol(d=len(self.space.keys), scramble=True, seed=self.seed)
        if number:
            engine.fast_forward(number)
        with (
            warnings.catch_warnings()
        ):  # single points break Sobol's power-of-two balance warning, not its order
            warnings.simplefilter("ignore", UserWarning)
            return engine.random(1)[0]

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        u = self.point(trial.number)
        out = {}
        for x, (k, values) in zip(u, self.space.choices.items()):
            out[k] = values[min(int(x * len(values)), len(values) - 1)]
        return out


@register_controller("qmc")
def qmc_search(
    space: SearchSpace,
    seed: int,
    latency_budget_ms: float | None,
    run_dir: Any,
    population: int = 10,
    storage: str | None = None,
    study_name: str | None = None,
    n_devices: int = 1,
) -> OptunaController:
    """Scrambled Sobol' quasi-random search over every choice (an evenly spread baseline)."""
    return OptunaController(
        space,
        seed,
        latency_budget_ms,
        *_storage_and_name(run_dir, storage, study_name),
        sampler=SobolSampler(space, seed),
        n_devices=n_devices,
        name="qmc",
    )
