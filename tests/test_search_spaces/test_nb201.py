"""The nb201 space: NATS strings and indices of all 15,625 cells, networks as NATS-Bench's UniqueString
defines them, the supernet (entangled or not), its cost lowering and probabilities, and the mixed forward."""

from __future__ import annotations

import csv
import gzip
import json
from collections import defaultdict

import numpy as np
import pytest
import torch

from nas.testing import SearchSpaceContract, SupernetKindContract
from nas.training.sampling import get_rule
from search_spaces import InvalidArchitectureError, build_supernet, create_space
from search_spaces.nb201 import (
    KEYS,
    N_CELLS,
    NATS_TABLE,
    NB201Space,
    cell_classes,
    nats_strings,
    parse_nats_string,
    unique_string,
)
from supernets.init import init_weights
from supernets.nb201 import OPS


@pytest.fixture(scope="module")
def table_rows() -> list[dict[str, str]]:
    with gzip.open(NATS_TABLE, "rt", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def space() -> NB201Space:
    return create_space("nb201", num_classes=5, in_channels=1, resolution=16, width_mult=0.25)


def _cell(space: NB201Space, r: int) -> dict[str, str]:
    return {k: OPS[int(d)] for k, d in zip(KEYS, cell_classes().digits[r])}


# --- NATS strings and indices ----------------------------------------------------------------------
def test_every_nats_string_round_trips_with_its_index(space, table_rows):
    assert len(table_rows) == N_CELLS == 15_625
    seen = set()
    for i, row in enumerate(table_rows):
        text = row["ArchitectureString"]
        values = dict(zip(KEYS, parse_nats_string(text)))
        assert space.nats_string(values) == text
        assert space.nats_index(values) == i
        assert space.arch_from_nats_index(i) == space.arch(values) == space.parse_arch(text)
        seen.add(tuple(values.values()))
    assert len(seen) == N_CELLS  # every cell of the space is one row of the table


def test_nats_index_round_trip_for_every_cell(space):
    strings = nats_strings()
    indices = set()
    for r in range(N_CELLS):
        values = _cell(space, r)
        index = space.nats_index(values)
        assert strings[index] == space.nats_string(values)
        assert space.arch_from_nats_index(index) == space.arch(values)
        indices.add(index)
    assert indices == set(range(N_CELLS))


def test_format_arch_writes_what_parse_arch_reads(space):
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = space.sample(rng)
        assert space.parse_arch(space.format_arch(arch)) == arch
        assert space.parse_arch(arch.to_json()) == arch  # JSON is read too


@pytest.mark.parametrize(
    "text, message",
    [
        ("|nor_conv_3x3~0|+|none~0|", "is not a NAS-Bench-201 architecture string"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "edge 1<-0 has op 'conv'; allowed values"),
        ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", "node 2 must list its inputs from nodes [0, 1]"),
        ("not a cell", "not a JSON object"),
    ],
)
def test_a_bad_architecture_string_says_what_is_wrong(space, text, message):
    with pytest.raises(InvalidArchitectureError, match=message.replace("[", r"\[").replace("]", r"\]")):
        space.parse_arch(text)


def test_nats_index_out_of_range_is_refused(space):
    for bad in (-1, N_CELLS, 1.5):
        with pytest.raises(InvalidArchitectureError, match="0..15624"):
            space.arch_from_nats_index(bad)


# --- networks: NATS-Bench's UniqueString ---------------------------------------------------------------
def test_unique_string_is_nats_benchs_for_every_row(table_rows):
    for row in table_rows:
        assert unique_string(parse_nats_string(row["ArchitectureString"])) == row["UniqueString"]


def test_architectures_with_one_unique_string_are_one_network(space, table_rows):
    """All 15,625 rows: the same UniqueString <=> the same architecture id; 6,466 networks."""
    ids_by_string: dict[str, set[str]] = defaultdict(set)
    strings_by_id: dict[str, set[str]] = defaultdict(set)
    for row in table_rows:
        arch_id = space.parse_arch(row["ArchitectureString"]).id
        ids_by_string[row["UniqueString"]].add(arch_id)
        strings_by_id[arch_id].add(row["UniqueString"])
    assert all(len(ids) == 1 for ids in ids_by_string.values())
    assert all(len(s) == 1 for s in strings_by_id.values())
    assert len(ids_by_string) == len(strings_by_id) == space.num_architectures() == 6466
    assert len(space.enumerate()) == 6466 and len({a.id for a in space.enumerate()}) == 6466


def test_the_representative_is_the_member_with_most_none_edges(space):
    members: dict[str, list[int]] = defaultdict(list)
    for r in range(N_CELLS):
        members[space.arch(_cell(space, r)).id].append(r)
    digits = cell_classes().digits
    for arch_id, rs in members.items():
        rep = space.arch(_cell(space, rs[0]))
        rep_r = space._cell_index(rep)
        assert rep_r in rs  # a member of its own class
        assert (digits[rep_r] == 0).sum() == max((digits[r] == 0).sum() for r in rs)
        assert space.arch(rep) == rep and rep.id == arch_id


def test_used_keys_are_exact_for_every_cell(space):
    """Changing a used edge alone changes the UniqueString, changing any other keeps it: all 15,625 cells,
    every other op (no edge where some other ops change the network and some do not)."""
    for r in range(N_CELLS):
        values = _cell(space, r)
        used = set(space.used_keys(values))
        here = unique_string([values[k] for k in KEYS])
        for k in KEYS:
            others = [
                unique_string([op if kk == k else values[kk] for kk in KEYS]) != here
                for op in OPS
                if op != values[k]
            ]
            assert all(others) if k in used else not any(others), (space.nats_string(values), k)


def test_smallest_and_largest(space):
    assert space.smallest().to_dict() == {k: "skip_connect" if k == "3<-0" else "none" for k in KEYS}
    assert set(space.largest().values()) == {"nor_conv_3x3"}
    net = space.build_static(space.smallest())
    x = torch.randn(2, *space.input_shape)
    assert net(x).shape == (2, 5)
    params = [sum(p.numel() for p in space.build_static(a).parameters()) for a in space.enumerate()[:200]]
    assert sum(p.numel() for p in net.parameters()) == min(params)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"resolution": 30}, "divisible by 4"),
        ({"C": 0}, "C must be a whole number"),
        ({"N": 1.5}, "N must be a whole number"),
        ({"entangled": "yes"}, "entangled must be true or false"),
    ],
)
def test_bad_space_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        create_space("nb201", **options)


