"""What every sampling rule promises: canonical architectures of the space, seeded, pure, and strict about its
options.

Subclass :class:`SamplingRuleContract` and provide a ``rule_name`` fixture (a
name registered with :func:`nas.training.sampling.register_rule`); ``space``
defaults to ``tiny`` and ``rule_options`` to none.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from nas.training.sampling import get_rule
from search_spaces import Arch, SearchSpace, create_space

TOTAL_STEPS = 1000


def draw(
    name: str, space: SearchSpace, seed: int = 0, steps: Any = range(5), num_random: int = 2, **options: Any
) -> list[list[Arch]]:
    """The rule's architectures at each of ``steps`` from one seeded generator."""
    rng = np.random.default_rng(seed)
    return [get_rule(name)(space, rng, s, TOTAL_STEPS, num_random, **options) for s in steps]


class SamplingRuleContract:
    """Checks for the ``rule_name`` fixture a subclass provides."""

    @pytest.fixture
    def rule_name(self) -> str:  # pragma: no cover - provided by the subclass
        raise NotImplementedError("a SamplingRuleContract subclass provides the `rule_name` fixture")

    @pytest.fixture
    def space(self) -> SearchSpace:
        return create_space("tiny")

    @pytest.fixture
    def rule_options(self) -> dict[str, Any]:
        return {}

    def test_every_rule_returns_canonical_archs_of_the_space(
        self, rule_name: str, space: SearchSpace, rule_options: dict[str, Any]
    ) -> None:
        for archs in draw(rule_name, space, steps=[0, 50, 200, 400, 700, 999], **rule_options):
            assert archs and all(isinstance(a, Arch) for a in archs)
            for a in archs:
                assert space.arch(a) == a  # valid and already canonical

    def test_same_seed_same_sequence_other_seed_differs(
        self, rule_name: str, space: SearchSpace, rule_options: dict[str, Any]
    ) -> None:
        steps = range(900, 920)  # late in training, so a progressive rule is randomised too
        first = draw(rule_name, space, seed=1, steps=steps, **rule_options)
        assert draw(rule_name, space, seed=1, steps=steps, **rule_options) == first
        assert draw(rule_name, space, seed=2, steps=steps, **rule_options) != first

    def test_rules_are_pure_functions_of_the_rng_state(
        self, rule_name: str, space: SearchSpace, rule_options: dict[str, Any]
    ) -> None:
        options_before = copy.deepcopy(rule_options)
        rule, rng = get_rule(rule_name), np.random.default_rng(7)
        for step in (0, 10, 600, 999):
            twin = np.random.default_rng()
            twin.bit_generator.state = copy.deepcopy(rng.bit_generator.state)
            archs = rule(space, rng, step, TOTAL_STEPS, 3, **rule_options)
            assert rule(space, twin, step, TOTAL_STEPS, 3, **rule_options) == archs
            assert twin.bit_generator.state == rng.bit_generator.state  # same draws consumed
        assert rule_options == options_before

    def test_unknown_option_names_rule_option_and_accepted_ones(
        self, rule_name: str, space: SearchSpace
    ) -> None:
        with pytest.raises(ValueError, match=rf"'{rule_name}'.*'bogus'.*accepted options"):
            get_rule(rule_name)(space, np.random.default_rng(0), 0, TOTAL_STEPS, 2, bogus=1)
