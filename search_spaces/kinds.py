"""Registry of supernet kinds: how a space's architectures share weights.

``entangled`` is the space's own supernet (one weight set, smaller choices are
slices of larger ones). Other kinds wrap or replace it while keeping the same
interface (``set_active``, ``active``, ``forward``, ``extract``), so training,
search and export never need to know which kind they hold.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from search_spaces.base import SearchSpace
from search_spaces.registry import Registry

SUPERNET_KINDS: Registry[Callable[..., nn.Module]] = Registry("supernet kind")
register_supernet_kind = SUPERNET_KINDS.register


def list_supernet_kinds() -> dict[str, str]:
    """Kind name -> one-line description."""
    return SUPERNET_KINDS.describe()


def build_supernet(space: SearchSpace, kind: str = "entangled", seed: int = 0, **options: Any) -> nn.Module:
    """A fresh supernet of ``kind`` for ``space``; unknown kinds and options are named in the error."""
    factory = SUPERNET_KINDS.get(kind, setting="space.supernet")
    try:
        return factory(space, seed=seed, **options)
    except TypeError as exc:
        raise ValueError(
            f"supernet kind {kind!r} got options it does not take ({exc}); options given: {sorted(options)}"
        ) from exc


@register_supernet_kind("entangled")
def entangled(space: SearchSpace, seed: int = 0) -> nn.Module:
    """One weight set; smaller choices are slices of the largest (OFA / AutoFormer / TangleNAS)."""
    return space.build_supernet()


@register_supernet_kind("balanced_mixture")
def balanced_mixture(
    space: SearchSpace,
    seed: int = 0,
    k: int = 2,
    probe_every: int | None = None,
    reassign_every: int = 50,
    max_configurations: int = 10_000,
) -> nn.Module:
    """K weight sets, each configuration routed to one by a learned, balanced assignment (Balanced Mixture of
    SuperNets)."""
    from supernets.balanced_mixture import BalancedMixture

    n = space.num_architectures()
    if n > max_configurations:
        raise ValueError(
            f"balanced_mixture routes every configuration of the space, and {space.name!r} has {n:.3g} of"
            f" them (limit {max_configurations}); use it on small spaces such as resnet20_pool"
        )
    configs = [space.to_spec(a) for a in space.enumerate()]
    return BalancedMixture(
        space.build_supernet, configs, k=k, seed=seed, probe_every=probe_every, reassign_every=reassign_every
    )


@register_supernet_kind("mos")
def mixture_of_supernets(space: SearchSpace, seed: int = 0, k: int = 2, hidden: int = 32) -> nn.Module:
    """Weights generated per architecture as a router-weighted sum of K expert weight sets
    (Mixture-of-Supernets)."""
    from supernets.mos import MixtureOfSupernets

    return MixtureOfSupernets(space.build_supernet, k=k, hidden=hidden, seed=seed)


@register_supernet_kind("single_path")
def single_path(space: SearchSpace, seed: int = 0, temperature: float = 0.05) -> nn.Module:
    """MBConv superkernels whose kernel, expand and depth are chosen by weight norms vs. trainable thresholds
    (Single-Path NAS)."""
    from search_spaces.mbv3 import MBV3Space
    from supernets.single_path import SinglePathMBSupernet

    if not isinstance(space, MBV3Space):
        raise ValueError(
            "single_path superkernels are MBConv superkernels: they need an MBConv space (mbv3, tiny), not"
            f" {space.name!r}"
        )
    depths = sorted(space.cfg.depths)
    if depths != list(range(depths[0], depths[-1] + 1)):
        raise ValueError(
            f"single_path needs every stage depth from {depths[0]} to {depths[-1]} among the choices (its"
            f" gates skip blocks one at a time), got depths {list(space.cfg.depths)}"
        )
    if not 0 < temperature < float("inf"):
        raise ValueError(f"single_path's temperature must be > 0, got {temperature}")
    return SinglePathMBSupernet(space.cfg, temperature=temperature)
