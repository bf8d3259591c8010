"""Ranking report: metrics, stratified choice of architectures, and `nas rank` end to end on tiny."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas.cli import main
from nas.ranking import (
    arch_macs,
    ground_truth_reliability,
    ranking_metrics,
    seeds_for_reliability,
    standalone_recipe_id,
    stratified_archs,
)
from nas.run.config import build_config
from search_spaces import create_space

TINY = ["--space=tiny", "--data.resolution=16", "--trackers=jsonl", "--data.train_limit=256", "--quiet"]


def test_metrics_on_known_rankings():
    truth = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    perfect = ranking_metrics(truth * 2, truth, top_k=2)
    assert perfect["kendall_tau"] == pytest.approx(1.0) and perfect["spearman"] == pytest.approx(1.0)
    assert perfect["top2_overlap"] == 1.0 and perfect["regret"] == 0.0
    reverse = ranking_metrics(-truth, truth, top_k=2)
    assert reverse["kendall_tau"] == pytest.approx(-1.0) and reverse["top2_overlap"] == 0.0
    assert reverse["regret"] == pytest.approx(0.4)  # trusting the supernet picks the worst network


def _noisy_truth(spread: float, noise: float, seeds: int, k: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, spread, (k, 1)) + rng.normal(0, noise, (k, seeds))


def test_reliable_ground_truth_carries_no_warning():
    report = ground_truth_reliability(_noisy_truth(spread=1.0, noise=0.05, seeds=4))
    assert report["ground_truth_reliability"] == report["split_half_kendall_tau"] > 0.7
    assert "ground_truth_warning" not in report


def test_unreliable_ground_truth_warns_and_its_seed_estimate_reaches_the_target():
    few = ground_truth_reliability(_noisy_truth(spread=1.0, noise=2.0, seeds=4, k=1000))
    assert few["ground_truth_reliability"] < 0.7 and "--seeds" in few["ground_truth_warning"]
    needed = few["seeds_for_reliability_0.7"]
    # Gaussian theory: one seed against one has r = 1 / (1 + 4) = 0.2; tau 0.7 needs r = sin(0.35 pi),
    # so k = r (1 - 0.2) / (0.2 (1 - r)) seeds a side, about 66 in all
    r = np.sin(0.35 * np.pi)
    assert 0.8 * 66 <= needed <= 1.25 * 66 and abs(2 * np.ceil(r * 0.8 / (0.2 * (1 - r))) - 66) <= 1
    fresh = ground_truth_reliability(_noisy_truth(1.0, 2.0, seeds=needed, k=1000, seed=1))
    assert fresh["split_half_kendall_tau"] >= 0.65 and abs(fresh["split_half_kendall_tau"] - 0.7) < 0.05


def test_seed_estimate_edge_cases():
    assert seeds_for_reliability(0.9, 1) == 2  # one seed a side already agrees
    assert seeds_for_reliability(0.0, 2) is None and seeds_for_reliability(-0.2, 1) is None
    assert seeds_for_reliability(0.5, 2) == seeds_for_reliability(0.5, 2) > 4
    one = ground_truth_reliability(_noisy_truth(1.0, 0.1, seeds=1))
    assert "unknown" in one["ground_truth_warning"] and "ground_truth_reliability" not in one


def test_stratified_archs_span_smallest_to_largest_network():
    space = create_space("mbv3", width_mult=0.35, in_channels=1)
    archs = stratified_archs(space, 10, seed=0, pool=2000)
    assert len({a.id for a in archs}) == 10
    macs = arch_macs(space, archs)
    assert np.all(np.diff(macs) >= 0)  # one per stratum, strata in size order
    lo, hi = arch_macs(space, [space.smallest(), space.largest()])
    step = (np.log(hi) - np.log(lo)) / 10
    assert (
        np.log(macs[0]) <= np.log(lo) + step and np.log(macs[-1]) >= np.log(hi) - step
    )  # first and last strata
    uniform = arch_macs(space, [space.sample(np.random.default_rng(s)) for s in range(300)])
    assert macs[0] < uniform.min() and macs[-1] > uniform.max()  # wider than a uniform sample reaches
    assert [a.id for a in stratified_archs(space, 10, seed=0, pool=2000)] == [
        a.id for a in archs
    ]  # reproducible


def test_pool_strata_stay_among_typical_networks():
    space = create_space("mbv3", width_mult=0.35, in_channels=1)
    macs = arch_macs(space, stratified_archs(space, 10, seed=0, pool=2000, span="pool"))
    uniform = arch_macs(space, [space.sample(np.random.default_rng(s)) for s in range(2000)])
    assert np.all(np.diff(macs) >= 0)
    assert uniform.min() <= macs[0] and macs[-1] <= uniform.max()
    with pytest.raises(ValueError, match="span"):
        stratified_archs(space, 3, seed=0, span="everything")


def test_standalone_results_are_keyed_by_recipe_not_by_supernet_settings():
    base = build_config(None, ["--space=tiny"])
    rid = standalone_recipe_id(base)
    assert (
        standalone_recipe_id(
            build_config(
                None, ["--space=tiny", "--train.sampler=uniform", "--train.distill=true", "--epochs=3"]
            )
        )
        == rid
    )
    assert (
        standalone_recipe_id(
            build_config(None, ["--space=tiny", "--supernet=mos", "--space.supernet_options={k: 3}"])
        )
        == rid
    )
    for change in ("--train.lr=0.05", "--train-limit=100", "--width-mult=0.25", "--train.channels_last=true"):
        assert standalone_recipe_id(build_config(None, ["--space=tiny", change])) != rid, change


def test_nas_rank_on_tiny_writes_report_and_resumes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), "--epochs=1", *TINY]) == 0
    args = [
        "rank",
        "--run-dir",
        str(run_dir),
        "--archs=4",
        "--epochs=1",
        "--seeds=2",
        "--workers=2",
        "--json",
        *TINY,
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads((run_dir / "ranking.json").read_text())
    for key in ("kendall_tau", "spearman", "regret", "seed_to_seed_kendall_tau", "macs_kendall_tau"):
        assert key in report and key in summary
    assert len(report["rows"]) == 4 and all(len(r["standalone_val_acc"]) == 2 for r in report["rows"])
    assert (run_dir / "ranking.png").stat().st_size > 1000
    results = sorted((run_dir / "ranking" / "standalone").glob("*.json"))
    assert len(results) == 8
    stamps = [p.stat().st_mtime_ns for p in results]
    assert main(args) == 0  # second run: every standalone result is reused, nothing retrained
    assert [p.stat().st_mtime_ns for p in results] == stamps
    assert json.loads((run_dir / "ranking.json").read_text())["rows"] == report["rows"]
    assert "split_half_kendall_tau" not in report
    assert report["ground_truth_reliability"] == report["seed_to_seed_kendall_tau"]
    assert ("ground_truth_warning" in report) == (report["ground_truth_reliability"] < 0.7)
    # two more seeds: only those are trained (in this process: --workers=1 takes the pool-free path)
    assert main([*args[:5], "--seeds=4", "--workers=1", *args[7:]]) == 0
    assert len(list((run_dir / "ranking" / "standalone").glob("*.json"))) == 16
    assert [p.stat().st_mtime_ns for p in results] == stamps
    four = json.loads((run_dir / "ranking.json").read_text())
    assert -1.0 <= four["split_half_kendall_tau"] <= 1.0 and all(
        len(r["standalone_val_acc"]) == 4 for r in four["rows"]
    )
