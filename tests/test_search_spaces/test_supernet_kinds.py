"""The supernet-kind contract (nas.testing.SupernetKindContract) on every registered kind, plus kind- and
space-specific checks."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch

from nas.cli import main
from nas.testing import SupernetKindContract
from nas.testing.spaces import sample_archs
from search_spaces import build_supernet, create_space, list_supernet_kinds
from search_spaces.arch import InvalidArchitectureError
from supernets.balanced_mixture import balanced_assignment

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
    return sample_archs(space, n=n)


class TestEveryRegisteredKind(SupernetKindContract):
    @pytest.fixture(params=KIND_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
    def kind_case(self, request):
        kind, space_name, options = request.param
        space = _space(space_name)
        torch.manual_seed(0)
        return space, build_supernet(space, kind, seed=0, **options), kind, options


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
    # a stand-in loss that makes expert 1 better for the first half of the configurations, expert 0 for the
    # rest
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
    params = [
        sum(p.numel() for p in space.build_static(a).parameters())
        for a in (space.largest(), space.smallest())
    ]
    assert params[0] > 4 * params[1]  # early downsampling: every block at full width


def test_resnet_space_widths_are_distinct_and_round_trip():
    space = create_space("resnet", in_channels=1, resolution=32, width_mult=0.25)
    for i in range(space.n_stages):
        widths = space.choices[f"s{i}.width"]
        assert len(set(widths)) == len(widths) and all(w % 8 == 0 for w in widths)
    small = create_space(
        "resnet", in_channels=1, resolution=16, stage_channels=(16, 32), stage_strides=(1, 2)
    )  # widths (8, 16) and (16, 24, 32)
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
        [
            "--space=resnet20_pool",
            "--supernet=balanced_mixture",
            "--space.supernet_options={k: 2, reassign_every: 10}",
            "--width-mult=0.25",
        ],
        ["--space=tiny", "--supernet=mos", "--space.supernet_options={k: 2}", "--train.channels_last=true"],
        ["--space=vit", "--supernet=entangled", "--width-mult=0.5", "--space.options={depths: [2, 3]}"],
    ],
    ids=["balanced_mixture", "mos", "vit"],
)
def test_new_kinds_and_spaces_run_end_to_end_from_the_command_line(tmp_path, space_args):
    run_dir = tmp_path / "mix"
    args = [
        "run",
        "--run-dir",
        str(run_dir),
        *space_args,
        "--data.resolution=16",
        "--train-limit=256",
        "--epochs=2",
        "--trials=4",
        "--search.calibration_archs=8",
        "--export.latency_repeats=3",
        "--trackers=jsonl",
        "--quiet",
        "--json",
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
