"""Registry of search spaces: one decorated factory per family."""

from __future__ import annotations

from typing import Any, Callable

from search_spaces.base import SearchSpace

_SPACES: dict[str, Callable[..., SearchSpace]] = {}


def register_space(name: str) -> Callable[[Callable[..., SearchSpace]], Callable[..., SearchSpace]]:
    def deco(factory: Callable[..., SearchSpace]) -> Callable[..., SearchSpace]:
        if name in _SPACES:
            raise ValueError(f"search space {name!r} registered twice")
        _SPACES[name] = factory
        return factory

    return deco


def create_space(name: str, **kwargs: Any) -> SearchSpace:
    """Build a registered space; unknown names list the known ones. ``timm:<model>`` wraps a timm model."""
    if name.startswith("timm:"):
        from search_spaces.timm_space import timm_space

        return timm_space(name.split(":", 1)[1], **kwargs)
    if name not in _SPACES:
        raise KeyError(f"unknown search space {name!r}; available: {sorted(_SPACES)} or timm:<model name>")
    return _SPACES[name](**kwargs)


def list_spaces() -> dict[str, str]:
    """Space name -> one-line description."""
    return {n: (f.__doc__ or "").strip().splitlines()[0] if f.__doc__ else "" for n, f in sorted(_SPACES.items())}
