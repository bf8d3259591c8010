"""Constraints are a property of the study: a budget given after the search decides the export, the front, the
report and the samplers, for latency, parameters, MACs and memory, absolute or as a share of the reference."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from nas_runs import snapshot

from nas.cli import main

SETTINGS = [
    "--space=tiny", "--data.resolution=16", "--train-limit=256", "--epochs=1",
    "--search.devices=[laptop-cpu]", "--trackers=jsonl", "--quiet", "--export.latency_repeats=2",
    "--format=torch",
]  # fmt: skip


def _history(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with open(run_dir / "search" / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def unconstrained(tmp_path_factory) -> Path:
    """A search without any constraint: 16 trials over tiny."""
    run_dir = tmp_path_factory.mktemp("unconstrained") / "run"
    with redirect_stdout(io.StringIO()):
        assert main(["run", "--run-dir", str(run_dir), *SETTINGS, "--trials=16", "--controller=random"]) == 0
    return run_dir


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    work = tmp_path / "work"
    shutil.copytree(run_dir, work, ignore=shutil.ignore_patterns(".lock"))
    return work


def _best(rows: list[dict[str, str]], ok) -> dict[str, str]:
    feasible = [r for r in rows if ok(r)]
    return max(
        feasible,
        key=lambda r: (float(r["val_accuracy"]), -float(r["latency_pred_ms_laptop-cpu"]), -int(r["trial"])),
    )


def _export(work: Path, *flags: str) -> tuple[int, dict]:
    with redirect_stdout(io.StringIO()):
        rc = main(["export", "--run-dir", str(work), *SETTINGS, *flags])
    meta = json.loads((work / "export" / "meta.json").read_text()) if rc == 0 else {}
    return rc, meta


def test_a_budget_given_at_export_picks_the_best_trial_that_meets_it(unconstrained, tmp_path):
    work = _copy(unconstrained, tmp_path)
    rows = _history(work)
    latencies = sorted(float(r["latency_pred_ms_laptop-cpu"]) for r in rows)
    budget = latencies[len(latencies) // 3]  # a third of the trials meet it
    want = _best(rows, lambda r: float(r["latency_pred_ms_laptop-cpu"]) <= budget)
    unconstrained_pick = _best(rows, lambda r: True)
    assert (
        want["arch_id"] != unconstrained_pick["arch_id"]
    )  # the budget must matter for the test to mean anything
    rc, meta = _export(work, f"--latency-budget-ms={budget}")
    assert rc == 0 and meta["arch_id"] == want["arch_id"] and meta["latency_pred_ms"] <= budget
    front = json.loads((work / "search" / "pareto.json").read_text())
    assert front["constraints"]["latency_ms"]["limit"] == budget
    assert front["front"] and all(r["latency_ms"] <= budget for r in front["front"])
    assert meta["arch_id"] in {r["arch_id"] for r in front["front"]}
    assert {r["trial"] for r in _history(work) if r["feasible"] == "1"} == {
        r["trial"] for r in rows if float(r["latency_pred_ms_laptop-cpu"]) <= budget
    }
    # the report reads the same front (the search's outputs were rewritten for the export's constraints)
    with redirect_stdout(io.StringIO()):
        assert main(["report", str(work), "--no-trackers", "--quiet"]) == 0
    report = json.loads((work / "report" / "report.json").read_text())
    assert [row[0] for row in report["pareto"]["rows"]] == [r["trial"] for r in front["front"]]


def test_latency_and_parameter_limits_together_and_as_a_share(unconstrained, tmp_path):
    work = _copy(unconstrained, tmp_path)
    rows = _history(work)
    params = sorted(float(r["params"]) for r in rows)
    limit_params = params[len(params) // 2]
    budget = sorted(float(r["latency_pred_ms_laptop-cpu"]) for r in rows)[-3]
    want = _best(
        rows,
        lambda r: float(r["latency_pred_ms_laptop-cpu"]) <= budget and float(r["params"]) <= limit_params,
    )
    rc, meta = _export(work, f"--latency-budget-ms={budget}", f"--max-params={limit_params}")
    assert rc == 0 and meta["arch_id"] == want["arch_id"] and meta["params"] <= limit_params
    # a share of the reference (tiny's largest architecture) resolves to an absolute limit
    rc, meta = _export(work, "--latency-budget-ms=null", "--max-params=60%")
    constraints = json.loads((work / "search" / "pareto.json").read_text())["constraints"]
    assert (
        constraints["params"]["given"] == "60%"
        and rc == 0
        and meta["params"] <= constraints["params"]["limit"]
    )


def test_a_budget_no_trial_meets_is_refused_in_one_line_and_changes_nothing(unconstrained, tmp_path, capsys):
    work = _copy(unconstrained, tmp_path)
    rows = _history(work)
    cheapest = min(float(r["params"]) for r in rows)
    before = snapshot(work)
    capsys.readouterr()
    rc, _ = _export(work, f"--max-params={cheapest - 1}")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "none of the 16 searched architectures meets params <=" in err
    assert snapshot(work) == before


def test_a_search_under_new_constraints_says_so_and_applies_them_to_every_trial(
    unconstrained, tmp_path, capsys
):
    work = _copy(unconstrained, tmp_path)
    rows = _history(work)
    budget = sorted(float(r["latency_pred_ms_laptop-cpu"]) for r in rows)[5]
    capsys.readouterr()
    with redirect_stdout(io.StringIO()):
        assert (
            main(
                [
                    "search",
                    "--run-dir",
                    str(work),
                    *(a for a in SETTINGS if a not in ("--quiet", "--format=torch")),
                    "--trials=18",
                    f"--latency-budget-ms={budget}",
                ]
            )
            == 0
        )
    err = capsys.readouterr().err
    assert "constraints changed from none to latency_ms <=" in err
    after = _history(work)
    assert len(after) == 18
    assert all((r["feasible"] == "1") == (float(r["latency_pred_ms_laptop-cpu"]) <= budget) for r in after)


def test_samplers_see_the_constraints_in_force_not_those_a_trial_was_told_under(tmp_path):
    """Optuna's constrained samplers read each trial's constraints: they must follow a budget given later."""
    from nas.controllers import Objectives, create_controller
    from search_spaces import create_space

    space = create_space("tiny")
    ctl = create_controller(
        "nsga2", space=space, seed=0, latency_budget_ms=None, run_dir=tmp_path, population=4
    )
    for i in range(6):
        (arch,) = ctl.ask(1)
        ctl.tell([arch], [Objectives(0.5, 1.0 + i)])
    trials = ctl.study.get_trials(deepcopy=False)
    assert all(t.constraints == {} for t in trials)  # no budget: unconstrained
    ctl.set_constraints(lambda row: {"latency_ms": (row["latency_ms"] - 3.5) / 3.5})
    judged = {t.number: t.constraints["latency_ms"] <= 0 for t in ctl.study.get_trials(deepcopy=False)}
    assert judged == {t.number: t.values[1] <= 3.5 for t in trials}
    assert [r["feasible"] for r in ctl.history()] == [t.values[1] <= 3.5 for t in trials]
