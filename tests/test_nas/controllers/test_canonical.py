"""Canonical networks everywhere: a trial is a network the study does not hold yet, evolution mutates and
REINFORCE credits only the choices a network uses, darts/gdas evaluate their argmax, a study belongs to one
controller, and a space whose every network is evaluated ends the search with a message."""

from __future__ import annotations

import io
import json
import sys
import types
from contextlib import redirect_stderr

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from nas.controllers import SearchSpaceExhausted, create_controller
from nas.controllers import optuna_controller as oc
from nas.controllers.reinforce import ReinforceSampler
from nas.cost import CostModel
from nas.cost.specs import spec_profile
from nas.testing.controllers import ready_controller, stand_in_objectives
from search_spaces import create_space

MBV3 = create_space("mbv3", width_mult=0.35)
TINY = create_space("tiny")


def _memory_controller(name: str, space, seed: int = 0, **kwargs):
    """A controller on an in-memory study (the storage does not change what it asks; it is 100x faster)."""
    return create_controller(
        name,
        space=space,
        seed=seed,
        latency_budget_ms=None,
        run_dir=".",
        population=10,
        storage=optuna.storages.InMemoryStorage(),
        **kwargs,
    )


def _search(ctl, trials: int) -> None:
    while (arch := ctl.ask_within(trials)) is not None:
        ctl.tell([arch], [stand_in_objectives(arch)])


def _complete(ctl) -> list[optuna.trial.FrozenTrial]:
    return ctl.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


# Before this change (same setup, seed 0): mbv3 evolution 49, nsga2 57, tpe 60, qmc 60, reinforce 60
# distinct networks in 60 trials; tiny evolution 44, nsga2 45, tpe 48, qmc 54, reinforce 56.
@pytest.mark.parametrize("space", [MBV3, TINY], ids=["mbv3", "tiny"])
@pytest.mark.parametrize("name", ["evolution", "nsga2", "tpe", "qmc", "reinforce"])
def test_sixty_trials_are_sixty_networks(name, space):
    ctl = _memory_controller(name, space)
    _search(ctl, 60)
    done = _complete(ctl)
    assert len(done) == 60 and len({t.user_attrs["arch_id"] for t in done}) == 60
    by_number = {t.number: t for t in ctl.study.trials}
    for t in ctl.study.trials:  # a repeated network is a pruned trial naming the trial that holds it
        if "duplicate_of" in t.user_attrs:
            assert t.state == TrialState.PRUNED and "accuracy" not in t.user_attrs
            twin = by_number[t.user_attrs["duplicate_of"]]
            assert twin.user_attrs["arch_id"] == t.user_attrs["arch_id"] == space.arch(t.params).id
    assert len(ctl.history()) == 60


def test_a_network_asked_and_not_yet_told_is_not_asked_again():
    """Running trials count: ask(n) gives n different networks, and so do several asks before the tells."""
    ctl = _memory_controller("random", TINY, seed=4)
    asked = [a.id for _ in range(30) for a in ctl.ask(4)]
    assert len(set(asked)) == len(asked) == 120


def test_evolution_never_re_proposes_its_parent():
    """Every proposal (kept or pruned as another network's duplicate) changes a choice the parent uses."""
    ctl = _memory_controller("evolution", MBV3, seed=2)
    _search(ctl, 60)
    done = sorted(_complete(ctl), key=lambda t: t.number)
    parents = 0
    for t in ctl.study.trials:
        alive = [p for p in done if p.number < t.number][-10:]
        if len(alive) < 10 or not t.params:
            continue
        one_used = []  # population members the proposal is one mutation of a used choice away from
        for p in alive:
            changed = [k for k in MBV3.keys if t.params[k] != p.params[k]]
            if len(changed) == 1 and changed[0] in MBV3.used_keys(p.params):
                one_used.append(p)
        assert one_used, t.number
        assert all(MBV3.arch(t.params).id != p.user_attrs["arch_id"] for p in one_used)
        parents += 1
    assert parents >= 50


def test_reinforce_gives_no_update_to_choices_a_network_does_not_use():
    """Replaying the policy one finished trial at a time: a key the trial's network does not use keeps its
    probabilities exactly; the used ones move."""
    ctl = _memory_controller("reinforce", MBV3, seed=1)
    _search(ctl, 25)
    sampler: ReinforceSampler = ctl.study.sampler
    done = sorted(_complete(ctl), key=lambda t: t.number)
    replay = optuna.create_study(directions=["maximize", "minimize"])
    dists = {k: CategoricalDistribution(list(v)) for k, v in MBV3.choices.items()}
    before = sampler.policy(replay)
    unused_seen = moved = 0
    for t in done:
        replay.add_trial(optuna.trial.create_trial(params=t.params, distributions=dists, values=t.values))
        after = sampler.policy(replay)
        used = set(MBV3.used_keys(t.params))
        for k in MBV3.keys:
            if k in used:
                moved += not np.array_equal(after[k], before[k])
            else:
                np.testing.assert_array_equal(after[k], before[k], err_msg=f"trial {t.number} updated {k}")
                unused_seen += 1
        before = after
    assert unused_seen > 100 and moved > 100  # both kinds of keys occurred, and the used ones learned
    policy = sampler.policy(ctl.study)
    for k in MBV3.keys:  # the replay is the controller's own policy
        np.testing.assert_array_equal(before[k], policy[k])


