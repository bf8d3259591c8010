"""Extraction parity: the static network equals the supernet for that architecture."""

import numpy as np
import pytest
import torch
from torch import nn

from search_spaces import create_space
from supernets import slice_like


def _randomise_bn(net: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters, as after training."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


@pytest.fixture(scope="module", params=["tiny", "mbv3"])
def space_and_net(request):
    kwargs = {"width_mult": 0.35} if request.param == "mbv3" else {}
    space = create_space(request.param, num_classes=7, in_channels=3, **kwargs)
    torch.manual_seed(0)
    net = space.build_supernet()
    with torch.no_grad():
        _randomise_bn(net, torch.Generator().manual_seed(1))
    return space, net.eval()


def _archs(space):
    rng = np.random.default_rng(0)
    return [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(4))]


def test_extraction_matches_supernet(space_and_net):
    space, net = space_and_net
    x = torch.randn(3, *space.input_shape, generator=torch.Generator().manual_seed(2))
    for arch in _archs(space):
        spec = space.to_spec(arch)
        with torch.no_grad(), net.active(spec):
            y_super = net(x)
            static = net.extract().eval()
            y_static = static(x)
        assert (y_super - y_static).abs().max().item() <= 1e-5, arch.id
        # the extracted network holds only its own architecture's parameters, as plain torch layers
        assert not any(type(m).__module__.startswith("supernets.ops") for m in static.modules())


def test_extracted_param_count_is_the_architectures_own(space_and_net):
    space, net = space_and_net
    counts = []
    for arch in _archs(space):
        static = net.extract(space.to_spec(arch))
        fresh = space.build_static(arch)  # independently built, randomly initialised
        n = sum(p.numel() for p in static.parameters())
        assert n == sum(p.numel() for p in fresh.parameters())
        counts.append(n)
    assert counts[0] < counts[1]  # smallest < largest
    assert counts[0] < sum(p.numel() for p in net.parameters())


def test_active_context_restores_previous_choice(space_and_net):
    space, net = space_and_net
    net.set_active(space.to_spec(space.largest()))
    with net.active(space.to_spec(space.smallest())):
        assert net.active_spec == space.to_spec(space.smallest())
    assert net.active_spec == space.to_spec(space.largest())


def test_smaller_choice_is_a_slice_of_the_larger_weights(space_and_net):
    """Weight entanglement: the smallest network's kernels are centre crops / prefixes of the largest's."""
    space, net = space_and_net
    small = net.extract(space.to_spec(space.smallest())).state_dict()
    big = net.extract(space.to_spec(space.largest())).state_dict()
    for name, w in small.items():
        assert torch.equal(w, slice_like(big[name], w.shape)), name


def test_training_updates_only_active_slices_of_bn_stats():
    space = create_space("tiny", num_classes=3, in_channels=1)
    net = space.build_supernet().train()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running_mean" in k}
    spec = space.to_spec(space.smallest())
    net.set_active(spec)
    net(torch.randn(4, *space.input_shape))
    after = net.state_dict()
    # first block of stage 0, expand conv BN: smallest expand ratio uses a prefix of the channels
    key = "stages.0.0.expand.bn.running_mean"
    mid_small = net.extract(spec).state_dict()[key].numel()
    assert not torch.equal(after[key][:mid_small], before[key][:mid_small])
    assert torch.equal(after[key][mid_small:], before[key][mid_small:])


def test_invalid_spec_is_a_clear_error():
    space = create_space("tiny")
    net = space.build_supernet()
    with pytest.raises(ValueError, match="depth 3 not in allowed depths"):
        net.set_active((((3, 2),) * 3, ((3, 2),)))
    with pytest.raises(ValueError, match="kernel=4"):
        net.set_active((((4, 2),), ((3, 2),)))


def test_elastic_linear_and_conv_slice_prefixes():
    from supernets.ops import ElasticConv2d, ElasticLinear

    lin = ElasticLinear(8, 6)
    lin.active_out = 4
    x = torch.randn(2, 5)
    ref = torch.nn.functional.linear(x, lin.weight[:4, :5], lin.bias[:4])
    assert torch.equal(lin(x), ref)
    conv = ElasticConv2d(4, 6, 7)
    conv.active_out, conv.active_kernel = 3, 3
    x = torch.randn(1, 2, 8, 8)
    ref = torch.nn.functional.conv2d(x, conv.weight[:3, :2, 2:5, 2:5], None, 1, 1)
    assert torch.equal(conv(x), ref)
