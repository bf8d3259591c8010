"""Controller interface: propose architectures (ask), learn from their results (tell).

Controllers see only architectures and objective values, never the supernet, so
any controller runs against any supernet kind and evaluator.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

from search_spaces import Arch, SearchSpace


@dataclass(frozen=True)
class Objectives:
    """What one evaluation measured. ``None`` accuracy marks a failed evaluation.

    ``latency_ms`` is on the primary device (the one the budget applies to);
    ``extra_latencies_ms`` on each further device of a multi-device search.
    """

    accuracy: float | None
    latency_ms: float
    extra_latencies_ms: tuple[float, ...] = ()


class Controller(ABC):
    """Ask/tell search strategy. Implementations must be seeded and resumable."""

    def __init__(self, space: SearchSpace, seed: int, latency_budget_ms: float | None, n_devices: int = 1):
        self.space, self.seed, self.latency_budget_ms, self.n_devices = space, seed, latency_budget_ms, n_devices

    @abstractmethod
    def ask(self, n: int = 1) -> list[Arch]:
        """Propose ``n`` architectures to evaluate next."""

    @abstractmethod
    def tell(self, archs: Sequence[Arch], results: Sequence[Objectives]) -> None:
        """Report results for architectures returned by :meth:`ask`, in any order."""

    def enqueue(self, arch: Arch) -> None:
        """Make ``arch`` the next architecture :meth:`ask` returns (e.g. a single-path read-off)."""
        raise NotImplementedError(f"controller {type(self).__name__} cannot take a given architecture")

    @abstractmethod
    def n_finished(self) -> int:
        """Evaluations already told (including those of a resumed run)."""

    @abstractmethod
    def history(self) -> list[dict[str, Any]]:
        """Finished evaluations: ``{"trial", "arch", "arch_id", "accuracy", "latency_ms", "extra_latencies_ms", "feasible"}`` each."""


_CONTROLLERS: dict[str, Callable[..., Controller]] = {}


def register_controller(name: str) -> Callable[[Callable[..., Controller]], Callable[..., Controller]]:
    def deco(factory: Callable[..., Controller]) -> Callable[..., Controller]:
        _CONTROLLERS[name] = factory
        return factory

    return deco


def create_controller(name: str, options: Mapping[str, Any] | None = None, **kwargs: Any) -> Controller:
    """``kwargs`` are what every controller takes; ``options`` the named controller's own settings
    (``--search.controller_options``), checked against its factory's signature."""
    if name not in _CONTROLLERS:
        raise KeyError(f"unknown controller {name!r}; available: {sorted(_CONTROLLERS)}")
    factory = _CONTROLLERS[name]
    options = dict(options or {})
    if options:
        own = controller_options(name)
        unknown = sorted(set(options) - set(own))
        if unknown:
            raise ValueError(f"controller {name!r} has no option {', '.join(map(repr, unknown))}; its options: {own or 'none'}")
    return factory(**kwargs, **options)


_COMMON = {"space", "seed", "latency_budget_ms", "run_dir", "population", "storage", "study_name", "n_devices"}


def controller_options(name: str) -> dict[str, Any]:
    """The controller's own settings and their defaults (what ``--search.controller_options`` may set)."""
    params = inspect.signature(_CONTROLLERS[name]).parameters
    return {k: p.default for k, p in params.items() if k not in _COMMON and p.kind is p.POSITIONAL_OR_KEYWORD}


def list_controllers() -> list[str]:
    return sorted(_CONTROLLERS)