@pytest.mark.parametrize("name", ["darts", "gdas"])
def test_gradient_controllers_evaluate_their_argmax_on_a_study_with_trials(name, tmp_path):
    """A restarted search whose distribution was learned again (new argmax) evaluates the argmax next."""
    ctl = ready_controller(name, TINY, tmp_path, seed=1, latency_budget_ms=None)
    argmax = ctl.sampler.argmax()
    assert ctl.ask_within(3).id == argmax.id  # on an empty study
    ctl.tell([argmax], [stand_in_objectives(argmax)])
    for _ in range(2):
        arch = ctl.ask_within(3)
        ctl.tell([arch], [stand_in_objectives(arch)])
    ctl.close()
    # the distribution learned again (e.g. a changed setting), saved where a restarted search reads it
    path = tmp_path / "search" / f"{name}_distribution.json"
    state = json.loads(path.read_text())
    state["probabilities"] = {k: list(reversed(v)) for k, v in state["probabilities"].items()}
    path.write_text(json.dumps(state))
    again = create_controller(name, space=TINY, seed=1, latency_budget_ms=None, run_dir=tmp_path)
    again.prepare(None, lambda e: [], lambda r: [], None)
    new_argmax = again.sampler.argmax()
    held = {t.user_attrs["arch_id"] for t in _complete(again)}
    assert new_argmax.id not in held and len(held) == 3
    assert again.ask_within(6).id == new_argmax.id  # the study has 3 trials: the argmax is still first
    again.tell([new_argmax], [stand_in_objectives(new_argmax)])
    for _ in range(2):  # and it is not asked again
        arch = again.ask_within(6)
        assert arch.id != new_argmax.id
        again.tell([arch], [stand_in_objectives(arch)])
    again.close()


def test_another_controller_on_the_same_study_is_refused(tmp_path):
    ctl = create_controller("nsga2", space=TINY, seed=0, latency_budget_ms=None, run_dir=tmp_path)
    _search(ctl, 3)
    assert ctl.study.user_attrs["controller"] == "nsga2"
    ctl.close()
    with pytest.raises(ValueError) as err:
        create_controller("tpe", space=TINY, seed=0, latency_budget_ms=None, run_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "controller 'nsga2', not 'tpe'" in msg and "--controller=nsga2" in msg
    assert "new --run-dir" in msg and "--search.study=NAME" in msg
    # its own controller reads it (as `nas export` does through checks.export_choice) ...
    own = create_controller("nsga2", space=TINY, seed=0, latency_budget_ms=None, run_dir=tmp_path)
    assert len(own.history()) == 3
    own.close()
    # ... and so does stock Optuna (the report)
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path}/study.db")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    # another study in the same storage is the other controller's
    other = create_controller(
        "tpe", space=TINY, seed=0, latency_budget_ms=None, run_dir=tmp_path, study_name="tpe-study"
    )
    assert other.study.user_attrs["controller"] == "tpe" and not other.history()
    other.close()


def test_a_foreign_study_can_be_refused_before_anything_is_written(tmp_path):
    """refuse_foreign_study: the controller's refusal, read-only (for checks before a command writes)."""
    oc.refuse_foreign_study("tpe", tmp_path)  # no study yet: anyone's, and none is created
    assert not (tmp_path / "study.db").exists()
    ctl = create_controller("nsga2", space=TINY, seed=0, latency_budget_ms=None, run_dir=tmp_path)
    ctl.close()
    oc.refuse_foreign_study("nsga2", tmp_path)
    oc.refuse_foreign_study("tpe", tmp_path, study_name="another")  # no such study in the storage
    with pytest.raises(ValueError, match="controller 'nsga2', not 'tpe'.*--search.study=NAME"):
        oc.refuse_foreign_study("tpe", tmp_path)
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path}/study.db")
    assert study.user_attrs == {"controller": "nsga2"}


def test_the_search_history_of_the_studys_own_controller_reads_it(tmp_path):
    from nas.run.config import build_config
    from nas.search import history, open_controller

    ctl = create_controller("evolution", space=TINY, seed=0, latency_budget_ms=None, run_dir=tmp_path)
    _search(ctl, 4)
    ctl.close()
    cost = CostModel(TINY, spec_profile("mobile-big-core", TINY))

    def rows(controller: str):  # as `nas export` reads the study (nas.commands.checks.export_choice)
        cfg = build_config(overrides=[f"search.controller={controller}", "search.devices=[mobile-big-core]"])
        ctx = types.SimpleNamespace(cfg=cfg, space=TINY, run_dir=tmp_path, say=lambda msg: None)
        ctl, limits = open_controller(ctx, [cost])
        try:
            return history(ctx, ctl, limits)
        finally:
            ctl.close()

    assert len(rows("evolution")) == 4
    with pytest.raises(ValueError, match="controller 'evolution', not 'nsga2'"):
        rows("nsga2")


