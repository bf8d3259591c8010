"""A study judges each finished trial once per constraints function, however often samplers read it."""

from __future__ import annotations

import optuna

from nas.controllers import Objectives, create_controller
from search_spaces import create_space


def test_finished_trials_are_judged_once_per_constraints_and_show_the_latest(tmp_path):
    space = create_space("tiny")
    ctl = create_controller(
        "nsga2", space=space, seed=0, latency_budget_ms=None, run_dir=tmp_path, population=4,
        storage=optuna.storages.InMemoryStorage(),
    )  # fmt: skip
    judged: list[int] = []

    def loose(row):
        judged.append(row["trial"])
        return {"latency_ms": row["latency_ms"] - 10.0}

    ctl.set_constraints(loose)
    for i in range(30):
        arch = ctl.ask_within(30)
        ctl.tell([arch], [Objectives(0.5 + i / 100, float(i % 5))])
    complete = ctl.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 30
    assert len(judged) == len(set(judged)) == 30  # every trial once, though NSGA-II read them on every ask
    assert all(t.constraints == {"latency_ms": t.values[1] - 10.0} for t in complete)

    ctl.set_constraints(lambda row: {"latency_ms": row["latency_ms"] - 2.0})  # a tighter budget, given later
    again = ctl.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    assert all(t.constraints == {"latency_ms": t.values[1] - 2.0} for t in again)
    copies = ctl.study.get_trials(deepcopy=True, states=(optuna.trial.TrialState.COMPLETE,))
    assert all(c is not t and c.constraints == t.constraints for c, t in zip(copies, again))
    ctl.close()
