"""What every supernet kind promises: extraction equals the supernet, gradients reach the active path, state
dicts round-trip.

Subclass :class:`SupernetKindContract` and provide a ``kind_case`` fixture
returning ``(space, supernet, kind, options)``: a small space and a fresh
supernet of ``kind`` built with ``options``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from nas.testing.spaces import sample_archs
from search_spaces import SearchSpace, build_supernet
from supernets.balanced_mixture import BalancedMixture
from supernets.mos import MixtureOfSupernets

KindCase = tuple[SearchSpace, nn.Module, str, dict[str, Any]]


def with_trained_bn(net: nn.Module, space: SearchSpace, spec: Any) -> None:
    """Non-trivial BN statistics for ``spec``, as after training (train-mode forwards)."""
    net.train()
    with torch.no_grad(), net.active(spec):
        for s in range(3):
            net(torch.randn(8, *space.input_shape, generator=torch.Generator().manual_seed(s)) * 2 + 0.5)
    net.eval()


def _slice_for(have: int, want: int, spatial: bool) -> slice:
    start = (have - want) // 2 if spatial else 0
    return slice(start, start + want)


class SupernetKindContract:
    """Checks for the ``kind_case`` fixture a subclass provides."""

    @pytest.fixture
    def kind_case(self) -> KindCase:  # pragma: no cover - provided by the subclass
        raise NotImplementedError("a SupernetKindContract subclass provides the `kind_case` fixture")

    def test_extraction_matches_the_supernet(self, kind_case: KindCase) -> None:
        space, net, _, _ = kind_case
        x = torch.randn(3, *space.input_shape, generator=torch.Generator().manual_seed(9))
        for arch in sample_archs(space, n=4):
            spec = space.to_spec(arch)
            with_trained_bn(net, space, spec)
            with torch.no_grad(), net.active(spec):
                diff = (net(x) - net.extract().eval()(x)).abs().max().item()
            assert diff <= 1e-5, (arch, diff)

    def test_gradients_reach_every_parameter_of_the_active_path(self, kind_case: KindCase) -> None:
        space, net, _, _ = kind_case
        for arch in sample_archs(space, n=2):
            spec = space.to_spec(arch)
            net.zero_grad(set_to_none=True)
            net.train()
            with net.active(spec):
                net(torch.randn(4, *space.input_shape)).square().mean().backward()
                static = net.extract()
            grads = {n: p.grad for n, p in net.named_parameters()}
            if isinstance(net, MixtureOfSupernets):  # every expert's slice learns, weighted by the router
                weight_sets = [{n: p.grad for n, p in net.expert_weights(e).items()} for e in range(net.k)]
                assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.router.parameters())
            else:
                prefix = f"experts.{net.route(spec)}." if isinstance(net, BalancedMixture) else ""
                weight_sets = [{n[len(prefix) :]: g for n, g in grads.items() if n.startswith(prefix)}]
            for name, tensor in static.named_parameters():
                for grads_of_set in weight_sets:
                    g = grads_of_set[name]
                    assert g is not None, name
                    index = tuple(
                        _slice_for(g.shape[i], d, tensor.dim() == 4 and i >= 2)
                        for i, d in enumerate(tensor.shape)
                    )
                    assert g[index].abs().sum() > 0, (
                        name
                    )  # the active slice learns (in every expert of a mixture)
            if isinstance(net, BalancedMixture):  # weight sets the configuration is not routed to get nothing
                prefix = f"experts.{net.route(spec)}."
                others = [
                    n
                    for n, g in grads.items()
                    if not n.startswith(prefix) and g is not None and g.abs().sum() > 0
                ]
                assert others == []

    def test_state_dict_round_trip_keeps_outputs_and_routing(self, kind_case: KindCase) -> None:
        space, net, kind, options = kind_case
        spec = space.to_spec(space.sample(np.random.default_rng(3)))
        with_trained_bn(net, space, spec)
        if isinstance(
            net, BalancedMixture
        ):  # routing learned away from the initial assignment must survive too
            net.assignment.copy_(torch.roll(net.assignment, 1))
        twin = build_supernet(space, kind, seed=1, **options)
        twin.load_state_dict(net.state_dict())
        twin.eval()
        x = torch.randn(2, *space.input_shape)
        for arch in sample_archs(space, n=2):
            s = space.to_spec(arch)
            with torch.no_grad(), net.active(s), twin.active(s):
                assert torch.equal(net(x), twin(x))
