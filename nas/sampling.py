"""Rules for which subnetworks to train at each supernet training step.

Each rule is a small function of (space, generator) returning the architectures
of one step, registered by name so the training recipe can choose it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from search_spaces import Arch, SearchSpace

SamplingRule = Callable[[SearchSpace, np.random.Generator, int], list[Arch]]
SAMPLING_RULES: dict[str, SamplingRule] = {}


def register_rule(name: str) -> Callable[[SamplingRule], SamplingRule]:
    def deco(fn: SamplingRule) -> SamplingRule:
        SAMPLING_RULES[name] = fn
        return fn

    return deco


def get_rule(name: str) -> SamplingRule:
    if name not in SAMPLING_RULES:
        raise KeyError(f"unknown sampling rule {name!r}; available: {sorted(SAMPLING_RULES)}")
    return SAMPLING_RULES[name]


@register_rule("sandwich")
def sandwich(space: SearchSpace, rng: np.random.Generator, num_random: int) -> list[Arch]:
    """Largest + smallest + ``num_random`` uniform subnets (BigNAS / OFA sandwich rule).

    Training both extremes each step bounds the whole space from above and below.
    """
    return [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(num_random))]


@register_rule("uniform")
def uniform(space: SearchSpace, rng: np.random.Generator, num_random: int) -> list[Arch]:
    """One uniformly sampled subnet per step (single-path one-shot, SPOS); ``num_random`` is ignored."""
    return [space.sample(rng)]
