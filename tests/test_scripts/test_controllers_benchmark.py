"""bench_controllers' bookkeeping: a data file holds the runs of one study on one supernet (a changed setting,
retrained weights or another latency budget stop the script before anything runs), and the report's curves
and p-values follow the traces (a controller that finds better networks gets a small p, best accuracy counts
feasible trials only)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_controllers as bench  # noqa: E402
from _results import machine_info  # noqa: E402

SETTINGS = dict(
    space="nb201", root="runs/x", trials=20, population=8, epochs=1, train_limit=500, val_limit=300,
    bn_recal_batches=2, eval_images=0, gradient_epochs=1, gradient_steps=0,
)  # fmt: skip


def _run(controller: str, seed: int, acc: list[float], lat: list[float]) -> dict:
    ids = [f"{controller}{seed}-{i}" for i in range(len(acc))]
    return {
        "controller": controller, "seed": seed, "arch_ids": ids, "accuracy": acc, "latency_ms": lat,
        "overhead_s": 0.01 * len(acc), "prepare_s": 0.0,
    }  # fmt: skip


def _raw(runs: list[dict]) -> dict:
    return {
        "settings": {**SETTINGS, "seeds": 6, "controllers": "random,good"},
        "budget_ms": 1.0, "smallest_ms": 0.5, "largest_ms": 2.0, "supernet_epoch_seconds": [3.0],
        "evaluation_seconds": {"count": 10, "total": 5.0}, "storage": "in-memory", "runs": runs,
        "machine": machine_info(),
    }  # fmt: skip


def test_a_data_file_of_another_setting_or_supernet_is_refused_by_name(tmp_path):
    raw = {"settings": dict(SETTINGS), "supernet_fingerprint": "abc", "budget_ms": 1.5}
    bench.check_same_study(raw, dict(SETTINGS), "abc", 1.5, tmp_path / "d.json")  # the same study: goes on
    with pytest.raises(SystemExit, match=r"trials: 20 there, 100 now"):
        bench.check_same_study(raw, {**SETTINGS, "trials": 100}, "abc", 1.5, tmp_path / "d.json")
    with pytest.raises(SystemExit, match=r"supernet weights: abc there, def now"):
        bench.check_same_study(raw, dict(SETTINGS), "def", 1.5, tmp_path / "d.json")
    with pytest.raises(SystemExit, match=r"latency budget: 1.500000 ms there, 1.600000 ms now"):
        bench.check_same_study(raw, dict(SETTINGS), "abc", 1.6, tmp_path / "d.json")


def test_data_written_before_the_space_setting_reads_as_mbv3(tmp_path):
    old = {k: v for k, v in SETTINGS.items() if k != "space"}
    bench.check_same_study({"settings": old}, {**SETTINGS, "space": "mbv3"}, "abc", 1.0, tmp_path / "d.json")
    with pytest.raises(SystemExit, match="space: 'mbv3' there, 'nb201' now"):
        bench.check_same_study({"settings": old}, dict(SETTINGS), "abc", 1.0, tmp_path / "d.json")


def test_the_weights_fingerprint_follows_every_weight():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    before = bench.weights_fingerprint(net)
    assert bench.weights_fingerprint(net) == before
    with torch.no_grad():
        net[1].running_mean[0] += 1e-3  # a buffer counts: BN statistics change what an evaluation returns
    assert bench.weights_fingerprint(net) != before


def test_best_accuracy_counts_feasible_trials_only_and_p_separates_a_better_controller(tmp_path):
    rng = np.random.default_rng(0)
    runs = []
    for seed in range(6):
        lat = [0.8, 1.5, 0.9, 0.7]  # trial 1 is over the 1.0 ms budget
        noise = rng.normal(0, 0.01, 4)
        runs.append(_run("random", seed, [0.5 + noise[0], 0.99, 0.55 + noise[1], 0.52], lat))
        good = [0.6 + noise[2], 0.99, 0.7, 0.8 + noise[3]]
        runs.append(_run("good", seed, good, lat))
    by_name, acc_ref = bench.curves(_raw(runs))
    hv, best = by_name["random"]
    assert best.shape == (6, 4) and acc_ref == pytest.approx(min(min(r["accuracy"]) for r in runs))
    assert np.all(best[:, 1] == best[:, 0]), "the infeasible 0.99 must not count as the best under the budget"
    assert np.all(np.diff(best, axis=1) >= 0) and np.all(np.diff(hv, axis=1) >= 0)
    good_last = [max(r["accuracy"][0], r["accuracy"][3]) for r in runs if r["controller"] == "good"]
    assert np.allclose(by_name["good"][1][:, -1], good_last)
    md = bench.render(_raw(runs), tmp_path, md_name="controllers_nb201.md", figures=False)[0].read_text()
    good = next(line for line in md.splitlines() if line.startswith("| good |"))
    cells = [c.strip() for c in good.split("|")]
    assert cells[5] == "<0.001" and cells[7] == "<0.001"  # hypervolume p, best-accuracy p against random
    assert "`nb201` C=8, N=1" in md and "One study, several workers" not in md
