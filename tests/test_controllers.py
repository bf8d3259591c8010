"""Contract every registered search controller passes (on `tiny`, with a deterministic stand-in evaluator)."""

from __future__ import annotations

import pytest

from nas.controllers import create_controller, list_controllers
from nas.controllers.base import Objectives
from search_spaces import create_space

SPACE = create_space("tiny")


def _evaluate(arch) -> Objectives:
    """Deterministic stand-in: accuracy grows with size, latency too (a real trade-off)."""
    size = sum(v for k, v in arch.items() if k.endswith((".kernel", ".expand", ".depth")))
    return Objectives(accuracy=0.5 + 0.01 * size, latency_ms=0.1 * size)


def _run(name: str, run_dir, trials: int = 12, budget: float | None = None) -> list[str]:
    run_dir.mkdir(parents=True, exist_ok=True)
    ctl = create_controller(name, space=SPACE, seed=3, latency_budget_ms=budget, run_dir=run_dir, population=4)
    asked = []
    for _ in range(trials):
        (arch,) = ctl.ask(1)
        SPACE.validate(arch)  # every asked architecture belongs to the space
        ctl.tell([arch], [_evaluate(arch)])
        asked.append(arch.id)
    assert ctl.n_finished() == trials and len(ctl.history()) == trials
    return asked


@pytest.mark.parametrize("name", list_controllers())
def test_controller_asks_valid_archs_and_is_reproducible(name, tmp_path):
    first = _run(name, tmp_path / "a")
    assert _run(name, tmp_path / "b") == first  # same seed, same asks


@pytest.mark.parametrize("name", list_controllers())
def test_controller_accepts_failed_and_infeasible_results(name, tmp_path):
    ctl = create_controller(name, space=SPACE, seed=0, latency_budget_ms=0.5, run_dir=tmp_path, population=4)
    (arch,) = ctl.ask(1)
    ctl.tell([arch], [Objectives(accuracy=None, latency_ms=1.0)])  # the evaluation failed
    assert ctl.n_finished() == 0
    for _ in range(5):
        (arch,) = ctl.ask(1)
        ctl.tell([arch], [_evaluate(arch)])  # most of these exceed the 0.5 ms budget
    rows = ctl.history()
    assert len(rows) == 5 and any(not r["feasible"] for r in rows)


def test_the_issue_controllers_are_registered():
    assert {"nsga2", "nsga3", "tpe", "gp", "random", "evolution", "reinforce"} <= set(list_controllers())


def test_evolution_children_are_one_mutation_from_the_living_population(tmp_path):
    pop = 8
    ctl = create_controller("evolution", space=SPACE, seed=1, latency_budget_ms=3.0, run_dir=tmp_path, population=pop)
    for _ in range(30):
        (arch,) = ctl.ask(1)
        ctl.tell([arch], [_evaluate(arch)])
    trials = sorted(ctl.study.trials, key=lambda t: t.number)
    for n in range(pop, len(trials)):
        child = trials[n].params
        alive = [t.params for t in trials[n - pop : n]]  # aging: the last `pop` finished trials
        distances = [sum(child[k] != parent[k] for k in child) for parent in alive]
        assert min(distances) == 1, n


def test_reinforce_policy_moves_towards_the_rewarded_choice(tmp_path):
    ctl = create_controller("reinforce", space=SPACE, seed=0, latency_budget_ms=None, run_dir=tmp_path)
    key = "s0.b0.kernel"
    big = max(SPACE.choices[key])
    for _ in range(60):
        (arch,) = ctl.ask(1)
        ctl.tell([arch], [Objectives(accuracy=0.9 if arch[key] == big else 0.5, latency_ms=1.0)])  # only this choice matters
    probs = ctl.study.sampler.policy(ctl.study)
    assert probs[key][SPACE.choices[key].index(big)] > 0.8
    others = [k for k in SPACE.keys if k != key]
    assert max(abs(p.max() - p.min()) for k in others for p in [probs[k]]) < 0.5  # unrewarded choices stay spread out
