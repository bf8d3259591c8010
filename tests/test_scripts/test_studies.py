"""The search-quality studies accumulate their data: ground truths per seed, recipes per supernet seed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import _studies  # noqa: E402
import bench_end_to_end  # noqa: E402
import bench_ground_truth  # noqa: E402
import bench_recipes  # noqa: E402

TINY = _studies.Study(
    name="tiny_study",
    about="4 tiny architectures on digits",
    common=("--space=tiny", "--data.resolution=16", "--data.train_limit=256", "--trackers=jsonl"),
    standalone_epochs=1,
    supernet_epochs=1,
    select=_studies._stratified(4),
    default_recipe="sandwich",
    recipes={"uniform": ("--train.sampler=uniform",), "sandwich": ("--train.sampler=sandwich",)},
    recal_sizes=(2, 4),
    recal_default=2,
)


@pytest.fixture
def tiny_study(monkeypatch):
    monkeypatch.setitem(_studies.STUDIES, TINY.name, TINY)
    return TINY


def _gt(tmp_path: Path, seeds: int) -> dict:
    args = argparse.Namespace(space=TINY.name, seeds=seeds, workers=2, device="cpu")
    path = tmp_path / "results" / "data" / "ground_truth.json"
    bench_ground_truth.measure(args, path)
    return json.loads(path.read_text())


def test_ground_truth_grows_by_seed_and_never_retrains(tmp_path, tiny_study):
    two = _gt(tmp_path, 2)
    results = two["spaces"][TINY.name]["results"]
    assert len(results) == 4 and all(set(r) == {"100", "101"} for r in results.values())
    four = _gt(tmp_path, 4)
    grown = four["spaces"][TINY.name]["results"]
    assert all(set(r) == {"100", "101", "102", "103"} for r in grown.values())
    assert all(grown[a][s] == results[a][s] for a in results for s in ("100", "101"))  # kept as they were
    assert [x["trained"] for x in four["sessions"]] == [8, 8]
    summary = bench_ground_truth.summary(four["spaces"][TINY.name])
    assert summary["seeds"] == 4 and [c["seeds"] for c in summary["curve"]] == [2, 4]
    out = bench_ground_truth.render(four, tmp_path / "results")
    assert "tiny_study" in out[0].read_text() and out[1].stat().st_size > 1000


def test_ground_truth_refuses_another_recipe(tmp_path, tiny_study, monkeypatch):
    _gt(tmp_path, 2)
    changed = _studies.Study(**{**vars(TINY), "standalone_epochs": 2})
    monkeypatch.setitem(_studies.STUDIES, TINY.name, changed)
    with pytest.raises(SystemExit, match="standalone_epochs"):
        _gt(tmp_path, 2)


def test_a_proxy_equal_for_every_architecture_ranks_at_tau_0():
    """resnet20_pool's MACs are the same for all 36 placements: that baseline ranks nothing (tau 0), it is not
    undefined (which would make every p-value against it undefined too)."""
    import numpy as np

    mean = np.array([0.80, 0.82, 0.85, 0.81])
    assert bench_ground_truth._proxy_tau([7, 7, 7, 7], mean) == 0.0
    assert bench_ground_truth._proxy_tau([1, 3, 4, 2], mean) == pytest.approx(1.0)


def test_recipes_accumulate_per_seed_and_render_against_the_ground_truth(tmp_path, tiny_study):
    _gt(tmp_path, 2)
    path = tmp_path / "results" / "data" / "recipes.json"
    args = argparse.Namespace(space=TINY.name, recipes="all", seeds=2, workers=2, root=str(tmp_path / "runs"))
    bench_recipes.measure(args, path)
    raw = json.loads(path.read_text())
    items = raw["spaces"][TINY.name]["items"]
    assert set(items) == {"uniform", "sandwich"} and all(set(v) == {"0", "1"} for v in items.values())
    assert set(items["uniform"]["0"]["inherited"]) == {"2", "4"}  # recalibration sizes of RECAL_RECIPES
    ids = [
        a["id"]
        for a in json.loads((path.parent / "ground_truth.json").read_text())["spaces"][TINY.name]["archs"]
    ]
    assert items["uniform"]["0"]["arch_ids"] == ids
    bench_recipes.measure(args, path)  # nothing left to train
    assert json.loads(path.read_text())["spaces"][TINY.name]["items"] == items
    md = bench_recipes.render(json.loads(path.read_text()), tmp_path / "results")[0].read_text()
    assert "| **sandwich** (default) | 2 |" in md and "| uniform | 2 |" in md
    assert "by MACs" in md


def test_end_to_end_trains_the_pick_and_random_networks_under_the_budget(tmp_path, tiny_study, monkeypatch):
    monkeypatch.chdir(ROOT)  # `nas run` in a fresh process, from the repository
    settings = dict(space=TINY.name, recipe="uniform", trials=12, random=2, seeds=1, epochs=1)
    args = argparse.Namespace(**settings, workers=2, root=str(tmp_path))
    path = tmp_path / "results" / "data" / "end_to_end.json"
    bench_end_to_end.measure(args, path)
    raw = json.loads(path.read_text())
    ids = [raw["pick"]["id"], *(r["id"] for r in raw["random"])]
    assert len(set(ids)) == 3 and set(raw["results"]) == set(ids)
    assert all(raw["sizes"][i]["macs"] <= raw["budget_macs"] for i in ids)  # everyone meets the budget
    assert all(0 <= r["0"]["test_acc"] <= 1 for r in raw["results"].values())
    md = bench_end_to_end.render(raw, tmp_path / "results")[0].read_text()
    assert "search's pick" in md and "percentile" in md
