"""scripts/bench_runtimes.py on tiny settings: every unit measured and saved, resumed without re-measuring,
and the report rendered from the data alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench_runtimes

    return bench_runtimes


def test_tiny_run_measures_saves_resumes_and_renders(bench, tmp_path, monkeypatch):
    out = tmp_path / "runtimes.md"
    args = [
        "--space=tiny",
        '--space-options={"resolution": 16}',
        "--runtimes=torch,onnxruntime",
        "--archs=5",
        "--sessions=1",
        "--calibration-n=4",
        "--repeats=2",
        "--threads-multi=0",
        "--fit=ops",  # onnxruntime's default, a network fit, needs more than 4 calibration networks
        "--export-archs=1",
        "--formats=torch,onnx",  # the other formats are verified in tests/test_nas/export
        f"--out={out}",
    ]
    assert bench.main(args) == 0
    data = tmp_path / "data" / "runtimes.json"
    raw = json.loads(data.read_text())
    assert set(raw["units"]) == {f"{r}|1|ops|{s}" for r in ("torch", "onnxruntime") for s in (0,)}
    for unit in raw["units"].values():
        assert len(unit["measured_ms"]) == len(unit["predicted_ms"]) == 5 and -1 <= unit["kendall_tau"] <= 1
    assert {"torch", "onnx"} == set(raw["exports"]["formats"])
    assert all(r["ok"] and r["bytes"] > 0 for r in raw["exports"]["formats"]["onnx"])
    report = out.read_text()
    for heading in ("## Prediction vs measurement", "## Between runtimes (1 thread", "## Export formats"):
        assert heading in report
    assert "| onnxruntime | 1 | ops |" in report and "pairs ordered unlike torch" in report

    # resumed with the same settings: nothing is measured again (a new measurement never repeats its figures)
    # and no measuring process is started
    children = []
    run = bench.subprocess.run
    monkeypatch.setattr(
        bench.subprocess, "run", lambda cmd, *a, **k: children.append(cmd) or run(cmd, *a, **k)
    )
    assert bench.main(args) == 0
    assert json.loads(data.read_text()) == raw and children == []

    # a call asking one runtime for one more session adds its unit and keeps the measured ones as they are
    more = {"--sessions=1": "--sessions=2", "--runtimes=torch,onnxruntime": "--runtimes=torch"}
    assert bench.main([more.get(a, a) for a in args]) == 0
    grown = json.loads(data.read_text())
    assert set(grown["units"]) == set(raw["units"]) | {"torch|1|ops|1"}
    assert all(grown["units"][k] == v for k, v in raw["units"].items())
    assert grown["exports"] == raw["exports"]  # same export settings: not re-timed

    # the report is the data's alone
    again = tmp_path / "again"
    bench.render(raw, again)
    assert (again / "runtimes.md").read_text() == report


def test_disagreement_counts_pairs_ordered_differently(bench):
    import numpy as np

    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert bench.disagreement(x, x * 3) == 0.0
    assert bench.disagreement(x, -x) == 1.0
    assert bench.disagreement(x, np.array([2.0, 1.0, 3.0, 4.0])) == pytest.approx(1 / 6)
