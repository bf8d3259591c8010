"""REINFORCE controller (MnasNet-style reward) as an Optuna sampler.

The policy is one independent categorical per choice (logits, softmax). After
each finished evaluation it takes a policy-gradient step on the reward
``accuracy * (latency / target) ** w`` (MnasNet's soft latency target; plain
accuracy without a budget), against an exponential moving-average baseline,
plus an entropy bonus that keeps it exploring. A finished network credits only the
choices it uses (:meth:`~search_spaces.SearchSpace.used_keys`): the kernel of a
block past its stage's depth had no part in the reward, so its logits get no
update (neither gradient nor entropy bonus) from that network.

The policy is *replayed* from the study's finished trials in trial order at every
ask, and every draw is seeded by ``(seed, trial number)``: no controller state
needs saving, and a resumed search continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from nas.controllers.base import register_controller
from nas.controllers.optuna_controller import OptunaController, _storage_and_name
from nas.controllers.space_sampler import SpaceSampler
from search_spaces import SearchSpace


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


class ReinforceSampler(SpaceSampler):
    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        target_ms: float | None,
        lr: float = 0.2,
        baseline_decay: float = 0.9,
        entropy: float = 0.01,
        w: float = -0.07,
    ):
        super().__init__(space, seed)
        self.target_ms = target_ms
        self.lr, self.decay, self.entropy, self.w = lr, baseline_decay, entropy, w

    def reward(self, accuracy: float, latency_ms: float) -> float:
        return accuracy if self.target_ms is None else accuracy * (latency_ms / self.target_ms) ** self.w

    def policy(self, study: optuna.Study) -> dict[str, np.ndarray]:
        """Choice probabilities after replaying every finished trial's update, in trial order."""
        logits = {k: np.zeros(len(v)) for k, v in self.space.choices.items()}
        baseline = None
        for t in sorted(
            study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number
        ):
            r = self.reward(t.values[0], t.values[1])
            baseline = r if baseline is None else baseline
            advantage = r - baseline
            used = set(self.space.used_keys(t.params))
            for k, z in logits.items():
                if k not in used:  # a choice this network does not use earned none of its reward
                    continue
                p = _softmax(z)
                grad = -p
                grad[self.space.choices[k].index(t.params[k])] += 1.0  # d log p(choice) / d logits
                h = -(p * np.log(p + 1e-12)).sum()
                z += self.lr * (advantage * grad - self.entropy * p * (np.log(p + 1e-12) + h))
            baseline = self.decay * baseline + (1 - self.decay) * r
        return {k: _softmax(z) for k, z in logits.items()}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        rng = self.rng(trial)
        return {k: self.space.choices[k][int(rng.choice(len(p), p=p))] for k, p in self.policy(study).items()}


@register_controller("reinforce")
def reinforce(
    space: SearchSpace,
    seed: int,
    latency_budget_ms: float | None,
    run_dir: Any,
    population: int = 10,
    storage: str | None = None,
    study_name: str | None = None,
    n_devices: int = 1,
) -> OptunaController:
    """REINFORCE over independent categoricals, MnasNet reward acc * (lat / budget) ** -0.07, moving-average
    baseline, entropy bonus."""
    sampler = ReinforceSampler(space, seed, latency_budget_ms)
    return OptunaController(
        space,
        seed,
        latency_budget_ms,
        *_storage_and_name(run_dir, storage, study_name),
        sampler=sampler,
        n_devices=n_devices,
        name="reinforce",
    )