# --- contracts on the configurations the defaults do not reach -------------------------------------------
class TestNotEntangledTwoCellsPerStage(SearchSpaceContract):
    @pytest.fixture(scope="class")
    def space(self) -> NB201Space:
        return create_space("nb201", num_classes=3, in_channels=1, resolution=28, C=4, N=2, entangled=False)


class TestSupernetContract(SupernetKindContract):
    @pytest.fixture(params=[True, False], ids=["entangled", "separate"])
    def kind_case(self, request):
        space = create_space(
            "nb201", num_classes=5, in_channels=1, resolution=16, C=4, entangled=request.param
        )
        torch.manual_seed(0)
        return space, build_supernet(space, "entangled", seed=0), "entangled", {}


def test_entangled_1x1_is_the_centre_of_the_3x3_weight():
    ent = create_space("nb201", in_channels=1, resolution=16, C=4)
    sep = create_space("nb201", in_channels=1, resolution=16, C=4, entangled=False)
    cell = {k: "nor_conv_1x1" if k == "3<-0" else "none" for k in KEYS}  # node 3 = conv1x1(input)
    net = ent.build_supernet()
    static = net.extract(ent.to_spec(cell))
    w3 = net.cells[0].edges[3].conv.weight
    assert w3.shape[-2:] == (3, 3) and static.cells[0].edges[3].conv.weight.shape[-2:] == (1, 1)
    torch.testing.assert_close(static.cells[0].edges[3].conv.weight, w3[:, :, 1:2, 1:2])
    n_ent = sum(p.numel() for p in net.parameters())
    n_sep = sum(p.numel() for p in sep.build_supernet().parameters())
    one_by_one = sum(4 * 2**s * 4 * 2**s for s in range(3)) * 6  # a 1x1 weight per edge, per cell
    assert n_sep - n_ent == one_by_one


