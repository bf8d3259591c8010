"""Single-path superkernels: hard-gate forward is the read-off subnetwork; the latency term moves the
thresholds."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest
import torch

from nas.cli import main
from nas.cost import spec_profile
from nas.cost.expected import expected_latency
from nas.cost.model import CostModel
from search_spaces import build_supernet, create_space


def _net(seed: int = 0):
    space = create_space("tiny", num_classes=5, in_channels=1)
    torch.manual_seed(seed)
    return space, build_supernet(space, "single_path")


def test_search_mode_output_is_exactly_the_read_off_subnetwork():
    space, net = _net()
    x = torch.randn(4, 1, 16, 16)
    net.eval()
    seen = set()
    for trial in range(8):
        with torch.no_grad():
            gen = torch.Generator().manual_seed(trial)
            for t in net.thresholds():
                t.copy_(torch.rand(t.shape, generator=gen) * 0.3)
        net.use_thresholds()
        with torch.no_grad():
            y_search = net(x)
            spec = net.read_spec()
            static = net.extract(spec).eval()
            assert (y_search - static(x)).abs().max().item() <= 1e-5, spec
        seen.add(spec)
    assert len(seen) >= 4  # the thresholds really choose different networks


def test_zero_thresholds_choose_the_largest_network():
    space, net = _net()
    assert space.arch_from_spec(net.read_spec()) == space.largest()
    for arch in (space.smallest(), space.largest()):
        assert space.arch_from_spec(space.to_spec(arch)) == arch


def test_gate_probabilities_give_the_read_off_latency_and_its_gradient():
    space, net = _net()
    cost = CostModel(space, spec_profile("laptop-cpu", space))
    net.use_thresholds()
    probs = {k: v.double() for k, v in space.single_path_probabilities(net.indicators()).items()}
    lat = expected_latency(cost, probs, validate=False)
    assert float(lat.detach()) == pytest.approx(
        float(cost.predict([space.arch_from_spec(net.read_spec())])[0]), rel=1e-6
    )  # predict is float32
    lat.backward()
    # raising a threshold (switching an extension off) lowers the expected latency
    assert (
        float(net.kernel_thresholds.grad.sum()) < 0
        and float(net.expand_thresholds.grad.sum()) < 0
        and float(net.skip_thresholds.grad.sum()) < 0
    )


def test_only_mbconv_spaces_have_superkernels():
    with pytest.raises(ValueError, match="MBConv space"):
        build_supernet(create_space("resnet20_pool"), "single_path")


def test_single_path_run_meets_a_tight_latency_target_end_to_end(tmp_path):
    space = create_space("tiny", in_channels=1, resolution=16)
    cost = CostModel(space, spec_profile("laptop-cpu", space))
    small, large = (float(v) for v in cost.predict([space.smallest(), space.largest()]))
    budget = small + 0.25 * (large - small)
    run_dir = tmp_path / "sp"
    args = [
        "run",
        "--run-dir",
        str(run_dir),
        "--space=tiny",
        "--supernet=single_path",
        "--data.resolution=16",
        "--train-limit=512",
        "--epochs=3",
        f"--latency-budget-ms={budget}",
        "--search.devices=[laptop-cpu]",
        "--train.latency_weight=2.0",
        "--trials=3",
        "--export.latency_repeats=3",
        "--trackers=jsonl",
        "--quiet",
        "--json",
    ]
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(args) == 0
    epochs = [
        json.loads(line)
        for line in (run_dir / "events.jsonl").read_text().splitlines()
        if '"latency_pred_ms_chosen"' in line
    ]
    assert epochs[-1]["latency_pred_ms_chosen"] < large  # the latency term switched extensions off
    assert epochs[-1]["latency_pred_ms_chosen"] <= budget  # ... until the chosen network fits the budget
    history = (run_dir / "search" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3
    meta = json.loads((run_dir / "export" / "meta.json").read_text())
    assert meta["verification"]["supernet_vs_extracted_max_abs_diff"] <= 1e-4


def _chosen_latency_after_training(tmp_path, budget: float, name: str) -> float:
    run_dir = tmp_path / name
    args = [
        "train", "--run-dir", str(run_dir), "--space=tiny", "--supernet=single_path", "--data.resolution=16",
        "--train-limit=512", "--epochs=3", f"--latency-budget-ms={budget}", "--search.devices=[laptop-cpu]",
        "--trackers=jsonl", "--quiet",
    ]  # fmt: skip
    with redirect_stdout(io.StringIO()):
        assert main(args) == 0
    epochs = [
        json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if '"epoch"' in line
    ]
    return [e["latency_pred_ms_chosen"] for e in epochs if "latency_pred_ms_chosen" in e][-1]


def test_two_budgets_give_two_networks_each_within_its_budget_the_looser_one_larger(tmp_path):
    """The budget decides where the latency term stops shrinking: not just "smaller than the largest"."""
    space = create_space("tiny", in_channels=1, resolution=16)
    cost = CostModel(space, spec_profile("laptop-cpu", space))
    small, large = (float(v) for v in cost.predict([space.smallest(), space.largest()]))
    tight, loose = small + 0.3 * (large - small), small + 0.8 * (large - small)
    at_tight = _chosen_latency_after_training(tmp_path, tight, "tight")
    at_loose = _chosen_latency_after_training(tmp_path, loose, "loose")
    assert at_tight <= tight and at_loose <= loose
    assert at_loose > at_tight


def test_thresholds_get_no_weight_decay():
    from nas.run.config import build_config
    from nas.training.single_path import SinglePathPlan
    from nas.training.trainer import build_optimizer

    _, net = _net()
    plan = SinglePathPlan.__new__(SinglePathPlan)  # only its parameter rule is used here
    opt = build_optimizer(
        net, build_config({"train": {"weight_decay": 0.01}}).train, plan.no_weight_decay(net)
    )
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed and not decayed & {id(t) for t in net.thresholds()}
    assert all(id(p) in decayed for n, p in net.named_parameters() if p.ndim > 1 and "thresholds" not in n)


def test_switching_off_the_weakest_extension_shrinks_the_network_down_to_the_smallest():
    space, net = _net()
    cost = CostModel(space, spec_profile("laptop-cpu", space))
    latencies = [float(cost.predict([space.arch_from_spec(net.read_spec())])[0])]
    while net.switch_off_weakest():
        latencies.append(float(cost.predict([space.arch_from_spec(net.read_spec())])[0]))
    assert all(b < a for a, b in zip(latencies, latencies[1:]))  # every switch removes work
    assert space.arch_from_spec(net.read_spec()) == space.smallest() and len(latencies) > 3
