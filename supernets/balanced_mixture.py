"""Balanced mixture of supernets: K weight sets, each configuration routed to one of them.

Full weight sharing makes every configuration fight over the same tensors; for
choices such as where a ResNet downsamples this interference destroys the
ranking (Balanced Mixture of SuperNets). Here K copies of a supernet ("experts")
share the configurations between them:

- **Learned routing.** Every ``probe_every`` training steps (default 4K) the active
  configuration's loss is measured on the current batch under every expert (no
  gradients; BN normalising with the batch's statistics, running statistics left
  untouched: see ``_probe_mode``) and folded into an exponential moving average
  ``affinity[c, k]`` (negated loss: higher is better).
- **Balance.** Every ``reassign_every`` steps the assignment is recomputed as the
  one that maximises total affinity subject to each expert taking at most
  ceil(C / K) configurations (a linear assignment problem), so no expert can
  absorb the space and none starves.

The first assignment is a seeded random balanced one (all experts start equal).
Routing state lives in buffers, so checkpoints, resume and extraction after
loading carry it. ``K = 1`` is exactly the plain supernet.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from supernets.base import Supernet


def balanced_assignment(affinity: np.ndarray) -> np.ndarray:
    """Expert per configuration maximising total ``affinity[c, k]`` with at most ceil(C / K) per expert."""
    n, k = affinity.shape
    capacity = -(-n // k)
    slots = np.repeat(np.arange(k), capacity)  # each expert appears `capacity` times as a column
    rows, cols = linear_sum_assignment(-affinity[:, slots])
    out = np.empty(n, dtype=np.int64)
    out[rows] = slots[cols]
    return out


@contextmanager
def _probe_mode(model: nn.Module) -> Iterator[None]:
    """Routing probes: BN normalises with the probe batch's own statistics, running statistics untouched.

    Eval-mode BN would normalise with running statistics, and those of an expert the configuration is not
    routed to were never accumulated for it (they are another configuration's, or the initial ones): the
    comparison would favour the current expert for its statistics, not for its weights. Batch statistics
    are what the training loss itself uses, so every expert is measured as it would train. Everything else
    is in eval mode (no dropout noise in a comparison). BN momentum is 0 during the probe, and every BN
    buffer (``num_batches_tracked`` included) is put back exactly afterwards.
    """
    was_training = {m: m.training for m in model.modules()}
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m, m.momentum, {n: b.clone() for n, b in m.named_buffers(recurse=False) if b is not None})
        for m in bns
    ]
    model.eval()
    for m in bns:
        m.train()
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, buffers in saved:
            m.momentum = momentum
            for n, b in buffers.items():
                getattr(m, n).copy_(b)
        for m, mode in was_training.items():
            m.training = mode


class BalancedMixture(Supernet, nn.Module):
    """K supernets behind the supernet interface (``set_active``, ``active``, ``forward``, ``extract``)."""

    def __init__(
        self,
        factory: Callable[[], nn.Module],
        configurations: Sequence[Hashable],
        k: int = 2,
        seed: int = 0,
        probe_every: int | None = None,
        reassign_every: int = 50,
        affinity_decay: float = 0.9,
    ):
        super().__init__()
        if k < 1:
            raise ValueError(f"a mixture needs k >= 1 weight sets, got {k}")
        if len(configurations) < k:
            raise ValueError(
                f"{k} weight sets for only {len(configurations)} configurations: some would never train"
            )
        self.k = k
        self.experts = nn.ModuleList(factory() for _ in range(k))
        self.configurations = [tuple(c) if isinstance(c, list) else c for c in configurations]
        self._index = {c: i for i, c in enumerate(self.configurations)}
        if len(self._index) != len(self.configurations):
            raise ValueError("configurations must be distinct")
        self.probe_every = (
            probe_every or 4 * k
        )  # K no-grad forwards every 4K steps: about 8% of the training cost
        self.reassign_every, self.affinity_decay = reassign_every, affinity_decay
        rng = np.random.default_rng(seed)
        self.register_buffer("affinity", torch.zeros(len(configurations), k, dtype=torch.float64))
        self.register_buffer("observed", torch.zeros(len(configurations), k, dtype=torch.bool))
        self.register_buffer(
            "assignment", torch.as_tensor(balanced_assignment(rng.random((len(configurations), k))))
        )
        self.current = 0
        self._probing = -1
        self.active_spec: Any = None
        self.set_active(self.experts[0].active_spec)

    # --- the supernet interface ------------------------------------------------------------------
    def route(self, spec: Hashable) -> int:
        """Index of the weight set ``spec`` is routed to."""
        key = tuple(spec) if isinstance(spec, list) else spec
        if key not in self._index:
            raise ValueError(
                f"configuration {spec!r} is not one of the mixture's {len(self.configurations)}"
                " configurations"
            )
        return int(self.assignment[self._index[key]])

    def set_active(self, spec: Any) -> None:
        self.current = self.route(spec)
        self.experts[self.current].set_active(spec)
        self.active_spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.experts[self.current](x)

    def extract(self, spec: Any = None) -> nn.Module:
        """The standalone network of ``spec`` from the weight set it is routed to (no router inside)."""
        spec = self.active_spec if spec is None else spec
        return self.experts[self.route(spec)].extract(spec)

    # --- learning the routing ------------------------------------------------------------------
    @torch.no_grad()
    def route_update(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        step: int,
    ) -> None:
        """Called by the trainer after each step on the active configuration (see module docstring)."""
        if self.k == 1:
            return
        if step % self.probe_every == 0:
            c = self._index[self.active_spec]
            losses = torch.empty(self.k, dtype=torch.float64, device=self.affinity.device)
            with _probe_mode(self):
                for e, expert in enumerate(self.experts):
                    self._probing = e  # which weight set is being measured (visible to custom loss functions)
                    with expert.active(self.active_spec):
                        losses[e] = float(loss_fn(expert(x).float(), y))
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(losses)  # every rank keeps the same routing
                losses /= torch.distributed.get_world_size()
            first = ~self.observed[c]
            self.affinity[c] = torch.where(
                first, -losses, self.affinity_decay * self.affinity[c] - (1 - self.affinity_decay) * losses
            )
            self.observed[c] = True
        if step > 0 and step % self.reassign_every == 0 and bool(self.observed.any()):
            self.reassign()

    def reassign(self) -> None:
        """Recompute the balanced assignment from the affinities seen so far (unseen pairs count as
        average)."""
        aff = self.affinity.cpu().numpy().copy()
        seen = self.observed.cpu().numpy()
        fill = aff[seen].mean() if seen.any() else 0.0
        aff[~seen] = fill
        keep = np.zeros_like(aff)
        keep[np.arange(len(aff)), self.assignment.cpu().numpy()] = (
            1e-9  # ties keep the current expert (no churn)
        )
        self.assignment.copy_(torch.as_tensor(balanced_assignment(aff + keep)))
        self.set_active(self.active_spec)

    def routing_summary(self) -> dict[str, Any]:
        counts = np.bincount(self.assignment.cpu().numpy(), minlength=self.k)
        return {
            "weight_sets": self.k,
            "configurations_per_set": counts.tolist(),
            "probed": int(self.observed.any(dim=1).sum()),
        }


__all__ = ["BalancedMixture", "balanced_assignment"]
