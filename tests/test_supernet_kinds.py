"""Contract every supernet kind passes (parametrised over the kind registry), plus the resnet20_pool space."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch
from torch import nn

from nas.cli import main
from search_spaces import build_supernet, create_space, list_supernet_kinds
from search_spaces.arch import InvalidArchitectureError
from supernets.balanced_mixture import BalancedMixture, balanced_assignment
from supernets.mos import MixtureOfSupernets

KIND_CASES = [
    ("entangled", "tiny", {}),
    ("entangled", "resnet20_pool", {}),
    ("balanced_mixture", "resnet20_pool", {"k": 2}),
    ("balanced_mixture", "resnet20_pool", {"k": 4}),
    ("mos", "tiny", {"k": 2}),
    ("mos", "resnet20_pool", {"k": 3}),
    ("single_path", "tiny", {}),
    ("entangled", "vit", {}),
    ("mos", "vit", {"k": 2}),
    ("entangled", "resnet", {}),
]


def test_every_registered_kind_has_a_contract_case():
    assert {kind for kind, _, _ in KIND_CASES} == set(list_supernet_kinds())


def _space(name: str):
    return create_space(name, num_classes=5, in_channels=1, resolution=16, width_mult=0.5)


def _archs(space, n=4):
    rng = np.random.default_rng(0)
    return [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(n))]


def _with_trained_bn(net: nn.Module, space, spec) -> None:
    """Non-trivial BN statistics for ``spec``, as after training (train-mode forwards)."""
    net.train()
    with torch.no_grad(), net.active(spec):
        for s in range(3):
            net(torch.randn(8, *space.input_shape, generator=torch.Generator().manual_seed(s)) * 2 + 0.5)
    net.eval()


@pytest.fixture(params=KIND_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def kind_case(request):
    kind, space_name, options = request.param
    space = _space(space_name)
    torch.manual_seed(0)
    return space, build_supernet(space, kind, seed=0, **options), kind, options


def test_extraction_matches_the_supernet(kind_case):
    space, net, _, _ = kind_case
    x = torch.randn(3, *space.input_shape, generator=torch.Generator().manual_seed(9))
    for arch in _archs(space):
        spec = space.to_spec(arch)
        _with_trained_bn(net, space, spec)
        with torch.no_grad(), net.active(spec):
            diff = (net(x) - net.extract().eval()(x)).abs().max().item()
        assert diff <= 1e-5, (arch, diff)


def test_gradients_reach_every_parameter_of_the_active_path(kind_case):
    space, net, _, _ = kind_case
    for arch in _archs(space, n=2):
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
            weight_sets = [{n[len(prefix):]: g for n, g in grads.items() if n.startswith(prefix)}]
        for name, tensor in static.named_parameters():
            for grads_of_set in weight_sets:
                g = grads_of_set[name]
                assert g is not None, name
                index = tuple(_slice_for(g.shape[i], d, tensor.dim() == 4 and i >= 2) for i, d in enumerate(tensor.shape))
                assert g[index].abs().sum() > 0, name  # the active slice learns (in every expert of a mixture)
        if isinstance(net, BalancedMixture):  # weight sets the configuration is not routed to get nothing
            prefix = f"experts.{net.route(spec)}."
            others = [n for n, g in grads.items() if not n.startswith(prefix) and g is not None and g.abs().sum() > 0]
            assert others == []


def _slice_for(have: int, want: int, spatial: bool) -> slice:
    start = (have - want) // 2 if spatial else 0
    return slice(start, start + want)


def test_state_dict_round_trip_keeps_outputs_and_routing(kind_case):
    space, net, kind, options = kind_case
    spec = space.to_spec(space.sample(np.random.default_rng(3)))
    _with_trained_bn(net, space, spec)
    if isinstance(net, BalancedMixture):  # routing learned away from the initial assignment must survive too
        net.assignment.copy_(torch.roll(net.assignment, 1))
    twin = build_supernet(space, kind, seed=1, **options)
    twin.load_state_dict(net.state_dict())
    twin.eval()
    x = torch.randn(2, *space.input_shape)
    for arch in _archs(space, n=2):
        s = space.to_spec(arch)
        with torch.no_grad(), net.active(s), twin.active(s):
            assert torch.equal(net(x), twin(x))


def test_unknown_kind_and_bad_options_are_named():
    space = _space("resnet20_pool")
    with pytest.raises(ValueError, match="unknown supernet kind 'moe'.*balanced_mixture"):
        build_supernet(space, "moe")
    with pytest.raises(ValueError, match="'balanced_mixture' got options"):
        build_supernet(space, "balanced_mixture", experts=3)
    with pytest.raises(ValueError, match="mbv3.*resnet20_pool"):
        build_supernet(create_space("mbv3"), "balanced_mixture")


def test_one_hot_mixture_of_supernets_equals_that_experts_supernet():
    space = _space("tiny")
    mos = build_supernet(space, "mos", k=3, seed=0)
    plain = space.build_supernet()
    with torch.no_grad():
        mos.router[2].weight.zero_()
        mos.router[2].bias.copy_(torch.tensor([0.0, 1e4, 0.0]))  # all weight on expert 1
        plain.load_state_dict({**plain.state_dict(), **mos.expert_weights(1)})
    mos.eval(), plain.eval()
    x = torch.randn(2, *space.input_shape)
    for arch in _archs(space):
        s = space.to_spec(arch)
        with torch.no_grad(), mos.active(s), plain.active(s):
            assert torch.allclose(mos(x), plain(x), atol=1e-6)


# --- balanced routing ------------------------------------------------------------------------------
def test_balanced_assignment_respects_capacity_and_affinity():
    rng = np.random.default_rng(0)
    aff = rng.random((36, 4))
    out = balanced_assignment(aff)
    assert np.bincount(out, minlength=4).max() <= 9 and np.bincount(out, minlength=4).min() >= 9
    # everyone prefers expert 0: only 9 of them may have it
    skewed = np.zeros((36, 4))
    skewed[:, 0] = np.linspace(1, 2, 36)
    out = balanced_assignment(skewed)
    assert np.bincount(out, minlength=4)[0] == 9
    assert set(np.flatnonzero(out == 0)) == set(range(27, 36))  # the ones that gain most from it


def test_mixture_of_one_is_the_plain_supernet():
    space = _space("resnet20_pool")
    torch.manual_seed(0)
    plain = space.build_supernet()
    mix = build_supernet(space, "balanced_mixture", k=1)
    mix.experts[0].load_state_dict(plain.state_dict())
    x = torch.randn(2, *space.input_shape)
    for arch in _archs(space):
        s = space.to_spec(arch)
        with torch.no_grad(), plain.active(s), mix.active(s):
            assert torch.equal(plain(x), mix(x))


def test_routing_follows_measured_losses_within_balance():
    space = _space("resnet20_pool")
    mix = build_supernet(space, "balanced_mixture", k=2, probe_every=1, reassign_every=1)
    configs = [space.to_spec(a) for a in space.enumerate()]
    x = torch.randn(4, *space.input_shape)
    y = torch.tensor([0, 1, 2, 3])
    # a stand-in loss that makes expert 1 better for the first half of the configurations, expert 0 for the rest
    half = set(configs[:18])

    def loss_fn(logits, target):
        favoured = 1 if mix.active_spec in half else 0
        return torch.tensor(0.0 if mix._probing == favoured else 1.0)

    for step, spec in enumerate(configs):
        mix.set_active(spec)
        mix.route_update(x, y, loss_fn, step=step)
    mix.reassign()
    want = np.array([1] * 18 + [0] * 18)
    assert np.array_equal(mix.assignment.numpy(), want)
    assert mix.routing_summary()["configurations_per_set"] == [18, 18]


# --- the resnet20_pool space --------------------------------------------------------------------
def test_resnet20_pool_space_enumerates_its_36_configurations():
    space = create_space("resnet20_pool")
    archs = space.enumerate()
    assert len(archs) == space.num_architectures() == 36 and len({a.id for a in archs}) == 36
    assert space.to_spec(space.largest()) == (0, 1) and space.to_spec(space.smallest()) == (7, 8)
    with pytest.raises(InvalidArchitectureError, match="downsample_at.*allowed values"):
        space.arch({"downsample_at": "3,3"})
    params = [sum(p.numel() for p in space.build_static(a).parameters()) for a in (space.largest(), space.smallest())]
    assert params[0] > 4 * params[1]  # early downsampling: every block at full width


@pytest.mark.parametrize("name", ["tiny", "resnet20_pool", "vit", "resnet"])
def test_cost_lowering_adds_up_to_each_networks_own_macs(name):
    from supernets.profiling import forward_features

    space = _space(name)
    table = space.cost_table()
    archs = _archs(space, n=3)
    ops = space.lower(space.encode_batch(archs))
    listed = {(slot, op) for slot, op, _, _ in space.op_modules()}
    assert {(s, int(o)) for row in ops for s, o in enumerate(row) if s > 0 and o > 0} <= listed  # every op used is timed
    for arch, row in zip(archs, ops):
        want, _ = forward_features(space.build_static(arch), space.input_shape)
        got = table.features[np.arange(len(row)), row].sum(axis=0)
        np.testing.assert_allclose(got[:2], want[:2], rtol=1e-9)  # dense and depthwise MACs of the whole network


def test_resnet_space_widths_are_distinct_and_round_trip():
    space = create_space("resnet", in_channels=1, resolution=32, width_mult=0.25)
    for i in range(space.n_stages):
        widths = space.choices[f"s{i}.width"]
        assert len(set(widths)) == len(widths) and all(w % 8 == 0 for w in widths)
    small = create_space("resnet", in_channels=1, resolution=16, stage_channels=(16, 32), stage_strides=(1, 2))  # widths (8, 16) and (16, 24, 32)
    assert small.num_architectures() == len(small.enumerate()) == (3 * 2) * (3 * 3)
    rng = np.random.default_rng(0)
    for arch in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(5))]:
        assert space.arch_from_spec(space.to_spec(arch)) == arch


def test_vit_space_round_trips_and_rejects_bad_layers():
    space = _space("vit")
    rng = np.random.default_rng(1)
    for arch in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(5))]:
        assert space.arch_from_spec(space.to_spec(arch)) == arch
    with pytest.raises(InvalidArchitectureError, match="l0.heads"):
        space.arch({**space.largest().to_dict(), "l0.heads": 5})
    net = space.build_supernet()
    with pytest.raises(ValueError, match="depth 9"):
        net.set_active((space.cfg.embed_dims[0], tuple((2, 2.0) for _ in range(9))))


@pytest.mark.parametrize(
    "space_args",
    [
        ["--space=resnet20_pool", "--supernet=balanced_mixture", "--space.supernet_options={k: 2, reassign_every: 10}", "--width-mult=0.25"],
        ["--space=tiny", "--supernet=mos", "--space.supernet_options={k: 2}", "--train.channels_last=true"],
        ["--space=vit", "--supernet=entangled", "--width-mult=0.5", "--space.options={depths: [2, 3]}"],
    ],
    ids=["balanced_mixture", "mos", "vit"],
)
def test_new_kinds_and_spaces_run_end_to_end_from_the_command_line(tmp_path, space_args):
    run_dir = tmp_path / "mix"
    args = [
        "run", "--run-dir", str(run_dir), *space_args, "--data.resolution=16", "--train-limit=256", "--epochs=2", "--trials=4",
        "--search.calibration_archs=6", "--export.latency_repeats=3", "--trackers=jsonl", "--quiet", "--json",
    ]
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(args) == 0
    meta = json.loads((run_dir / "export" / "meta.json").read_text())
    assert meta["verification"]["supernet_vs_extracted_max_abs_diff"] <= 1e-4
    state = torch.load(run_dir / "checkpoints" / "supernet_last.pt", map_location="cpu", weights_only=False)
    if "balanced_mixture" in space_args[1]:
        assert bool(state["model"]["observed"].any())  # the routing was learned from probes during training
    elif "mos" in space_args[1]:
        assert any(k.startswith("router.") for k in state["model"])
    exported = torch.load(run_dir / "export" / "model.pt", map_location="cpu", weights_only=True)
    assert not any("router" in k or "expert" in k for k in exported)  # a plain network: no mixture inside
