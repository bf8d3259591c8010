"""TangleNAS mixed forward: one-hot probabilities give the sliced subnetwork; any mixture costs one op call
per layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from search_spaces import create_space
from supernets.init import init_weights


def _one_hot(space, arch) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([float(v == arch[k]) for v in space.choices[k]]) for k in space.keys}


def _random_probs(space, gen) -> dict[str, torch.Tensor]:
    return {k: torch.softmax(torch.randn(len(v), generator=gen), 0) for k, v in space.choices.items()}


def _net(space, seed=0):
    torch.manual_seed(seed)
    net = init_weights(space.build_supernet())
    for m in net.modules():  # non-trivial BN statistics, so eval mode tests them too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net


@pytest.mark.parametrize(
    "space_name,options",
    [
        ("tiny", {}),
        ("mbv3", {"width_mult": 0.25, "resolution": 16, "head_channels": 64, "feature_channels": 64}),
    ],
)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_one_hot_mixture_is_the_sliced_subnetwork(space_name, options, mode):
    space = create_space(space_name, **options)
    net = _net(space).train(mode == "train")
    x = torch.randn(4, *space.input_shape, generator=torch.Generator().manual_seed(1))
    for arch in [
        *(space.sample(np.random.default_rng(s)) for s in range(3)),
        space.smallest(),
        space.largest(),
    ]:
        net.set_active(space.to_spec(arch))
        with torch.no_grad():
            sliced = net(x)
            net.set_active(net.largest_spec())
            mixed = space.mixed_forward(net, x, _one_hot(space, arch))
        torch.testing.assert_close(mixed, sliced, rtol=1e-5, atol=1e-5)


class _CountConvs(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (F.conv2d, torch.conv2d):
            self.n += 1
        return func(*args, **(kwargs or {}))


def test_a_soft_mixture_costs_one_conv_per_layer_of_the_largest_network():
    space = create_space("tiny")
    net = _net(space)
    x = torch.randn(2, *space.input_shape)
    with _CountConvs() as largest:
        net(x)  # supernet at its largest choice
    with _CountConvs() as mixed:
        space.mixed_forward(net, x, _random_probs(space, torch.Generator().manual_seed(0)))
    assert mixed.n == largest.n > 0  # the mixture never runs a layer once per choice


def test_mixture_is_differentiable_in_every_probability():
    space = create_space(
        "tiny", resolution=32
    )  # at 16x16 the last stage's map is 2x2: a 5x5 kernel's ring only sees padding
    net = _net(space)
    logits = {k: torch.zeros(len(v), requires_grad=True) for k, v in space.choices.items()}
    probs = {k: torch.softmax(v, 0) for k, v in logits.items()}
    x = torch.randn(8, *space.input_shape)
    loss = F.cross_entropy(space.mixed_forward(net, x, probs), torch.arange(8) % 10)
    loss.backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in logits.values())


def test_mixed_forward_refuses_a_sliced_supernet_and_spaces_without_it():
    space = create_space("tiny")
    net = _net(space)
    net.set_active(space.to_spec(space.smallest()))
    with pytest.raises(RuntimeError, match="largest choice"):
        space.mixed_forward(net, torch.randn(1, *space.input_shape), _one_hot(space, space.smallest()))
    vit = create_space("vit")
    with pytest.raises(NotImplementedError, match="darts, gdas"):
        vit.mixed_forward(None, None, {})