# --- cost lowering and probabilities ---------------------------------------------------------------------
def test_lowering_is_the_canonical_cell_in_every_cell_position(space):
    values = {k: "none" for k in KEYS} | {
        "3<-1": "nor_conv_3x3",
        "3<-0": "skip_connect",
    }  # conv reads a zero node
    ids = space.lower(space.encode_batch([values]))[0]
    assert ids[0] == 0 and len(ids) == 1 + 6 * 3
    assert list(ids[1:7]) == [OPS.index(space.arch(values)[k]) for k in KEYS] == [0, 0, 0, 1, 0, 0]
    assert (ids[1:].reshape(3, 6) == ids[1:7]).all()
    names = space.cost_table().slot_names
    assert names[1] == "stage0.cell0.1<-0" and names[-1] == "stage2.cell0.3<-2"


def test_every_running_edge_is_costed_with_its_addition_into_the_node(space):
    """A cell sums its edges into their nodes, so ``skip_connect`` costs that addition (it was priced at 0,
    and the latency fit could not learn it) and every other op costs it on top of its own modules."""
    from nas.cost.fit import _variables
    from supernets.profiling import add_features, forward_features

    table = space.cost_table()
    skip, conv = OPS.index("skip_connect"), OPS.index("nor_conv_3x3")
    for slot, op, module, shape in space.op_modules():
        own, _ = forward_features(module, shape)
        np.testing.assert_allclose(table.features[slot, op], own + add_features(shape))
    stage0 = space._stage_shape(0)
    assert (table.features[1, skip] == add_features(stage0)).all() and table.features[1, skip][2] > 0
    assert table.features[1, conv][2] > table.features[1, skip][2]
    assert [1, skip] in _variables(space).tolist()  # a skip's cost is something a fit can learn


def _probs(space, rng, concentration=0.6):
    return {k: torch.as_tensor(rng.dirichlet(np.full(5, concentration))) for k in space.keys}


def test_op_probabilities_are_exact_for_one_hot_and_match_sampling(space):
    from nas.cost import CostModel, DeviceProfile, expected_latency, space_signature

    rng = np.random.default_rng(0)
    for _ in range(10):
        arch = space.sample(rng)
        P = space.op_probabilities(space.one_hot_probabilities(arch))
        ids = space.lower(space.encode_batch([arch]))[0]
        want = torch.zeros_like(P)
        want[torch.arange(len(ids)), torch.as_tensor(ids, dtype=torch.long)] = 1.0
        assert torch.equal(P, want)
    ct = space.cost_table()
    profile = DeviceProfile("hand", ct.feature_names, (1e-6, 3e-6, 1e-7, 1e-2), 0.1, space_signature(space))
    model = CostModel(space, profile)
    probs = _probs(space, rng)
    codes = np.stack([rng.choice(5, size=4000, p=probs[k].numpy()) for k in space.keys], axis=1)
    lat = model.predict_codes(codes)
    exp = float(expected_latency(model, probs))
    assert abs(lat.mean() - exp) < 4 * lat.std(ddof=1) / np.sqrt(len(lat))
    batch = {k: torch.stack([v, v.flip(0)]) for k, v in probs.items()}
    P2 = space.op_probabilities(batch)
    torch.testing.assert_close(P2[0], space.op_probabilities(probs))
    torch.testing.assert_close(P2[1], space.op_probabilities({k: v.flip(0) for k, v in probs.items()}))


def test_expected_latency_gradient_reaches_every_edge(space):
    from nas.cost import CostModel, DeviceProfile, expected_latency, space_signature

    ct = space.cost_table()
    model = CostModel(
        space, DeviceProfile("h", ct.feature_names, (1e-6, 3e-6, 1e-7, 1e-2), 0.0, space_signature(space))
    )
    logits = {k: torch.zeros(5, dtype=torch.float64, requires_grad=True) for k in space.keys}
    expected_latency(model, {k: torch.softmax(v, 0) for k, v in logits.items()}).backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in logits.values())


# --- the mixed (DARTS) forward ------------------------------------------------------------------------
@pytest.mark.parametrize("entangled", [True, False])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_one_hot_mixture_is_the_subnetwork(entangled, mode):
    space = create_space("nb201", num_classes=4, in_channels=1, resolution=16, C=4, entangled=entangled)
    torch.manual_seed(0)
    net = init_weights(space.build_supernet()).train(mode == "train")
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(4, *space.input_shape, generator=torch.Generator().manual_seed(1))
    rng = np.random.default_rng(2)
    for arch in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(4))]:
        with torch.no_grad():
            net.set_active(space.to_spec(arch))
            sub = net(x)
            net.set_active(net.largest_spec())
            mixed = space.mixed_forward(net, x, space.one_hot_probabilities(arch, dtype=torch.float32))
        torch.testing.assert_close(mixed, sub, rtol=1e-5, atol=1e-5)