def test_a_study_made_before_controllers_were_recorded_is_adopted_by_the_first(tmp_path):
    study = optuna.create_study(
        study_name="search", storage=f"sqlite:///{tmp_path}/study.db", directions=["maximize", "minimize"]
    )
    arch = TINY.smallest()
    study.add_trial(
        optuna.trial.create_trial(
            params=dict(arch),
            distributions={k: CategoricalDistribution(list(v)) for k, v in TINY.choices.items()},
            values=[0.5, 1.0],
            user_attrs={"arch_id": arch.id, "arch": arch.to_json(), "constraint": 0.0},
        )
    )
    ctl = create_controller("qmc", space=TINY, seed=0, latency_budget_ms=None, run_dir=tmp_path)
    assert ctl.study.user_attrs["controller"] == "qmc" and len(ctl.history()) == 1
    assert ctl.ask_within(2).id != arch.id  # and it knows the network it holds
    ctl.close()
    with pytest.raises(ValueError, match="controller 'qmc', not 'random'"):
        create_controller("random", space=TINY, seed=0, latency_budget_ms=None, run_dir=tmp_path)


def _small_space():
    """36 networks (64 raw choice sets): two stages of depth 1 or 2, one kernel, two expand ratios."""
    space = create_space("tiny", depths=(1, 2), kernels=(3,), expands=(2, 3))
    assert space.num_architectures() == len(space.enumerate()) == 36
    return space


def _fill(ctl, space) -> None:
    """Evaluate every network of the space."""
    for arch in space.enumerate():
        ctl.enqueue(arch)
    _search(ctl, space.num_architectures())


def test_a_space_whose_every_network_is_evaluated_is_exhausted(tmp_path):
    space = _small_space()
    ctl = create_controller("random", space=space, seed=0, latency_budget_ms=None, run_dir=tmp_path)
    _fill(ctl, space)
    assert len({t.user_attrs["arch_id"] for t in _complete(ctl)}) == 36
    with pytest.raises(SearchSpaceExhausted) as err:
        ctl.ask_within(40)
    msg = str(err.value)
    assert (
        "\n" not in msg
        and "looks exhausted" in msg
        and "36 distinct networks evaluated, of 36 in the space" in msg
    )
    assert "fewer --trials" in msg
    assert ctl.counts()[TrialState.PRUNED] == 1  # it noticed at the first repeat
    with pytest.raises(SearchSpaceExhausted):
        ctl.ask(1)
    ctl.close()


def test_the_duplicate_bound_ends_a_search_that_finds_nothing_new(tmp_path, monkeypatch):
    """The space claims more networks than the sampler can reach: 100 repeats in a row, then exhausted."""
    space = _small_space()
    ctl = create_controller("evolution", space=space, seed=0, latency_budget_ms=None, run_dir=tmp_path)
    _fill(ctl, space)
    monkeypatch.setattr(space, "num_architectures", lambda: 1000)
    with pytest.raises(
        SearchSpaceExhausted,
        match=rf"last {oc.MAX_DUPLICATES} proposals.*36 distinct networks evaluated, of 1000",
    ):
        ctl.ask_within(40)
    pruned = ctl.study.get_trials(states=(TrialState.PRUNED,))
    assert len(pruned) == oc.MAX_DUPLICATES and all("duplicate_of" in t.user_attrs for t in pruned)
    assert ctl.n_finished() == 36
    ctl.close()


def test_an_exhausted_search_ends_with_its_trials_and_the_message(tmp_path, monkeypatch):
    """nas.search's loop: the 36 networks are evaluated, then one line says why the search stopped at 36."""
    import nas.search as search
    from nas.run.config import build_config

    space = _small_space()
    cfg = build_config(overrides=["search.trials=50", "search.controller=random"])
    tracked: list = []
    ctx = types.SimpleNamespace(
        cfg=cfg,
        space=space,
        run_dir=tmp_path,
        progress=False,
        say=lambda msg: print(msg, file=sys.stderr),
        trackers=types.SimpleNamespace(log=lambda *a, **k: tracked.append(a), log_table=lambda *a, **k: None),
    )
    monkeypatch.setattr(search, "evaluate_arch", lambda ctx, net, arch: stand_in_objectives(arch).accuracy)
    ctl = create_controller("random", space=space, seed=0, latency_budget_ms=None, run_dir=tmp_path)
    for arch in space.enumerate():
        ctl.enqueue(arch)
    cost = CostModel(space, spec_profile("mobile-big-core", space))
    err = io.StringIO()
    with redirect_stderr(err):
        result = search._search_loop(ctx, types.SimpleNamespace(read_spec=lambda: None), [cost], ctl, {})
    ctl.close()
    assert result["trials"] == 36 and len(tracked) == 36
    lines = [line for line in err.getvalue().splitlines() if "exhausted" in line]
    assert len(lines) == 1 and "36 distinct networks evaluated, of 36 in the space" in lines[0]
    assert (tmp_path / "search" / "history.csv").read_text().count("\n") == 37
