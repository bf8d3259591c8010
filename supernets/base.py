"""What every supernet kind shares: the interface training, search and export rely on, with its optional
hooks.

A supernet holds every architecture of its space. Generic code (the trainer, the
search loop, export) only ever calls the methods declared here; a kind that
needs more (a mixture's routing, single-path's own choice of architecture) says
so by overriding a hook, never by generic code probing for an attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class Supernet:
    """Mixin for ``nn.Module`` supernets (list it first: ``class MyNet(Supernet, nn.Module)``).

    Required: ``set_active(spec)`` (the architecture the next forward runs; stored in
    ``active_spec``), ``largest_spec()`` and ``extract(spec=None)`` (a plain network
    of the active or given spec whose eval-mode outputs equal the supernet's).
    Hooks with no-op defaults: :meth:`route_update` and :meth:`read_spec`.
    """

    active_spec: Any

    def set_active(self, spec: Any) -> None:  # pragma: no cover - provided by the supernet
        raise NotImplementedError

    def largest_spec(self) -> Any:  # pragma: no cover - provided by the supernet
        raise NotImplementedError

    def extract(self, spec: Any = None) -> nn.Module:  # pragma: no cover - provided by the supernet
        raise NotImplementedError

    @contextmanager
    def active(self, spec: Any) -> Iterator[nn.Module]:
        """``with net.active(spec):`` runs ``spec`` and restores the previous choice afterwards."""
        previous = self.active_spec
        self.set_active(spec)
        try:
            yield self  # type: ignore[misc]
        finally:
            self.set_active(previous)

    # --- optional hooks ---------------------------------------------------------------------------
    def route_update(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        step: int,
    ) -> None:
        """Called by the trainer after each subnetwork's backward pass of training step ``step``, on its
        batch.

        A kind that learns how architectures map to weight sets (a mixture's router)
        updates that mapping here, without gradients; the default does nothing.
        """

    def read_spec(self) -> Any | None:
        """The spec the supernet itself has chosen (single-path thresholds), or None when it chooses none.

        The search evaluates a chosen spec first, next to whatever its controller asks.
        """
        return None


__all__ = ["Supernet"]
