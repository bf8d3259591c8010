"""Sampling rules: validity, determinism/purity, and each rule's own promise."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from nas.testing import SamplingRuleContract
from nas.training.sampling import (
    SAMPLING_RULES,
    _fair_values,
    choice_counts,
    dimension_groups,
    get_rule,
    sorted_ladder,
)
from search_spaces import create_space

TOTAL = 1000  # total_steps used throughout
P_MIN = 1e-4  # chi-square p-value threshold: generous, and the seeds are fixed anyway


@pytest.fixture(scope="module")
def tiny():
    return create_space("tiny")


@pytest.fixture(scope="module")
def mbv3():
    return create_space("mbv3", width_mult=0.35)


def run(name, space, seed=0, steps=range(5), num_random=2, **options):
    rng = np.random.default_rng(seed)
    return [get_rule(name)(space, rng, s, TOTAL, num_random, **options) for s in steps]


def values_taken(archs, space, keys=None):
    """key -> set of values seen over ``archs``."""
    counts = choice_counts(archs, space)
    return {k: {v for v, c in counts[k].items() if c} for k in keys or space.keys}


def key_index(space):
    return {k: i for i, k in enumerate(space.keys)}


# --- every rule: the contract ---------------------------------------------------------------
PURITY_OPTIONS = {
    "sorted": {"probs": [1, 2, 3, 4, 5, 6, 7]},
    "progressive": {"schedule": {"kernel": 0.5, "depth": 1.0}},
}


class TestEveryRegisteredRule(SamplingRuleContract):
    """Each rule on tiny without options, and on mbv3 with the options it is most often given."""

    @pytest.fixture(
        params=[(rule, space) for rule in SAMPLING_RULES.names() for space in ("tiny", "mbv3")],
        ids=lambda c: f"{c[0]}-{c[1]}",
    )
    def case(self, request):
        return request.param

    @pytest.fixture
    def rule_name(self, case):
        return case[0]

    @pytest.fixture
    def space(self, case, tiny, mbv3):
        return {"tiny": tiny, "mbv3": mbv3}[case[1]]

    @pytest.fixture
    def rule_options(self, case):
        return PURITY_OPTIONS.get(case[0], {}) if case[1] == "mbv3" else {}


# --- registry and options -----------------------------------------------------------------
def test_unknown_rule_lists_available_names():
    with pytest.raises(KeyError) as err:
        get_rule("nope")
    for name in ("uniform", "sandwich", "fair", "sorted", "progressive"):
        assert name in str(err.value)


@pytest.mark.parametrize("name", ["sorted", "progressive"])
def test_unknown_option_lists_the_rules_own_options(name, tiny):
    with pytest.raises(ValueError, match=rf"'{name}'.*'bogus'.*accepted options") as err:
        get_rule(name)(tiny, np.random.default_rng(0), 0, TOTAL, 2, bogus=1)
    if name == "sorted":
        assert "probs" in str(err.value) and "order" in str(err.value)
    if name == "progressive":
        assert "schedule" in str(err.value)


@pytest.mark.parametrize(
    ("step", "total", "num_random"), [(-1, 10, 2), (0, 0, 2), (0, 10, -1), (0, 10, 1.5), (0, 10, True)]
)
def test_bad_step_arguments_are_rejected(step, total, num_random, tiny):
    with pytest.raises(ValueError, match="must be an int"):
        get_rule("sandwich")(tiny, np.random.default_rng(0), step, total, num_random)


def test_dimension_groups_follow_key_suffixes(tiny):
    groups = dimension_groups(tiny)
    assert list(groups) == ["depth", "kernel", "expand"]
    assert groups["depth"] == ("s0.depth", "s1.depth")
    assert set(groups["kernel"]) == {"s0.b0.kernel", "s0.b1.kernel", "s1.b0.kernel", "s1.b1.kernel"}


def test_choice_counts_count_what_they_are_given(tiny):
    raw = {k: max(v) for k, v in tiny.choices.items()} | {"s0.depth": 1}
    assert choice_counts([raw, raw], tiny)["s0.b1.kernel"] == {3: 0, 5: 2}  # before canonicalisation
    assert choice_counts([tiny.arch(raw)], tiny)["s0.b1.kernel"] == {3: 1, 5: 0}  # after: pinned to smallest


# --- uniform / sandwich -------------------------------------------------------------------
def test_uniform_is_one_arch_and_uniform_over_always_active_keys(mbv3):
    draws = [a for archs in run("uniform", mbv3, seed=3, steps=range(3000), num_random=5) for a in archs]
    assert len(draws) == 3000  # num_random is ignored
    counts = choice_counts(draws, mbv3)
    # depths and block 0 are active in every architecture, so canonicalisation leaves them alone
    keys = [k for k in mbv3.keys if k.endswith(".depth") or ".b0." in k]
    assert len(keys) == 15
    for k in keys:
        assert chisquare(list(counts[k].values())).pvalue > P_MIN, (k, counts[k])


def test_sandwich_is_largest_smallest_then_random(tiny):
    for num_random in (0, 1, 3):
        for archs in run("sandwich", tiny, num_random=num_random):
            assert len(archs) == 2 + num_random
            assert archs[0] == tiny.largest() and archs[1] == tiny.smallest()


# --- fair ---------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_fair_uses_every_choice_exactly_once_per_step(seed):
    space = create_space("mbv3", width_mult=0.35)
    rng = np.random.default_rng(seed)
    twin = np.random.default_rng()
    twin.bit_generator.state = copy.deepcopy(rng.bit_generator.state)
    raw = _fair_values(space, twin)
    assert len(raw) == 3
    for k, counts in choice_counts(raw, space).items():
        assert set(counts.values()) == {1}, (k, counts)
    assert get_rule("fair")(space, rng, 0, TOTAL, 5) == [space.arch(v) for v in raw]


def test_fair_tiles_keys_with_fewer_choices():
    space = create_space("tiny", kernels=(3, 5, 7))  # kernels have 3 choices, depth and expand 2
    rng = np.random.default_rng(0)
    filler_at = set()
    for _ in range(50):
        raw = _fair_values(space, rng)
        assert len(raw) == 3
        for k, counts in choice_counts(raw, space).items():
            want = [1, 1, 1] if k.endswith(".kernel") else [1, 2]
            assert sorted(counts.values()) == want, (k, counts)
        vals = [v["s0.depth"] for v in raw]
        filler_at.add(next(i for i in range(3) if vals.count(vals[i]) == 2 and vals.index(vals[i]) != i))
    assert len(filler_at) > 1  # the repeated choice is not always in the same slot


# --- sorted -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("space_name", "order", "levels"),
    [("tiny", None, 4), ("mbv3", None, 7), ("mbv3", ["expand", "depth", "kernel"], 7)],
)
def test_sorted_ladder_is_nested_and_strictly_growing(space_name, order, levels, tiny, mbv3):
    space = {"tiny": tiny, "mbv3": mbv3}[space_name]
    ladder = sorted_ladder(space, order)
    assert len(ladder) == levels
    assert ladder[0] == space.smallest() and ladder[-1] == space.largest()
    codes = space.encode_batch(ladder)
    assert np.all(np.diff(codes, axis=0) >= 0)  # nested: no choice index ever shrinks
    assert np.all(np.diff(codes.sum(axis=1)) > 0)  # strictly larger at every level


def test_sorted_ladder_grows_groups_round_robin_in_order(mbv3):
    ladder = sorted_ladder(mbv3, ["kernel", "expand", "depth"])
    idx = key_index(mbv3)
    grown = [
        {k.rsplit(".", 1)[-1] for k in mbv3.keys if b[idx[k]] > a[idx[k]]}
        for a, b in zip(mbv3.encode_batch(ladder), mbv3.encode_batch(ladder)[1:])
    ]
    assert [g - {"kernel", "expand"} if "depth" in g else g for g in grown] == [
        {"kernel"},
        {"expand"},
        {"depth"},
        {"kernel"},
        {"expand"},
        {"depth"},
    ]


@pytest.mark.parametrize(
    "order",
    [["depth", "kernel"], ["depth", "kernel", "expand", "depth"], "depth", ["depth", "kernel", "width"]],
)
def test_sorted_bad_order_is_rejected(order, tiny):
    with pytest.raises(ValueError, match="'order'"):
        sorted_ladder(tiny, order)
    with pytest.raises(ValueError, match="'order'"):
        get_rule("sorted")(tiny, np.random.default_rng(0), 0, TOTAL, 1, order=order)


@pytest.mark.parametrize(
    ("space_name", "probs"),
    [
        ("tiny", "uniform"),
        ("tiny", "linear"),
        ("mbv3", "uniform"),
        ("mbv3", "linear"),
        ("mbv3", [0, 1, 0, 2, 0, 0, 1]),
    ],
)
def test_sorted_level_frequencies_match_probs(space_name, probs, tiny, mbv3):
    space = {"tiny": tiny, "mbv3": mbv3}[space_name]
    ladder = sorted_ladder(space)
    level = {a: i for i, a in enumerate(ladder)}
    archs = get_rule("sorted")(space, np.random.default_rng(5), 0, TOTAL, 3000, probs=probs)
    assert len(archs) == 3001 and archs[0] == space.largest()
    observed = np.bincount([level[a] for a in archs[1:]], minlength=len(ladder))
    n = len(ladder)
    weights = (
        {"uniform": np.ones(n), "linear": np.arange(1.0, n + 1)}.get(probs)
        if isinstance(probs, str)
        else np.asarray(probs, float)
    )
    expected = 3000 * weights / weights.sum()
    assert np.all(observed[expected == 0] == 0)
    assert chisquare(observed[expected > 0], expected[expected > 0]).pvalue > P_MIN, observed


def test_sorted_without_random_levels_is_just_the_largest(tiny):
    assert run("sorted", tiny, num_random=0, steps=[0]) == [[tiny.largest()]]


@pytest.mark.parametrize(
    ("probs", "message"),
    [
        ([1, 1, 1], "one weight per ladder level"),
        ([1, 1, 1, 1, 1], "one weight per ladder level"),
        ([1, -1, 1, 1], ">= 0"),
        ([0, 0, 0, 0], "not all 0"),
        ("square", "'uniform', 'linear'"),
        (["a", "b", "c", "d"], "'uniform', 'linear'"),
    ],
)
def test_sorted_bad_probs_are_rejected(probs, message, tiny):
    with pytest.raises(ValueError, match=message):
        get_rule("sorted")(tiny, np.random.default_rng(0), 0, TOTAL, 2, probs=probs)


# --- progressive --------------------------------------------------------------------------
def progressive_draws(space, progress, n=300, **options):
    step = int(progress * TOTAL)
    archs = get_rule("progressive")(space, np.random.default_rng(11), step, TOTAL, n, **options)
    assert archs[0] == space.largest()
    return archs


def test_progressive_full_phase_is_only_the_largest(mbv3):
    assert progressive_draws(mbv3, 0.0) == progressive_draws(mbv3, 0.05) == [mbv3.largest()]


@pytest.mark.parametrize(
    ("progress", "elastic"),
    [
        (0.2, {"kernel"}),
        (0.5, {"kernel", "depth"}),
        (0.9, {"kernel", "depth", "expand"}),
        (1.5, {"kernel", "depth", "expand"}),
    ],
)
def test_progressive_phases_open_dimensions_in_order(progress, elastic, mbv3):
    archs = progressive_draws(mbv3, progress)
    assert len(archs) == 301
    groups = dimension_groups(mbv3)
    # depths and block 0 are always active: canonicalisation cannot pin them
    seen = values_taken(archs, mbv3, [k for k in mbv3.keys if k.endswith(".depth") or ".b0." in k])
    for k, vals in seen.items():
        group = k.rsplit(".", 1)[-1]
        assert (len(vals) > 1) == (group in elastic), (k, vals)
        if group not in elastic:
            assert vals == {max(mbv3.choices[k])}
    for a in archs:  # every active block of a fixed dimension is at its largest value
        for k in (k for g in groups if g not in elastic for k in groups[g]):
            block = k.split(".")
            if len(block) == 3 and int(block[1][1:]) < a[f"{block[0]}.depth"]:
                assert a[k] == max(mbv3.choices[k]), k


def test_progressive_phase_boundaries_and_custom_schedule(tiny):
    schedule = [["depth", 0.5], ["kernel", 1.0]]  # pairs work too; 'expand' is never elastic
    always_active = [k for k in tiny.keys if k.endswith(".depth") or ".b0." in k]

    def varying(progress):
        return {
            k
            for k, v in values_taken(
                progressive_draws(tiny, progress, schedule=schedule), tiny, always_active
            ).items()
            if len(v) > 1
        }

    assert varying(0.0) == varying(0.499) == {"s0.depth", "s1.depth"}
    assert varying(0.5) == {"s0.depth", "s1.depth", "s0.b0.kernel", "s1.b0.kernel"}


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"full": 0.1, "kernel": 0.5, "depth": 0.9}, "last phase at 1.0"),
        ({"full": 0.5, "kernel": 0.5, "depth": 1.0}, "strictly increasing"),
        ({"full": 0.6, "kernel": 0.3, "depth": 1.0}, "strictly increasing"),
        ({"full": 0.0, "kernel": 1.0}, "> 0"),
        ({"full": 0.1, "width": 0.5, "depth": 1.0}, "dimension 'width'"),
        ({"kernel": 0.5, "full": 1.0}, "'full' as its first phase"),
        ({"kernel": "half", "depth": 1.0}, "must be numbers"),
        ([["kernel", 0.5], ["kernel", 1.0]], "twice"),
        ({}, "is empty"),
        (42, "ordered mapping"),
    ],
)
def test_progressive_bad_schedules_are_rejected(schedule, message, tiny):
    with pytest.raises(ValueError, match=message):
        get_rule("progressive")(tiny, np.random.default_rng(0), 0, TOTAL, 2, schedule=schedule)
