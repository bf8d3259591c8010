"""Base for controllers written as Optuna samplers over a search space's choices.

Sampling every choice jointly (``sample_relative``) from a generator seeded by
``(seed, trial number)`` makes a sampler's asks depend only on the finished
trials, so storage, resume and several workers come from Optuna for free.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial

from search_spaces import SearchSpace


class SpaceSampler(optuna.samplers.BaseSampler):
    """Subclasses implement ``sample_relative`` (all choices at once)."""

    def __init__(self, space: SearchSpace, seed: int):
        self.space, self.seed = space, seed

    def rng(self, trial: FrozenTrial, *salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, trial.number, *salt])

    def random_choices(self, rng: np.random.Generator) -> dict[str, Any]:
        """One value per choice, uniformly: the random start of the samplers that learn from results."""
        return {k: v[int(rng.integers(len(v)))] for k, v in self.space.choices.items()}

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {k: CategoricalDistribution(list(v)) for k, v in self.space.choices.items()}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        choices = param_distribution.choices  # type: ignore[attr-defined]
        return choices[int(self.rng(trial, 1).integers(len(choices)))]
