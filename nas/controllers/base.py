"""Controller interface: propose architectures (ask), learn from their results (tell).

Controllers see only architectures and objective values, never the supernet, so
any controller runs against any supernet kind and evaluator.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nas.trials import TrialRow
from search_spaces import Arch, SearchSpace
from search_spaces.errors import UserError
from search_spaces.registry import Registry


@dataclass(frozen=True)
class Objectives:
    """What one evaluation measured. ``None`` accuracy marks a failed evaluation.

    ``latency_ms`` is on the primary device (the one the budget applies to);
    ``extra_latencies_ms`` on each further device of a multi-device search.
    """

    accuracy: float | None
    latency_ms: float
    extra_latencies_ms: tuple[float, ...] = ()
    network: Mapping[str, float] = field(default_factory=dict)  # params, macs, memory_mb_per_sample


class SearchSpaceExhausted(UserError, RuntimeError):
    """The controller proposes only networks the search already holds: it cannot find a new one.

    The message (one line) says so, how many distinct networks were evaluated and
    what to do; the search loop ends with the trials it has and prints it.
    """


class Controller(ABC):
    """Ask/tell search strategy. Implementations must be seeded and resumable.

    Required: :meth:`ask`, :meth:`tell`, :meth:`n_finished`, :meth:`history`.
    Optional hooks, with defaults that suit a controller working on its own:
    :attr:`needs_supernet` / :meth:`prepare` (learn on the supernet before asking),
    :meth:`ask_within` (an exact trial budget), :attr:`shared` (other workers add
    trials), :meth:`enqueue` and :meth:`close`.
    """

    needs_supernet: bool = False
    """Whether :meth:`prepare` must run on the trained supernet before the first ask (gradient
    controllers)."""

    shared: bool = False
    """Whether other processes add trials to the same search (a shared study): results may appear between
    asks."""

    def __init__(self, space: SearchSpace, seed: int, latency_budget_ms: float | None, n_devices: int = 1):
        self.space, self.seed, self.latency_budget_ms, self.n_devices = (
            space,
            seed,
            latency_budget_ms,
            n_devices,
        )
        self._constraints: Callable[[TrialRow], Mapping[str, float]] = lambda row: {}

    @abstractmethod
    def ask(self, n: int = 1) -> list[Arch]:
        """Propose ``n`` architectures to evaluate next."""

    @abstractmethod
    def tell(self, archs: Sequence[Arch], results: Sequence[Objectives]) -> None:
        """Report results for architectures returned by :meth:`ask`, in any order."""

    def enqueue(self, arch: Arch) -> None:
        """Make ``arch`` the next architecture :meth:`ask` returns (e.g. a single-path read-off)."""
        raise NotImplementedError(f"controller {type(self).__name__} cannot take a given architecture")

    def prepare(
        self,
        supernet: nn.Module,
        train_batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
        val_batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
        cost: Any,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        progress: bool = False,
    ) -> dict[str, Any]:
        """Learn on the supernet before the first ask (only called when :attr:`needs_supernet`).

        ``train_batches(epoch)`` / ``val_batches(round)`` give seeded loaders, ``cost`` is
        the budget device's :class:`~nas.cost.CostModel`. Returns what was learned, with
        ``argmax_arch`` (the architecture it would pick) and ``argmax_latency_ms``.
        """
        raise NotImplementedError(
            f"controller {type(self).__name__} does not learn on the supernet (needs_supernet is False)"
        )

    def ask_within(self, trials: int) -> Arch | None:
        """The next architecture to evaluate, or None once the search holds ``trials`` finished results.

        Controllers on a shared study count every worker's trials; the default counts its own.
        Raises :class:`SearchSpaceExhausted` when the controller finds no network the search
        does not already hold.
        """
        return None if self.n_finished() >= trials else self.ask(1)[0]

    def set_constraints(self, constraints: Callable[[TrialRow], Mapping[str, float]]) -> None:
        """Judge trials by ``constraints(row)`` from now on: constraint name -> violation (<= 0: met).

        The search installs the run's constraints (:func:`nas.constraints.violations`) so that a controller's
        choices, its ``history()`` rows and the samplers' constrained selection use the limits in force now,
        not those of the command that told a trial. The default keeps only the latency budget it was made
        with.
        """
        self._constraints = constraints

    def recorded_constraints(self) -> dict[str, Any] | None:
        """The constraints the study was last judged by (as :func:`nas.constraints.to_json` writes them), or
        None when it records none; the default controller keeps no study."""
        return None

    def record_constraints(self, limits: Mapping[str, Any]) -> None:  # noqa: B027 - a no-op default hook
        """Record the constraints the study's trials are now judged by."""

    def close(self) -> None:  # noqa: B027 - a hook with a no-op default, not an abstract method
        """Release what the controller holds (threads, connections); the default holds nothing."""

    @abstractmethod
    def n_finished(self) -> int:
        """Evaluations already told (including those of a resumed run)."""

    @abstractmethod
    def history(self) -> list[TrialRow]:
        """Finished evaluations, one :class:`~nas.trials.TrialRow` each."""


CONTROLLERS: Registry[Callable[..., Controller]] = Registry("controller")
register_controller = CONTROLLERS.register


def create_controller(name: str, options: Mapping[str, Any] | None = None, **kwargs: Any) -> Controller:
    """``kwargs`` are what every controller takes; ``options`` the named controller's own settings
    (``--search.controller_options``), checked against its factory's signature."""
    factory = CONTROLLERS.get(name, setting="search.controller")
    options = dict(options or {})
    if options:
        own = controller_options(name)
        unknown = sorted(set(options) - set(own))
        if unknown:
            raise ValueError(
                f"controller {name!r} has no option {', '.join(map(repr, unknown))}; its options:"
                f" {own or 'none'}"
            )
    return factory(**kwargs, **options)


_COMMON = {
    "space",
    "seed",
    "latency_budget_ms",
    "run_dir",
    "population",
    "storage",
    "study_name",
    "n_devices",
}


def controller_options(name: str) -> dict[str, Any]:
    """The controller's own settings and their defaults (what ``--search.controller_options`` may set)."""
    params = inspect.signature(CONTROLLERS.get(name, setting="search.controller")).parameters
    return {k: p.default for k, p in params.items() if k not in _COMMON and p.kind is p.POSITIONAL_OR_KEYWORD}


def list_controllers() -> list[str]:
    return CONTROLLERS.names()
