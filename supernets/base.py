"""What every supernet kind shares: switching the active architecture temporarily."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn


class ActiveSpecMixin:
    """``with net.active(spec):`` runs ``spec`` and restores the previous choice afterwards.

    The class needs ``set_active(spec)`` and the attribute ``active_spec``.
    """

    active_spec: Any

    def set_active(self, spec: Any) -> None:  # pragma: no cover - provided by the supernet
        raise NotImplementedError

    @contextmanager
    def active(self, spec: Any) -> Iterator[nn.Module]:
        previous = self.active_spec
        self.set_active(spec)
        try:
            yield self  # type: ignore[misc]
        finally:
            self.set_active(previous)


__all__ = ["ActiveSpecMixin"]
