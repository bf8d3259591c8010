"""BN recalibration: the layers the forward reaches are recomputed, every other layer is left as it was."""

from __future__ import annotations

import torch
from torch import nn

from nas.evaluation import recalibrate_bn
from search_spaces import build_supernet, create_space


def _space(name: str):
    return create_space(name, num_classes=5, in_channels=1, resolution=16, width_mult=0.5)


def _bn_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{b}": t.clone()
        for name, m in net.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for b, t in m.named_buffers(recurse=False)
        if t is not None
    }


def _randomise_bn_stats(net: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 3 + 0.2)
                m.num_batches_tracked.fill_(int(torch.randint(10, 1000, (1,), generator=gen)))


def _batches(space, n: int = 3):
    gen = torch.Generator().manual_seed(7)
    return [
        (torch.randn(8, *space.input_shape, generator=gen), torch.zeros(8, dtype=torch.long))
        for _ in range(n)
    ]


def test_recalibration_leaves_the_experts_not_routed_to_bit_identical():
    space = _space("resnet20_pool")
    torch.manual_seed(0)
    mix = build_supernet(space, "balanced_mixture", k=3)
    _randomise_bn_stats(mix, seed=1)
    spec = mix.configurations[4]
    mix.set_active(spec)
    routed = mix.route(spec)
    before = _bn_state(mix)
    recalibrate_bn(mix, _batches(space), 3, torch.device("cpu"))
    after = _bn_state(mix)
    assert before.keys() == after.keys()
    others = [n for n in before if not n.startswith(f"experts.{routed}.")]
    assert len(others) == 2 * len([n for n in before if n.startswith(f"experts.{routed}.")])
    for name in others:
        assert torch.equal(before[name], after[name]), name  # not reached: exactly as it was
    # the routed expert: every layer the forward reached saw exactly the 3 batches and has new statistics;
    # its layers off the path (the shortcuts of blocks that do not downsample) are as they were too
    layers = {n.rsplit(".", 1)[0] for n in before if n.startswith(f"experts.{routed}.")}
    reached = {n for n in layers if int(after[f"{n}.num_batches_tracked"]) == 3}
    assert len(reached) >= 10
    for layer in layers:
        for b in ("running_mean", "running_var", "num_batches_tracked"):
            same = torch.equal(before[f"{layer}.{b}"], after[f"{layer}.{b}"])
            assert same == (layer not in reached), (layer, b)


def test_recalibration_keeps_unreached_layers_of_a_plain_network():
    """Generic, not mixture-specific: a BN layer outside the forward path keeps its statistics."""

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
            self.unused = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.used(x)

    net = Branchy()
    _randomise_bn_stats(net, seed=2)
    before = _bn_state(net)
    batches = [(torch.randn(4, 1, 6, 6) * 3 + 1, torch.zeros(4)) for _ in range(2)]
    recalibrate_bn(net, batches, 2, torch.device("cpu"))
    after = _bn_state(net)
    for b in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(before[f"unused.{b}"], after[f"unused.{b}"])
    assert int(after["used.1.num_batches_tracked"]) == 2
    # reached layer: exact cumulative average of the two batches' means (equal-sized batches)
    want = torch.stack([net.used[0](bx).mean(dim=(0, 2, 3)) for bx, _ in batches]).mean(0)
    assert torch.allclose(after["used.1.running_mean"], want.detach(), atol=1e-5)
