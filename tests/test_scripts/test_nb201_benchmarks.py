"""The nb201 benchmark scripts on tiny settings: they resume from their data files, refuse to mix recipes,
and render their reports from the data alone."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_nb201_controllers as controllers  # noqa: E402
import bench_nb201_ground_truth as ground_truth  # noqa: E402


# --- controllers ------------------------------------------------------------------------------------------
def test_controller_benchmark_resumes_and_reads_its_figures_off_the_data(tmp_path, capsys):
    args = argparse.Namespace(
        seeds=2, trials=30, datasets="cifar10", controllers="random,evolution", exclude="", population=5,
        mo_trials=20, mo_seeds=2, device="mobile-big-core", jobs=1,
    )  # fmt: skip
    path = tmp_path / "data" / "nb201_controllers.json"
    raw = controllers.measure(args, None, path)
    assert len(raw["runs"]) == 2 * 2 + 2 * 2  # accuracy and latency protocols, 2 controllers x 2 seeds
    again = controllers.measure(args, json.loads(path.read_text()), path)
    assert len(again["runs"]) == 8  # nothing new to run
    capsys.readouterr()
    stale = json.loads(path.read_text())
    stale["latency"]["budget_ms"] *= 0.8  # as if run under another latency model
    redone = controllers.measure(args, stale, path)
    assert "redoing the 4 latency-protocol runs" in capsys.readouterr().out
    assert len(redone["runs"]) == 8 and redone["latency"]["budget_ms"] == again["latency"]["budget_ms"]
    acc = controllers.accuracy_by_rank(raw, "cifar10")
    assert acc == sorted(acc, reverse=True) and len(acc) == 6466 and round(acc[0], 2) == 94.37
    for run in raw["runs"]:
        ranks = [r for _, r in run["best"]]
        assert ranks == sorted(ranks, reverse=True) and len(set(ranks)) == len(ranks)  # improvements only
        assert controllers.best_at(run, 30) == ranks[-1] and run["trials"] == (
            30 if run["protocol"] == "accuracy" else 20
        )
    (md,) = [p for p in controllers.render(raw, tmp_path, figures=False) if p.suffix == ".md"]
    text = md.read_text()
    assert "## CIFAR-10: best test accuracy found (%)" in text and "| evolution | 2 | 30 |" in text
    assert "## CIFAR-10: accuracy vs. predicted latency under a budget" in text
    assert "REA (`evolution`) | 93.92 ± 0.30" in text and "BOHB" in text
    assert controllers.trials_to({"best": [[3, 900], [12, 60], [20, 5]]}, 65) == 12
    assert controllers.trials_to({"best": [[3, 900]]}, 7) == float("inf")


# --- ground truth -----------------------------------------------------------------------------------------
def _gt_args(**kw) -> argparse.Namespace:
    base = dict(
        archs=6, seeds=2, epochs=1, train_limit=256, val_limit=200, C=4, N=1, entangled=False, batch_size=64,
        lr=0.1, resolution=16, data="digits", stratify="cifar10", arch_seed=0, workers=2, max_new=None,
        cache="unused",
    )  # fmt: skip
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.fixture
def fake_training(monkeypatch):
    """Standalone 'training' that returns a known accuracy (the NATS CIFAR-10 one, shifted per seed)."""
    import nas.ranking
    from nas.tables import load_table
    from search_spaces import create_space

    table = load_table(create_space("nb201"), "nats:cifar10")
    calls: list[tuple[str, int]] = []

    def train(cfg, archs, seeds, epochs, out_dir, workers, say=print):
        out = {}
        for a in archs:
            for s in seeds:
                calls.append((a.id, s))
                out[(a.id, s)] = {"arch_id": a.id, "seed": s, "epochs": epochs, "seconds": 1.0,
                                  "val_acc": table.accuracy_of(a) - 0.001 * s}  # fmt: skip
        return out

    monkeypatch.setattr(nas.ranking, "train_standalone_all", train)
    return calls


def test_ground_truth_accumulates_and_never_retrains(tmp_path, fake_training):
    path = tmp_path / "data" / "nb201_ground_truth.json"
    raw = ground_truth.measure(_gt_args(max_new=4), None, path)
    assert len(raw["results"]) == 4 and len(fake_training) == 4
    first_archs = {a for a, _ in fake_training}
    assert len(first_archs) == 2  # the pilot: 2 architectures x 2 seeds, spread over the strata
    raw = ground_truth.measure(_gt_args(), json.loads(path.read_text()), path)
    assert len(raw["results"]) == 12 and len(fake_training) == 12  # only the 8 missing were trained
    assert len({(r["arch_id"], r["seed"]) for r in raw["results"]}) == 12
    nats = [a["nats_cifar10"] for a in raw["archs"]]
    assert len(raw["archs"]) == 6 and nats == sorted(nats)  # one per stratum, in stratum order
    assert min(nats) < 88 and max(nats) > 92.5  # from the weakest sixth of the networks to the best
    with pytest.raises(SystemExit, match="other settings \\(epochs"):
        ground_truth.measure(_gt_args(epochs=2), json.loads(path.read_text()), path)
    md = ground_truth.render(json.loads(path.read_text()), tmp_path)[0].read_text()
    assert "12 of 12 trainings done" in md and "Incomplete" not in md
    assert "Seed-to-seed Kendall tau (mean over seed pairs): **1.000**" in md  # seeds agree by construction
    assert "vs. NATS-Bench CIFAR-10 test accuracy: 1.000" in md
    assert md.count("\\|") > 0 and "| 6 of" not in md


def test_spread_order_spreads_every_prefix():
    order = ground_truth.spread_order(40)
    assert sorted(order) == list(range(40))
    assert max(order[:4]) - min(order[:4]) >= 25 and len(set(order[:2])) == 2


# --- ranking: the recipes benchmark against this ground truth -------------------------------------------
def test_recipes_benchmark_ranks_supernets_against_the_nb201_truth(tmp_path, fake_training, monkeypatch):
    import _studies
    import bench_recipes

    truth = tmp_path / "results" / "data" / "nb201_ground_truth.json"
    ground_truth.measure(_gt_args(archs=6, seeds=2), None, truth)
    n_fake = len(fake_training)
    study = _studies.Study(
        **{**vars(_studies.NB201), "name": "nb201_tiny", "supernet_epochs": 1, "recal_sizes": (2,),
           "recal_default": 2, "recipes": {"uniform": ("--train.sampler=uniform",)},
           "common": ("--data=digits", "--data.resolution=16", "--space=nb201", "--train-limit=256",
                      "--data.val_limit=200", "--space.options={C: 4, N: 1}", "--trackers=jsonl")},
    )  # fmt: skip
    monkeypatch.setitem(_studies.STUDIES, study.name, study)
    monkeypatch.setitem(bench_recipes.STUDIES, study.name, study)
    args = argparse.Namespace(
        space=study.name, recipes="all", seeds=1, workers=1, root=str(tmp_path / "runs")
    )
    path = truth.parent / "recipes.json"
    bench_recipes.measure(args, path)
    assert len(fake_training) == n_fake  # supernets only: the ground truth is never retrained
    item = json.loads(path.read_text())["spaces"][study.name]["items"]["uniform"]["0"]
    raw_truth = json.loads(truth.read_text())
    assert item["arch_ids"] == [a["arch_id"] for a in raw_truth["archs"]] and len(item["inherited"]["2"]) == 6
    cfg = yaml.safe_load((tmp_path / "runs" / study.name / "uniform" / "seed0" / "config.yaml").read_text())
    assert cfg["seed"] == 1000  # never a seed of the ground truth's trainings
    md = bench_recipes.render(json.loads(path.read_text()), tmp_path / "results")[0].read_text()
    assert "## nb201_tiny" in md and "| uniform | 1 |" in md and "by MACs" in md
    with pytest.raises(SystemExit, match="bench_nb201_ground_truth.py"):
        import bench_ground_truth

        bench_ground_truth.space_entry(study.name)


def test_the_nb201_study_trains_supernets_with_its_ground_truths_recipe():
    """The supernets of `bench_recipes --space nb201` see the data, space and recipe the committed ground
    truth was trained with."""
    import _studies

    from nas.run.config import build_config

    recipe = json.loads((ROOT / "results" / "data" / "nb201_ground_truth.json").read_text())["recipe"]
    cfg = build_config(None, list(_studies.NB201.common))
    assert (cfg.data.name, cfg.data.resolution, cfg.data.train_limit, cfg.data.val_limit) == (
        recipe["data"], recipe["resolution"], recipe["train_limit"], recipe["val_limit"])  # fmt: skip
    assert (cfg.data.batch_size, cfg.train.lr, cfg.space.width_mult) == (
        recipe["batch_size"],
        recipe["lr"],
        1,
    )
    assert (cfg.space.options["C"], cfg.space.options["N"]) == (recipe["C"], recipe["N"])
    assert _studies.NB201.standalone_epochs == recipe["epochs"]
