"""Predictor-guided search: fit cheap surrogates on the trials told so far, propose from what they predict.

In the spirit of DyNAS-T's LINAS (which reports about 4x the sample efficiency of plain evolution): after a
random start of ``population`` trials, every ask fits ridge regressions over the one-hot encoding of the
choices, one for accuracy and one for each constraint the study judges (the latency budget's relative
excess, and any ``search.constraints``), then scores a pool of candidates (random networks plus every
one-choice mutation of the best feasible trials) and asks the best. Exploration is Thompson sampling: the
accuracy regression is fitted on a bootstrap resample of the trials, drawn afresh for each ask, so an
uncertain choice is sometimes predicted good and gets tried. With latency objectives, a candidate's score is
the hypervolume its predicted (accuracy, latency) point adds to the feasible front found so far (so the
search fills the front under the budget, not only its top); with no gain anywhere, the predicted accuracy
margin over the front decides.

Ridge on one-hot features is additive in the choices: it fits in well under a millisecond, ranks
NAS-Bench-201 cells far better than chance from a few dozen trials, and predicts additive costs (latency,
parameters, MACs) almost exactly. Every draw is seeded by ``(seed, trial number)`` and the fit depends only
on the finished trials, so a resumed or distributed search asks what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from nas.controllers.base import register_controller
from nas.controllers.evolution import fitness
from nas.controllers.optuna_controller import OptunaController, _storage_and_name
from nas.controllers.space_sampler import SpaceSampler
from search_spaces import SearchSpace
from search_spaces.base import Arch

SHORTLIST = 16  # best-scored candidates made canonical networks and scored again as such
COST_ALPHA = 1e-3  # latency, parameters, MACs are near-additive in the choices: fit them almost exactly


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Coefficients (intercept last) of ridge regression of ``y`` (one column per target) on ``x``; the
    intercept is not penalised."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    penalty = alpha * np.eye(xb.shape[1])
    penalty[-1, -1] = 0.0
    return np.linalg.solve(xb.T @ xb + penalty, xb.T @ y)


def ridge_predict(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    return x @ coef[:-1] + coef[-1]


def front_gain(
    acc: np.ndarray, lat: np.ndarray, front: Sequence[tuple[float, float]], acc_ref: float, lat_ref: float
) -> np.ndarray:
    """Per candidate point (accuracy up, latency down): the hypervolume it adds to ``front`` (points
    ``(accuracy, latency)``) inside the box ``[acc_ref, .] x [., lat_ref]``. Where no candidate adds any,
    each one's accuracy margin over the front at its latency instead (all <= 0: the nearest to improving
    wins)."""
    pts = sorted((lt, a) for a, lt in front if lt <= lat_ref)
    starts = np.array([-np.inf] + [lt for lt, _ in pts])  # segments of constant front accuracy
    ends = np.array([lt for lt, _ in pts] + [lat_ref])
    levels = np.maximum.accumulate(np.array([acc_ref] + [a for _, a in pts]))
    width = np.clip(np.minimum(ends, lat_ref)[None, :] - np.maximum(starts[None, :], lat[:, None]), 0.0, None)
    gain = (width * np.clip(acc[:, None] - levels[None, :], 0.0, None)).sum(axis=1)
    if (gain > 0).any():
        return gain
    return acc - levels[np.searchsorted(starts, lat, side="right") - 1]


class PredictorSampler(SpaceSampler):
    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        population: int = 10,
        candidates: int = 500,
        parents: int = 10,
        alpha: float = 10.0,
        latency_budget_ms: float | None = None,
    ):
        if population < 2 or candidates < 1 or parents < 0 or alpha <= 0:
            raise ValueError(
                "predictor needs population >= 2, candidates >= 1, parents >= 0 and alpha > 0; got"
                f" {population}, {candidates}, {parents}, {alpha}"
            )
        super().__init__(space, seed)
        self.population, self.candidates, self.parents, self.alpha = population, candidates, parents, alpha
        self.latency_budget_ms = latency_budget_ms
        self._sizes = np.array([len(space.choices[k]) for k in space.keys])
        self._offsets = np.concatenate([[0], np.cumsum(self._sizes)[:-1]])
        self._codes: dict[tuple[int, int], tuple[np.ndarray, str]] = {}  # finished trial -> (code, id)

    def features(self, codes: np.ndarray) -> np.ndarray:
        """One-hot of each choice's value index, all choices side by side."""
        x = np.zeros((len(codes), int(self._sizes.sum())))
        rows = np.repeat(np.arange(len(codes)), codes.shape[1])
        x[rows, (codes + self._offsets).ravel()] = 1.0
        return x

    def _code(self, study: optuna.Study, t: FrozenTrial) -> tuple[np.ndarray, str]:
        """Code and id of finished trial ``t``'s canonical network (cached: finished trials never change)."""
        key = (study._study_id, t.number)
        if key not in self._codes:
            arch = self.space.arch(t.params)
            self._codes[key] = (self.space.encode(arch), arch.id)
        return self._codes[key]

    def _pool(self, rng: np.random.Generator, parents: np.ndarray) -> np.ndarray:
        """Codes of random networks and of every one-choice change of each parent (not canonical yet: only
        the best few are made networks, which keeps an ask in milliseconds)."""
        blocks = [(rng.random((self.candidates, len(self._sizes))) * self._sizes).astype(np.int64)]
        for parent in parents:
            for k, size in enumerate(self._sizes):
                block = np.repeat(parent[None, :], size, axis=0)
                block[:, k] = np.arange(size)
                blocks.append(block)
        return np.unique(np.vstack(blocks), axis=0)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        rng = self.rng(trial)
        done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
        if len(done) < self.population:  # the random start
            return self.random_choices(rng)
        known = [self._code(study, t) for t in done]
        codes = np.stack([code for code, _ in known])
        score = self._scorer(done, self.features(codes), rng)
        ranked = sorted(range(len(done)), key=lambda i: fitness(done[i]), reverse=True)
        pool = self._pool(rng, codes[ranked[: self.parents]])
        seen = {arch_id for _, arch_id in known}
        shortlist: dict[str, Arch] = {}
        for i in np.argsort(-score(self.features(pool)), kind="stable"):
            arch = self.space.decode(pool[i])  # canonical: a code whose unused choices differ is the same net
            if arch.id not in seen:
                shortlist.setdefault(arch.id, arch)
                if len(shortlist) == SHORTLIST:
                    break
        if not shortlist:  # every candidate is a network the study holds: the controller reports it
            return self.random_choices(rng)
        picks = list(shortlist.values())
        best = picks[int(np.argmax(score(self.features(self.space.encode_batch(picks)))))]
        return {k: best[k] for k in self.space.keys}

    def _scorer(self, done: list[FrozenTrial], x: np.ndarray, rng: np.random.Generator) -> Any:
        """The candidates' score from their features: predicted hypervolume gain over the feasible front of
        ``done`` (predicted accuracy alone where the study has no latency spread to trade), -inf where the
        constraints the study judges are predicted violated (unless every candidate is)."""
        acc = np.array([t.values[0] for t in done])
        lat = np.array([t.values[1] if len(t.values) > 1 else 0.0 for t in done])
        boot = rng.integers(len(done), size=len(done))  # Thompson sampling: one bootstrap fit per ask
        acc_coef = ridge_fit(x[boot], acc[boot], self.alpha)
        lat_coef = ridge_fit(x, lat, COST_ALPHA) if np.ptp(lat) > 0 else None  # none: accuracy alone
        names = sorted({name for t in done for name in t.constraints})
        limits = np.array([[t.constraints.get(n, 0.0) for n in names] for t in done]).reshape(len(done), -1)
        limit_coef = ridge_fit(x, limits, COST_ALPHA) if names else None
        front = [(float(a), float(lt)) for a, lt, t in zip(acc, lat, done) if fitness(t)[0] == 1]
        ref = self.latency_budget_ms if self.latency_budget_ms is not None else float(lat.max())

        def score(xp: np.ndarray) -> np.ndarray:
            pred_acc = ridge_predict(acc_coef, xp)
            out = pred_acc
            if lat_coef is not None:
                out = front_gain(pred_acc, ridge_predict(lat_coef, xp), front, float(acc.min()), ref)
            if limit_coef is not None:
                feasible = np.all(ridge_predict(limit_coef, xp) <= 0, axis=1)
                out = np.where(feasible, out, -np.inf) if feasible.any() else out
            return out

        return score


@register_controller("predictor")
def predictor(
    space: SearchSpace,
    seed: int,
    latency_budget_ms: float | None,
    run_dir: Any,
    population: int = 10,
    storage: str | None = None,
    study_name: str | None = None,
    n_devices: int = 1,
    candidates: int = 500,
    parents: int = 10,
    alpha: float = 10.0,
) -> OptunaController:
    """Predictor-guided search (LINAS-style): ridge surrogates of accuracy and constraints on one-hot
    choices, Thompson sampling over a pool of random networks and mutations of the best."""
    sampler = PredictorSampler(
        space, seed, population, candidates, parents, alpha, latency_budget_ms=latency_budget_ms
    )
    return OptunaController(
        space,
        seed,
        latency_budget_ms,
        *_storage_and_name(run_dir, storage, study_name),
        sampler=sampler,
        n_devices=n_devices,
        name="predictor",
    )
