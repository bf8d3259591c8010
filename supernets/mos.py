"""Mixture-of-Supernets: each architecture's weights are generated from expert weights by a router.

For every parameter ``W`` of the underlying weight-entangled supernet there are K
expert copies ``W_1..W_K``; the active architecture's weights are
``sum_e r_e(arch) * W_e`` with ``r = softmax(router(encoding(arch)))``, a small MLP
on a fixed-length encoding of the architecture. Architectures that need
different weights can get them (less interference than full sharing), similar
ones share (the router is smooth in the encoding), and the whole thing stays
one differentiable model trained like any supernet.

The forward pass runs the underlying supernet with the generated parameters
(``torch.func.functional_call``), so its slicing logic is reused unchanged. BN
running statistics are shared, as in the plain supernet (they are recalibrated
per architecture before evaluation anyway). ``extract`` writes the generated
weights into a standalone network: no router, no experts inside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from supernets.base import Supernet


def spec_features(spec: Any, template: Any) -> list[float]:
    """Fixed-length numbers for a (nested tuple) spec, padded to the structure of ``template``.

    Every leaf position contributes (present, value); positions that ``spec`` lacks
    (e.g. blocks beyond a stage's depth) contribute (0, 0).
    """
    if isinstance(template, (tuple, list)):
        out: list[float] = []
        for i, t in enumerate(template):
            sub = spec[i] if spec is not None and i < len(spec) else None
            out += spec_features(sub, t)
        return out
    return [0.0, 0.0] if spec is None else [1.0, float(spec)]


class MixtureOfSupernets(Supernet, nn.Module):
    """Architecture-routed expert weights around one supernet structure.

    **Initialisation.** Every expert starts from one shared initialisation ``W_0`` of
    the underlying supernet plus its own small perturbation,
    ``W_e = W_0 + perturbation * std(W_0) * N(0, 1)`` (per tensor; tensors with a
    constant initialisation, such as BN and LayerNorm scales and shifts, are not
    perturbed). Independently initialised experts would be averaged by the router
    (``r`` is close to uniform at the start), and a weighted sum of K independent
    draws has ``sqrt(sum_e r_e^2)`` times the plain spread: ``1 / sqrt(K)`` for a
    uniform ``r``, 0.47-0.77 measured for K = 2..4 on the tiny and vit spaces.
    Rescaling each expert instead would only be right for one particular ``r``
    (a one-hot router would then see a too large spread); with a shared start the
    generated weights ``W_0 + perturbation * std(W_0) * sum_e r_e N_e`` have the plain supernet's scale
    (to within ``sqrt(1 + perturbation^2)``) for *any* routing, uniform or one-hot.
    The perturbation breaks the experts' symmetry, so the router gets a gradient
    from the first step; the experts then diverge further because each receives the
    gradients of the architectures routed to it.
    """

    perturbation: float = 0.1  # relative spread of each expert around the shared initialisation

    def __init__(self, factory: Callable[[], nn.Module], k: int = 2, hidden: int = 32, seed: int = 0):
        super().__init__()
        if k < 1:
            raise ValueError(f"a mixture needs k >= 1 experts, got {k}")
        self.k = k
        gen = torch.Generator().manual_seed(seed)
        base = factory()
        self.template = base.largest_spec()
        names = [n for n, _ in base.named_parameters()]
        self._names = names
        # One shared initialisation plus a small per-expert perturbation (see the class docstring): the
        # generated weights start at the plain supernet's scale whatever the router's initial mixing. The
        # caller's RNG is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            start = dict(factory().named_parameters())
        self.experts = nn.ModuleList(
            nn.ParameterList(
                nn.Parameter(_perturbed(start[n].detach(), self.perturbation if k > 1 else 0.0, gen))
                for n in names
            )
            for _ in range(k)
        )
        for n in names:  # the structure keeps its buffers (BN statistics) but no parameters of its own
            _delete_parameter(base, n)
        self.base = base
        dim = len(spec_features(self.template, self.template))
        self.router = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, k))
        self._features: torch.Tensor | None = None
        self.active_spec: Any = None
        self.set_active(self.template)

    def largest_spec(self) -> Any:
        return self.template

    # --- the supernet interface ------------------------------------------------------------------
    def set_active(self, spec: Any) -> None:
        self.base.set_active(spec)
        self.active_spec = self.base.active_spec
        f = torch.tensor(spec_features(self.active_spec, self.template), dtype=torch.float32)
        scale = (
            torch.tensor(spec_features(self.template, self.template), dtype=torch.float32)
            .abs()
            .clamp(min=1.0)
        )
        self._features = f / scale

    def routing(self) -> torch.Tensor:
        """Expert weights r(arch) of the active architecture (sums to 1)."""
        f = self._features.to(self.router[0].weight.device)
        return torch.softmax(self.router(f), dim=-1)

    def expert_weights(self, e: int) -> dict[str, nn.Parameter]:
        """Expert ``e``'s weight set, by the underlying supernet's parameter names."""
        return dict(zip(self._names, self.experts[e]))

    def generated_parameters(self) -> dict[str, torch.Tensor]:
        r = self.routing()
        out = {}
        for i, n in enumerate(self._names):
            w = r[0] * self.experts[0][i]
            for e in range(1, self.k):
                w = w + r[e] * self.experts[e][i]
            out[n] = w
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, self.generated_parameters(), (x,), strict=False)

    @torch.no_grad()
    def extract(self, spec: Any = None) -> nn.Module:
        """Standalone network of ``spec`` (default: active) holding the generated weights."""
        spec = self.active_spec if spec is None else spec
        with self.active(spec):
            params = self.generated_parameters()
            plain = _materialise(self.base, params)
            return plain.extract(spec)


def _perturbed(w: torch.Tensor, scale: float, gen: torch.Generator) -> torch.Tensor:
    """``w`` plus Gaussian noise of ``scale`` times its spread (drawn from ``gen``); constant tensors stay
    as they are."""
    noise = torch.randn(w.shape, generator=gen, dtype=torch.float32).to(w.dtype)
    if scale == 0.0 or w.numel() < 2:
        return w.clone()
    spread = w.float().std()
    if not torch.isfinite(spread) or spread == 0:
        return w.clone()
    return w + (scale * spread).to(w.dtype) * noise


def _delete_parameter(module: nn.Module, dotted: str) -> None:
    *path, leaf = dotted.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    delattr(owner, leaf)
    owner.register_buffer(leaf, None, persistent=False)  # attribute exists; functional_call fills it in


def _materialise(base: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of the structure with ``params`` as real parameters (for extraction)."""
    import copy

    clone = copy.deepcopy(base)
    for dotted, value in params.items():
        *path, leaf = dotted.split(".")
        owner = clone.get_submodule(".".join(path)) if path else clone
        delattr(owner, leaf)
        owner.register_parameter(leaf, nn.Parameter(value.detach().clone()))
    return clone


__all__ = ["MixtureOfSupernets", "spec_features"]