def test_mixture_is_differentiable_in_every_edge_and_op(space):
    net = space.build_supernet()
    logits = {k: torch.zeros(5, requires_grad=True) for k in space.keys}
    x = torch.randn(4, *space.input_shape)
    space.mixed_forward(
        net, x, {k: torch.softmax(v, 0) for k, v in logits.items()}
    ).square().mean().backward()
    for k, v in logits.items():
        assert v.grad is not None and (v.grad != 0).sum() >= 4, k  # none's share moves the others'


def test_mixed_forward_needs_the_nb201_supernet(space):
    other = create_space("tiny").build_supernet()
    with pytest.raises(ValueError, match="needs its own supernet"):
        space.mixed_forward(other, torch.randn(1, *space.input_shape), space.uniform_probabilities())


# --- sampling rules -----------------------------------------------------------------------------------------
def test_sandwich_trains_the_largest_and_the_identity_cell(space):
    largest, smallest, *rest = get_rule("sandwich")(space, np.random.default_rng(0), 0, 10, 2)
    assert largest == space.largest() and smallest == space.smallest() and len(rest) == 2


def test_fair_uses_every_op_of_every_edge_once_per_step(space):
    from nas.training.sampling import _fair_values

    raw = _fair_values(space, np.random.default_rng(0))
    assert len(raw) == 5
    for k in space.keys:
        assert sorted(v[k] for v in raw) == sorted(OPS)
    assert len(get_rule("fair")(space, np.random.default_rng(0), 0, 10, 0)) == 5


# --- the command line -----------------------------------------------------------------------------------
def test_latency_predict_reads_a_nats_string_file(tmp_path, capsys):
    from nas.cli import main
    from nas.cost import CostModel, spec_profile

    text = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    (tmp_path / "arch.txt").write_text(text + "\n")
    (tmp_path / "bad.txt").write_text(text.replace("nor_conv_1x1", "conv_5x5"))
    argv = ["latency", "predict", "--space=nb201", "--device=mobile-big-core", "--json", "--quiet"]
    assert main([*argv, "--arch", str(tmp_path / "arch.txt")]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    space = create_space("nb201", num_classes=10, in_channels=1, resolution=32, width_mult=0.5)  # digits
    arch = space.parse_arch(text)
    assert got["arch_id"] == arch.id
    want = CostModel(space, spec_profile("mobile-big-core", space)).predict([arch])[0]
    assert got["latency_pred_ms"] == pytest.approx(want)
    assert main([*argv, "--arch", str(tmp_path / "bad.txt")]) == 2
    err = capsys.readouterr().err
    assert "bad.txt is not an architecture of space 'nb201'" in err and "edge 3<-1 has op 'conv_5x5'" in err


def test_an_extracted_cell_network_exports_in_every_default_format_and_refuses_timm(tmp_path):
    """nb201 exports as any plain network (torch, TorchScript, torch.export, ONNX: each verified against
    PyTorch); timm is not one of its families and is refused with the reason."""
    import torch

    from nas.export.formats import ExportJob, resolve_formats, write_formats
    from nas.run.config import ConfigError

    options = {"num_classes": 10, "in_channels": 1, "resolution": 28, "C": 8, "N": 1}
    space = create_space("nb201", **options)
    formats = resolve_formats(None, space)
    assert formats == ["torch", "torchscript", "torch_export", "onnx"]
    with pytest.raises(ConfigError, match="'timm' does not apply to space 'nb201'"):
        resolve_formats(["timm"], space)
    arch = space.parse_arch(
        "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    )
    net = space.build_supernet().extract(space.to_spec(arch)).eval()
    x = torch.randn(4, *space.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = net(x)
    (tmp_path / "arch.json").write_text(arch.to_json())
    job = ExportJob(
        net=net, out_dir=tmp_path, space=space, spec=space.to_spec(arch), x=x,
        y=torch.zeros(4, dtype=torch.long), logits=logits,
        space_json={"name": "nb201", "options": options, "supernet": "entangled"},
    )  # fmt: skip
    results = write_formats(job, formats)
    assert set(results) == set(formats)
    for fmt, res in results.items():
        assert res["ok"] is True and res["max_abs_diff"] <= res["tolerance"], (fmt, res)
