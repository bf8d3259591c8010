"""The controller contract (nas.testing.ControllerContract) on every registered controller, plus each
controller's own promise."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from optuna.trial import TrialState

from nas.controllers import create_controller, list_controllers
from nas.controllers.base import Objectives
from nas.cost import CostModel
from nas.cost.specs import spec_profile
from nas.testing import ControllerContract
from nas.testing.controllers import batches, ready_controller, stand_in_objectives
from search_spaces import create_space

SPACE = create_space("tiny")
COST = CostModel(SPACE, spec_profile("mobile-big-core", SPACE))


def _batches(seed: int, n: int = 3):
    return batches(SPACE, seed, n)


def _evaluate(arch) -> Objectives:
    return stand_in_objectives(arch)


class TestEveryRegisteredController(ControllerContract):
    @pytest.fixture(params=list_controllers())
    def controller_name(self, request):
        return request.param


def test_the_issue_controllers_are_registered():
    assert {"nsga2", "nsga3", "tpe", "gp", "random", "evolution", "reinforce", "darts", "gdas", "qmc"} <= set(
        list_controllers()
    )


def test_evolution_children_are_one_mutation_from_the_living_population(tmp_path):
    """Each child (a kept trial, or one pruned as another network's duplicate) changes exactly one choice of
    a living parent, one the parent's network uses: never the parent's network again."""
    pop = 8
    ctl = create_controller(
        "evolution", space=SPACE, seed=1, latency_budget_ms=3.0, run_dir=tmp_path, population=pop
    )
    for _ in range(30):
        (arch,) = ctl.ask(1)
        ctl.tell([arch], [_evaluate(arch)])
    trials = sorted(ctl.study.trials, key=lambda t: t.number)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    children = [t for t in trials if len([p for p in done if p.number < t.number]) >= pop]
    assert len(children) >= 30 - pop
    for child in children:
        alive = [p for p in done if p.number < child.number][-pop:]  # aging: the last `pop` finished trials
        distances = [sum(child.params[k] != p.params[k] for k in SPACE.keys) for p in alive]
        # a kept child is no living network again; a pruned one repeats another network the study holds
        assert (min(distances) if child.state == TrialState.COMPLETE else min(set(distances) - {0})) == 1
        parents = [p for p, d in zip(alive, distances) if d == 1]
        changed = [
            next(k for k in SPACE.keys if child.params[k] != p.params[k]) for p in parents
        ]  # the mutated choice, for each parent it may come from
        assert any(k in SPACE.used_keys(p.params) for k, p in zip(changed, parents)), child.number
        assert SPACE.arch(child.params).id not in {
            p.user_attrs["arch_id"] for p, k in zip(parents, changed) if k in SPACE.used_keys(p.params)
        }


def test_reinforce_policy_moves_towards_the_rewarded_choice(tmp_path):
    ctl = create_controller("reinforce", space=SPACE, seed=0, latency_budget_ms=None, run_dir=tmp_path)
    key = "s0.b0.kernel"
    big = max(SPACE.choices[key])
    for _ in range(60):
        (arch,) = ctl.ask(1)
        ctl.tell(
            [arch], [Objectives(accuracy=0.9 if arch[key] == big else 0.5, latency_ms=1.0)]
        )  # only this choice matters
    probs = ctl.study.sampler.policy(ctl.study)
    assert probs[key][SPACE.choices[key].index(big)] > 0.8
    others = [k for k in SPACE.keys if k != key]
    assert (
        max(abs(p.max() - p.min()) for k in others for p in [probs[k]]) < 0.5
    )  # unrewarded choices stay spread out


@pytest.mark.parametrize("name", ["darts", "gdas"])
def test_gradient_controllers_trade_accuracy_for_latency_under_a_budget(name, tmp_path):
    """With a tight budget and a strong latency weight the learned distribution moves to cheaper networks."""
    floor = float(COST.predict([SPACE.smallest()])[0])
    uniform = {k: torch.full((len(v),), 1 / len(v), dtype=torch.float64) for k, v in SPACE.choices.items()}
    from nas.cost.expected import expected_latency

    start = float(expected_latency(COST, uniform))
    ctl = create_controller(
        name,
        space=SPACE,
        seed=0,
        latency_budget_ms=floor * 1.05,
        run_dir=tmp_path,
        epochs=3,
        latency_weight=5.0,
        arch_lr=0.1,
    )
    torch.manual_seed(0)
    state = ctl.prepare(
        SPACE.build_supernet(), lambda e: _batches(e, 6), lambda r: _batches(100 + r, 2), COST
    )
    assert state["expected_latency_ms"] < start - 0.3 * (start - floor)
    (first,) = ctl.ask(1)
    assert first.id == ctl.sampler.argmax().id  # discretisation by argmax is evaluated first
    assert state["argmax_latency_ms"] == pytest.approx(float(COST.predict([first])[0]))


def test_gradient_controller_resumes_without_repeating_its_learning_phase(tmp_path):
    ctl = ready_controller("darts", SPACE, tmp_path, seed=1, latency_budget_ms=None)
    probs = {k: v.tolist() for k, v in ctl.sampler.probs.items()}
    again = create_controller("darts", space=SPACE, run_dir=tmp_path, seed=1, latency_budget_ms=None)
    calls = []
    state = again.prepare(
        None, lambda e: calls.append(e) or [], lambda r: [], COST
    )  # no supernet, no data needed
    assert (
        not calls
        and {k: v.tolist() for k, v in again.sampler.probs.items()} == probs
        and state["probabilities"].keys() == probs.keys()
    )
    changed = create_controller(
        "darts", space=SPACE, run_dir=tmp_path, seed=1, latency_budget_ms=None, epochs=2, arch_lr=0.2
    )
    with pytest.raises(AttributeError):  # different settings: the phase is run again (here: on no supernet)
        changed.prepare(None, lambda e: [], lambda r: [], COST)


def test_controller_options_are_checked_against_the_controller():
    with pytest.raises(ValueError, match="has no option 'epochs'.*its options"):
        create_controller(
            "nsga2", options={"epochs": 3}, space=SPACE, seed=0, latency_budget_ms=None, run_dir="."
        )
    with pytest.raises(ValueError, match="whole number of epochs"):
        create_controller(
            "darts", options={"epochs": 0}, space=SPACE, seed=0, latency_budget_ms=None, run_dir="."
        )


def test_qmc_covers_every_value_of_every_choice_evenly(tmp_path):
    """16 Sobol' points over two-valued choices: each value of each key exactly 8 times (random: rarely)."""
    ctl = create_controller("qmc", space=SPACE, seed=5, latency_budget_ms=None, run_dir=tmp_path)
    points = [ctl.study.sampler.point(n) for n in range(16)]
    for d in range(len(SPACE.keys)):
        counts = np.bincount([int(p[d] * 2) for p in points], minlength=2)
        assert counts.tolist() == [8, 8]


def test_gradient_controllers_refuse_spaces_without_a_one_pass_mixture(tmp_path):
    vit = create_space("vit")
    ctl = create_controller("darts", space=vit, seed=0, latency_budget_ms=None, run_dir=tmp_path)
    with pytest.raises(ValueError, match="space 'vit' has none: use another controller"):
        ctl.prepare(None, lambda e: [], lambda r: [], COST)
    with pytest.raises(ValueError, match="weight-entangled supernet"):  # e.g. a mixture-of-supernets run
        SPACE.mixed_forward(torch.nn.Linear(1, 1), torch.zeros(1, *SPACE.input_shape), {})


def test_predictor_front_gain_is_the_hypervolume_a_point_adds():
    from nas.controllers.predictor import front_gain
    from nas.pareto import hypervolume

    rng = np.random.default_rng(3)
    front = [(float(a), float(lt)) for a, lt in zip(rng.uniform(0.5, 0.9, 6), rng.uniform(0.1, 1.0, 6))]
    acc, lat = rng.uniform(0.4, 1.0, 50), rng.uniform(0.0, 1.2, 50)
    gain = front_gain(acc, lat, front, 0.3, 1.0)
    before = hypervolume(front, 0.3, 1.0)
    exact = [hypervolume([*front, (a, lt)], 0.3, 1.0) - before for a, lt in zip(acc, lat)]
    assert np.any(np.array(exact) > 0) and gain == pytest.approx(exact, abs=1e-12)
    # nobody improves the front: each candidate's margin to it instead, so the closest to improving wins
    margins = front_gain(np.array([0.1, 0.2]), np.array([0.9, 0.9]), [(0.8, 0.5)], 0.3, 1.0)
    assert margins == pytest.approx([-0.7, -0.6])


@functools.cache
def _nats() -> tuple:
    """The nb201 space, its NATS-Bench CIFAR-10 table and a spec-derived cost model (read once)."""
    from nas.tables import load_table

    space = create_space("nb201")
    return space, load_table(space, "nats:cifar10"), CostModel(space, spec_profile("mobile-big-core", space))


def _nats_search(name: str, seed: int, trials: int, budget: float | None, tmp_path) -> list:
    import optuna

    space, table, cost = _nats()
    ctl = create_controller(
        name, space=space, seed=seed, latency_budget_ms=budget, run_dir=tmp_path / f"{name}{seed}",
        population=10, storage=optuna.storages.InMemoryStorage(),
    )  # fmt: skip
    out = []
    for _ in range(trials):
        (arch,) = ctl.ask(1)
        lat = float(cost.predict([arch])[0]) if budget is not None else 0.0
        ctl.tell([arch], [Objectives(table.accuracy_of(arch), lat)])
        out.append((table.rank_of(arch), lat))
    return out


def test_predictor_finds_better_nas_bench_201_cells_than_random_search(tmp_path):
    """Real NATS-Bench CIFAR-10 accuracies, 60 trials, 3 seeds each (deterministic: same seeds, same asks)."""
    best = {
        name: [min(r for r, _ in _nats_search(name, seed, 60, None, tmp_path)) for seed in range(3)]
        for name in ("predictor", "random")
    }
    assert np.median(best["predictor"]) < np.median(best["random"]), best


def test_predictor_asks_networks_it_predicts_within_the_budget(tmp_path):
    space, _, cost = _nats()
    budget = float(np.median(cost.predict([space.sample(np.random.default_rng(i)) for i in range(300)])))
    asked = _nats_search("predictor", 0, 50, budget, tmp_path)
    after_start = [lat <= budget for _, lat in asked[10:]]
    assert np.mean(after_start) >= 0.9  # random asks meet a median budget half the time
