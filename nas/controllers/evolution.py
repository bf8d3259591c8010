"""Regularised (aging) evolution as an Optuna sampler, so it shares storage, resume and distribution.

Real et al.'s aging evolution: the population is the last ``population``
finished evaluations (the oldest die); each new architecture is a one-choice
mutation of the fittest of ``sample_size`` random population members. Fitness
is the accuracy of architectures within the latency budget; infeasible ones
rank below every feasible one, by how far they exceed it. Only a choice the
parent's network uses (:meth:`~search_spaces.SearchSpace.used_keys`: not the
kernel of a block past its stage's depth) is mutated, so a child is never its
parent again; a child that is another network the study holds is skipped by
:class:`~nas.controllers.optuna_controller.OptunaController` (and drawn again).

Every decision draws from a generator seeded by ``(seed, trial number)``, so a
resumed or distributed search asks exactly what an uninterrupted one would,
given the same finished trials.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from nas.controllers.base import register_controller
from nas.controllers.optuna_controller import OptunaController, _storage_and_name
from nas.controllers.space_sampler import SpaceSampler
from search_spaces import SearchSpace


def fitness(t: FrozenTrial) -> tuple[int, float]:
    """Feasible trials by accuracy, above every infeasible one, those by how far they exceed the constraints
    (the constraints in force now: the study judges trials on read)."""
    excess = sum(v for v in t.constraints.values() if v > 0)
    return (1, t.values[0]) if excess <= 0 else (0, -excess)


class AgingEvolutionSampler(SpaceSampler):
    def __init__(self, space: SearchSpace, seed: int, population: int = 10, sample_size: int = 3):
        if not 1 <= sample_size <= population:
            raise ValueError(
                f"evolution needs 1 <= sample_size <= population, got {sample_size} and {population}"
            )
        super().__init__(space, seed)
        self.population, self.sample_size = population, sample_size

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        rng = self.rng(trial)
        done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
        if len(done) < self.population:  # fill the first population at random
            return self.random_choices(rng)
        alive = done[-self.population :]  # aging: only the youngest survive
        contenders = [alive[int(i)] for i in rng.choice(len(alive), self.sample_size, replace=False)]
        parent = max(contenders, key=fitness)
        child = dict(parent.params)
        keys = [k for k in self.space.used_keys(child) if len(self.space.choices[k]) > 1]
        if not keys:  # a space of one network: nothing to mutate (the controller reports it exhausted)
            return child
        key = keys[int(rng.integers(len(keys)))]
        others = [v for v in self.space.choices[key] if v != child[key]]
        child[key] = others[int(rng.integers(len(others)))]
        return child


@register_controller("evolution")
def evolution(
    space: SearchSpace,
    seed: int,
    latency_budget_ms: float | None,
    run_dir: Any,
    population: int = 10,
    storage: str | None = None,
    study_name: str | None = None,
    n_devices: int = 1,
) -> OptunaController:
    """Regularised (aging) evolution with one-choice mutations, latency-constrained (feasible architectures
    first)."""
    sampler = AgingEvolutionSampler(space, seed, population=population, sample_size=max(2, population // 4))
    return OptunaController(
        space,
        seed,
        latency_budget_ms,
        *_storage_and_name(run_dir, storage, study_name),
        sampler=sampler,
        n_devices=n_devices,
        name="evolution",
    )
