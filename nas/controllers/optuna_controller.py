"""Optuna-backed controllers: the study (SQLite in the run directory) is the controller's state.

Because every asked and told trial lives in the study's storage, an interrupted
search resumes by reopening the same study; trials a killed process left
RUNNING are marked failed so they are neither lost silently nor counted as done.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.controllers.base import Controller, Objectives, register_controller
from search_spaces import Arch, SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)


class OptunaController(Controller):
    """Multi-objective search: maximise accuracy, minimise predicted latency, latency budget as a constraint."""

    def __init__(
        self, space: SearchSpace, seed: int, latency_budget_ms: float | None, storage: str, study_name: str, sampler: optuna.samplers.BaseSampler, n_devices: int = 1
    ):
        super().__init__(space, seed, latency_budget_ms, n_devices)
        directions = ["maximize"] + ["minimize"] * n_devices  # accuracy, then latency on each device
        self.study = optuna.create_study(storage=storage, study_name=study_name, directions=directions, sampler=sampler, load_if_exists=True)
        if len(self.study.directions) != len(directions):
            raise ValueError(
                f"study {study_name!r} in {storage} optimises {len(self.study.directions) - 1} latency objective(s), this search {n_devices}: "
                "search.devices changed; use a new --run-dir (or the old devices)"
            )
        self._fail_stale_trials()
        self._pending: dict[str, list[optuna.trial.Trial]] = {}

    def _fail_stale_trials(self) -> None:
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)

    def ask(self, n: int = 1) -> list[Arch]:
        out = []
        for _ in range(n):
            trial = self.study.ask()
            arch = self.space.arch({k: trial.suggest_categorical(k, list(v)) for k, v in self.space.choices.items()})
            trial.set_user_attr("arch_id", arch.id)
            trial.set_user_attr("arch", arch.to_json())
            self._pending.setdefault(arch.id, []).append(trial)
            out.append(arch)
        return out

    def enqueue(self, arch: Arch) -> None:
        self.study.enqueue_trial({k: arch[k] for k in self.space.keys}, skip_if_exists=True)

    def tell(self, archs: Sequence[Arch], results: Sequence[Objectives]) -> None:
        for arch, res in zip(archs, results, strict=True):
            queue = self._pending.get(arch.id)
            if not queue:
                raise KeyError(f"architecture {arch.id} was not asked by this controller (or was already told)")
            trial = queue.pop(0)
            trial.set_user_attr("latency_ms", res.latency_ms)
            budget = self.latency_budget_ms
            # <= 0 means feasible (Optuna's convention); constrained samplers (NSGA-II, TPE, GP) read it.
            excess = 0.0 if budget is None else res.latency_ms - budget
            trial.set_user_attr("constraint", excess)
            trial.set_constraint("latency_budget", excess)
            if res.accuracy is None:
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                trial.set_user_attr("accuracy", res.accuracy)
                if len(res.extra_latencies_ms) != self.n_devices - 1:
                    raise ValueError(f"expected latencies on {self.n_devices} devices, got {1 + len(res.extra_latencies_ms)}")
                self.study.tell(trial, [res.accuracy, res.latency_ms, *res.extra_latencies_ms])

    def n_finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def history(self) -> list[dict[str, Any]]:
        rows = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            rows.append(
                {
                    "trial": t.number,
                    "arch": json.loads(t.user_attrs["arch"]),
                    "arch_id": t.user_attrs["arch_id"],
                    "accuracy": t.values[0],
                    "latency_ms": t.values[1],
                    "extra_latencies_ms": list(t.values[2:]),
                    "feasible": t.user_attrs.get("constraint", 0.0) <= 0,
                }
            )
        return rows


def _storage_and_name(run_dir: Any, storage: str | None, study_name: str | None) -> tuple[str, str]:
    return storage or f"sqlite:///{run_dir}/study.db", study_name or "search"


@register_controller("nsga2")
def nsga2(space: SearchSpace, seed: int, latency_budget_ms: float | None, run_dir: Any, population: int = 10, storage: str | None = None, study_name: str | None = None, n_devices: int = 1) -> OptunaController:
    """Optuna NSGA-II over (accuracy, latency on each device), constrained by the latency budget."""
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    return OptunaController(space, seed, latency_budget_ms, *_storage_and_name(run_dir, storage, study_name), sampler=sampler, n_devices=n_devices)


@register_controller("random")
def random_search(space: SearchSpace, seed: int, latency_budget_ms: float | None, run_dir: Any, population: int = 10, storage: str | None = None, study_name: str | None = None, n_devices: int = 1) -> OptunaController:
    """Uniform random search (the baseline every other controller must beat)."""
    return OptunaController(space, seed, latency_budget_ms, *_storage_and_name(run_dir, storage, study_name), sampler=optuna.samplers.RandomSampler(seed=seed), n_devices=n_devices)


@register_controller("tpe")
def tpe(space: SearchSpace, seed: int, latency_budget_ms: float | None, run_dir: Any, population: int = 10, storage: str | None = None, study_name: str | None = None, n_devices: int = 1) -> OptunaController:
    """Optuna multivariate TPE (multi-objective), ``population`` random start-up trials, budget as a constraint."""
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=population)
    return OptunaController(space, seed, latency_budget_ms, *_storage_and_name(run_dir, storage, study_name), sampler=sampler, n_devices=n_devices)


@register_controller("nsga3")
def nsga3(space: SearchSpace, seed: int, latency_budget_ms: float | None, run_dir: Any, population: int = 10, storage: str | None = None, study_name: str | None = None, n_devices: int = 1) -> OptunaController:
    """Optuna NSGA-III (reference-point selection: better spread with three or more objectives, e.g. several devices)."""
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2; the behaviour is what we test
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.NSGAIIISampler(population_size=population, seed=seed)
    return OptunaController(space, seed, latency_budget_ms, *_storage_and_name(run_dir, storage, study_name), sampler=sampler, n_devices=n_devices)


@register_controller("gp")
def gp(space: SearchSpace, seed: int, latency_budget_ms: float | None, run_dir: Any, population: int = 10, storage: str | None = None, study_name: str | None = None, n_devices: int = 1) -> OptunaController:
    """Optuna Gaussian-process Bayesian optimisation (small evaluation budgets; its cost grows with the trials)."""
    sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=population, warn_independent_sampling=False)
    return OptunaController(space, seed, latency_budget_ms, *_storage_and_name(run_dir, storage, study_name), sampler=sampler, n_devices=n_devices)
