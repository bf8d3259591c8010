"""Rules for which subnetworks to train at each supernet training step.

The trainer calls, once per optimizer step::

    rule = get_rule(name)
    archs = rule(space, rng, step, total_steps, num_random, **options)

and accumulates the gradients of every returned architecture. ``rng`` is the
trainer's generator, whose state is checkpointed: a rule draws all of its randomness
from it and keeps no other state, so its output is a pure function of
``(space, rng state, step, total_steps, num_random, options)`` and a resumed run
samples exactly what an uninterrupted one would have. ``options`` (config
``train.sampler_options``) are the rule's keyword-only parameters; any other name is
a :class:`ValueError` naming the rule, the option and the accepted ones.

Choices are grouped into *dimensions* by the part of their key after the last ``.``
(``s1.b2.kernel`` -> ``kernel``), which is how ``sorted`` and ``progressive`` address
"all depth choices" or "all kernel choices" of a space.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, Protocol

import numpy as np

from search_spaces import Arch, SearchSpace
from search_spaces.registry import Registry

__all__ = [
    "SAMPLING_RULES",
    "SamplingRule",
    "choice_counts",
    "dimension_groups",
    "get_rule",
    "register_rule",
    "sorted_ladder",
]


class SamplingRule(Protocol):
    def __call__(
        self,
        space: SearchSpace,
        rng: np.random.Generator,
        step: int,
        total_steps: int,
        num_random: int,
        **options: Any,
    ) -> list[Arch]: ...


SAMPLING_RULES: Registry[SamplingRule] = Registry("sampling rule")


def register_rule(name: str) -> Callable[[Callable[..., list[Arch]]], SamplingRule]:
    """Register ``fn`` under ``name``; its keyword-only parameters are the options it accepts.

    The registered callable checks the step arguments and rejects unknown options
    before calling ``fn``.
    """

    def deco(fn: Callable[..., list[Arch]]) -> SamplingRule:
        accepted = sorted(
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        )

        @functools.wraps(fn)
        def rule(
            space: SearchSpace,
            rng: np.random.Generator,
            step: int,
            total_steps: int,
            num_random: int,
            **options: Any,
        ) -> list[Arch]:
            unknown = sorted(set(options) - set(accepted))
            if unknown:
                raise ValueError(
                    f"sampling rule {name!r} got unknown option(s) {unknown}; accepted options:"
                    f" {accepted or 'none'}"
                )
            for arg, value, least in (
                ("step", step, 0),
                ("total_steps", total_steps, 1),
                ("num_random", num_random, 0),
            ):
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                    raise ValueError(
                        f"sampling rule {name!r}: {arg} must be an int >= {least}, got {value!r}"
                    )
            return fn(space, rng, int(step), int(total_steps), int(num_random), **options)

        return SAMPLING_RULES.add(name, rule)

    return deco


def get_rule(name: str) -> SamplingRule:
    return SAMPLING_RULES.get(name, setting="train.sampler")


# --- helpers ------------------------------------------------------------------------------
def dimension_groups(space: SearchSpace) -> dict[str, tuple[str, ...]]:
    """Dimension name -> its keys, grouping keys by the text after their last ``.``.

    Dimensions and keys are in the order they first appear in ``space.keys``.
    """
    groups: dict[str, list[str]] = {}
    for key in space.keys:
        groups.setdefault(key.rsplit(".", 1)[-1], []).append(key)
    return {g: tuple(keys) for g, keys in groups.items()}


def choice_counts(archs: Iterable[Mapping[str, Any]], space: SearchSpace) -> dict[str, dict[Any, int]]:
    """How often each value of each key occurs in ``archs`` (every allowed value listed, 0 if unseen).

    It counts the mappings exactly as given: pass :class:`Arch` objects for counts after
    canonicalisation (blocks past a stage's depth pinned to the smallest values), or
    the raw sampled mappings (e.g. from ``_fair_values``) for counts before it.
    """
    counts = {k: dict.fromkeys(vals, 0) for k, vals in space.choices.items()}
    for arch in archs:
        space.validate(arch)
        for k in space.keys:
            counts[k][arch[k]] += 1
    return counts


def _values(space: SearchSpace, index: Mapping[str, int]) -> dict[str, Any]:
    return {k: space.choices[k][index[k]] for k in space.keys}


def _top_index(space: SearchSpace) -> dict[str, int]:
    return {k: len(v) - 1 for k, v in space.choices.items()}


# --- rules --------------------------------------------------------------------------------
@register_rule("uniform")
def uniform(
    space: SearchSpace, rng: np.random.Generator, step: int, total_steps: int, num_random: int
) -> list[Arch]:
    """One uniformly sampled subnet per step (single-path one-shot, SPOS).

    Every choice of every key is drawn independently and uniformly, so in expectation
    each path of the supernet is trained equally often. ``num_random`` is ignored:
    SPOS trains exactly one path per step.
    """
    return [space.sample(rng)]


@register_rule("sandwich")
def sandwich(
    space: SearchSpace, rng: np.random.Generator, step: int, total_steps: int, num_random: int
) -> list[Arch]:
    """Largest + smallest + ``num_random`` uniform subnets (BigNAS / Once-for-All sandwich rule).

    Training both extremes every step bounds the whole space from above and below;
    the random middle subnets cover the rest. Order: largest, smallest, random ones.
    """
    return [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(num_random))]


def _fair_values(space: SearchSpace, rng: np.random.Generator) -> list[dict[str, Any]]:
    """The raw (not canonicalised) mappings of one ``fair`` step; see :func:`fair`."""
    m = max(len(v) for v in space.choices.values())
    columns: dict[str, np.ndarray] = {}
    for key in space.keys:
        n = len(space.choices[key])
        col = np.concatenate([rng.permutation(n) for _ in range(-(-m // n))])[:m]
        if m % n:  # the truncated last permutation is the filler: put it at random positions
            col = rng.permutation(col)
        columns[key] = col
    return [{k: space.choices[k][int(columns[k][i])] for k in space.keys} for i in range(m)]


@register_rule("fair")
def fair(
    space: SearchSpace, rng: np.random.Generator, step: int, total_steps: int, num_random: int
) -> list[Arch]:
    """``m`` subnets per step with strict fairness (FairNAS), ``m`` = most choices of any key.

    Every key gets a random permutation of its choices across the ``m`` subnets, so
    within ONE step every choice of every key with exactly ``m`` choices is used exactly
    once, and all are updated equally often rather than only in expectation. A key
    with ``n < m`` choices gets ``m // n`` whole permutations plus ``m % n`` distinct
    uniformly drawn choices (each value used ``m // n`` or ``m // n + 1`` times).

    Fairness holds for the choices as sampled: the returned architectures are
    canonicalised by ``space.arch``, and blocks past a stage's depth are not trained
    in that architecture (their choices are pinned to the smallest values), so the
    choices of such blocks are not trained equally often. ``num_random`` is ignored.
    """
    return [space.arch(values) for values in _fair_values(space, rng)]


def sorted_ladder(space: SearchSpace, order: Sequence[str] | None = None) -> list[Arch]:
    """Nested architectures from ``space.smallest()`` to ``space.largest()`` (SortedNet-style).

    Level 0 is the smallest architecture. Each next level grows one dimension group
    (see :func:`dimension_groups`) by one choice for all of its keys not yet at their
    largest value, taking the groups round-robin in ``order`` (default: the order
    dimensions first appear in ``space.keys``, e.g. depth, kernel, expand), until every
    key is at its largest value. Choice indices therefore never decrease from one level
    to the next (also after canonicalisation, since depths only grow); a level equal
    to the previous one after canonicalisation is dropped, so levels strictly grow.
    """
    groups = dimension_groups(space)
    order = _check_order("sorted", groups, order)
    index, top = dict.fromkeys(space.keys, 0), _top_index(space)
    ladder = [space.arch(_values(space, index))]
    while any(index[k] < top[k] for k in space.keys):
        for group in order:
            growing = [k for k in groups[group] if index[k] < top[k]]
            if not growing:
                continue
            for k in growing:
                index[k] += 1
            arch = space.arch(_values(space, index))
            if arch != ladder[-1]:
                ladder.append(arch)
    return ladder


def _check_order(rule: str, groups: Mapping[str, Any], order: Sequence[str] | None) -> tuple[str, ...]:
    if order is None:
        return tuple(groups)
    if isinstance(order, str) or sorted(order) != sorted(groups):
        raise ValueError(
            f"sampling rule {rule!r}: option 'order' must list each of the dimensions {list(groups)} once,"
            f" got {order!r}"
        )
    return tuple(order)


def _level_probs(n_levels: int, probs: str | Sequence[float]) -> np.ndarray:
    """Normalised probabilities of the ``sorted`` levels for option ``probs``."""
    if isinstance(probs, str):
        if probs == "uniform":
            return np.full(n_levels, 1.0 / n_levels)
        if probs == "linear":
            weights = np.arange(1, n_levels + 1, dtype=np.float64)
            return weights / weights.sum()
        raise ValueError(
            f"sampling rule 'sorted': option 'probs' must be 'uniform', 'linear' or a list of {n_levels}"
            f" weights, got {probs!r}"
        )
    try:
        weights = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"sampling rule 'sorted': option 'probs' must be 'uniform', 'linear' or a list of {n_levels}"
            f" weights, got {probs!r}"
        ) from None
    if weights.shape != (n_levels,):
        raise ValueError(
            f"sampling rule 'sorted': option 'probs' needs one weight per ladder level ({n_levels}), got"
            f" {weights.size}"
        )
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(
            "sampling rule 'sorted': option 'probs' weights must be finite, >= 0 and not all 0, got"
            f" {list(probs)}"
        )
    return weights / weights.sum()


@register_rule("sorted")
def sorted_nested(
    space: SearchSpace,
    rng: np.random.Generator,
    step: int,
    total_steps: int,
    num_random: int,
    *,
    probs: str | Sequence[float] = "uniform",
    order: Sequence[str] | None = None,
) -> list[Arch]:
    """The largest level plus ``num_random`` levels of :func:`sorted_ladder` (SortedNet-style).

    SortedNet trains nested subnetworks sorted by size so that every smaller one is a
    prefix of the larger ones and shares their most important weights. The top of the
    sort (the largest architecture) comes first every step; the other levels are drawn
    independently with probabilities ``probs``: ``'uniform'``, ``'linear'`` (weight
    ``level + 1``, favouring larger levels) or one non-negative weight per level
    (normalised). ``order`` is the dimension order of the ladder.
    """
    ladder = sorted_ladder(space, order)
    p = _level_probs(len(ladder), probs)
    return [ladder[-1], *(ladder[int(i)] for i in rng.choice(len(ladder), size=num_random, p=p))]


DEFAULT_SCHEDULE: dict[str, float] = {"full": 0.1, "kernel": 0.35, "depth": 0.65, "expand": 1.0}


def _check_schedule(
    space: SearchSpace, schedule: Mapping[str, float] | Sequence[Sequence[Any]]
) -> list[tuple[str, float]]:
    def bad(why: str) -> ValueError:
        return ValueError(
            f"sampling rule 'progressive': option 'schedule' {why}; got {schedule!r} (example:"
            f" {DEFAULT_SCHEDULE})"
        )

    try:
        phases = [
            (name, end) for name, end in (schedule.items() if isinstance(schedule, Mapping) else schedule)
        ]
    except (TypeError, ValueError):
        raise bad(
            "must be an ordered mapping (or list of pairs) of dimension -> end fraction of its phase"
        ) from None
    if not phases:
        raise bad("is empty")
    groups = dimension_groups(space)
    names = [name for name, _ in phases]
    if not all(isinstance(name, str) for name in names):
        raise bad("phase names must be strings")
    for name in names:
        if name != "full" and name not in groups:
            raise bad(
                f"names dimension {name!r}, which space {space.name!r} does not have (dimensions:"
                f" {list(groups)}, plus 'full')"
            )
    if len(set(names)) != len(names):
        raise bad("names a phase twice")
    if "full" in names[1:]:
        raise bad("may only have 'full' as its first phase")
    ends = [end for _, end in phases]
    if any(isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) for e in ends):
        raise bad("end fractions must be numbers")
    if ends[0] <= 0 or any(b <= a for a, b in zip(ends, ends[1:])):
        raise bad("end fractions must be > 0 and strictly increasing")
    if ends[-1] != 1.0:
        raise bad("must end its last phase at 1.0")
    return [(name, float(end)) for name, end in phases]


@register_rule("progressive")
def progressive(
    space: SearchSpace,
    rng: np.random.Generator,
    step: int,
    total_steps: int,
    num_random: int,
    *,
    schedule: Mapping[str, float] | Sequence[Sequence[Any]] = DEFAULT_SCHEDULE,
) -> list[Arch]:
    """Once-for-All progressive shrinking: dimensions become elastic phase by phase.

    ``schedule`` maps each phase, in order, to the training fraction at which it ends
    (the last must end at 1.0). The phase is the first one whose end exceeds
    ``step / total_steps`` (steps past the end count as the last phase). In phase
    ``'full'`` only the largest architecture is trained; in a phase named after a
    dimension, that dimension and those of all earlier phases are sampled uniformly
    while every other key stays at its largest value. Per step: the largest
    architecture plus ``num_random`` such samples (just the largest in ``'full'``).
    Dimensions not named in the schedule stay at their largest value throughout.
    Training the large networks first and then shrinking one dimension at a time keeps
    the shared weights good for the largest networks while adding the smaller ones.
    """
    phases = _check_schedule(space, schedule)
    progress = step / total_steps
    current = next((i for i, (_, end) in enumerate(phases) if progress < end), len(phases) - 1)
    groups = dimension_groups(space)
    elastic = [k for name, _ in phases[: current + 1] if name != "full" for k in groups[name]]
    largest = space.largest()
    if not elastic:
        return [largest]
    top = _top_index(space)
    samples = []
    for _ in range(num_random):
        index = dict(top)
        index.update(
            (k, int(i)) for k, i in zip(elastic, rng.integers([len(space.choices[k]) for k in elastic]))
        )
        samples.append(space.arch(_values(space, index)))
    return [largest, *samples]
