"""Mixtures of supernets: the balanced mixture's routing probes, the Mixture-of-Supernets' initial scale."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from search_spaces import build_supernet, create_space


def _space(name: str):
    return create_space(name, num_classes=5, in_channels=1, resolution=16, width_mult=0.5)


def _bn_buffers(net: nn.Module) -> dict[str, torch.Tensor]:
    """Every BN buffer of ``net`` (running mean, variance, batches tracked), by name, as copies."""
    return {
        f"{name}.{b}": t.clone()
        for name, m in net.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for b, t in m.named_buffers(recurse=False)
        if t is not None
    }


def _randomise_bn_stats(net: nn.Module, seed: int) -> None:
    """Non-trivial running statistics in every BN layer, as after training."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 3 + 0.2)
                m.num_batches_tracked.fill_(int(torch.randint(10, 1000, (1,), generator=gen)))


# --- balanced mixture: routing probes ------------------------------------------------------------------
@pytest.fixture
def mixture():
    space = _space("resnet20_pool")
    torch.manual_seed(0)
    mix = build_supernet(space, "balanced_mixture", k=2, probe_every=1, reassign_every=1000)
    _randomise_bn_stats(mix, seed=1)
    mix.train()
    return space, mix


def _batch(space, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *space.input_shape, generator=gen) * 2 + 0.5, torch.randint(
        0, 5, (n,), generator=gen
    )


def test_a_probe_leaves_every_experts_bn_running_statistics_unchanged(mixture):
    space, mix = mixture
    x, y = _batch(space)
    for spec in mix.configurations[:3]:
        mix.set_active(spec)
        before = _bn_buffers(mix)
        mix.route_update(x, y, nn.functional.cross_entropy, step=0)
        assert bool(mix.observed[mix._index[spec]].all())  # the probe ran, under every expert
        after = _bn_buffers(mix)
        assert before.keys() == after.keys() and len(before) > 0
        for name in before:
            assert torch.equal(before[name], after[name]), name
        assert mix.training and all(m.training for m in mix.modules())  # modes are restored too
        assert all(m.momentum == 0.1 for m in mix.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def test_probes_measure_every_expert_with_batch_statistics(mixture):
    """Each expert's probe loss is its training-mode loss on the batch (its own batch statistics), not an
    eval-mode loss on running statistics that were accumulated for other configurations."""
    space, mix = mixture
    x, y = _batch(space, seed=3)
    spec = mix.configurations[5]
    mix.set_active(spec)
    want = []
    for expert in mix.experts:  # the reference: a training-mode forward of a copy of each expert
        twin = copy.deepcopy(expert).train()
        with torch.no_grad(), twin.active(spec):
            want.append(float(nn.functional.cross_entropy(twin(x), y)))
        twin.eval()
        with torch.no_grad(), twin.active(spec):
            eval_loss = float(nn.functional.cross_entropy(twin(x), y))
        assert abs(eval_loss - want[-1]) > 1e-3  # the two kinds of statistics really differ here
    mix.route_update(x, y, nn.functional.cross_entropy, step=0)
    got = (-mix.affinity[mix._index[spec]]).tolist()  # first observation: affinity = -loss
    assert got == pytest.approx(want, rel=1e-6, abs=1e-6)


# --- Mixture-of-Supernets: the generated weights start at the plain supernet's scale --------------------
@pytest.mark.parametrize("space_name", ["tiny", "vit"])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_mos_generated_weights_start_at_the_plain_supernets_scale(space_name, k):
    space = _space(space_name)
    torch.manual_seed(0)
    plain = dict(space.build_supernet().named_parameters())
    mos = build_supernet(space, "mos", k=k, seed=0)
    with torch.no_grad():
        generated = mos.generated_parameters()
        plain = {n: p.detach() for n, p in plain.items()}
    assert generated.keys() == plain.keys()
    ratios = {}
    for name, w in generated.items():
        p = plain[name]
        assert w.shape == p.shape, name
        if p.numel() >= 256 and float(p.std()) > 0:  # enough elements for a stable spread
            ratios[name] = float(w.std() / p.std())
        elif float(p.std()) == 0:  # constant initialisations (norm scales and shifts) stay constant
            assert torch.allclose(w, p, atol=1e-6), name
    assert len(ratios) >= 10
    off = {n: r for n, r in ratios.items() if not 0.85 <= r <= 1.15}
    assert off == {}, off


def test_mos_experts_differ_but_stay_close_to_one_initialisation():
    space = _space("tiny")
    mos = build_supernet(space, "mos", k=3, seed=0)
    sets = [{n: w.detach() for n, w in mos.expert_weights(e).items()} for e in range(3)]
    big = [n for n, w in sets[0].items() if w.numel() >= 256]
    for n in big:
        spread = float(sets[0][n].std())
        for e in (1, 2):
            gap = float((sets[e][n] - sets[0][n]).std())
            assert 0 < gap < 0.3 * spread, (
                n,
                e,
                gap,
                spread,
            )  # perturbed (router has a gradient), not redrawn
